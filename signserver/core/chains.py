"""Approval chains: who approves a sign request, in which order, and which deputy acts for whom (ủy quyền).

A request may name ``approvers``, the officials who approve before the
official who approves the key (a specialist, then the head of division). The
key's approver, who approves for the key's owner or for the agency seal, is
always the last step. Each step whose official has a delegation in force when
the request is submitted is assigned to the deputy; a deputy's own delegation
is not followed (one level only). A delegation that ends or is revoked later
does not re-route requests already submitted.

When the last step is delegated and the key is the personal key of that
step's official, the request is signed with the deputy's own active personal
credential: a deputy signs in their own name, never with the delegator's key.
An agency seal's delegation changes who approves, never the key.

A request the policy lets an application seal unattended needs no approval;
with ``approvers`` named, those officials still approve in order, and the
last approval lets it be sealed without the seal holder's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from signserver.errors import InvalidInput
from signserver.store import chains as chain_store
from signserver.store.chains import Delegation
from signserver.store.db import Transaction
from signserver.store.records import Credential, Official

from .chain_errors import (
    ApprovalChainTooLong,
    ApproverRepeated,
    ApproverTwiceByDelegation,
    ApproverUnknown,
    DeputyCredentialMissing,
)
from .roles import OFFICIAL

__all__ = ["PlannedStep", "ChainPlan", "parse_approvers", "plan_chain", "step_rows", "STEP_WAITING",
           "STEP_CURRENT", "STEP_APPROVED", "STEP_REJECTED", "STEP_EXPIRED"]

log = structlog.get_logger(__name__)

STEP_WAITING = "waiting"
STEP_CURRENT = "current"
STEP_APPROVED = "approved"
STEP_REJECTED = "rejected"
# The step that was current when the request passed its deadline; the steps after it stay waiting.
STEP_EXPIRED = "expired"

# Usernames are at most 128 characters (officials.username).
_MAX_USERNAME = 128


@dataclass(frozen=True)
class PlannedStep:
    official: Official  # whose approval the step stands for
    assignee: Official  # who approves it: the official, or their deputy
    delegation: Delegation | None


@dataclass(frozen=True)
class ChainPlan:
    """The steps of a new request and the credential it is signed with."""

    steps: tuple[PlannedStep, ...]
    signing_credential: Credential
    # Set when the deputy's credential replaced the requested one.
    credential_delegation: Delegation | None = None

    @property
    def first_assignee_id(self) -> str | None:
        return self.steps[0].assignee.id if self.steps else None


def parse_approvers(value: Any) -> tuple[str, ...]:
    """Validate the ``approvers`` field of a sign request: a list of official usernames, possibly empty."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInput("field_invalid", field="approvers", reason="must be a list of official usernames")
    names = []
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item.strip()) > _MAX_USERNAME:
            raise InvalidInput("field_invalid", field="approvers",
                               reason=f"each approver must be a username of 1 to {_MAX_USERNAME} characters")
        names.append(item.strip())
    return tuple(names)


async def plan_chain(tx: Transaction, credential: Credential, approvers: tuple[str, ...], *,
                     approval_required: bool, max_length: int, now: datetime) -> ChainPlan:
    """Resolve ``approvers`` and the key's approver into steps, and apply the delegations in force at ``now``.

    Raises ApproverUnknown for a name that is not an enabled official. Raises
    ApproverRepeated for a name listed twice, or for the key's approver listed
    before the last place, and ApproverTwiceByDelegation when a deputy would
    hold two steps. Raises ApprovalChainTooLong over ``max_length``
    steps, and DeputyCredentialMissing when the deputy who would sign has no
    personal key.
    """
    if not approval_required and not approvers:
        return ChainPlan((), credential)
    key_approver = None
    if approval_required:
        if credential.approver_official_id is not None:
            key_approver = await tx.official(credential.approver_official_id)
        if key_approver is None:
            if approvers:
                raise InvalidInput("field_invalid", field="approvers",
                                   reason=f"the key {credential.id} has no approving official to end the chain")
            # NOTE: no official can approve such a request, so it waits until it expires.
            return ChainPlan((), credential)

    officials = await _named_officials(tx, approvers, key_approver)
    if key_approver is not None:
        officials.append(key_approver)
    if len(officials) > max_length:
        raise ApprovalChainTooLong(count=len(officials), limit=max_length)

    steps = [await _routed_step(tx, official, now) for official in officials]
    _check_distinct_assignees(steps)
    signing_credential, credential_delegation = await _signing_credential(tx, credential, steps[-1])
    return ChainPlan(tuple(steps), signing_credential, credential_delegation)


async def _named_officials(tx: Transaction, approvers: tuple[str, ...],
                           key_approver: Official | None) -> list[Official]:
    """Resolve the usernames in order. The key's approver named last is dropped, because it ends every chain."""
    found: list[Official] = []
    for index, name in enumerate(approvers):
        official = await tx.official_by_username(name)
        if official is None or not official.enabled or OFFICIAL not in official.role_set:
            raise ApproverUnknown(approver=name)
        if any(earlier.id == official.id for earlier in found):
            raise ApproverRepeated(approver=name)
        if key_approver is not None and official.id == key_approver.id:
            if index != len(approvers) - 1:
                raise ApproverRepeated(approver=name)
            continue
        found.append(official)
    return found


async def _routed_step(tx: Transaction, official: Official, now: datetime) -> PlannedStep:
    delegation = await chain_store.delegation_in_force(tx, official.id, now)
    if delegation is None:
        return PlannedStep(official, official, None)
    deputy = await tx.official(delegation.deputy_official_id)
    if deputy is None or not deputy.enabled or OFFICIAL not in deputy.role_set:
        # A deputy disabled since the delegation was recorded cannot approve; the delegator keeps the step.
        log.warning("delegation.deputy_unavailable", delegation_id=delegation.id, official_id=official.id,
                    deputy_official_id=delegation.deputy_official_id)
        return PlannedStep(official, official, None)
    return PlannedStep(official, deputy, delegation)


def _check_distinct_assignees(steps: list[PlannedStep]) -> None:
    """Keep the chain's four eyes: a delegation must not give one person two steps."""
    seen: dict[str, PlannedStep] = {}
    for step in steps:
        earlier = seen.get(step.assignee.id)
        if earlier is not None:
            delegated = step if step.delegation is not None else earlier
            raise ApproverTwiceByDelegation(approver=step.assignee.username,
                                            delegator=delegated.official.username)
        seen[step.assignee.id] = step


async def _signing_credential(tx: Transaction, credential: Credential,
                              last: PlannedStep) -> tuple[Credential, Delegation | None]:
    """Return the deputy's personal credential when the last step is delegated by the owner of a personal key."""
    if (last.delegation is None or credential.kind != "personal"
            or credential.owner_official_id != last.official.id):
        return credential, None
    deputy_credential = await tx.personal_credential(last.assignee.id)
    if deputy_credential is None:
        raise DeputyCredentialMissing(deputy=last.assignee.username, delegator=last.official.username,
                                      delegation_id=last.delegation.id)
    return deputy_credential, last.delegation


def step_rows(request_id: str, plan: ChainPlan) -> list[dict[str, Any]]:
    """Return the approval_steps rows of a new request: the first step current, the others waiting."""
    return [
        {
            "request_id": request_id, "position": position, "official_id": step.official.id,
            "assignee_official_id": step.assignee.id,
            "delegation_id": step.delegation.id if step.delegation else None,
            "state": STEP_CURRENT if position == 1 else STEP_WAITING,
        }
        for position, step in enumerate(plan.steps, start=1)
    ]
