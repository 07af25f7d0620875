"""Queries of the webhook outbox: events, their claims by senders, and the record of every attempt.

A sender claims an event with a compare-and-set UPDATE on its claim columns,
so two processes, on one node or on replicas of one PostgreSQL database,
never post the same event at once. A claim lapses at ``claimed_until``, so
the event of a process that died while posting is taken again later.

``webhook_events.attempts`` counts the attempts of the current series:
re-queueing an abandoned event starts a new series at 0. The attempts
themselves are numbered 1, 2, ... over the event's whole life in
``webhook_attempts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update

from . import tables as t
from .db import Transaction
from .records import from_row

__all__ = [
    "WebhookEvent",
    "WebhookAttempt",
    "WebhookDelivery",
    "NEVER",
    "insert_webhook_event",
    "application_webhook_url",
    "set_application_webhook",
    "due_webhook_event_ids",
    "claim_webhook_event",
    "finish_webhook_attempt",
    "mark_webhook_delivered",
    "schedule_webhook_retry",
    "abandon_webhook_event",
    "webhook_event",
    "webhook_events",
    "webhook_attempts",
    "requeue_webhook_event",
]

# The next_attempt_at of an abandoned event: past every "due" bound, so the sender's index range skips it.
NEVER = datetime(9999, 12, 31, tzinfo=timezone.utc)

# The error of an attempt whose sender stopped before recording its outcome.
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    application_id: str
    request_id: str | None
    event_type: str
    payload_json: str
    created_at: datetime
    next_attempt_at: datetime
    attempts: int
    delivered_at: datetime | None
    abandoned_at: datetime | None
    last_error: str | None
    claimed_by: str | None
    claimed_until: datetime | None


@dataclass(frozen=True)
class WebhookAttempt:
    event_id: str
    attempt: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    instance: str | None


@dataclass(frozen=True)
class WebhookDelivery:
    """A claimed event with what posting it needs: the application's URL and wrapped HMAC key."""

    event: WebhookEvent
    # This attempt's number in webhook_attempts, and the event's attempts in the current series, this one included.
    attempt: int
    series_attempts: int
    webhook_url: str | None
    webhook_secret_wrapped: bytes | None


_events = t.webhook_events


def _pending(table: Any) -> Any:
    return and_(table.c.delivered_at.is_(None), table.c.abandoned_at.is_(None))


def _due(now: datetime) -> Any:
    """Events that may be claimed now: pending, due, unclaimed or with a lapsed claim, and first of their request.

    An event waits while an earlier pending event of the same request
    exists, so an application never learns of ``signed`` before
    ``approved``. Events of one request are ordered by (created_at, id).
    """
    earlier = _events.alias("earlier")
    blocking = select(earlier.c.id).where(
        earlier.c.request_id == _events.c.request_id,
        _pending(earlier),
        or_(earlier.c.created_at < _events.c.created_at,
            and_(earlier.c.created_at == _events.c.created_at, earlier.c.id < _events.c.id)),
    )
    return and_(
        _pending(_events),
        _events.c.next_attempt_at <= now,
        or_(_events.c.claimed_until.is_(None), _events.c.claimed_until < now),
        ~exists(blocking),
    )


async def insert_webhook_event(tx: Transaction, **values: Any) -> None:
    await tx.connection.execute(insert(_events).values(**values))


async def application_webhook_url(tx: Transaction, application_id: str) -> str | None:
    statement = select(t.applications.c.webhook_url).where(t.applications.c.id == application_id)
    return (await tx.connection.execute(statement)).scalar_one_or_none()


async def set_application_webhook(tx: Transaction, application_id: str, url: str | None,
                                  secret_wrapped: bytes | None) -> bool:
    """Set or clear the application's webhook URL and wrapped key. Returns False when no such application exists."""
    result = await tx.connection.execute(
        update(t.applications).where(t.applications.c.id == application_id)
        .values(webhook_url=url, webhook_secret_wrapped=secret_wrapped))
    return result.rowcount == 1


async def due_webhook_event_ids(tx: Transaction, now: datetime, limit: int) -> list[str]:
    """Ids of the events a sender may claim now, the longest-waiting first."""
    # Ordered by the due index alone, so that a backlog is not sorted on every poll.
    statement = select(_events.c.id).where(_due(now)).order_by(_events.c.next_attempt_at).limit(limit)
    return [row[0] for row in (await tx.connection.execute(statement)).all()]


async def claim_webhook_event(tx: Transaction, event_id: str, instance: str, now: datetime,
                              claimed_until: datetime) -> WebhookDelivery | None:
    """Claim the event for ``instance`` until ``claimed_until`` and record the attempt's start.

    Returns None when the event is no longer due or another sender claimed
    it first. An earlier attempt still without an outcome belonged to a
    sender that stopped while posting; it is recorded as interrupted.
    """
    claimed = await tx.connection.execute(
        update(_events).where(_events.c.id == event_id, _due(now))
        .values(claimed_by=instance, claimed_until=claimed_until, attempts=_events.c.attempts + 1))
    if claimed.rowcount != 1:
        return None

    row = (await tx.connection.execute(
        select(_events, t.applications.c.webhook_url, t.applications.c.webhook_secret_wrapped)
        .join(t.applications, t.applications.c.id == _events.c.application_id)
        .where(_events.c.id == event_id))).mappings().one()
    attempts = t.webhook_attempts.c
    await tx.connection.execute(
        update(t.webhook_attempts)
        .where(attempts.event_id == event_id, attempts.status_code.is_(None), attempts.error.is_(None))
        .values(error=INTERRUPTED))
    previous = (await tx.connection.execute(
        select(func.max(attempts.attempt)).where(attempts.event_id == event_id))).scalar_one()
    number = (previous or 0) + 1
    await tx.connection.execute(insert(t.webhook_attempts).values(
        event_id=event_id, attempt=number, started_at=now, duration_ms=0, instance=instance))

    event = from_row(WebhookEvent, row)
    return WebhookDelivery(event=event, attempt=number, series_attempts=event.attempts,
                           webhook_url=row["webhook_url"], webhook_secret_wrapped=row["webhook_secret_wrapped"])


async def finish_webhook_attempt(tx: Transaction, event_id: str, attempt: int, *, duration_ms: int,
                                 status_code: int | None, error: str | None) -> None:
    attempts = t.webhook_attempts.c
    await tx.connection.execute(
        update(t.webhook_attempts).where(attempts.event_id == event_id, attempts.attempt == attempt)
        .values(duration_ms=duration_ms, status_code=status_code, error=error))


async def mark_webhook_delivered(tx: Transaction, event_id: str, now: datetime) -> bool:
    """Mark the event delivered, even if this sender's claim lapsed meanwhile: the receiver has it."""
    result = await tx.connection.execute(
        update(_events).where(_events.c.id == event_id, _events.c.delivered_at.is_(None))
        .values(delivered_at=now, claimed_by=None, claimed_until=None, last_error=None))
    return result.rowcount == 1


def _still_claimed(event_id: str, instance: str, series_attempts: int) -> Any:
    return and_(_events.c.id == event_id, _events.c.claimed_by == instance, _events.c.attempts == series_attempts,
                _pending(_events))


async def schedule_webhook_retry(tx: Transaction, event_id: str, instance: str, series_attempts: int,
                                 next_attempt_at: datetime, error: str) -> bool:
    """Release the claim and set the next attempt. Returns False when the claim lapsed and another sender took it."""
    result = await tx.connection.execute(
        update(_events).where(_still_claimed(event_id, instance, series_attempts))
        .values(next_attempt_at=next_attempt_at, claimed_by=None, claimed_until=None, last_error=error))
    return result.rowcount == 1


async def abandon_webhook_event(tx: Transaction, event_id: str, instance: str, series_attempts: int,
                                now: datetime, error: str) -> bool:
    """Give the event up. Returns False when the claim lapsed and another sender took it."""
    result = await tx.connection.execute(
        update(_events).where(_still_claimed(event_id, instance, series_attempts))
        .values(abandoned_at=now, next_attempt_at=NEVER, claimed_by=None, claimed_until=None, last_error=error))
    return result.rowcount == 1


async def webhook_event(tx: Transaction, event_id: str) -> WebhookEvent | None:
    row = (await tx.connection.execute(select(_events).where(_events.c.id == event_id))).mappings().first()
    return from_row(WebhookEvent, row) if row is not None else None


async def webhook_events(tx: Transaction, *, status: str, application_id: str | None = None,
                         request_id: str | None = None, limit: int = 100) -> list[WebhookEvent]:
    """Events by ``status``: ``pending`` (not yet delivered), ``abandoned``, ``delivered`` or ``all``, oldest first."""
    statement = select(_events).order_by(_events.c.created_at, _events.c.id).limit(limit)
    if status == "pending":
        statement = statement.where(_pending(_events))
    elif status == "abandoned":
        statement = statement.where(_events.c.abandoned_at.is_not(None))
    elif status == "delivered":
        statement = statement.where(_events.c.delivered_at.is_not(None))
    elif status != "all":
        raise ValueError(f"unknown webhook event status {status!r}; use pending, abandoned, delivered or all")
    if application_id is not None:
        statement = statement.where(_events.c.application_id == application_id)
    if request_id is not None:
        statement = statement.where(_events.c.request_id == request_id)
    rows = (await tx.connection.execute(statement)).mappings().all()
    return [from_row(WebhookEvent, row) for row in rows]


async def webhook_attempts(tx: Transaction, event_ids: Sequence[str]) -> dict[str, list[WebhookAttempt]]:
    """Return the attempts of each event, in order."""
    found: dict[str, list[WebhookAttempt]] = {event_id: [] for event_id in event_ids}
    if not event_ids:
        return found
    attempts = t.webhook_attempts.c
    statement = (select(t.webhook_attempts).where(attempts.event_id.in_(list(event_ids)))
                 .order_by(attempts.event_id, attempts.attempt))
    for row in (await tx.connection.execute(statement)).mappings().all():
        found[row["event_id"]].append(from_row(WebhookAttempt, row))
    return found


async def requeue_webhook_event(tx: Transaction, event_id: str, now: datetime) -> bool:
    """Make an abandoned event due now, with a new series of attempts. Returns False when it is not abandoned."""
    result = await tx.connection.execute(
        update(_events).where(_events.c.id == event_id, _events.c.abandoned_at.is_not(None),
                              _events.c.delivered_at.is_(None))
        .values(abandoned_at=None, next_attempt_at=now, attempts=0, last_error=None, claimed_by=None,
                claimed_until=None))
    return result.rowcount == 1
