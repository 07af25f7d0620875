"""Queries of approval chains (approval_steps) and delegations (ủy quyền).

Each function takes a :class:`~signserver.store.db.Transaction` and uses its
connection. The core decides the rules; these functions only read and write rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update

from . import tables as t
from .db import Transaction
from .records import SignRequest, from_row

__all__ = [
    "ApprovalStep",
    "ChainStepRow",
    "Delegation",
    "insert_approval_steps",
    "approval_steps",
    "update_approval_step",
    "close_current_step",
    "has_visible_step",
    "decided_steps_of",
    "chain_rows",
    "insert_delegation",
    "delegation",
    "delegation_in_force",
    "overlapping_delegations",
    "delegations_of",
    "revoke_delegation_row",
]

# A step is "waiting" until the one before it is approved, then "current". core.chains names the other states.
WAITING = "waiting"
CURRENT = "current"


@dataclass(frozen=True)
class ApprovalStep:
    request_id: str
    position: int
    official_id: str
    assignee_official_id: str
    delegation_id: str | None
    state: str
    approval_id: str | None
    decided_at: datetime | None


@dataclass(frozen=True)
class ChainStepRow:
    """A step with the full names of its official and of the assignee who approves it."""

    step: ApprovalStep
    official_name: str
    official_username: str
    assignee_name: str
    assignee_username: str


@dataclass(frozen=True)
class Delegation:
    id: str
    delegator_official_id: str
    deputy_official_id: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    delegator_username: str = ""
    delegator_name: str = ""
    deputy_username: str = ""
    deputy_name: str = ""

    def in_force(self, at: datetime) -> bool:
        return self.revoked_at is None and self.starts_at <= at < self.ends_at


_steps = t.approval_steps.c
_delegations = t.delegations.c


async def _all(tx: Transaction, statement: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in (await tx.connection.execute(statement)).mappings().all()]


async def _one(tx: Transaction, statement: Any) -> dict[str, Any] | None:
    row = (await tx.connection.execute(statement)).mappings().first()
    return dict(row) if row is not None else None


async def insert_approval_steps(tx: Transaction, rows: Sequence[dict[str, Any]]) -> None:
    await tx.connection.execute(insert(t.approval_steps), list(rows))


async def approval_steps(tx: Transaction, request_id: str) -> list[ApprovalStep]:
    """Return the steps of ``request_id`` by position; an empty list for a request without a chain."""
    statement = select(t.approval_steps).where(_steps.request_id == request_id).order_by(_steps.position)
    return [from_row(ApprovalStep, row) for row in await _all(tx, statement)]


async def update_approval_step(tx: Transaction, request_id: str, position: int, expected_state: str,
                               **values: Any) -> bool:
    """Update one step if it is still in ``expected_state``; return whether it was."""
    statement = (
        update(t.approval_steps)
        .where(_steps.request_id == request_id, _steps.position == position, _steps.state == expected_state)
        .values(**values)
    )
    return (await tx.connection.execute(statement)).rowcount == 1


async def close_current_step(tx: Transaction, request_id: str, state: str, now: datetime) -> None:
    """Set the request's current step, if it has one, to ``state`` as decided at ``now``."""
    await tx.connection.execute(
        update(t.approval_steps)
        .where(_steps.request_id == request_id, _steps.state == CURRENT)
        .values(state=state, decided_at=now)
    )


async def has_visible_step(tx: Transaction, request_id: str, official_id: str) -> bool:
    """Return whether ``official_id`` is the assignee of a step of the request that is no longer waiting."""
    statement = select(_steps.position).where(
        _steps.request_id == request_id, _steps.assignee_official_id == official_id, _steps.state != WAITING,
    ).limit(1)
    return (await tx.connection.execute(statement)).first() is not None


async def decided_steps_of(tx: Transaction, official_id: str, limit: int) -> list[tuple[ApprovalStep, SignRequest, int]]:
    """Return the steps ``official_id`` approved or rejected, newest first, with their request and step count."""
    counts = select(_steps.request_id.label("counted_id"), func.count().label("step_count")).group_by(
        _steps.request_id).subquery()
    statement = (
        select(t.approval_steps, t.sign_requests, counts.c.step_count)
        .join(t.sign_requests, t.sign_requests.c.id == _steps.request_id)
        .join(counts, counts.c.counted_id == _steps.request_id)
        .where(_steps.assignee_official_id == official_id, _steps.state.in_(["approved", "rejected"]))
        .order_by(_steps.decided_at.desc(), _steps.request_id)
        .limit(limit)
    )
    result = await tx.connection.execute(statement)
    found = []
    step_names = set(t.approval_steps.c.keys())
    for row in result.all():
        mapping = row._mapping
        step = from_row(ApprovalStep, {name: mapping[_steps[name]] for name in step_names})
        request = from_row(SignRequest, {column.name: mapping[column] for column in t.sign_requests.c})
        found.append((step, request, int(mapping[counts.c.step_count])))
    return found


async def chain_rows(tx: Transaction, request_id: str) -> list[ChainStepRow]:
    official = t.officials.alias("step_official")
    assignee = t.officials.alias("step_assignee")
    statement = (
        select(t.approval_steps, official.c.full_name.label("official_name"),
               official.c.username.label("official_username"), assignee.c.full_name.label("assignee_name"),
               assignee.c.username.label("assignee_username"))
        .join(official, official.c.id == _steps.official_id)
        .join(assignee, assignee.c.id == _steps.assignee_official_id)
        .where(_steps.request_id == request_id)
        .order_by(_steps.position)
    )
    rows = []
    for row in await _all(tx, statement):
        rows.append(ChainStepRow(
            step=from_row(ApprovalStep, row), official_name=row["official_name"],
            official_username=row["official_username"], assignee_name=row["assignee_name"],
            assignee_username=row["assignee_username"],
        ))
    return rows


def _delegation_select() -> Any:
    delegator = t.officials.alias("delegator")
    deputy = t.officials.alias("deputy")
    return (
        select(t.delegations, delegator.c.username.label("delegator_username"),
               delegator.c.full_name.label("delegator_name"), deputy.c.username.label("deputy_username"),
               deputy.c.full_name.label("deputy_name"))
        .join(delegator, delegator.c.id == _delegations.delegator_official_id)
        .join(deputy, deputy.c.id == _delegations.deputy_official_id)
    )


async def insert_delegation(tx: Transaction, **values: Any) -> None:
    await tx.connection.execute(insert(t.delegations).values(**values))


async def delegation(tx: Transaction, delegation_id: str) -> Delegation | None:
    row = await _one(tx, _delegation_select().where(_delegations.id == delegation_id))
    return from_row(Delegation, row) if row else None


async def delegation_in_force(tx: Transaction, delegator_official_id: str, at: datetime) -> Delegation | None:
    """Return the unrevoked delegation of ``delegator_official_id`` whose period contains ``at``, if any."""
    statement = _delegation_select().where(
        _delegations.delegator_official_id == delegator_official_id, _delegations.revoked_at.is_(None),
        _delegations.starts_at <= at, _delegations.ends_at > at,
    ).order_by(_delegations.starts_at.desc()).limit(1)
    row = await _one(tx, statement)
    return from_row(Delegation, row) if row else None


async def overlapping_delegations(tx: Transaction, delegator_official_id: str, starts_at: datetime,
                                  ends_at: datetime) -> list[Delegation]:
    """Return the unrevoked delegations of the delegator whose period overlaps [starts_at, ends_at)."""
    statement = _delegation_select().where(
        _delegations.delegator_official_id == delegator_official_id, _delegations.revoked_at.is_(None),
        _delegations.starts_at < ends_at, _delegations.ends_at > starts_at,
    )
    return [from_row(Delegation, row) for row in await _all(tx, statement)]


async def delegations_of(tx: Transaction, official_id: str, limit: int = 200) -> list[Delegation]:
    """Return the delegations ``official_id`` gave or received, newest first."""
    statement = _delegation_select().where(or_(
        _delegations.delegator_official_id == official_id, _delegations.deputy_official_id == official_id,
    )).order_by(_delegations.created_at.desc(), _delegations.id).limit(limit)
    return [from_row(Delegation, row) for row in await _all(tx, statement)]


async def revoke_delegation_row(tx: Transaction, delegation_id: str, revoked_at: datetime, revoked_by: str) -> bool:
    """Mark the delegation revoked unless it already is; return whether this call revoked it."""
    statement = (
        update(t.delegations)
        .where(and_(_delegations.id == delegation_id, _delegations.revoked_at.is_(None)))
        .values(revoked_at=revoked_at, revoked_by=revoked_by)
    )
    return (await tx.connection.execute(statement)).rowcount == 1
