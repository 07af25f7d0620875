"""Errors of the key lifecycle (``core.keys``) and of certificate import, each with its stable code.

Expired, not yet valid and untrusted certificates reuse the signing errors of
``signserver.signing.errors``, whose messages fit an import as well.
"""

from __future__ import annotations

from signserver.errors import Conflict, Forbidden, InvalidInput, NotFound

__all__ = [
    "KeyNotFound",
    "KeyStateInvalid",
    "KeyInUse",
    "KeyTypeUnsupported",
    "KeyLabelInvalid",
    "KeyLabelTaken",
    "KeyMissingFromHsm",
    "KeyDestroyNeedsSecondOfficer",
    "CertificateInvalid",
    "CertificateKeyMismatch",
    "CertificateKeyUsage",
    "CredentialExists",
    "CredentialNotFound",
    "CredentialIdInvalid",
    "CredentialKindInvalid",
    "CredentialOfficialNotFound",
    "CredentialOfficialRoleMissing",
    "ImportTargetInvalid",
    "RotationHolderChanged",
    "CertificateHolderMismatch",
    "CredentialApproverOtherAgency",
]


class KeyNotFound(NotFound):
    """No key of the inventory has this id or CKA_ID. Params: ``key_id``."""

    code = "key_not_found"


class KeyStateInvalid(Conflict):
    """The key's state does not allow the operation. Params: ``key_id``, ``state``, ``expected``."""

    code = "key_state_invalid"


class KeyInUse(Conflict):
    """The key is the active key of an enabled credential. Params: ``key_id``, ``credential_id``."""

    code = "key_in_use"


class KeyTypeUnsupported(InvalidInput):
    """Params: ``key_type``, ``key_size`` and ``supported``."""

    code = "key_type_unsupported"


class KeyLabelInvalid(InvalidInput):
    """Params: ``label``."""

    code = "key_label_invalid"


class KeyLabelTaken(Conflict):
    """Another key in the inventory or on the token has this CKA_LABEL or CKA_ID. Params: ``label``."""

    code = "key_label_taken"


class KeyMissingFromHsm(Conflict):
    """The inventory lists the key, but the token no longer has it. Params: ``key_id``."""

    code = "key_missing_from_hsm"


class KeyDestroyNeedsSecondOfficer(Forbidden):
    """The officer who requested a destruction tried to approve it too. Params: ``officer_id``."""

    code = "key_destroy_needs_second_officer"


class CertificateInvalid(InvalidInput):
    """The certificate or chain does not parse. Params: ``field`` and ``reason``."""

    code = "certificate_invalid"


class CertificateKeyMismatch(InvalidInput):
    """The certificate's public key is not the key's. Params: ``subject`` and ``key_id``."""

    code = "certificate_key_mismatch"


class CertificateKeyUsage(InvalidInput):
    """The certificate is a CA, or its key usage allows no signing. Params: ``subject`` and ``found``."""

    code = "certificate_key_usage"


class CredentialExists(Conflict):
    """Params: ``credential_id``."""

    code = "credential_exists"


class CredentialNotFound(NotFound):
    """Params: ``credential_id``."""

    code = "credential_not_found"


class CredentialIdInvalid(InvalidInput):
    """Params: ``credential_id``."""

    code = "credential_id_invalid"


class CredentialKindInvalid(InvalidInput):
    """Params: ``kind`` and ``allowed``."""

    code = "credential_kind_invalid"


class CredentialOfficialNotFound(InvalidInput):
    """Params: ``field`` and ``official_id``."""

    code = "credential_official_not_found"


class CredentialOfficialRoleMissing(InvalidInput):
    """Params: ``field``, ``official_id`` and ``role``."""

    code = "credential_official_role_missing"


class ImportTargetInvalid(InvalidInput):
    """An import must name exactly one of a new credential and a credential to rotate."""

    code = "certificate_import_target_invalid"


class RotationHolderChanged(Conflict):
    """A rotation's certificate names another holder. Params: ``credential_id``, ``attribute``, ``old``, ``new``."""

    code = "rotation_holder_changed"


class CertificateHolderMismatch(Conflict):
    """A new credential's certificate names someone else. Params: ``credential_id``, ``holder``, ``expected``."""

    code = "certificate_holder_mismatch"


class CredentialApproverOtherAgency(InvalidInput):
    """A seal's approver works for another agency. Params: ``official_id``, ``official_agency``, ``agency``."""

    code = "credential_approver_other_agency"
