"""The security officer's key lifecycle: generate, request a certificate, import it, enable, rotate, destroy.

A key pair is generated inside the HSM (sensitive, non-extractable, found by
a random 16-byte CKA_ID) and inventoried in the ``hsm_keys`` table, so that
listing keys never walks the token. Its states:

- ``generated``: the key exists, a CSR may be made, and no certificate is imported yet;
- ``active``: an imported certificate made it the key of one credential;
- ``retired``: a rotation replaced it, and the row keeps its certificate for validation;
- ``destroyed``: the HSM objects are gone, and the row stays as the record.

Every operation takes the acting officer, checks the role
``security_officer``, and appends an audit record naming them. Destruction
runs only after a second officer approved it (``core.changes``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import NameOID

from signserver.errors import InvalidInput
from signserver.signing.csr import CsrSubject, build_csr, csr_pem
from signserver.store.db import IntegrityError, Transaction
from signserver.store.records import Credential, HsmKey, Official

from .audit import append_audit
from .certificate_checks import CheckedCertificate, check_certificate_for_key
from .context import CoreContext, new_id
from .key_credentials import CREDENTIAL_KINDS, NewCredential, check_new_credential
from .key_errors import (
    CertificateHolderMismatch,
    CredentialKindInvalid,
    CredentialNotFound,
    ImportTargetInvalid,
    KeyDestroyNeedsSecondOfficer,
    KeyInUse,
    KeyLabelInvalid,
    KeyLabelTaken,
    KeyNotFound,
    KeyStateInvalid,
    KeyTypeUnsupported,
    RotationHolderChanged,
)
from .ports import KeyVault
from .roles import SECURITY_OFFICER, require_role

__all__ = [
    "GENERATED",
    "ACTIVE",
    "RETIRED",
    "DESTROYED",
    "KEY_STATES",
    "KEY_SIZES",
    "CsrSubject",
    "NewCredential",
    "KeyNotFound",
    "find_key",
    "generate_key",
    "list_keys",
    "create_csr",
    "import_certificate",
    "set_credential_enabled",
    "start_rotation",
    "destroy_key",
    "check_destroyable",
]

log = structlog.get_logger(__name__)

GENERATED, ACTIVE, RETIRED, DESTROYED = "generated", "active", "retired", "destroyed"
KEY_STATES = (GENERATED, ACTIVE, RETIRED, DESTROYED)

# RSA modulus sizes, and EC curve sizes for P-256 and P-384.
KEY_SIZES = {"RSA": (2048, 3072, 4096), "EC": (256, 384)}

# The CKA_LABEL an officer may choose: it appears in commands and in HSM tools.
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

ACTOR_TYPE = "security_officer"


async def generate_key(ctx: CoreContext, actor: Official, key_type: str, key_size: int,
                       label: str | None = None) -> HsmKey:
    """Generate a key pair in the HSM and inventory it in state ``generated``.

    ``key_type`` is "RSA" (2048, 3072 or 4096 bits) or "EC" (256 or 384,
    for P-256 and P-384). Without ``label`` the CKA_LABEL is derived from the
    type, size and CKA_ID. The key is generated first. If it cannot be
    inventoried, it is destroyed again.
    """
    require_role(actor, SECURITY_OFFICER)
    return await _generate(ctx, actor, key_type, key_size, label, details={})


async def list_keys(ctx: CoreContext, actor: Official, states: Sequence[str] | None = None) -> list[HsmKey]:
    """Return the inventoried keys, oldest first, optionally only those in ``states``, without using the HSM."""
    require_role(actor, SECURITY_OFFICER)
    for state in states or ():
        if state not in KEY_STATES:
            raise InvalidInput("field_invalid", field="state", reason=f"use one of {', '.join(KEY_STATES)}")
    async with ctx.store.transaction() as tx:
        return await tx.hsm_keys(states=list(states) if states else None)


async def create_csr(ctx: CoreContext, actor: Official, key_id: str, subject: CsrSubject) -> bytes:
    """Return a PEM PKCS#10 request for the ``generated`` key ``key_id`` (row id or CKA_ID hex), signed in the HSM."""
    require_role(actor, SECURITY_OFFICER)
    async with ctx.store.transaction() as tx:
        key = await find_key(tx, key_id)
    _require_state(key, GENERATED)
    return await _csr_for(ctx, actor, key, subject.to_name(), {"subject": subject.as_dict()})


async def import_certificate(ctx: CoreContext, actor: Official, key_id: str, certificate_pem: bytes,
                             chain_pem: bytes | None, new_credential: NewCredential | None = None,
                             rotate_credential_id: str | None = None) -> Credential:
    """Make an issued certificate the certificate of the ``generated`` key ``key_id``, and return the credential.

    ``certificate_pem`` is PEM or DER. Chain certificates come from
    ``chain_pem`` or from further PEM blocks after the certificate, and the
    credential stores the validated path to the trust root. The certificate is checked first
    (see ``core.certificate_checks``). Then, in one transaction, either a
    new credential is created from ``new_credential``, or the credential
    ``rotate_credential_id`` switches to this key and its previous key becomes ``retired``.
    """
    require_role(actor, SECURITY_OFFICER)
    if (new_credential is None) == (rotate_credential_id is None):
        raise ImportTargetInvalid()
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        key = await find_key(tx, key_id)
    _require_state(key, GENERATED)
    checked = await check_certificate_for_key(certificate_pem, chain_pem, key.public_key_der, key.id,
                                              ctx.trust_roots, now)

    async with ctx.store.transaction() as tx:
        # Read again under the write lock, because another officer may have imported a certificate meanwhile.
        key = await find_key(tx, key.id, for_update=True)
        _require_state(key, GENERATED)
        certificate_columns = _certificate_columns(key, checked)
        if new_credential is not None:
            credential_id = await _insert_credential(tx, new_credential, certificate_columns, now)
            previous_key = None
        else:
            assert rotate_credential_id is not None
            credential_id, previous_key = await _switch_credential_key(tx, rotate_credential_id, checked,
                                                                       certificate_columns, now)
        await tx.update_hsm_key(key.id, state=ACTIVE, credential_id=credential_id,
                                certificate_der=checked.der, chain_pem=checked.chain_pem(),
                                cert_serial_hex=checked.serial_hex, updated_at=now)
        await _audit(tx, "certificate_imported", actor, key, now, cert_serial_hex=checked.serial_hex, details={
            "credential_id": credential_id,
            "subject": checked.certificate.subject.rfc4514_string(),
            "issuer": checked.certificate.issuer.rfc4514_string(),
            "not_after": checked.certificate.not_valid_after_utc.isoformat(),
            "new_credential": new_credential is not None,
        })
        if previous_key is not None:
            await _audit(tx, "key_rotated", actor, key, now, cert_serial_hex=checked.serial_hex, details={
                "credential_id": credential_id,
                "previous_key": previous_key.id,
                "previous_key_id_hex": previous_key.key_id_hex,
                "previous_cert_serial_hex": previous_key.cert_serial_hex,
            })
        credential = await tx.credential(credential_id)
    assert credential is not None
    log.info("key.certificate_imported", key=key.id, key_id=key.key_id_hex, credential_id=credential_id,
             cert_serial=checked.serial_hex, rotation=previous_key is not None, officer_id=actor.id)
    return credential


async def set_credential_enabled(ctx: CoreContext, actor: Official, credential_id: str, enabled: bool) -> Credential:
    """Enable or disable a personal or seal credential, and return it.

    A credential already in the requested state is returned unchanged, with
    no audit record. A disabled credential signs nothing until it is enabled
    again. Enabling needs the credential's key to be ``active`` in the inventory.
    """
    require_role(actor, SECURITY_OFFICER)
    now = ctx.clock()
    status = "active" if enabled else "disabled"
    async with ctx.store.transaction() as tx:
        credential = await _credential(tx, credential_id)
        if credential.status == status:
            return credential
        key = await tx.hsm_key_by_key_id(credential.key_id_hex)
        if enabled and key is not None and key.state != ACTIVE:
            raise KeyStateInvalid(key_id=key.id, state=key.state, expected=ACTIVE)

        await tx.update_credential(credential.id, status=status)
        await append_audit(
            tx, action="credential_enabled" if enabled else "credential_disabled", actor_type=ACTOR_TYPE,
            actor_id=actor.id, key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex,
            details={"credential_id": credential.id, "previous_status": credential.status}, now=now,
        )
        updated = await tx.credential(credential.id)
    assert updated is not None
    log.info("credential.status_changed", credential_id=credential.id, status=status, officer_id=actor.id)
    return updated


async def start_rotation(ctx: CoreContext, actor: Official, credential_id: str) -> tuple[HsmKey, bytes]:
    """Generate the next key of a credential and a CSR with its current certificate's subject.

    The new key has the type and size of the current one. The rotation
    completes when the new certificate is imported with
    ``import_certificate(rotate_credential_id=credential_id)``. Until then
    the credential keeps signing with its current key.
    """
    require_role(actor, SECURITY_OFFICER)
    async with ctx.store.transaction() as tx:
        credential = await _credential(tx, credential_id)
    subject = asn1_x509.Certificate.load(credential.certificate_der).subject

    details = {"rotation_for": credential.id}
    key = await _generate(ctx, actor, credential.key_type, credential.key_size, None, details=details)
    request = await _csr_for(ctx, actor, key, subject, {**details, "subject": subject.human_friendly})
    return key, request


async def destroy_key(ctx: CoreContext, requester_id: str, approver: Official, key_id: str) -> HsmKey:
    """Destroy the key pair in the HSM and mark the key ``destroyed``, after a second officer approved.

    ``requester_id`` is the officer who requested the destruction and
    ``approver`` the one who approved it, and the audit record names both.
    Raises KeyDestroyNeedsSecondOfficer when they are the same officer, and
    KeyInUse for the active key of an enabled credential (see ``check_destroyable``).
    """
    require_role(approver, SECURITY_OFFICER)
    if approver.id == requester_id:
        raise KeyDestroyNeedsSecondOfficer(officer_id=approver.id)
    vault = _vault(ctx)
    now = ctx.clock()

    # The HSM call runs inside the transaction, so that no import or enable
    # can make the key needed between the check and the destruction.
    # NOTE: if the commit fails after the HSM destroyed the objects, the row
    # keeps its old state, and using the key then fails with key_missing_from_hsm.
    async with ctx.store.transaction() as tx:
        key = await find_key(tx, key_id, for_update=True)
        credential = await tx.credential(key.credential_id) if key.credential_id else None
        check_destroyable(key, credential)
        requester = await tx.official(requester_id)

        destroyed_objects = await vault.destroy(bytes.fromhex(key.key_id_hex))
        await tx.update_hsm_key(key.id, state=DESTROYED, updated_at=now)
        await _audit(tx, "key_destroyed", approver, key, now, cert_serial_hex=key.cert_serial_hex, details={
            "previous_state": key.state,
            "credential_id": key.credential_id,
            "requested_by": requester_id,
            "requested_by_name": requester.full_name if requester else requester_id,
            "approved_by": approver.id,
            "approved_by_name": approver.full_name,
            "hsm_objects_destroyed": destroyed_objects,
        })
        destroyed = await tx.hsm_key(key.id)
    assert destroyed is not None
    if destroyed_objects == 0:
        log.warning("key.destroyed_missing_from_hsm", key=key.id, key_id=key.key_id_hex)
    log.info("key.destroyed", key=key.id, key_id=key.key_id_hex, requested_by=requester_id, approved_by=approver.id)
    return destroyed


def check_destroyable(key: HsmKey, credential: Credential | None) -> None:
    """Raise unless ``key`` may be destroyed: not destroyed already, and not the key of an enabled credential.

    A ``generated`` or ``retired`` key may go, and so may the ``active`` key
    of a disabled credential.
    """
    if key.state == DESTROYED:
        raise KeyStateInvalid(key_id=key.id, state=key.state, expected=", ".join((GENERATED, ACTIVE, RETIRED)))
    if (key.state == ACTIVE and credential is not None and credential.status == "active"
            and credential.key_id_hex == key.key_id_hex):
        raise KeyInUse(key_id=key.id, credential_id=credential.id)


# Steps shared by the operations above


async def _generate(ctx: CoreContext, actor: Official, key_type: str, key_size: int, label: str | None,
                    details: dict[str, Any]) -> HsmKey:
    key_type = (key_type or "").upper()
    if key_size not in KEY_SIZES.get(key_type, ()):
        supported = "; ".join(f"{name} {', '.join(map(str, sizes))}" for name, sizes in KEY_SIZES.items())
        raise KeyTypeUnsupported(key_type=key_type, key_size=key_size, supported=supported)
    vault = _vault(ctx)
    key_id = secrets.token_bytes(16)
    label = _check_label(label) if label is not None else f"{key_type.lower()}{key_size}-{key_id.hex()[:12]}"
    async with ctx.store.transaction() as tx:
        if await _label_in_use(tx, label):
            raise KeyLabelTaken(label=label)

    public_key_der = await vault.generate(key_id, label, key_type, key_size)

    now = ctx.clock()
    row_id = new_id("key")
    try:
        async with ctx.store.transaction() as tx:
            await tx.insert_hsm_key(
                id=row_id, key_id_hex=key_id.hex(), key_label=label, key_type=key_type, key_size=key_size,
                public_key_der=public_key_der, state=GENERATED, credential_id=None, certificate_der=None,
                chain_pem=None, cert_serial_hex=None, created_at=now, created_by=actor.id, updated_at=now,
            )
            key = await tx.hsm_key(row_id)
            assert key is not None
            await _audit(tx, "key_generated", actor, key, now,
                         details={"key_type": key_type, "key_size": key_size, "label": label, **details})
    except BaseException as exc:
        # A key the inventory does not list would be invisible to officers, so it is destroyed again.
        log.warning("key.generation_not_recorded", key_id=key_id.hex(), label=label, error=repr(exc)[:300])
        await vault.destroy(key_id)
        if isinstance(exc, IntegrityError):
            # Another officer took the label between the check and the insert.
            raise KeyLabelTaken(label=label) from None
        raise
    log.info("key.generated", key=row_id, key_id=key_id.hex(), label=label, key_type=key_type, key_size=key_size,
             officer_id=actor.id)
    return key


async def _csr_for(ctx: CoreContext, actor: Official, key: HsmKey, subject: asn1_x509.Name,
                   details: dict[str, Any]) -> bytes:
    vault = _vault(ctx)
    key_id = bytes.fromhex(key.key_id_hex)

    async def sign(digest: bytes, digest_algorithm: str) -> bytes:
        return await vault.sign_digest(key_id, key.key_type, digest, digest_algorithm)

    der = await build_csr(key.public_key_der, subject, sign)
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        await _audit(tx, "csr_created", actor, key, now,
                     details={**details, "csr_sha256": hashlib.sha256(der).hexdigest()})
    log.info("key.csr_created", key=key.id, key_id=key.key_id_hex, officer_id=actor.id)
    return csr_pem(der)


async def _insert_credential(tx: Transaction, new: NewCredential, certificate_columns: dict[str, Any],
                             now: datetime) -> str:
    values = await check_new_credential(tx, new)
    await _check_new_holder(tx, values, x509.load_der_x509_certificate(certificate_columns["certificate_der"]))
    await tx.insert_credential(**values, **certificate_columns, status="active", created_at=now)
    return new.id


async def _check_new_holder(tx: Transaction, values: dict[str, Any], certificate: x509.Certificate) -> None:
    """Raise CertificateHolderMismatch unless the certificate names the credential's holder.

    A personal certificate's CN must be the owner's full name; a seal's CN or
    O must be the agency (or, without one, the display name). Case and
    Unicode normalisation are ignored.
    """
    if values["kind"] == "personal":
        owner = await tx.official(str(values["owner_official_id"]))
        expected = owner.full_name if owner is not None else ""
        names = _holder_values(certificate.subject, NameOID.COMMON_NAME)
    else:
        expected = str(values["agency"] or values["display_name"])
        names = (_holder_values(certificate.subject, NameOID.COMMON_NAME)
                 + _holder_values(certificate.subject, NameOID.ORGANIZATION_NAME))
        # A person's identity number makes it a personal certificate, whatever its O attribute contains.
        if any(uid.startswith(PERSONAL_IDENTIFIER_PREFIXES)
               for uid in _holder_values(certificate.subject, NameOID.USER_ID)):
            names = []
    if unicodedata.normalize("NFC", expected).casefold() not in names:
        holder = ", ".join(str(item.value) for item in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
        raise CertificateHolderMismatch(credential_id=values["id"], holder=holder, expected=expected)


async def _switch_credential_key(tx: Transaction, credential_id: str, checked: CheckedCertificate,
                                 certificate_columns: dict[str, Any], now: datetime) -> tuple[str, HsmKey | None]:
    """Point the credential at the new key and certificate, retire its previous key, and return that key.

    The new certificate must name the same holder (CN and UID identifiers), so
    that a credential the policy already grants cannot pass to someone else.
    """
    credential = await _credential(tx, credential_id)
    _check_same_holder(credential, checked.certificate)
    previous_key = await tx.hsm_key_by_key_id(credential.key_id_hex)
    await tx.update_credential(credential.id, **certificate_columns)
    if previous_key is not None:
        await tx.update_hsm_key(previous_key.id, state=RETIRED, updated_at=now)
    else:
        log.warning("key.rotation_previous_key_not_inventoried", credential_id=credential.id,
                    key_id=credential.key_id_hex)
    return credential.id, previous_key


def _holder_values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return sorted(unicodedata.normalize("NFC", str(item.value)).casefold() for item in name.get_attributes_for_oid(oid))


# UID prefixes of a person's identity documents (citizen id, old id card, passport), lowercase as compared.
PERSONAL_IDENTIFIER_PREFIXES = ("cccd:", "cmnd:", "hc:")


def _check_same_holder(credential: Credential, new_certificate: x509.Certificate) -> None:
    """Raise RotationHolderChanged unless both certificates have the same CN and UID values (case and NFC aside)."""
    old_subject = x509.load_der_x509_certificate(credential.certificate_der).subject
    for attribute, oid in (("CN", NameOID.COMMON_NAME), ("UID", NameOID.USER_ID)):
        old = _holder_values(old_subject, oid)
        new = _holder_values(new_certificate.subject, oid)
        if old != new:
            raise RotationHolderChanged(credential_id=credential.id, attribute=attribute, old=", ".join(old),
                                        new=", ".join(new))


def _certificate_columns(key: HsmKey, checked: CheckedCertificate) -> dict[str, Any]:
    """Return the ``credentials`` columns that describe the key and its certificate."""
    return {
        "key_id_hex": key.key_id_hex,
        "key_label": key.key_label,
        "key_type": key.key_type,
        "key_size": key.key_size,
        "certificate_der": checked.der,
        "chain_pem": checked.chain_pem(),
        "cert_serial_hex": checked.serial_hex,
    }


async def find_key(tx: Transaction, key_id: str, *, for_update: bool = False) -> HsmKey:
    """Find a key by its row id, or else by its CKA_ID in hex."""
    key = await tx.hsm_key(key_id, for_update=for_update)
    if key is None:
        by_cka_id = await tx.hsm_key_by_key_id((key_id or "").lower())
        if by_cka_id is not None:
            key = await tx.hsm_key(by_cka_id.id, for_update=for_update)
    if key is None:
        raise KeyNotFound(key_id=key_id)
    return key


async def _credential(tx: Transaction, credential_id: str) -> Credential:
    """Return a personal or seal credential, and raise for any other kind because the TSA's key is not managed here."""
    credential = await tx.credential(credential_id)
    if credential is None:
        raise CredentialNotFound(credential_id=credential_id)
    if credential.kind not in CREDENTIAL_KINDS:
        raise CredentialKindInvalid(kind=credential.kind, allowed=", ".join(CREDENTIAL_KINDS))
    return credential


async def _label_in_use(tx: Transaction, label: str) -> bool:
    keys = await tx.hsm_keys()
    credentials = await tx.credentials()
    return any(key.key_label == label for key in keys) or any(c.key_label == label for c in credentials)


def _require_state(key: HsmKey, expected: str) -> None:
    if key.state != expected:
        raise KeyStateInvalid(key_id=key.id, state=key.state, expected=expected)


def _check_label(label: str) -> str:
    if not LABEL_PATTERN.fullmatch(label):
        raise KeyLabelInvalid(label=label)
    return label


def _vault(ctx: CoreContext) -> KeyVault:
    if ctx.key_vault is None:
        raise RuntimeError("this CoreContext has no key_vault; build it with the HSM's HsmKeyVault")
    return ctx.key_vault


async def _audit(tx: Transaction, action: str, actor: Official, key: HsmKey, now: datetime, *,
                 details: dict[str, Any], cert_serial_hex: str | None = None) -> None:
    await append_audit(tx, action=action, actor_type=ACTOR_TYPE, actor_id=actor.id, key_id_hex=key.key_id_hex,
                       cert_serial_hex=cert_serial_hex, details={"key": key.id, **details}, now=now)
