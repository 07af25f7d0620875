"""Commands of ``signserver demo-ca``: revoke a credential's certificate, reissue it with chosen dates, or
issue a certificate for a CSR.

Demo only. They act on the demo CA under ``SIGNSERVER_HOME/pki/``, so tests
and demonstrations can see a revoked or an expired signer refused. A
revocation goes to ``revoked.json``, which the running service reads on each
OCSP or CRL request. A reissued certificate replaces the credential's
certificate in the store, for the same HSM key. A certificate issued for a
CSR is only written to a file, for ``signserver keys import``. All three are
audit records.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from signserver import demo_pki
from signserver.config import Settings
from signserver.core.audit import append_audit
from signserver.demo_ca import REVOCATION_REASONS, DemoCa, RevokedCertificate, has_demo_ca
from signserver.store.db import Store
from signserver.store.records import Credential

__all__ = ["DemoCaCommandError", "RevocationResult", "IssuedCertificate", "revoke_credential", "reissue_credential",
           "issue_for_csr"]

ACTOR_ID = "signserver-demo-ca"


class DemoCaCommandError(Exception):
    """A command cannot run. ``vietnamese`` and ``english`` are the reason, for the command line."""

    def __init__(self, vietnamese: str, english: str) -> None:
        self.vietnamese = vietnamese
        self.english = english
        super().__init__(english)


@dataclass(frozen=True)
class RevocationResult:
    credential_id: str
    entry: RevokedCertificate
    # False when the certificate was already revoked, in which case the first entry is kept.
    newly_revoked: bool


async def revoke_credential(settings: Settings, credential_id: str, reason: str, *,
                            actor_id: str = ACTOR_ID) -> RevocationResult:
    """Revoke the current certificate of ``credential_id`` at the demo issuing CA."""
    if reason not in REVOCATION_REASONS:
        raise DemoCaCommandError(
            f"Lý do thu hồi \"{reason}\" không hợp lệ; hãy dùng một trong: {', '.join(REVOCATION_REASONS)}.",
            f"Invalid revocation reason \"{reason}\"; use one of: {', '.join(REVOCATION_REASONS)}.",
        )
    ca = _load_demo_ca(settings)
    store = Store(settings.database_url)
    try:
        async with store.transaction() as tx:
            credential = _require(await tx.credential(credential_id), credential_id)
            certificate = _issued_certificate(ca, credential)
            entry, newly_revoked = ca.revoke(certificate, reason)
            if newly_revoked:
                await append_audit(
                    tx, action="demo_certificate_revoked", actor_type=_actor_type(actor_id), actor_id=actor_id,
                    key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex,
                    details={"credential_id": credential.id, "reason": reason,
                             "revoked_at": entry.revoked_at.isoformat()},
                )
    finally:
        await store.close()
    return RevocationResult(credential_id=credential_id, entry=entry, newly_revoked=newly_revoked)


async def reissue_credential(settings: Settings, credential_id: str, *, actor_id: str = ACTOR_ID,
                             not_before: datetime.datetime | None = None,
                             not_after: datetime.datetime | None = None) -> x509.Certificate:
    """Issue a new certificate for the key of ``credential_id`` and make it the credential's certificate.

    Without dates the certificate is valid from now for two years. With only
    ``not_after`` in the past, it starts a year before, which gives an expired
    certificate. The old certificate is not revoked.
    """
    ca = _load_demo_ca(settings)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    if not_after is not None and not_before is None:
        not_before = min(now - demo_pki.BACKDATE, not_after - datetime.timedelta(days=365))
    if not_before is not None and not_after is not None and not_after <= not_before:
        raise DemoCaCommandError(
            f"--not-after ({not_after.isoformat()}) phải sau --not-before ({not_before.isoformat()}).",
            f"--not-after ({not_after.isoformat()}) must be later than --not-before ({not_before.isoformat()}).",
        )

    store = Store(settings.database_url)
    try:
        async with store.transaction() as tx:
            credential = _require(await tx.credential(credential_id), credential_id)
            old_certificate = _issued_certificate(ca, credential)
            certificate = demo_pki.reissue_certificate(
                ca.issuing, old_certificate, revocation_urls=ca.urls.for_end_entity(),
                not_before=not_before, not_after=not_after,
            )
            ca.record_issued(certificate)
            serial_hex = format(certificate.serial_number, "x")
            await tx.update_credential(
                credential.id, certificate_der=certificate.public_bytes(serialization.Encoding.DER),
                cert_serial_hex=serial_hex,
            )
            await append_audit(
                tx, action="demo_certificate_reissued", actor_type=_actor_type(actor_id), actor_id=actor_id,
                key_id_hex=credential.key_id_hex, cert_serial_hex=serial_hex,
                details={"credential_id": credential.id, "previous_serial_hex": credential.cert_serial_hex,
                         "not_before": certificate.not_valid_before_utc.isoformat(),
                         "not_after": certificate.not_valid_after_utc.isoformat()},
            )
        demo_pki.write_pem(settings.pki_dir / f"{credential.id}.pem", certificate)
    finally:
        await store.close()
    return certificate


# The UID prefixes that the subject of each kind of certificate must contain, as a CA's registration checks:
# a personal identity number for an official, the agency's tax code for a seal.
IDENTIFIER_PREFIXES_BY_KIND = {"personal": ("CCCD:", "CMND:", "HC:"), "seal": ("MST:",)}

# Maximum validity in days of a certificate the demo CA issues for a CSR.
MAX_ISSUE_DAYS = 3650


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate
    # The issuing CA and the root, issuer first, as ``keys import --chain`` reads them.
    chain: tuple[x509.Certificate, ...]


async def issue_for_csr(settings: Settings, csr_data: bytes, kind: str, days: int = 730, *,
                        actor_id: str = ACTOR_ID) -> IssuedCertificate:
    """Issue a document signing certificate for the key and subject of a PKCS#10 CSR (PEM or DER).

    The CSR's signature must verify, and its subject must contain a UID with
    an identity number for ``kind`` "personal" (CCCD, CMND or HC) or a tax code
    for "seal" (MST). The profile is that of ``demo_pki.issue_signing_certificate``
    for both kinds, valid from now for ``days``, and at most until the
    issuing CA expires.
    """
    if kind not in IDENTIFIER_PREFIXES_BY_KIND:
        raise DemoCaCommandError(f"Loại chứng thư \"{kind}\" không hợp lệ; hãy dùng personal hoặc seal.",
                                 f"Invalid certificate kind \"{kind}\"; use personal or seal.")
    if not 1 <= days <= MAX_ISSUE_DAYS:
        raise DemoCaCommandError(f"Số ngày hiệu lực {days} không hợp lệ; hãy dùng từ 1 đến {MAX_ISSUE_DAYS}.",
                                 f"Invalid validity of {days} days; use 1 to {MAX_ISSUE_DAYS}.")
    request = _load_csr(csr_data)
    _check_csr_identifiers(request, kind)

    ca = _load_demo_ca(settings)
    public_key_der = request.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    certificate = demo_pki.issue_signing_certificate(
        ca.issuing, public_key_der, _RequestedSubject(request.subject), validity_days=days,
        revocation_urls=ca.urls.for_end_entity(),
    )
    ca.record_issued(certificate)

    store = Store(settings.database_url)
    try:
        async with store.transaction() as tx:
            await append_audit(
                tx, action="demo_certificate_issued", actor_type=_actor_type(actor_id), actor_id=actor_id,
                cert_serial_hex=format(certificate.serial_number, "x"),
                details={"kind": kind, "subject": certificate.subject.rfc4514_string(),
                         "not_before": certificate.not_valid_before_utc.isoformat(),
                         "not_after": certificate.not_valid_after_utc.isoformat()},
            )
    finally:
        await store.close()
    return IssuedCertificate(certificate=certificate, chain=(ca.issuing.certificate, ca.root.certificate))


class _RequestedSubject:
    """Subject name of a CSR, passed where ``demo_pki.issue_signing_certificate`` expects a ``SubjectSpec``.

    The CA copies the requested name as it is, attribute order and string types included.
    """

    def __init__(self, name: x509.Name) -> None:
        self._name = name

    def to_name(self) -> x509.Name:
        return self._name


def _actor_type(actor_id: str) -> str:
    """Return the audit actor type: the signed-in security officer, or the demo CA itself when none is given."""
    return "system" if actor_id == ACTOR_ID else "security_officer"


def _load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        request = (x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data))
    except ValueError as exc:
        raise DemoCaCommandError(f"Tệp không phải là CSR PKCS#10 dạng PEM hoặc DER: {exc}",
                                 f"The file is not a PKCS#10 CSR in PEM or DER: {exc}") from None
    if not request.is_signature_valid:
        raise DemoCaCommandError("Chữ ký của CSR không hợp lệ: CSR không do khóa bí mật của chính nó ký.",
                                 "The CSR signature is invalid: it was not signed by its own private key.")
    return request


def _check_csr_identifiers(request: x509.CertificateSigningRequest, kind: str) -> None:
    prefixes = IDENTIFIER_PREFIXES_BY_KIND[kind]
    values = [str(attribute.value) for attribute in request.subject.get_attributes_for_oid(NameOID.USER_ID)]
    if not any(value.startswith(prefixes) for value in values):
        expected = ", ".join(prefixes)
        raise DemoCaCommandError(
            f"Chủ thể của CSR không có UID bắt đầu bằng {expected}, mà chứng thư số loại {kind} cần.",
            f"The CSR subject has no UID starting with {expected}, which a {kind} certificate needs.",
        )


def _load_demo_ca(settings: Settings) -> DemoCa:
    if not has_demo_ca(settings.pki_dir):
        raise DemoCaCommandError(
            f"Không có CA thử nghiệm trong {settings.pki_dir}; hãy chạy `signserver init` với SIGNSERVER_HOME này.",
            f"No demo CA in {settings.pki_dir}; run `signserver init` with this SIGNSERVER_HOME.",
        )
    return DemoCa.load(settings.pki_dir)


def _require(credential: Credential | None, credential_id: str) -> Credential:
    if credential is None:
        raise DemoCaCommandError(f"Không tìm thấy chứng thư số \"{credential_id}\" trong cơ sở dữ liệu.",
                                 f"Credential \"{credential_id}\" not found in the database.")
    return credential


def _issued_certificate(ca: DemoCa, credential: Credential) -> x509.Certificate:
    certificate = x509.load_der_x509_certificate(credential.certificate_der)
    if certificate.issuer != ca.issuing.certificate.subject:
        raise DemoCaCommandError(
            f"Chứng thư số của \"{credential.id}\" không do CA thử nghiệm cấp, nên lệnh này không áp dụng được.",
            f"The certificate of \"{credential.id}\" was not issued by the demo CA, so this command does not apply.",
        )
    return certificate
