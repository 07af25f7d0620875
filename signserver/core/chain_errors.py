"""Errors of approval chains, digest-bound approvals and delegations (ủy quyền), each with its stable code.

Their messages are in ``signserver/i18n/messages_chains.json``.
"""

from __future__ import annotations

from signserver.errors import Conflict, InvalidInput, NotFound

__all__ = [
    "ApproverUnknown",
    "ApproverRepeated",
    "ApprovalChainTooLong",
    "DocumentDigestMismatch",
    "DeputyUnknown",
    "DelegationToSelf",
    "DelegationPeriodInvalid",
    "DelegationTooLong",
    "DelegationOverlaps",
    "DelegationNotFound",
    "DelegationAlreadyRevoked",
    "DeputyCredentialMissing",
    "DeputyCredentialNotAllowed",
]


class ApproverUnknown(InvalidInput):
    """A name in ``approvers`` is not an enabled official. ``params['approver']`` is that name."""

    code = "approver_unknown"


class ApproverRepeated(InvalidInput):
    """A name appears twice in the chain, or the key's approver is listed before the last place."""

    code = "approver_repeated"


class ApproverTwiceByDelegation(InvalidInput):
    """A deputy would approve two steps of one chain: their own and the delegator's."""

    code = "approver_twice_by_delegation"


class ApprovalChainTooLong(InvalidInput):
    code = "approval_chain_too_long"


class DocumentDigestMismatch(Conflict):
    """The digest the official was shown differs from the request's: the document is not the one approved."""

    code = "document_digest_mismatch"


class DeputyUnknown(InvalidInput):
    """The deputy named in a delegation is not an enabled official."""

    code = "deputy_unknown"


class DelegationToSelf(InvalidInput):
    code = "delegation_to_self"


class DelegationPeriodInvalid(InvalidInput):
    code = "delegation_period_invalid"


class DelegationTooLong(InvalidInput):
    code = "delegation_too_long"


class DelegationOverlaps(Conflict):
    """The delegator already has an unrevoked delegation for part of the period. ``params['delegation_id']``."""

    code = "delegation_overlaps"


class DelegationNotFound(NotFound):
    code = "delegation_not_found"


class DelegationAlreadyRevoked(Conflict):
    code = "delegation_already_revoked"


class DeputyCredentialMissing(Conflict):
    """The deputy of the key's owner has no active personal credential to sign in the owner's place."""

    code = "deputy_credential_missing"


class DeputyCredentialNotAllowed(Conflict):
    """The deputy's personal credential is one the key policy does not let the application use."""

    code = "deputy_credential_not_allowed"
