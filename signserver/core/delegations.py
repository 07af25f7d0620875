"""Delegation of approval (ủy quyền): an official names a deputy who approves in their place for a period.

An official delegates their own approvals; a security officer may record a
delegation for any official. The deputy must be another enabled official.
The period must start before it ends, last at most
``Settings.delegation_max_period``, and not overlap another unrevoked
delegation of the same official. Delegations are followed one level only: a
deputy's own delegation does not pass the step on.

A delegation routes requests submitted while it is in force (see
``core.chains``); revoking it, or its end, changes nothing for requests
already submitted. The deputy signs with their own key, never the delegator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import structlog

from signserver.errors import InvalidInput
from signserver.store import chains as chain_store
from signserver.store.chains import Delegation
from signserver.store.records import Official

from .audit import append_audit
from .chain_errors import (
    DelegationAlreadyRevoked,
    DelegationNotFound,
    DelegationOverlaps,
    DelegationPeriodInvalid,
    DelegationToSelf,
    DelegationTooLong,
    DeputyUnknown,
)
from .context import CoreContext, new_id
from .errors import RoleRequired
from .roles import OFFICIAL, SECURITY_OFFICER, audit_actor_type, require_role

__all__ = ["Delegation", "DelegationsOfOfficial", "create_delegation", "revoke_delegation",
           "delegations_for_official", "delegations_for_officer"]

log = structlog.get_logger(__name__)

MAX_REASON_LENGTH = 500


@dataclass(frozen=True)
class DelegationsOfOfficial:
    """The delegations an official gave (as delegator) and received (as deputy), newest first."""

    given: tuple[Delegation, ...]
    received: tuple[Delegation, ...]


def _is_officer_for(actor: Official, delegator_id: str) -> bool:
    """Return whether ``actor`` acts as security officer for another official's delegation."""
    return SECURITY_OFFICER in actor.role_set and actor.id != delegator_id


async def create_delegation(ctx: CoreContext, actor: Official, delegator_id: str, deputy_username: str,
                            starts_at: datetime, ends_at: datetime, reason: str = "") -> Delegation:
    """Record that ``delegator_id`` delegates approval to the official ``deputy_username`` from ``starts_at``
    until ``ends_at`` (exclusive), and audit it as ``delegation_created``.

    ``actor`` is the delegator, or a security officer recording it for them.
    Raises DeputyUnknown, DelegationToSelf, DelegationPeriodInvalid,
    DelegationTooLong or DelegationOverlaps when a rule is broken.
    """
    if not _is_officer_for(actor, delegator_id):
        require_role(actor, OFFICIAL)
        if actor.id != delegator_id:
            # Only a security officer records a delegation for another official.
            raise RoleRequired(role=SECURITY_OFFICER)
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput("field_invalid", field="reason", reason=f"longer than {MAX_REASON_LENGTH} characters")
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise InvalidInput("field_invalid", field="starts_at", reason="times need a UTC offset, such as +07:00")
    # Stored in UTC like every other time: SQLite keeps no offset, so 08:00+07:00 would read back as 08:00 UTC.
    starts_at = starts_at.astimezone(timezone.utc)
    ends_at = ends_at.astimezone(timezone.utc)
    now = ctx.clock()
    if starts_at >= ends_at or ends_at <= now:
        raise DelegationPeriodInvalid(starts_at=starts_at.isoformat(timespec="seconds"),
                                      ends_at=ends_at.isoformat(timespec="seconds"))
    limit = ctx.settings.delegation_max_period
    if ends_at - starts_at > limit:
        raise DelegationTooLong(days=limit.days)

    delegation_id = new_id("dlg")
    async with ctx.store.transaction() as tx:
        # Locks the delegator's row, so that two overlapping delegations cannot both pass the check.
        delegator = await tx.official(delegator_id, for_update=True)
        if delegator is None or not delegator.enabled or OFFICIAL not in delegator.role_set:
            raise InvalidInput("field_invalid", field="delegator_official_id",
                               reason=f"{delegator_id} is not an enabled official")
        deputy = await tx.official_by_username(deputy_username.strip())
        if deputy is None or not deputy.enabled or OFFICIAL not in deputy.role_set:
            raise DeputyUnknown(deputy=deputy_username)
        if deputy.id == delegator.id:
            raise DelegationToSelf(deputy=deputy_username)
        overlapping = await chain_store.overlapping_delegations(tx, delegator.id, starts_at, ends_at)
        if overlapping:
            raise DelegationOverlaps(delegation_id=overlapping[0].id,
                                     starts_at=overlapping[0].starts_at.isoformat(timespec="seconds"),
                                     ends_at=overlapping[0].ends_at.isoformat(timespec="seconds"))
        await chain_store.insert_delegation(
            tx, id=delegation_id, delegator_official_id=delegator.id, deputy_official_id=deputy.id,
            starts_at=starts_at, ends_at=ends_at, reason=reason, created_at=now, created_by=actor.id,
        )
        await append_audit(
            tx, action="delegation_created", actor_type=audit_actor_type(actor), actor_id=actor.id,
            details={"delegation_id": delegation_id, "delegator_official_id": delegator.id,
                     "deputy_official_id": deputy.id, "starts_at": starts_at.isoformat(),
                     "ends_at": ends_at.isoformat(), "reason": reason},
            now=now,
        )
        created = await chain_store.delegation(tx, delegation_id)
    assert created is not None
    log.info("delegation.created", delegation_id=delegation_id, delegator_official_id=delegator_id,
             deputy_official_id=created.deputy_official_id, actor_id=actor.id)
    return created


async def revoke_delegation(ctx: CoreContext, actor: Official, delegation_id: str) -> Delegation:
    """Revoke a delegation now, and audit it as ``delegation_revoked``.

    The delegator or a security officer may revoke it; anyone else gets
    DelegationNotFound, as for an unknown id. Requests already routed to the
    deputy stay with the deputy.
    """
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        found = await chain_store.delegation(tx, delegation_id)
        if found is None or not (found.delegator_official_id == actor.id
                                 or SECURITY_OFFICER in actor.role_set):
            raise DelegationNotFound(delegation_id=delegation_id)
        if not await chain_store.revoke_delegation_row(tx, delegation_id, now, actor.id):
            raise DelegationAlreadyRevoked(delegation_id=delegation_id)
        await append_audit(
            tx, action="delegation_revoked", actor_type=audit_actor_type(actor), actor_id=actor.id,
            details={"delegation_id": delegation_id, "delegator_official_id": found.delegator_official_id,
                     "deputy_official_id": found.deputy_official_id, "was_in_force": found.in_force(now)},
            now=now,
        )
        revoked = await chain_store.delegation(tx, delegation_id)
    assert revoked is not None
    log.info("delegation.revoked", delegation_id=delegation_id, actor_id=actor.id)
    return revoked


async def delegations_for_official(ctx: CoreContext, official: Official) -> DelegationsOfOfficial:
    """Return the delegations ``official`` gave and received, revoked and ended ones included."""
    async with ctx.store.read_only() as tx:
        found = await chain_store.delegations_of(tx, official.id)
    return DelegationsOfOfficial(
        given=tuple(d for d in found if d.delegator_official_id == official.id),
        received=tuple(d for d in found if d.deputy_official_id == official.id),
    )


async def delegations_for_officer(ctx: CoreContext, actor: Official, official_id: str) -> DelegationsOfOfficial:
    """Return the delegations of ``official_id`` to a security officer."""
    require_role(actor, SECURITY_OFFICER)
    async with ctx.store.read_only() as tx:
        official = await tx.official(official_id)
    if official is None:
        raise InvalidInput("field_invalid", field="official_id", reason=f"{official_id} is not a known official")
    return await delegations_for_official(ctx, official)
