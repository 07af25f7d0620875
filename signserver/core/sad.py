"""Signature activation data (SAD) of the CSC API: issue on an official's OTP, extend, spend.

A SAD (CSC API v1.0.4.0 sections 11.6 and 11.9, v2.0.0.2 sections 11.6 and
11.10) is what credentials/authorize returns and signatures/signHash or
signDoc spends. Here it is bound to:

- the exact hashes, as SCAL 2 requires, counted as a multiset, so a hash
  listed twice may be signed twice;
- the application that requested it and the credential it authorizes;
- a short lifetime (``Settings.sad_ttl``).

It is issued only after the credential's approving official enters a TOTP
code, which the same ``check_otp`` as native approvals checks (same replay
table, same lockout). The key policy must also let the application request
the credential in the "raw" format. The SAD itself is stored as a
SHA-256 digest. Each hash is spent in one database transaction before any
HSM call, so two replicas cannot spend one hash twice.

Every issue, extension and use is an audit record, and so is every rejection
of a caller who passed authentication.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import structlog
from cryptography import x509

from signserver.errors import InvalidInput, SignserverError
from signserver.store.db import Transaction
from signserver.store.records import Application, Credential, from_row

from . import queries
from .audit import append_audit
from .auth import sha256_hex
from .context import CoreContext, new_id
from .errors import KeyDisabled, PolicyDenied, SignerUnknown
from .key_access import evaluate_key_use
from .metrics import OTP_FAILURES
from .otp import check_otp
from .policy import PolicyQuery
from .quotas import QuotaExceeded
from .raw_signing import check_digest_length
from .signature_options import RAW_LEVEL

__all__ = [
    "RAW_FORMAT",
    "MAX_SAD_LIFETIME",
    "AuthorizationRequest",
    "IssuedSad",
    "SpentSad",
    "credential_for_application",
    "check_credential_usable",
    "authorize_credential",
    "extend_sad",
    "spend_sad",
    "RejectionAudit",
    "record_rejection",
    "CredentialNotAvailable",
    "CredentialDisabled",
    "CertificateNotValid",
    "SignatureCountInvalid",
    "SignatureCountTooHigh",
    "SadInvalid",
    "SadExpired",
    "HashNotAuthorized",
]

log = structlog.get_logger(__name__)

# The key policy's format for raw signatures over client-computed hashes.
RAW_FORMAT = "raw"
# credentials/extendTransaction renews a SAD, but never past this age: one OTP
# must not keep a key usable indefinitely. NOTE: a chosen bound, not from the CSC API.
MAX_SAD_LIFETIME = timedelta(hours=1)


class CredentialNotAvailable(InvalidInput):
    """Unknown, a TSA key, or not allowed to this application: all look the same to the caller."""

    code = "credential_not_available"


class CredentialDisabled(InvalidInput):
    code = "credential_disabled"


class CertificateNotValid(InvalidInput):
    code = "certificate_not_valid"


class SignatureCountInvalid(InvalidInput):
    code = "signature_count_invalid"


class SignatureCountTooHigh(InvalidInput):
    code = "signature_count_too_high"


class SadInvalid(InvalidInput):
    code = "sad_invalid"


class SadExpired(InvalidInput):
    code = "sad_expired"


class HashNotAuthorized(InvalidInput):
    code = "hash_not_authorized"


@dataclass(frozen=True)
class _StoredSad:
    id: str
    sad_sha256: str
    application_id: str
    credential_id: str
    official_id: str
    hash_algorithm: str | None
    num_signatures: int
    otp_step: int
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class AuthorizationRequest:
    credential_id: str
    num_signatures: int
    hashes: tuple[bytes, ...]
    # asn1crypto name of the hashes' algorithm, or None when a CSC v1 client does not name it.
    hash_algorithm: str | None
    otp: str
    description: str | None = None


@dataclass(frozen=True)
class IssuedSad:
    sad: str
    sad_id: str
    expires_in: int  # seconds


@dataclass(frozen=True)
class SpentSad:
    sad_id: str
    official_id: str


@dataclass
class RejectionAudit:
    """Records a rejected CSC operation that was not recorded where it happened.

    Used as ``async with``: a ``SignserverError`` leaving the block gets one
    audit record (operation, error code, credential, hashes) and is marked
    ``audited`` so that callers further out do not record it again.
    """

    ctx: CoreContext
    application: Application
    operation: str
    credential_id: str | None = None
    credential: Credential | None = None
    details: dict[str, Any] = field(default_factory=dict)

    async def __aenter__(self) -> "RejectionAudit":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if isinstance(error, SignserverError) and not getattr(error, "audited", False):
            await record_rejection(self.ctx, self.application, self.operation, error,
                                   credential_id=self.credential_id, credential=self.credential, details=self.details)


async def record_rejection(ctx: CoreContext, application: Application, operation: str, error: SignserverError, *,
                           credential_id: str | None = None, credential: Credential | None = None,
                           details: dict[str, Any] | None = None) -> None:
    """Append the audit record of a rejected CSC operation and mark ``error`` as recorded."""
    async with ctx.store.transaction() as tx:
        await _append_rejection(tx, ctx, application, operation, error, credential_id=credential_id,
                                credential=credential, details=details or {})
    log.info("csc.rejection_recorded", operation=operation, application_id=application.id,
             credential_id=credential_id, code=error.code)


async def credential_for_application(ctx: CoreContext, application: Application, credential_id: str) -> Credential:
    """Return a signing credential the key policy lets ``application`` request.

    Any other id, including another agency's key, raises the error of an
    unknown id, so that the error reveals nothing about keys out of reach.
    """
    for credential in await queries.credentials_for_application(ctx, application):
        if credential.id == credential_id:
            return credential
    raise CredentialNotAvailable(credential_id=credential_id)


def check_credential_usable(credential: Credential, now: datetime) -> None:
    """Reject a credential that is not active or whose certificate is outside its validity period."""
    if credential.status != "active" or credential.approver_official_id is None:
        raise CredentialDisabled(credential_id=credential.id)
    certificate = x509.load_der_x509_certificate(credential.certificate_der)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise CertificateNotValid(credential_id=credential.id,
                                  valid_from=certificate.not_valid_before_utc.isoformat(),
                                  valid_to=certificate.not_valid_after_utc.isoformat())


async def authorize_credential(ctx: CoreContext, application: Application,
                               request: AuthorizationRequest) -> IssuedSad:
    """Issue a SAD for ``request.hashes`` after the approving official's OTP is accepted.

    The checks that need no OTP come first, so a malformed request never
    spends the official's code or counts toward the lockout.
    """
    hashes_hex = [digest.hex() for digest in request.hashes]
    audit = RejectionAudit(ctx, application, "credentials/authorize", request.credential_id,
                           details={"hashes": hashes_hex, "num_signatures": request.num_signatures})
    async with audit:
        credential = await credential_for_application(ctx, application, request.credential_id)
        audit.credential = credential
        now = ctx.clock()
        _check_signature_count(ctx, request.num_signatures, len(request.hashes))
        for digest in request.hashes:
            check_digest_length(digest, request.hash_algorithm)
        check_credential_usable(credential, now)
        await _check_policy(ctx, application, credential, hashes_hex, now)
        return await _issue_after_otp(ctx, application, credential, request, hashes_hex, now)


async def extend_sad(ctx: CoreContext, application: Application, credential_id: str, sad: str,
                     hashes: list[bytes] | None = None) -> IssuedSad:
    """Replace a valid SAD with a new one covering its unspent hashes, with a renewed lifetime.

    The old SAD stops working. The new expiry is at most ``MAX_SAD_LIFETIME``
    after the OTP authorized the first one. ``hashes``, which CSC v2 lets a
    client bind to the new SAD, must be among the unspent ones: binding a hash
    the official did not approve would need a new OTP.
    """
    hashes_hex = [digest.hex() for digest in hashes or []]
    audit = RejectionAudit(ctx, application, "credentials/extendTransaction", credential_id,
                           details={"hashes": hashes_hex})
    async with audit:
        credential = await credential_for_application(ctx, application, credential_id)
        audit.credential = credential
        now = ctx.clock()
        new_sad = secrets.token_urlsafe(32)
        async with ctx.store.transaction() as tx:
            stored = await _usable_sad(tx, sad, application, credential, now)
            unused = await tx.unused_csc_sad_hashes(stored.id)
            if not unused:
                raise SadInvalid(reason="every hash it authorized has been signed")
            _match_hashes(unused, hashes_hex)
            expires_at = min(now + ctx.settings.sad_ttl, stored.created_at + MAX_SAD_LIFETIME)
            if expires_at <= now:
                raise SadExpired(expired_at=stored.expires_at.isoformat(timespec="seconds"))
            await tx.update_csc_sad(stored.id, sad_sha256=sha256_hex(new_sad), expires_at=expires_at)
            await append_audit(
                tx, action="csc_sad_extended", actor_type="application", actor_id=application.id,
                key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex,
                details={"interface": "csc", "sad_id": stored.id, "credential_id": credential.id,
                         "expires_at": expires_at.isoformat(timespec="seconds")},
                now=now,
            )
    log.info("csc.sad_extended", sad_id=stored.id, application_id=application.id, credential_id=credential.id)
    return IssuedSad(new_sad, stored.id, max(1, int((expires_at - now).total_seconds())))


async def spend_sad(ctx: CoreContext, application: Application, credential: Credential, sad: str,
                    digests: list[bytes], digest_algorithm: str, *, operation: str,
                    details: dict[str, Any]) -> SpentSad:
    """Spend one authorized signature of ``sad`` for each of ``digests``, all or none, in one transaction.

    A rejection (unknown, foreign or expired SAD, a hash not covered or beyond
    its count) spends nothing and is recorded in the same transaction.
    """
    now = ctx.clock()
    hashes_hex = [digest.hex() for digest in digests]
    rejection: SignserverError | None = None
    async with ctx.store.transaction() as tx:
        try:
            stored = await _usable_sad(tx, sad, application, credential, now)
            if stored.hash_algorithm is not None and stored.hash_algorithm != digest_algorithm:
                raise HashNotAuthorized(reason=f"the SAD authorized {stored.hash_algorithm} hashes, "
                                               f"not {digest_algorithm}")
            # Only the requested hashes are read: a SAD may cover thousands.
            unused = await tx.unused_csc_sad_hashes(stored.id, among=hashes_hex)
            if not unused and not await tx.has_unused_csc_sad_hashes(stored.id):
                raise SadInvalid(reason="every hash it authorized has been signed")
            positions = _match_hashes(unused, hashes_hex)
            # Checked again and counted now: the policy or the quotas may have changed since the authorization.
            query = PolicyQuery(application_id=application.id, credential_id=credential.id,
                                signature_format=RAW_FORMAT, signature_level=RAW_LEVEL, document_type=None,
                                batch_size=len(digests))
            key_use = await evaluate_key_use(tx, ctx, credential, query, now, signer_name=credential.id,
                                             count=len(digests), consume=True)
            if key_use.error is not None:
                raise key_use.error
            if await tx.mark_csc_sad_hashes_used(stored.id, positions, now) != len(positions):
                raise SadInvalid(reason="spent concurrently by another request")
        except (SadInvalid, SadExpired, HashNotAuthorized, QuotaExceeded, PolicyDenied, KeyDisabled,
                SignerUnknown) as error:
            rejection = error
            await _append_rejection(tx, ctx, application, operation, error, credential_id=credential.id,
                                    credential=credential, details={"hashes": hashes_hex, **details})
        else:
            await append_audit(
                tx, action="csc_sad_spent", actor_type="application", actor_id=application.id,
                key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex,
                details={"interface": "csc", "operation": operation, "sad_id": stored.id,
                         "credential_id": credential.id, "hashes": hashes_hex, "hash_algorithm": digest_algorithm,
                         "official_id": stored.official_id, **details},
                now=now,
            )
    if rejection is not None:
        log.info("csc.rejection_recorded", operation=operation, application_id=application.id,
                 credential_id=credential.id, code=rejection.code)
        raise rejection
    return SpentSad(stored.id, stored.official_id)


async def _issue_after_otp(ctx: CoreContext, application: Application, credential: Credential,
                           request: AuthorizationRequest, hashes_hex: list[str], now: datetime) -> IssuedSad:
    sad = secrets.token_urlsafe(32)
    sad_id = new_id("sad")
    expires_at = now + ctx.settings.sad_ttl
    context = {"interface": "csc", "credential_id": credential.id, "application_id": application.id,
               "sad_id": sad_id, "hashes": hashes_hex}
    assert credential.approver_official_id is not None
    otp_error: SignserverError | None = None
    async with ctx.store.transaction() as tx:
        await tx.delete_expired_csc_sads(now - timedelta(days=1))
        official = await tx.official(credential.approver_official_id, for_update=True)
        if official is None or not official.enabled:
            raise CredentialDisabled(credential_id=credential.id)
        step, error = await check_otp(tx, official, request.otp, now=now, secret_box=ctx.secret_box,
                                      policy=ctx.otp_policy, context=context)
        if error is not None:
            # Recorded and committed with the failure count, as native approvals do, then raised below.
            assert isinstance(error, SignserverError)
            otp_error = error
            await _append_rejection(tx, ctx, application, "credentials/authorize", error,
                                    credential_id=credential.id, credential=credential,
                                    details={"hashes": hashes_hex, "official_id": official.id})
        else:
            assert step is not None
            await tx.insert_csc_sad(
                dict(id=sad_id, sad_sha256=sha256_hex(sad), application_id=application.id,
                     credential_id=credential.id, official_id=official.id, hash_algorithm=request.hash_algorithm,
                     num_signatures=request.num_signatures, otp_step=step, created_at=now, expires_at=expires_at),
                hashes_hex,
            )
            await append_audit(
                tx, action="csc_authorized", actor_type="official", actor_id=official.id,
                key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex,
                details={**context, "hash_algorithm": request.hash_algorithm,
                         "num_signatures": request.num_signatures, "otp_step": step,
                         "expires_at": expires_at.isoformat(timespec="seconds"),
                         "description": (request.description or "")[:500]},
                now=now,
            )
    if otp_error is not None:
        OTP_FAILURES.labels(reason=otp_error.code).inc()
        log.info("csc.otp_rejected", official_id=credential.approver_official_id, credential_id=credential.id,
                 code=otp_error.code)
        raise otp_error
    log.info("csc.sad_issued", sad_id=sad_id, application_id=application.id, credential_id=credential.id,
             official_id=credential.approver_official_id, hash_count=len(hashes_hex))
    return IssuedSad(sad, sad_id, int(ctx.settings.sad_ttl.total_seconds()))


def _check_signature_count(ctx: CoreContext, num_signatures: int, hash_count: int) -> None:
    if num_signatures < 1:
        raise SignatureCountInvalid(reason=f"{num_signatures} is less than 1")
    if num_signatures > ctx.settings.max_batch_size:
        raise SignatureCountTooHigh(count=num_signatures, limit=ctx.settings.max_batch_size)
    if num_signatures != hash_count:
        raise SignatureCountInvalid(reason=f"{num_signatures} signatures requested for {hash_count} hashes")


async def _check_policy(ctx: CoreContext, application: Application, credential: Credential, hashes_hex: list[str],
                        now: datetime) -> None:
    """The key policy for a CSC authorization: format raw (the client builds the signature), the batch size, the quotas."""
    query = PolicyQuery(application_id=application.id, credential_id=credential.id, signature_format=RAW_FORMAT,
                        signature_level=RAW_LEVEL, document_type=None, batch_size=len(hashes_hex))
    async with ctx.store.transaction() as tx:
        key_use = await evaluate_key_use(tx, ctx, credential, query, now, signer_name=credential.id,
                                         count=len(hashes_hex))
        if key_use.error is None:
            return
        decision = key_use.decision
        await append_audit(
            tx, action="policy_denied", actor_type="application", actor_id=application.id,
            key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex,
            details={"interface": "csc", "credential_id": credential.id, "rule": decision.rule_id,
                     "reason": getattr(key_use.error, "code", decision.reason),
                     "policy_version": decision.policy_version, "format": RAW_FORMAT, "hashes": hashes_hex},
            now=now,
        )
    log.info("csc.policy_denied", application_id=application.id, credential_id=credential.id,
             rule=key_use.decision.rule_id)
    error = key_use.error
    error.audited = True  # type: ignore[attr-defined]
    raise error


async def _usable_sad(tx: Transaction, sad: str, application: Application, credential: Credential,
                      now: datetime) -> _StoredSad:
    row = await tx.csc_sad_by_digest(sha256_hex(sad), for_update=True)
    stored = from_row(_StoredSad, row) if row is not None else None
    # A SAD of another application or credential is reported exactly like an unknown one.
    if stored is None or stored.application_id != application.id or stored.credential_id != credential.id:
        raise SadInvalid(reason="unknown, replaced, or issued for another credential or application")
    if stored.expires_at <= now:
        raise SadExpired(expired_at=stored.expires_at.isoformat(timespec="seconds"))
    return stored


def _match_hashes(unused: list[tuple[int, str]], requested_hex: list[str]) -> list[int]:
    """Pick one unspent row per requested hash. A hash requested more often than authorized is rejected."""
    available: dict[str, list[int]] = {}
    for position, hash_hex in unused:
        available.setdefault(hash_hex, []).append(position)
    positions = []
    for hash_hex, count in Counter(requested_hex).items():
        rows = available.get(hash_hex, [])
        if len(rows) < count:
            raise HashNotAuthorized(reason=f"hash {hash_hex[:16]}… requested {count} time(s), "
                                           f"{len(rows)} unspent authorization(s) left")
        positions.extend(rows[:count])
    return positions


async def _append_rejection(tx: Transaction, ctx: CoreContext, application: Application, operation: str,
                            error: SignserverError, *, credential_id: str | None, credential: Credential | None,
                            details: dict[str, Any]) -> None:
    await append_audit(
        tx, action="csc_rejected", actor_type="application", actor_id=application.id,
        key_id_hex=credential.key_id_hex if credential else None,
        cert_serial_hex=credential.cert_serial_hex if credential else None,
        details={"interface": "csc", "operation": operation, "reason": error.code,
                 "credential_id": credential_id, **details},
        now=ctx.clock(),
    )
    error.audited = True  # type: ignore[attr-defined]
