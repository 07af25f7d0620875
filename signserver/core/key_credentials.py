"""The signing credential that a certificate import creates: its fields and their checks.

A personal credential belongs to one official, who also approves its
signatures. An agency seal credential has no owner, and the agency's văn
thư (role ``seal_holder``) approves its signatures.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from signserver.errors import InvalidInput
from signserver.store.db import Transaction

from .key_errors import (
    CredentialApproverOtherAgency,
    CredentialExists,
    CredentialIdInvalid,
    CredentialKindInvalid,
    CredentialOfficialNotFound,
    CredentialOfficialRoleMissing,
)
from .roles import OFFICIAL, SEAL_HOLDER

__all__ = ["NewCredential", "PERSONAL", "SEAL", "CREDENTIAL_KINDS", "check_new_credential",
           "CredentialApproverNotOwner", "CredentialOwnerNotAllowed"]

PERSONAL = "personal"
SEAL = "seal"
CREDENTIAL_KINDS = (PERSONAL, SEAL)

# Lower-case letters, digits and hyphens, like the demo's "cred-tran-thi-bich-ngoc".
CREDENTIAL_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{2,63}")


class CredentialApproverNotOwner(InvalidInput):
    """A personal credential named an approver other than its owner. Params: ``owner_official_id``,
    ``approver_official_id``."""

    code = "credential_approver_not_owner"


class CredentialOwnerNotAllowed(InvalidInput):
    """A seal credential named an owner. Params: ``owner_official_id``."""

    code = "credential_owner_not_allowed"


@dataclass(frozen=True)
class NewCredential:
    """The credential to create for an imported certificate.

    ``approver_official_id`` may be left out for a personal credential, whose
    owner approves. ``display_name`` is the signer's name as signatures show it.
    """

    id: str
    kind: str
    display_name: str
    owner_official_id: str | None = None
    approver_official_id: str | None = None
    signer_title: str = ""
    agency: str = ""

    def __post_init__(self) -> None:
        # The API builds a credential straight from JSON, so any field may hold another type.
        for name in ("id", "kind", "display_name", "signer_title", "agency"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInput("field_invalid", field=name, reason="must be a string")
        for name in ("owner_official_id", "approver_official_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidInput("field_invalid", field=name, reason="must be a string or null")


async def check_new_credential(tx: Transaction, new: NewCredential) -> dict[str, object]:
    """Check ``new`` against the store and return the column values of its credentials row.

    The certificate and key columns, the status and the creation time are
    left for the caller. Raises an InvalidInput or Conflict error naming the field.
    """
    if not CREDENTIAL_ID_PATTERN.fullmatch(new.id):
        raise CredentialIdInvalid(credential_id=new.id)
    if await tx.credential(new.id) is not None:
        raise CredentialExists(credential_id=new.id)
    if new.kind not in CREDENTIAL_KINDS:
        raise CredentialKindInvalid(kind=new.kind, allowed=", ".join(CREDENTIAL_KINDS))
    display_name = _text(new.display_name)
    if not display_name:
        raise InvalidInput("field_missing", field="display_name")

    if new.kind == PERSONAL:
        if not new.owner_official_id:
            raise InvalidInput("field_missing", field="owner_official_id")
        if new.approver_official_id not in (None, new.owner_official_id):
            raise CredentialApproverNotOwner(owner_official_id=new.owner_official_id,
                                             approver_official_id=new.approver_official_id)
        await _check_official(tx, "owner_official_id", new.owner_official_id, OFFICIAL)
        owner, approver = new.owner_official_id, new.owner_official_id
    else:
        if new.owner_official_id:
            raise CredentialOwnerNotAllowed(owner_official_id=new.owner_official_id)
        if not new.approver_official_id:
            raise InvalidInput("field_missing", field="approver_official_id")
        await _check_official(tx, "approver_official_id", new.approver_official_id, SEAL_HOLDER)
        await _check_same_agency(tx, new.approver_official_id, _text(new.agency))
        owner, approver = None, new.approver_official_id

    return {
        "id": new.id,
        "kind": new.kind,
        "owner_official_id": owner,
        "approver_official_id": approver,
        "display_name": display_name,
        "signer_title": _text(new.signer_title),
        "agency": _text(new.agency),
    }


async def _check_official(tx: Transaction, field: str, official_id: str, role: str) -> None:
    official = await tx.official(official_id)
    if official is None or not official.enabled:
        raise CredentialOfficialNotFound(field=field, official_id=official_id)
    if role not in official.role_set:
        raise CredentialOfficialRoleMissing(field=field, official_id=official_id, role=role)


async def _check_same_agency(tx: Transaction, official_id: str, agency: str) -> None:
    """Raise CredentialApproverOtherAgency unless the seal's approving văn thư works for the seal's agency."""
    official = await tx.official(official_id)
    if agency and official is not None and _text(official.agency).casefold() != agency.casefold():
        raise CredentialApproverOtherAgency(official_id=official_id, official_agency=official.agency, agency=agency)


def _text(value: str | None) -> str:
    return unicodedata.normalize("NFC", (value or "").strip())
