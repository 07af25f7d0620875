"""The key lifecycle in the core, with real SoftHSM keys, a real SQLite store and a throwaway CA.

Keys are generated on the SoftHSM test token, certificates come from a CA
made with ``signserver.demo_pki``, and OpenSSL, python-pkcs11 and the
``cryptography`` package check what the core produced.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import secrets
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key
from pkcs11 import Attribute, ObjectClass

from hsm import Hsm
from hsm import KeyNotFound as HsmKeyNotFound
from signserver import demo_pki
from signserver.config import Settings
from signserver.core import keys
from signserver.core.change_details import KeyDestructionDetails, describe_change
from signserver.core.changes import (
    ChangeNotPending,
    ChangeOutdated,
    ChangePendingExists,
    approve_change,
    check_policy_change,
    list_changes,
    reject_change,
    request_key_destruction,
    request_policy_change,
)
from signserver.core.context import CoreContext
from signserver.core.errors import RoleRequired
from signserver.core.key_credentials import CredentialApproverNotOwner, CredentialOwnerNotAllowed, check_new_credential
from signserver.core.key_errors import (
    CertificateHolderMismatch,
    CredentialApproverOtherAgency,
    CertificateInvalid,
    CertificateKeyMismatch,
    CertificateKeyUsage,
    CredentialExists,
    CredentialIdInvalid,
    CredentialNotFound,
    CredentialOfficialNotFound,
    CredentialOfficialRoleMissing,
    ImportTargetInvalid,
    KeyDestroyNeedsSecondOfficer,
    KeyInUse,
    KeyLabelInvalid,
    KeyLabelTaken,
    KeyMissingFromHsm,
    KeyNotFound,
    KeyStateInvalid,
    KeyTypeUnsupported,
    RotationHolderChanged,
)
from signserver.core.policy_files import MAX_POLICY_SET_BYTES, PolicyTooLarge, check_policy_input
from signserver.core.raw_signing import resolve_signature_scheme, sign_digests
from signserver.core.sad import CredentialDisabled, check_credential_usable
from signserver.errors import InvalidInput
from signserver.hsm_bridge import HsmKeyVault
from signserver.signing.errors import CertificateExpired, CertificateNotYetValid, CertificateUntrusted
from signserver.store.db import IntegrityError, Store, Transaction
from signserver.store.migrate import upgrade_to_head
from signserver.store.records import AdminChange, AuditRecord, Credential, HsmKey, Official
from tests.hsm.conftest import SoftHsmTokens, hsm, raw_session, softhsm_tokens  # noqa: F401 - SoftHSM fixtures
from tests.postgres import new_database_url

OFFICER_A = "so-test-a"
OFFICER_B = "so-test-b"
OFFICIAL = "off-test-hang"
SEAL_HOLDER = "off-test-van-thu"
AUDITOR = "aud-test"
AGENCY = "Ủy ban nhân dân huyện Mẫu Sơn"

PEOPLE = [
    (OFFICER_A, "Lê Văn Cường", "security_officer"),
    (OFFICER_B, "Phạm Thu Hà", "security_officer"),
    (OFFICIAL, "Nguyễn Thị Hằng", "official"),
    (SEAL_HOLDER, "Vũ Thị Lan", "official,seal_holder"),
    (AUDITOR, "Hoàng Minh Đức", "auditor"),
]

SUBJECT = keys.CsrSubject(common_name="Nguyễn Thị Hằng", organization=AGENCY, locality="Huyện Mẫu Sơn",
                          state="Tỉnh Lạng Sơn", title="Chuyên viên", identifiers=("CCCD:001190012345",))
CERTIFICATE_SUBJECT = demo_pki.SubjectSpec(common_name="Nguyễn Thị Hằng", organization=AGENCY,
                                           user_id="CCCD:001190012345")
# ecdsa-with-SHA256, RFC 5758 section 3.2.
ECDSA_SHA256_OID = "1.2.840.10045.4.3.2"


@dataclass(frozen=True)
class Authorities:
    root: demo_pki.CertificateAuthority
    issuing: demo_pki.CertificateAuthority
    # A root the context does not trust.
    other_root: demo_pki.CertificateAuthority

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(Encoding.PEM) for c in (self.issuing.certificate, self.root.certificate))


class CountingVault:
    """A KeyVault that forwards to the HSM and counts the calls of each method."""

    def __init__(self, vault: HsmKeyVault) -> None:
        self.vault = vault
        self.calls: Counter[str] = Counter()
        self.generated_key_ids: list[bytes] = []

    async def generate(self, key_id: bytes, label: str, key_type: str, key_size: int) -> bytes:
        self.calls["generate"] += 1
        self.generated_key_ids.append(key_id)
        return await self.vault.generate(key_id, label, key_type, key_size)

    async def sign_digest(self, key_id: bytes, key_type: str, digest: bytes, digest_algorithm: str) -> bytes:
        self.calls["sign_digest"] += 1
        return await self.vault.sign_digest(key_id, key_type, digest, digest_algorithm)

    async def destroy(self, key_id: bytes) -> int:
        self.calls["destroy"] += 1
        return await self.vault.destroy(key_id)


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = new_database_url(tmp_path_factory.mktemp('key-lifecycle'), 'signserver.db')
    upgrade_to_head(url)

    async def add_people() -> None:
        store = Store(url)
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            async with store.transaction() as tx:
                for person_id, full_name, roles in PEOPLE:
                    await tx.insert_official(
                        id=person_id, username=person_id, full_name=full_name, title="", agency=AGENCY,
                        password_hash="unused", totp_secret_wrapped=b"unused", otp_failed_count=0, enabled=True,
                        created_at=now, roles=roles,
                    )
        finally:
            await store.close()

    asyncio.run(add_people())
    return url


@pytest.fixture(scope="module")
def ca() -> Authorities:
    root = demo_pki.create_root_ca("CA gốc thử nghiệm", "Tổ chức chứng thực thử nghiệm")
    issuing = demo_pki.create_issuing_ca(root, "CA cấp dưới thử nghiệm", "Tổ chức chứng thực thử nghiệm")
    other_root = demo_pki.create_root_ca("CA gốc không tin cậy", "Tổ chức khác")
    return Authorities(root=root, issuing=issuing, other_root=other_root)


@pytest.fixture
async def ctx(database_url: str, hsm: Hsm, ca: Authorities, tmp_path: Path) -> AsyncIterator[CoreContext]:  # noqa: F811
    store = Store(database_url)
    root = asn1_x509.Certificate.load(ca.root.certificate.public_bytes(Encoding.DER))
    context = CoreContext(
        store=store, settings=Settings(home=tmp_path), policies=None, secret_box=None,  # type: ignore[arg-type]
        pdf_checker=None, document_signer=None,  # type: ignore[arg-type]
        key_vault=CountingVault(HsmKeyVault(hsm)), trust_roots=[root],
    )
    yield context
    await store.close()


async def person(ctx: CoreContext, person_id: str) -> Official:
    async with ctx.store.transaction() as tx:
        found = await tx.official(person_id)
    assert found is not None
    return found


async def audit_records(ctx: CoreContext, key: HsmKey) -> list[AuditRecord]:
    async with ctx.store.transaction() as tx:
        return [record for record in await tx.audit_records() if record.key_id_hex == key.key_id_hex]


async def stored_key(ctx: CoreContext, key: HsmKey) -> HsmKey:
    async with ctx.store.transaction() as tx:
        found = await tx.hsm_key(key.id)
    assert found is not None
    return found


async def stored_credential(ctx: CoreContext, credential_id: str) -> Credential | None:
    async with ctx.store.transaction() as tx:
        return await tx.credential(credential_id)


def vault_calls(ctx: CoreContext) -> Counter[str]:
    assert isinstance(ctx.key_vault, CountingVault)
    return ctx.key_vault.calls


def issue(ca: Authorities, key: HsmKey, **options: Any) -> bytes:
    """Issue a signing certificate for ``key`` from the trusted issuing CA and return it as PEM."""
    certificate = demo_pki.issue_signing_certificate(ca.issuing, key.public_key_der, CERTIFICATE_SUBJECT, **options)
    return certificate.public_bytes(Encoding.PEM)


def issue_with_extensions(ca: Authorities, key: HsmKey, *, is_ca: bool, key_usage: x509.KeyUsage) -> bytes:
    """Issue a certificate for ``key`` whose basic constraints and key usage the test chooses."""
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(CERTIFICATE_SUBJECT.to_name())
        .issuer_name(ca.issuing.certificate.subject)
        .public_key(load_der_public_key(key.public_key_der))  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .sign(ca.issuing.private_key, hashes.SHA256())
    )
    return certificate.public_bytes(Encoding.PEM)


def key_usage(**chosen: bool) -> x509.KeyUsage:
    flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)
    flags.update(chosen)
    return x509.KeyUsage(**flags)


def personal(credential_id: str | None = None, **changes: Any) -> keys.NewCredential:
    values = dict(id=credential_id or f"cred-test-{secrets.token_hex(4)}", kind="personal",
                  display_name="Nguyễn Thị Hằng", owner_official_id=OFFICIAL, signer_title="Chuyên viên",
                  agency=AGENCY)
    values.update(changes)
    return keys.NewCredential(**values)


async def generated(ctx: CoreContext, key_type: str = "EC", key_size: int = 256) -> HsmKey:
    return await keys.generate_key(ctx, await person(ctx, OFFICER_A), key_type, key_size)


async def imported(ctx: CoreContext, ca: Authorities, key_type: str = "EC",
                   key_size: int = 256) -> tuple[HsmKey, Credential]:
    """Generate a key and import a certificate for it as a new personal credential."""
    key = await generated(ctx, key_type, key_size)
    credential = await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, issue(ca, key),
                                               ca.chain_pem(), new_credential=personal())
    return key, credential


def verify_signature(certificate_der: bytes, digest: bytes, signature: bytes) -> None:
    """Verify a signature over a SHA-256 digest with the certificate's public key; raise if it does not verify."""
    public_key = x509.load_der_x509_certificate(certificate_der).public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


async def sign_with_credential(hsm_token: Hsm, credential: Credential, digest: bytes) -> bytes:
    scheme = resolve_signature_scheme(credential.key_type, credential.key_size, ECDSA_SHA256_OID, None, None)
    return (await sign_digests(hsm_token, credential, scheme, [digest]))[0]


# Generation


@pytest.mark.parametrize(("key_type", "key_size"), [("RSA", 2048), ("EC", 256)])
async def test_generated_private_key_attributes(ctx: CoreContext, softhsm_tokens: SoftHsmTokens,  # noqa: F811
                                                key_type: str, key_size: int) -> None:
    key = await generated(ctx, key_type, key_size)

    session = raw_session(softhsm_tokens.main_label, softhsm_tokens.user_pin)
    try:
        private_key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(key.key_id_hex))
        found = private_key.get_attributes([Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.NEVER_EXTRACTABLE,
                                            Attribute.LABEL])
    finally:
        session.close()
    assert found[Attribute.SENSITIVE] is True
    assert found[Attribute.EXTRACTABLE] is False
    assert found[Attribute.NEVER_EXTRACTABLE] is True
    assert found[Attribute.LABEL] == key.key_label


async def test_generate_inventories_key(ctx: CoreContext, hsm: Hsm) -> None:  # noqa: F811
    key = await generated(ctx, "RSA", 3072)

    assert key.state == keys.GENERATED
    assert key.key_type == "RSA"
    assert key.key_size == 3072
    assert len(bytes.fromhex(key.key_id_hex)) == 16
    assert key.key_label == f"rsa3072-{key.key_id_hex[:12]}"
    assert key.created_by == OFFICER_A
    assert key.public_key_der == hsm.public_key(bytes.fromhex(key.key_id_hex))


async def test_generate_audited(ctx: CoreContext) -> None:
    key = await generated(ctx)

    records = await audit_records(ctx, key)

    assert [record.action for record in records] == ["key_generated"]
    assert records[0].actor_type == "security_officer"
    assert records[0].actor_id == OFFICER_A
    assert json.loads(records[0].details_json)["key"] == key.id


@pytest.mark.parametrize(("key_type", "key_size"), [("RSA", 1024), ("EC", 521), ("DSA", 2048)])
async def test_generate_unsupported_type_rejected(ctx: CoreContext, key_type: str, key_size: int) -> None:
    with pytest.raises(KeyTypeUnsupported):
        await keys.generate_key(ctx, await person(ctx, OFFICER_A), key_type, key_size)

    assert vault_calls(ctx)["generate"] == 0


async def test_generate_taken_label_rejected(ctx: CoreContext) -> None:
    officer = await person(ctx, OFFICER_A)
    label = f"test-label-{secrets.token_hex(4)}"
    await keys.generate_key(ctx, officer, "EC", 256, label)

    with pytest.raises(KeyLabelTaken):
        await keys.generate_key(ctx, officer, "EC", 384, label)

    assert vault_calls(ctx)["generate"] == 1


async def test_generate_unrecorded_key_destroyed(ctx: CoreContext, hsm: Hsm,  # noqa: F811
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async def insert_fails(_tx: Transaction, **_values: Any) -> None:
        raise IntegrityError("INSERT INTO hsm_keys", {}, Exception("UNIQUE constraint failed: hsm_keys.key_label"))

    monkeypatch.setattr(Transaction, "insert_hsm_key", insert_fails)

    with pytest.raises(KeyLabelTaken):
        await generated(ctx)

    assert isinstance(ctx.key_vault, CountingVault)
    assert vault_calls(ctx)["destroy"] == 1
    with pytest.raises(HsmKeyNotFound):
        hsm.public_key(ctx.key_vault.generated_key_ids[-1])


async def test_generate_invalid_label_rejected(ctx: CoreContext) -> None:
    with pytest.raises(KeyLabelInvalid):
        await keys.generate_key(ctx, await person(ctx, OFFICER_A), "EC", 256, "khóa mới")


@pytest.mark.parametrize("person_id", [OFFICIAL, AUDITOR])
async def test_generate_needs_security_officer(ctx: CoreContext, person_id: str) -> None:
    with pytest.raises(RoleRequired):
        await keys.generate_key(ctx, await person(ctx, person_id), "EC", 256)

    assert vault_calls(ctx)["generate"] == 0


# Listing


async def test_list_keys_does_not_use_hsm(ctx: CoreContext, hsm: Hsm) -> None:  # noqa: F811
    key = await generated(ctx)
    # With the objects gone from the token, only the inventory can still list the key.
    hsm.destroy_key_pair(bytes.fromhex(key.key_id_hex))
    vault_calls(ctx).clear()

    listed = await keys.list_keys(ctx, await person(ctx, OFFICER_B))

    assert key.id in [item.id for item in listed]
    assert sum(vault_calls(ctx).values()) == 0


async def test_list_keys_filters_state(ctx: CoreContext, ca: Authorities) -> None:
    active_key, _ = await imported(ctx, ca)
    generated_key = await generated(ctx)

    listed = await keys.list_keys(ctx, await person(ctx, OFFICER_A), [keys.ACTIVE])

    assert active_key.id in [item.id for item in listed]
    assert generated_key.id not in [item.id for item in listed]
    assert {item.state for item in listed} == {keys.ACTIVE}


async def test_list_keys_unknown_state_rejected(ctx: CoreContext) -> None:
    with pytest.raises(InvalidInput) as raised:
        await keys.list_keys(ctx, await person(ctx, OFFICER_A), ["lost"])

    assert raised.value.code == "field_invalid"


# CSR


async def test_create_csr_verifies_with_openssl(ctx: CoreContext, tmp_path: Path) -> None:
    key = await generated(ctx, "RSA", 2048)

    request = await keys.create_csr(ctx, await person(ctx, OFFICER_A), key.id, SUBJECT)

    path = tmp_path / "request.csr"
    path.write_bytes(request)
    verified = subprocess.run(["openssl", "req", "-in", str(path), "-verify", "-noout", "-subject", "-nameopt",
                               "utf8,sep_comma_plus"], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == ("subject=C=VN,ST=Tỉnh Lạng Sơn,L=Huyện Mẫu Sơn,O=Ủy ban nhân dân huyện Mẫu Sơn,"
                                       "title=Chuyên viên,CN=Nguyễn Thị Hằng,UID=CCCD:001190012345")


async def test_create_csr_audited_with_subject(ctx: CoreContext) -> None:
    key = await generated(ctx)

    request = await keys.create_csr(ctx, await person(ctx, OFFICER_B), key.id, SUBJECT)

    record = (await audit_records(ctx, key))[-1]
    details = json.loads(record.details_json)
    assert record.action == "csr_created"
    assert record.actor_id == OFFICER_B
    assert details["subject"]["common_name"] == "Nguyễn Thị Hằng"
    assert details["subject"]["identifiers"] == ["CCCD:001190012345"]
    request_der = x509.load_pem_x509_csr(request).public_bytes(Encoding.DER)
    assert details["csr_sha256"] == hashlib.sha256(request_der).hexdigest()


async def test_create_csr_accepts_cka_id(ctx: CoreContext) -> None:
    key = await generated(ctx)

    request = await keys.create_csr(ctx, await person(ctx, OFFICER_A), key.key_id_hex, SUBJECT)

    assert x509.load_pem_x509_csr(request).is_signature_valid


async def test_create_csr_unknown_key_rejected(ctx: CoreContext) -> None:
    with pytest.raises(KeyNotFound):
        await keys.create_csr(ctx, await person(ctx, OFFICER_A), "key_does_not_exist", SUBJECT)


async def test_create_csr_active_key_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key, _ = await imported(ctx, ca)

    with pytest.raises(KeyStateInvalid) as raised:
        await keys.create_csr(ctx, await person(ctx, OFFICER_A), key.id, SUBJECT)

    assert raised.value.params == {"key_id": key.id, "state": keys.ACTIVE, "expected": keys.GENERATED}


async def test_create_csr_key_missing_from_hsm(ctx: CoreContext, hsm: Hsm) -> None:  # noqa: F811
    key = await generated(ctx)
    hsm.destroy_key_pair(bytes.fromhex(key.key_id_hex))

    with pytest.raises(KeyMissingFromHsm):
        await keys.create_csr(ctx, await person(ctx, OFFICER_A), key.id, SUBJECT)


# Certificate import


async def test_import_creates_credential(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    certificate_pem = issue(ca, key)
    new = personal()

    credential = await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, certificate_pem,
                                               ca.chain_pem(), new_credential=new)

    certificate = x509.load_pem_x509_certificate(certificate_pem)
    assert credential.id == new.id
    assert credential.kind == "personal"
    assert credential.status == "active"
    assert credential.owner_official_id == OFFICIAL
    assert credential.approver_official_id == OFFICIAL
    assert credential.key_id_hex == key.key_id_hex
    assert credential.key_label == key.key_label
    assert credential.certificate_der == certificate.public_bytes(Encoding.DER)
    assert credential.cert_serial_hex == format(certificate.serial_number, "x")
    assert x509.load_pem_x509_certificates(credential.chain_pem.encode()) == [ca.issuing.certificate,
                                                                              ca.root.certificate]


async def test_import_activates_key(ctx: CoreContext, ca: Authorities) -> None:
    key, credential = await imported(ctx, ca)

    stored = await stored_key(ctx, key)

    assert stored.state == keys.ACTIVE
    assert stored.credential_id == credential.id
    assert stored.certificate_der == credential.certificate_der
    assert stored.cert_serial_hex == credential.cert_serial_hex
    assert stored.chain_pem == credential.chain_pem


async def test_import_audited(ctx: CoreContext, ca: Authorities) -> None:
    key, credential = await imported(ctx, ca)

    record = (await audit_records(ctx, key))[-1]

    assert record.action == "certificate_imported"
    assert record.actor_type == "security_officer"
    assert record.actor_id == OFFICER_A
    assert record.cert_serial_hex == credential.cert_serial_hex
    assert json.loads(record.details_json)["credential_id"] == credential.id


async def test_imported_credential_signs(ctx: CoreContext, ca: Authorities, hsm: Hsm) -> None:  # noqa: F811
    _, credential = await imported(ctx, ca)
    digest = hashlib.sha256(b"Giay xac nhan").digest()

    signature = await sign_with_credential(hsm, credential, digest)

    verify_signature(credential.certificate_der, digest, signature)


async def test_import_chain_after_certificate(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    full_chain = issue(ca, key) + ca.chain_pem()

    credential = await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, full_chain, None,
                                               new_credential=personal())

    assert len(x509.load_pem_x509_certificates(credential.chain_pem.encode())) == 2


async def test_import_der_certificate(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    certificate_der = x509.load_pem_x509_certificate(issue(ca, key)).public_bytes(Encoding.DER)

    credential = await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, certificate_der,
                                               ca.chain_pem(), new_credential=personal())

    assert credential.certificate_der == certificate_der


async def test_import_seal_credential(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    new = keys.NewCredential(id=f"cred-seal-{secrets.token_hex(4)}", kind="seal", display_name=AGENCY,
                             approver_official_id=SEAL_HOLDER, agency=AGENCY)

    seal_subject = demo_pki.SubjectSpec(common_name=AGENCY, organization=AGENCY, user_id="MST:0100000001")
    certificate = demo_pki.issue_signing_certificate(ca.issuing, key.public_key_der, seal_subject)

    credential = await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id,
                                               certificate.public_bytes(Encoding.PEM), ca.chain_pem(),
                                               new_credential=new)

    assert credential.kind == "seal"
    assert credential.owner_official_id is None
    assert credential.approver_official_id == SEAL_HOLDER


async def test_import_personal_certificate_as_seal_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    new = keys.NewCredential(id=f"cred-seal-{secrets.token_hex(4)}", kind="seal", display_name=AGENCY,
                             approver_official_id=SEAL_HOLDER, agency=AGENCY)

    # CERTIFICATE_SUBJECT has the agency as O but a citizen id (CCCD) as UID: a person's certificate.
    with pytest.raises(CertificateHolderMismatch):
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, issue(ca, key), ca.chain_pem(),
                                      new_credential=new)

    assert (await stored_key(ctx, key)).state == keys.GENERATED


async def test_import_seal_approved_by_other_agency_rejected(ctx: CoreContext) -> None:
    key = await generated(ctx)
    new = keys.NewCredential(id=f"cred-seal-{secrets.token_hex(4)}", kind="seal", display_name="Sở Tư pháp",
                             approver_official_id=SEAL_HOLDER, agency="Sở Tư pháp tỉnh Thử Nghiệm")

    with pytest.raises(CredentialApproverOtherAgency):
        async with ctx.store.transaction() as tx:
            await check_new_credential(tx, new)

    assert (await stored_key(ctx, key)).state == keys.GENERATED


async def test_import_other_key_certificate_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    other_key = await generated(ctx)

    with pytest.raises(CertificateKeyMismatch) as raised:
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, issue(ca, other_key),
                                      ca.chain_pem(), new_credential=personal())

    assert raised.value.code == "certificate_key_mismatch"
    assert raised.value.params["key_id"] == key.id


async def test_rejected_import_changes_nothing(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    other_key = await generated(ctx)
    new = personal()

    with pytest.raises(CertificateKeyMismatch):
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, issue(ca, other_key),
                                      ca.chain_pem(), new_credential=new)

    assert (await stored_key(ctx, key)).state == keys.GENERATED
    assert await stored_credential(ctx, new.id) is None
    assert [record.action for record in await audit_records(ctx, key)] == ["key_generated"]


async def test_import_expired_certificate_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    now = datetime.datetime.now(datetime.timezone.utc)
    expired = issue(ca, key, not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1))

    with pytest.raises(CertificateExpired) as raised:
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, expired, ca.chain_pem(),
                                      new_credential=personal())

    assert raised.value.code == "certificate_expired"


async def test_import_not_yet_valid_certificate_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    now = datetime.datetime.now(datetime.timezone.utc)
    early = issue(ca, key, not_before=now + datetime.timedelta(days=1), not_after=now + datetime.timedelta(days=30))

    with pytest.raises(CertificateNotYetValid) as raised:
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, early, ca.chain_pem(),
                                      new_credential=personal())

    assert raised.value.code == "certificate_not_yet_valid"


async def test_import_untrusted_certificate_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    untrusted = demo_pki.issue_signing_certificate(ca.other_root, key.public_key_der, CERTIFICATE_SUBJECT)
    other_chain = ca.other_root.certificate.public_bytes(Encoding.PEM)

    with pytest.raises(CertificateUntrusted) as raised:
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id,
                                      untrusted.public_bytes(Encoding.PEM), other_chain, new_credential=personal())

    assert raised.value.code == "certificate_untrusted"


async def test_import_without_chain_rejected_as_untrusted(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)

    with pytest.raises(CertificateUntrusted):
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, issue(ca, key), None,
                                      new_credential=personal())


async def test_import_ca_certificate_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    certificate = issue_with_extensions(ca, key, is_ca=True, key_usage=key_usage(digital_signature=True,
                                                                                 key_cert_sign=True))

    with pytest.raises(CertificateKeyUsage) as raised:
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, certificate, ca.chain_pem(),
                                      new_credential=personal())

    assert raised.value.params["found"] == "basicConstraints cA=TRUE"


async def test_import_encipherment_certificate_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx, "RSA", 2048)
    certificate = issue_with_extensions(ca, key, is_ca=False, key_usage=key_usage(key_encipherment=True))

    with pytest.raises(CertificateKeyUsage) as raised:
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, certificate, ca.chain_pem(),
                                      new_credential=personal())

    assert raised.value.code == "certificate_key_usage"
    assert raised.value.params["found"] == "keyUsage keyEncipherment"


async def test_import_for_active_key_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key, _ = await imported(ctx, ca)

    with pytest.raises(KeyStateInvalid) as raised:
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, issue(ca, key), ca.chain_pem(),
                                      new_credential=personal())

    assert raised.value.code == "key_state_invalid"
    assert raised.value.params["state"] == keys.ACTIVE


async def test_import_garbage_rejected(ctx: CoreContext) -> None:
    key = await generated(ctx)

    with pytest.raises(CertificateInvalid) as raised:
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, b"not a certificate", None,
                                      new_credential=personal())

    assert raised.value.params["field"] == "certificate"


async def test_import_malformed_extension_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key = await generated(ctx)
    now = datetime.datetime.now(datetime.timezone.utc)
    # A keyUsage extension whose value is an ASN.1 NULL instead of a BIT STRING.
    malformed_usage = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.15"), b"\x05\x00")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(CERTIFICATE_SUBJECT.to_name())
        .issuer_name(ca.issuing.certificate.subject)
        .public_key(load_der_public_key(key.public_key_der))  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(malformed_usage, critical=True)
        .sign(ca.issuing.private_key, hashes.SHA256())
    )

    with pytest.raises(CertificateInvalid) as raised:
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id,
                                      certificate.public_bytes(Encoding.PEM), ca.chain_pem(),
                                      new_credential=personal())

    assert raised.value.params["field"] == "certificate"


@pytest.mark.parametrize(("changes", "error"), [
    ({"owner_official_id": OFFICER_B}, CredentialOfficialRoleMissing),
    ({"owner_official_id": "off-nobody"}, CredentialOfficialNotFound),
    ({"approver_official_id": SEAL_HOLDER}, CredentialApproverNotOwner),
    ({"kind": "seal", "owner_official_id": None, "approver_official_id": OFFICIAL}, CredentialOfficialRoleMissing),
    ({"kind": "seal", "approver_official_id": SEAL_HOLDER}, CredentialOwnerNotAllowed),
    ({"id": "Cred Hằng"}, CredentialIdInvalid),
])
async def test_import_invalid_new_credential_rejected(ctx: CoreContext, ca: Authorities, changes: dict[str, Any],
                                                      error: type[Exception]) -> None:
    key = await generated(ctx)

    with pytest.raises(error):
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, issue(ca, key), ca.chain_pem(),
                                      new_credential=personal(**changes))

    assert (await stored_key(ctx, key)).state == keys.GENERATED


@pytest.mark.parametrize(("changes", "field"), [
    ({"id": 7}, "id"),
    ({"display_name": None}, "display_name"),
    ({"owner_official_id": ["off-test-hang"]}, "owner_official_id"),
])
def test_new_credential_wrong_type_rejected(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        personal(**changes)

    assert raised.value.code == "field_invalid"
    assert raised.value.params["field"] == field


async def test_import_existing_credential_id_rejected(ctx: CoreContext, ca: Authorities) -> None:
    _, credential = await imported(ctx, ca)
    key = await generated(ctx)

    with pytest.raises(CredentialExists):
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, issue(ca, key), ca.chain_pem(),
                                      new_credential=personal(credential.id))


@pytest.mark.parametrize("both", [True, False])
async def test_import_needs_one_target(ctx: CoreContext, ca: Authorities, both: bool) -> None:
    key = await generated(ctx)

    with pytest.raises(ImportTargetInvalid):
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, issue(ca, key), ca.chain_pem(),
                                      new_credential=personal() if both else None,
                                      rotate_credential_id="cred-any" if both else None)


# Enabling and disabling


async def test_disable_credential(ctx: CoreContext, ca: Authorities) -> None:
    key, credential = await imported(ctx, ca)

    disabled = await keys.set_credential_enabled(ctx, await person(ctx, OFFICER_B), credential.id, False)

    record = (await audit_records(ctx, key))[-1]
    assert disabled.status == "disabled"
    assert record.action == "credential_disabled"
    assert record.actor_id == OFFICER_B


async def test_disabled_credential_rejected_for_signing(ctx: CoreContext, ca: Authorities) -> None:
    _, credential = await imported(ctx, ca)
    disabled = await keys.set_credential_enabled(ctx, await person(ctx, OFFICER_A), credential.id, False)

    with pytest.raises(CredentialDisabled):
        check_credential_usable(disabled, datetime.datetime.now(datetime.timezone.utc))


async def test_enable_credential(ctx: CoreContext, ca: Authorities) -> None:
    key, credential = await imported(ctx, ca)
    officer = await person(ctx, OFFICER_A)
    await keys.set_credential_enabled(ctx, officer, credential.id, False)

    enabled = await keys.set_credential_enabled(ctx, officer, credential.id, True)

    record = (await audit_records(ctx, key))[-1]
    assert enabled.status == "active"
    assert record.action == "credential_enabled"
    check_credential_usable(enabled, datetime.datetime.now(datetime.timezone.utc))


async def test_disable_twice_records_once(ctx: CoreContext, ca: Authorities) -> None:
    key, credential = await imported(ctx, ca)
    officer = await person(ctx, OFFICER_A)

    await keys.set_credential_enabled(ctx, officer, credential.id, False)
    await keys.set_credential_enabled(ctx, officer, credential.id, False)

    actions = [record.action for record in await audit_records(ctx, key)]
    assert actions.count("credential_disabled") == 1


async def test_enable_unknown_credential_rejected(ctx: CoreContext) -> None:
    with pytest.raises(CredentialNotFound):
        await keys.set_credential_enabled(ctx, await person(ctx, OFFICER_A), "cred-does-not-exist", True)


async def test_enable_with_destroyed_key_rejected(ctx: CoreContext, ca: Authorities) -> None:
    key, credential = await imported(ctx, ca)
    await keys.set_credential_enabled(ctx, await person(ctx, OFFICER_A), credential.id, False)
    await keys.destroy_key(ctx, OFFICER_A, await person(ctx, OFFICER_B), key.id)

    with pytest.raises(KeyStateInvalid):
        await keys.set_credential_enabled(ctx, await person(ctx, OFFICER_A), credential.id, True)

    assert (await stored_credential(ctx, credential.id)).status == "disabled"  # type: ignore[union-attr]


# Rotation


async def test_rotation_generates_same_kind_of_key(ctx: CoreContext, ca: Authorities) -> None:
    _, credential = await imported(ctx, ca, "RSA", 2048)

    new_key, _ = await keys.start_rotation(ctx, await person(ctx, OFFICER_A), credential.id)

    assert new_key.state == keys.GENERATED
    assert new_key.key_type == "RSA"
    assert new_key.key_size == 2048
    assert new_key.key_id_hex != credential.key_id_hex


async def test_rotation_csr_keeps_certificate_subject(ctx: CoreContext, ca: Authorities, tmp_path: Path) -> None:
    _, credential = await imported(ctx, ca)

    new_key, request = await keys.start_rotation(ctx, await person(ctx, OFFICER_A), credential.id)

    csr_path = tmp_path / "rotation.csr"
    csr_path.write_bytes(request)
    certificate_path = tmp_path / "current.pem"
    certificate_path.write_bytes(x509.load_der_x509_certificate(credential.certificate_der).public_bytes(Encoding.PEM))
    nameopt = ["-nameopt", "utf8,sep_comma_plus"]
    csr_subject = subprocess.run(["openssl", "req", "-in", str(csr_path), "-verify", "-noout", "-subject", *nameopt],
                                 capture_output=True, text=True)
    certificate_subject = subprocess.run(["openssl", "x509", "-in", str(certificate_path), "-noout", "-subject",
                                          *nameopt], capture_output=True, text=True)
    assert csr_subject.returncode == 0, csr_subject.stderr
    assert csr_subject.stdout == certificate_subject.stdout
    requested_key = x509.load_pem_x509_csr(request).public_key()
    assert requested_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == new_key.public_key_der


async def test_rotation_keeps_current_key_until_import(ctx: CoreContext, ca: Authorities) -> None:
    _, credential = await imported(ctx, ca)

    await keys.start_rotation(ctx, await person(ctx, OFFICER_A), credential.id)

    assert (await stored_credential(ctx, credential.id)).key_id_hex == credential.key_id_hex  # type: ignore[union-attr]


async def test_rotation_import_switches_key(ctx: CoreContext, ca: Authorities, hsm: Hsm) -> None:  # noqa: F811
    old_key, credential = await imported(ctx, ca)
    officer = await person(ctx, OFFICER_A)
    new_key, _ = await keys.start_rotation(ctx, officer, credential.id)
    new_certificate = issue(ca, new_key)

    rotated = await keys.import_certificate(ctx, officer, new_key.id, new_certificate, ca.chain_pem(),
                                            rotate_credential_id=credential.id)

    retired = await stored_key(ctx, old_key)
    assert rotated.id == credential.id
    assert rotated.key_id_hex == new_key.key_id_hex
    assert rotated.certificate_der == x509.load_pem_x509_certificate(new_certificate).public_bytes(Encoding.DER)
    assert (await stored_key(ctx, new_key)).state == keys.ACTIVE
    assert retired.state == keys.RETIRED
    assert retired.certificate_der == credential.certificate_der
    assert retired.cert_serial_hex == credential.cert_serial_hex
    digest = hashlib.sha256(b"after rotation").digest()
    verify_signature(rotated.certificate_der, digest, await sign_with_credential(hsm, rotated, digest))


async def test_rotation_audited(ctx: CoreContext, ca: Authorities) -> None:
    old_key, credential = await imported(ctx, ca)
    officer = await person(ctx, OFFICER_B)
    new_key, _ = await keys.start_rotation(ctx, officer, credential.id)
    await keys.import_certificate(ctx, officer, new_key.id, issue(ca, new_key), ca.chain_pem(),
                                  rotate_credential_id=credential.id)

    records = await audit_records(ctx, new_key)

    assert [record.action for record in records] == ["key_generated", "csr_created", "certificate_imported",
                                                     "key_rotated"]
    assert {record.actor_id for record in records} == {OFFICER_B}
    assert json.loads(records[0].details_json)["rotation_for"] == credential.id
    assert json.loads(records[-1].details_json)["previous_key"] == old_key.id


@pytest.mark.parametrize(("changed", "attribute"), [
    ({"common_name": "Đỗ Văn Khác"}, "CN"),
    ({"user_id": "CCCD:001099099999"}, "UID"),
])
async def test_rotation_to_other_holder_rejected(ctx: CoreContext, ca: Authorities, changed: dict[str, str],
                                                 attribute: str) -> None:
    old_key, credential = await imported(ctx, ca)
    officer = await person(ctx, OFFICER_A)
    new_key, _ = await keys.start_rotation(ctx, officer, credential.id)
    other_holder = replace(CERTIFICATE_SUBJECT, **changed)
    certificate = demo_pki.issue_signing_certificate(ca.issuing, new_key.public_key_der, other_holder)

    with pytest.raises(RotationHolderChanged) as raised:
        await keys.import_certificate(ctx, officer, new_key.id, certificate.public_bytes(Encoding.PEM),
                                      ca.chain_pem(), rotate_credential_id=credential.id)

    assert raised.value.params["attribute"] == attribute
    assert (await stored_credential(ctx, credential.id)).key_id_hex == credential.key_id_hex  # type: ignore[union-attr]
    assert (await stored_key(ctx, old_key)).state == keys.ACTIVE
    assert (await stored_key(ctx, new_key)).state == keys.GENERATED


async def test_rotation_unknown_credential_rejected(ctx: CoreContext) -> None:
    with pytest.raises(CredentialNotFound):
        await keys.start_rotation(ctx, await person(ctx, OFFICER_A), "cred-does-not-exist")

    assert vault_calls(ctx)["generate"] == 0


# Destruction


async def test_key_in_use_not_destroyable(ctx: CoreContext, ca: Authorities) -> None:
    key, credential = await imported(ctx, ca)

    with pytest.raises(KeyInUse) as raised:
        keys.check_destroyable(await stored_key(ctx, key), credential)

    assert raised.value.params == {"key_id": key.id, "credential_id": credential.id}


async def test_destroy_key_in_use_rejected(ctx: CoreContext, ca: Authorities, hsm: Hsm) -> None:  # noqa: F811
    key, _ = await imported(ctx, ca)

    with pytest.raises(KeyInUse):
        await keys.destroy_key(ctx, OFFICER_A, await person(ctx, OFFICER_B), key.id)

    assert hsm.public_key(bytes.fromhex(key.key_id_hex)) == key.public_key_der
    assert (await stored_key(ctx, key)).state == keys.ACTIVE


async def test_destroy_key_of_disabled_credential(ctx: CoreContext, ca: Authorities, hsm: Hsm) -> None:  # noqa: F811
    key, credential = await imported(ctx, ca)
    await keys.set_credential_enabled(ctx, await person(ctx, OFFICER_A), credential.id, False)

    destroyed = await keys.destroy_key(ctx, OFFICER_A, await person(ctx, OFFICER_B), key.id)

    assert destroyed.state == keys.DESTROYED
    assert destroyed.certificate_der == credential.certificate_der
    with pytest.raises(HsmKeyNotFound):
        hsm.public_key(bytes.fromhex(key.key_id_hex))


async def test_destroy_audit_names_both_officers(ctx: CoreContext) -> None:
    key = await generated(ctx)

    await keys.destroy_key(ctx, OFFICER_A, await person(ctx, OFFICER_B), key.id)

    record = (await audit_records(ctx, key))[-1]
    details = json.loads(record.details_json)
    assert record.action == "key_destroyed"
    assert record.actor_id == OFFICER_B
    assert details["requested_by"] == OFFICER_A
    assert details["requested_by_name"] == "Lê Văn Cường"
    assert details["approved_by"] == OFFICER_B
    assert details["approved_by_name"] == "Phạm Thu Hà"
    assert details["hsm_objects_destroyed"] == 2


async def test_destroy_retired_key(ctx: CoreContext, ca: Authorities) -> None:
    old_key, credential = await imported(ctx, ca)
    officer = await person(ctx, OFFICER_A)
    new_key, _ = await keys.start_rotation(ctx, officer, credential.id)
    await keys.import_certificate(ctx, officer, new_key.id, issue(ca, new_key), ca.chain_pem(),
                                  rotate_credential_id=credential.id)

    destroyed = await keys.destroy_key(ctx, OFFICER_B, officer, old_key.id)

    assert destroyed.state == keys.DESTROYED


async def test_destroy_by_requester_rejected(ctx: CoreContext) -> None:
    key = await generated(ctx)

    with pytest.raises(KeyDestroyNeedsSecondOfficer):
        await keys.destroy_key(ctx, OFFICER_A, await person(ctx, OFFICER_A), key.id)

    assert vault_calls(ctx)["destroy"] == 0


async def test_destroy_destroyed_key_rejected(ctx: CoreContext) -> None:
    key = await generated(ctx)
    await keys.destroy_key(ctx, OFFICER_A, await person(ctx, OFFICER_B), key.id)

    with pytest.raises(KeyStateInvalid) as raised:
        await keys.destroy_key(ctx, OFFICER_A, await person(ctx, OFFICER_B), key.id)

    assert raised.value.params["state"] == keys.DESTROYED


async def test_destroy_needs_security_officer(ctx: CoreContext) -> None:
    key = await generated(ctx)

    with pytest.raises(RoleRequired):
        await keys.destroy_key(ctx, OFFICER_A, await person(ctx, AUDITOR), key.id)


# Four-eyes changes


async def test_lapsed_change_stored_as_expired(ctx: CoreContext) -> None:
    key = await generated(ctx)
    change = await request_key_destruction(ctx, await person(ctx, OFFICER_A), key.id)
    after_expiry = replace(ctx, clock=lambda: change.expires_at + datetime.timedelta(seconds=1))

    with pytest.raises(ChangeNotPending) as raised:
        await approve_change(after_expiry, await person(ctx, OFFICER_B), change.id)

    async with ctx.store.transaction() as tx:
        stored = await tx.admin_change(change.id)
    assert raised.value.params["state"] == "expired"
    assert stored is not None
    assert stored.state == "expired"
    assert (await stored_key(ctx, key)).state == keys.GENERATED
    assert vault_calls(ctx)["destroy"] == 0


async def test_concurrent_approvals_destroy_once(ctx: CoreContext) -> None:
    key = await generated(ctx)
    change = await request_key_destruction(ctx, await person(ctx, OFFICER_A), key.id)
    approver = await person(ctx, OFFICER_B)

    outcomes = await asyncio.gather(approve_change(ctx, approver, change.id), approve_change(ctx, approver, change.id),
                                    return_exceptions=True)

    async with ctx.store.transaction() as tx:
        stored = await tx.admin_change(change.id)
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["AdminChange", "ChangeNotPending"]
    assert stored is not None
    assert stored.state == "applied"
    assert stored.decided_by == OFFICER_B
    assert (await stored_key(ctx, key)).state == keys.DESTROYED
    assert vault_calls(ctx)["destroy"] == 1


def policy_documents(description: str) -> list[tuple[str, str]]:
    """A valid policy set that governs no key, so it needs no credential in the store."""
    return [("province.yaml", f"description: {description}\nkeys: []\n")]


async def stored_change(ctx: CoreContext, change_id: str) -> AdminChange:
    async with ctx.store.transaction() as tx:
        found = await tx.admin_change(change_id)
    assert found is not None
    return found


async def policy_number(ctx: CoreContext) -> int:
    async with ctx.store.transaction() as tx:
        return await tx.current_policy_number() or 0


async def change_audit(ctx: CoreContext, change_id: str, action: str) -> dict[str, Any]:
    """Return the details of the last audit record ``action`` of the change."""
    async with ctx.store.transaction() as tx:
        records = [json.loads(record.details_json) for record in await tx.audit_records()
                   if record.action == action]
    matching = [details for details in records if details.get("change_id") == change_id]
    assert matching, f"no {action} record for {change_id}"
    return matching[-1]


async def enrolled_application(ctx: CoreContext) -> str:
    application_id = f"app-test-{secrets.token_hex(4)}"
    async with ctx.store.transaction() as tx:
        await tx.insert_application(id=application_id, name="Hệ thống một cửa thử nghiệm", agency=AGENCY,
                                    api_key_sha256=secrets.token_hex(32),
                                    created_at=datetime.datetime.now(datetime.timezone.utc))
    return application_id


def patched(tmp_path: Path, old_text: str, diff: str) -> str:
    """Apply a unified diff to ``old_text`` with GNU patch and return the result."""
    original, patch_file, output = tmp_path / "original.yaml", tmp_path / "change.diff", tmp_path / "patched.yaml"
    original.write_bytes(old_text.encode())
    patch_file.write_bytes(diff.encode())
    result = subprocess.run(["patch", "--batch", "--silent", "-o", str(output), str(original), str(patch_file)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return output.read_bytes().decode()


async def test_outdated_policy_change_fails(ctx: CoreContext) -> None:
    requester, approver = await person(ctx, OFFICER_A), await person(ctx, OFFICER_B)
    first = await request_policy_change(ctx, requester, policy_documents("Bản A"))
    second = await request_policy_change(ctx, requester, policy_documents("Bản B"))
    await approve_change(ctx, approver, first.id)
    in_force = await policy_number(ctx)

    with pytest.raises(ChangeOutdated) as raised:
        await approve_change(ctx, approver, second.id)

    stored = await stored_change(ctx, second.id)
    assert raised.value.params == {"change_id": second.id, "base_version": f"v{in_force - 1}",
                                   "current_version": f"v{in_force}"}
    assert stored.state == "failed"
    assert stored.decision_note == f"outdated: based on v{in_force - 1}, v{in_force} in force"
    assert stored.decided_by == OFFICER_B
    assert await policy_number(ctx) == in_force


async def test_outdated_policy_change_audited(ctx: CoreContext) -> None:
    requester, approver = await person(ctx, OFFICER_A), await person(ctx, OFFICER_B)
    first = await request_policy_change(ctx, requester, policy_documents("Bản C"))
    second = await request_policy_change(ctx, requester, policy_documents("Bản D"))
    await approve_change(ctx, approver, first.id)

    with pytest.raises(ChangeOutdated):
        await approve_change(ctx, approver, second.id)

    details = await change_audit(ctx, second.id, "admin_change_failed")
    assert details["reason"] == "change_outdated"
    assert details["requested_by"] == OFFICER_A
    assert details["requested_by_name"] == "Lê Văn Cường"
    assert details["approved_by"] == OFFICER_B
    assert details["approved_by_name"] == "Phạm Thu Hà"
    assert details["version_in_force"] == details["base_version"] + 1


async def test_failed_outdated_change_not_approvable(ctx: CoreContext) -> None:
    requester, approver = await person(ctx, OFFICER_A), await person(ctx, OFFICER_B)
    first = await request_policy_change(ctx, requester, policy_documents("Bản E"))
    second = await request_policy_change(ctx, requester, policy_documents("Bản G"))
    await approve_change(ctx, approver, first.id)
    with pytest.raises(ChangeOutdated):
        await approve_change(ctx, approver, second.id)

    with pytest.raises(ChangeNotPending) as raised:
        await approve_change(ctx, approver, second.id)

    assert raised.value.params["state"] == "failed"


async def test_policy_change_request_audit_names_requester(ctx: CoreContext) -> None:
    in_force = await policy_number(ctx)
    change = await request_policy_change(ctx, await person(ctx, OFFICER_A), policy_documents("Bản H"))

    details = await change_audit(ctx, change.id, "policy_change_requested")

    assert details["requested_by"] == OFFICER_A
    assert details["requested_by_name"] == "Lê Văn Cường"
    assert details["base_version"] == in_force
    assert details["files"] == ["province.yaml"]
    assert details["credentials"] == []
    assert len(details["digest"]) == 64


async def test_key_destruction_request_audit_names_requester(ctx: CoreContext) -> None:
    key = await generated(ctx)
    change = await request_key_destruction(ctx, await person(ctx, OFFICER_A), key.id)

    details = await change_audit(ctx, change.id, "key_destruction_requested")

    assert details["requested_by"] == OFFICER_A
    assert details["requested_by_name"] == "Lê Văn Cường"
    assert details["key_id"] == key.id


async def test_change_details_diff_patches_version_in_force(ctx: CoreContext, tmp_path: Path) -> None:
    requester, approver = await person(ctx, OFFICER_A), await person(ctx, OFFICER_B)
    old_a, old_b = "description: Tệp A\nkeys: []\n", "keys: []\n"
    base = await request_policy_change(ctx, requester, [("a.yaml", old_a), ("b.yaml", old_b)])
    await approve_change(ctx, approver, base.id)
    in_force = await policy_number(ctx)
    # Windows line ends and no final newline: both must survive into the diff.
    new_a, new_c = "description: Tệp A, đã sửa\r\nkeys: []", "keys: []\n"
    change = await request_policy_change(ctx, requester, [("a.yaml", new_a), ("c.yaml", new_c)])

    details = await describe_change(ctx, approver, change.id)

    assert details.policy is not None
    diffs = {diff.name: diff for diff in details.policy.diffs}
    assert details.requested_by_name == "Lê Văn Cường"
    assert details.policy.base_version == in_force
    assert details.policy.version_in_force == in_force
    assert not details.policy.outdated
    assert {name: diff.status for name, diff in diffs.items()} == {"a.yaml": "changed", "c.yaml": "added",
                                                                   "b.yaml": "removed"}
    assert patched(tmp_path, old_a, diffs["a.yaml"].diff) == new_a
    assert patched(tmp_path, "", diffs["c.yaml"].diff) == new_c
    assert patched(tmp_path, old_b, diffs["b.yaml"].diff) == ""


async def test_change_details_sha256_matches_sha256sum(ctx: CoreContext, tmp_path: Path) -> None:
    documents = [("a.yaml", "description: Chính sách của Ủy ban\r\nkeys: []"), ("b.yaml", "keys: []\n")]
    change = await request_policy_change(ctx, await person(ctx, OFFICER_A), documents)

    details = await describe_change(ctx, await person(ctx, OFFICER_B), change.id)

    for name, text in documents:
        (tmp_path / name).write_bytes(text.encode())
    listing = subprocess.run(["sha256sum", "a.yaml", "b.yaml"], cwd=tmp_path, capture_output=True, text=True,
                             check=True, timeout=30).stdout
    assert details.policy is not None
    assert [document.text for document in details.policy.documents] == [text for _, text in documents]
    assert "".join(f"{d.sha256}  {d.name}\n" for d in details.policy.documents) == listing


async def test_change_details_show_outdated(ctx: CoreContext) -> None:
    requester, approver = await person(ctx, OFFICER_A), await person(ctx, OFFICER_B)
    first = await request_policy_change(ctx, requester, policy_documents("Bản I"))
    second = await request_policy_change(ctx, requester, policy_documents("Bản K"))
    await approve_change(ctx, approver, first.id)

    details = await describe_change(ctx, approver, second.id)

    assert details.policy is not None
    assert details.policy.outdated
    assert details.policy.version_in_force == details.policy.base_version + 1  # type: ignore[operator]


async def test_change_details_of_key_destruction(ctx: CoreContext, ca: Authorities, hsm: Hsm) -> None:  # noqa: F811
    key, credential = await imported(ctx, ca)
    await keys.set_credential_enabled(ctx, await person(ctx, OFFICER_A), credential.id, False)
    change = await request_key_destruction(ctx, await person(ctx, OFFICER_A), key.id)

    details = await describe_change(ctx, await person(ctx, OFFICER_B), change.id)

    certificate = x509.load_der_x509_certificate(credential.certificate_der)
    assert details.policy is None
    assert details.key is not None
    assert details.key == KeyDestructionDetails(
        key_id=key.id, key_label=key.key_label, key_id_hex=key.key_id_hex, state=keys.ACTIVE,
        credential_id=credential.id, cert_serial_hex=details.key.cert_serial_hex)
    assert int(details.key.cert_serial_hex or "", 16) == certificate.serial_number
    assert hsm.public_key(bytes.fromhex(details.key.key_id_hex)) == key.public_key_der


async def test_change_details_need_security_officer(ctx: CoreContext) -> None:
    change = await request_policy_change(ctx, await person(ctx, OFFICER_A), policy_documents("Bản L"))

    with pytest.raises(RoleRequired):
        await describe_change(ctx, await person(ctx, AUDITOR), change.id)


@pytest.mark.parametrize("name", [
    "../province.yaml", "so/province.yaml", " province.yaml", "province\x1b[31m.yaml", "province.yaml\n",
    "province.yml", ".province.yaml", "-province.yaml", "tỉnh.yaml", "p" * 101 + ".yaml", "",
])
async def test_policy_file_name_rejected(ctx: CoreContext, name: str) -> None:
    officer = await person(ctx, OFFICER_A)
    before = len(await list_changes(ctx, officer))

    with pytest.raises(InvalidInput) as raised:
        await request_policy_change(ctx, officer, [("ok.yaml", "keys: []\n"), (name, "keys: []\n")])

    assert raised.value.code == "field_invalid"
    assert raised.value.params["field"] == "documents[1].name"
    assert repr(name) in raised.value.params["reason"]
    assert len(await list_changes(ctx, officer)) == before


@pytest.mark.parametrize("name", ["province.yaml", "A_b-c.2026.yaml", "p" * 100 + ".yaml", "0.yaml"])
async def test_policy_file_name_accepted(ctx: CoreContext, name: str) -> None:
    parsed = await check_policy_change(ctx, await person(ctx, OFFICER_A), [(name, "keys: []\n")])

    assert parsed.credential_ids() == set()


async def test_policy_check_rejects_bad_name(ctx: CoreContext) -> None:
    with pytest.raises(InvalidInput) as raised:
        await check_policy_change(ctx, await person(ctx, OFFICER_A), [("a/b.yaml", "keys: []\n")])

    assert raised.value.code == "field_invalid"
    assert "'a/b.yaml'" in raised.value.params["reason"]


def test_policy_set_size_limit_boundary() -> None:
    check_policy_input([("a.yaml", "#" * (MAX_POLICY_SET_BYTES - 10)), ("b.yaml", "#" * 10)])

    with pytest.raises(PolicyTooLarge) as raised:
        check_policy_input([("a.yaml", "#" * (MAX_POLICY_SET_BYTES - 10)), ("b.yaml", "#" * 11)])

    assert MAX_POLICY_SET_BYTES == 1024 * 1024
    assert raised.value.params == {"size": MAX_POLICY_SET_BYTES + 1, "limit": MAX_POLICY_SET_BYTES}


async def test_policy_set_over_limit_in_bytes_rejected(ctx: CoreContext) -> None:
    # "ư" is two bytes in UTF-8, so these texts are under the limit in characters and over it in bytes.
    text = "keys: []\n# " + "ư" * (MAX_POLICY_SET_BYTES // 4)
    documents = [("a.yaml", text), ("b.yaml", text)]
    officer = await person(ctx, OFFICER_A)
    before = len(await list_changes(ctx, officer))

    with pytest.raises(PolicyTooLarge) as raised:
        await request_policy_change(ctx, officer, documents)

    assert sum(len(text) for _, text in documents) < MAX_POLICY_SET_BYTES
    assert raised.value.code == "policy_too_large"
    assert raised.value.params["size"] == 2 * len(text.encode("utf-8"))
    assert len(await list_changes(ctx, officer)) == before


async def test_policy_parse_leaves_event_loop_free(ctx: CoreContext, ca: Authorities) -> None:
    _key, credential = await imported(ctx, ca)
    application_id = await enrolled_application(ctx)
    rules = "".join(f"      - id: rule-{index}\n        applications: [{application_id}]\n"
                    f"        document_types: [BN-TIEPNHAN, BN-KETQUA]\n" for index in range(1500))
    text = (f"keys:\n  - credential: {credential.id}\n    owner: {{officials: [{OFFICIAL}]}}\n"
            f"    rules:\n{rules}")
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    async def tick() -> None:
        for _ in range(6000):  # at most a minute
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    started = loop.time()
    change = await request_policy_change(ctx, await person(ctx, OFFICER_A), [("big.yaml", text)])
    await approve_change(ctx, await person(ctx, OFFICER_B), change.id)
    elapsed = loop.time() - started
    ticker.cancel()

    longest_gap = max(later - earlier for earlier, later in zip(ticks, ticks[1:]))
    assert (await stored_change(ctx, change.id)).state == "applied"
    assert elapsed > 1.0, "the policy parsed too fast to show a blocked event loop"
    # Parsed on the event loop, the policy would stall it for most of the elapsed time; a loaded machine adds
    # shorter stalls of its own.
    assert longest_gap < elapsed / 2, f"the event loop stalled for {longest_gap:.2f} s of {elapsed:.2f} s"


async def test_second_key_destruction_request_rejected(ctx: CoreContext) -> None:
    key = await generated(ctx)
    officer = await person(ctx, OFFICER_A)
    first = await request_key_destruction(ctx, officer, key.id)

    with pytest.raises(ChangePendingExists) as raised:
        await request_key_destruction(ctx, await person(ctx, OFFICER_B), key.key_id_hex)

    assert raised.value.code == "change_pending_exists"
    assert raised.value.params == {"key_id": key.id, "change_id": first.id, "state": "pending"}


async def test_key_destruction_request_after_rejection(ctx: CoreContext) -> None:
    key = await generated(ctx)
    officer = await person(ctx, OFFICER_A)
    first = await request_key_destruction(ctx, officer, key.id)
    await reject_change(ctx, await person(ctx, OFFICER_B), first.id, "Chưa đủ hồ sơ")

    second = await request_key_destruction(ctx, officer, key.id)

    assert second.state == "pending"


@pytest.mark.parametrize("note", ["", "   ", "\n\t"])
async def test_reject_blank_note_refused(ctx: CoreContext, note: str) -> None:
    change = await request_policy_change(ctx, await person(ctx, OFFICER_A), policy_documents("Bản M"))

    with pytest.raises(InvalidInput) as raised:
        await reject_change(ctx, await person(ctx, OFFICER_B), change.id, note)

    assert raised.value.code == "field_missing"
    assert raised.value.params == {"field": "note"}
    assert (await stored_change(ctx, change.id)).state == "pending"


async def test_list_changes_unknown_state_rejected(ctx: CoreContext) -> None:
    with pytest.raises(InvalidInput) as raised:
        await list_changes(ctx, await person(ctx, OFFICER_A), ["pending", "bogus"])

    assert raised.value.code == "field_invalid"
    assert raised.value.params["field"] == "state"


@pytest.mark.parametrize("holder", [
    {"common_name": "Đỗ Văn Khác"},
    {"common_name": "Sở Tư pháp tỉnh Thử Nghiệm", "organization": "Sở Tư pháp tỉnh Thử Nghiệm"},
])
async def test_import_certificate_of_other_holder_rejected(ctx: CoreContext, ca: Authorities,
                                                           holder: dict[str, str]) -> None:
    key = await generated(ctx)
    other = demo_pki.issue_signing_certificate(ca.issuing, key.public_key_der, replace(CERTIFICATE_SUBJECT, **holder))

    with pytest.raises(CertificateHolderMismatch) as raised:
        await keys.import_certificate(ctx, await person(ctx, OFFICER_A), key.id, other.public_bytes(Encoding.PEM),
                                      ca.chain_pem(), new_credential=personal())

    assert raised.value.params["holder"] == holder["common_name"]
    assert (await stored_key(ctx, key)).state == keys.GENERATED
