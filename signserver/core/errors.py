"""Domain errors of the signing workflow, each with its stable code.

The messages for each code live in the catalogs under ``signserver/i18n``.
"""

from __future__ import annotations

from signserver.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated, Unavailable

__all__ = [
    "AuthenticationFailed",
    "OtpInvalid",
    "OtpReplayed",
    "OfficialLocked",
    "PolicyDenied",
    "SignerUnknown",
    "RequestNotFound",
    "RequestExpired",
    "RequestAlreadyDecided",
    "RequestNotSigned",
    "NotRequestApprover",
    "IdempotencyKeyReused",
    "BatchTooLarge",
    "HsmUnavailable",
    "RoleRequired",
    "KeyDisabled",
]


class AuthenticationFailed(Unauthenticated):
    code = "unauthenticated"


class OtpInvalid(Forbidden):
    code = "otp_invalid"


class OtpReplayed(Forbidden):
    code = "otp_replayed"


class OfficialLocked(Forbidden):
    """Approvals locked after too many wrong codes. ``params['until']`` is the end of the lock."""

    code = "official_locked"


class PolicyDenied(Forbidden):
    code = "policy_denied"


class SignerUnknown(InvalidInput):
    code = "signer_unknown"


class RequestNotFound(NotFound):
    code = "request_not_found"


class RequestExpired(Conflict):
    code = "request_expired"


class RequestAlreadyDecided(Conflict):
    code = "request_already_decided"


class RequestNotSigned(Conflict):
    code = "request_not_signed"


class NotRequestApprover(Forbidden):
    code = "not_request_approver"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class BatchTooLarge(InvalidInput):
    code = "batch_too_large"


class HsmUnavailable(Unavailable):
    code = "hsm_unavailable"


class RoleRequired(Forbidden):
    """The caller is authenticated but lacks the role. ``params['role']`` names the roles that may."""

    code = "role_required"


class KeyDisabled(Forbidden):
    """A security officer disabled the signer's key; it signs nothing until enabled again."""

    code = "key_disabled"


class StoredDocumentChanged(Conflict):
    """The file kept for a request no longer has the digest recorded at submission; it is never signed."""

    code = "stored_document_changed"
