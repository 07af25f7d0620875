"""The sign request state machine and its one transition function.

``pending_approval → approved → signing → signed``, or ``rejected``,
``expired``, ``failed``. ``signing → approved`` puts a request back in line
when the HSM, a TSA or a revocation source is down (a limited number of times). Every change goes through :func:`transition`, which
refuses a move the machine does not allow and applies it as a compare-and-set
on the stored state, so two concurrent deciders cannot both win. It also
writes the webhook event of the change into the outbox, in the same
transaction (see ``core.webhooks``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from signserver.store.db import Transaction
from signserver.store.records import SignRequest

from .errors import RequestAlreadyDecided
from .metrics import SIGN_REQUEST_EVENTS
from .webhooks import WEBHOOK_EVENT_TYPES, enqueue_state_event

__all__ = [
    "PENDING_APPROVAL",
    "APPROVED",
    "SIGNING",
    "SIGNED",
    "REJECTED",
    "EXPIRED",
    "FAILED",
    "FINAL_STATES",
    "transition",
]

PENDING_APPROVAL = "pending_approval"
APPROVED = "approved"
SIGNING = "signing"
SIGNED = "signed"
REJECTED = "rejected"
EXPIRED = "expired"
FAILED = "failed"

FINAL_STATES = frozenset({SIGNED, REJECTED, EXPIRED, FAILED})

_ALLOWED = {
    PENDING_APPROVAL: {APPROVED, REJECTED, EXPIRED},
    APPROVED: {SIGNING, FAILED},
    SIGNING: {SIGNED, FAILED, APPROVED},
}


async def transition(tx: Transaction, request: SignRequest, to_state: str, now: datetime, **values: Any) -> None:
    """Move ``request`` to ``to_state`` or raise :class:`RequestAlreadyDecided`."""
    if to_state not in _ALLOWED.get(request.state, set()):
        raise RequestAlreadyDecided(request_id=request.id, state=request.state)
    changed = await tx.update_sign_request(request.id, request.state, state=to_state, updated_at=now, **values)
    if not changed:
        current = await tx.sign_request(request.id)
        raise RequestAlreadyDecided(request_id=request.id, state=current.state if current else "unknown")
    # Putting a request back in line after an outage is no new approval, so it writes no webhook event.
    if to_state in WEBHOOK_EVENT_TYPES and not (request.state == SIGNING and to_state == APPROVED):
        changed_request = replace(request, state=to_state, updated_at=now, **values)
        await enqueue_state_event(tx, changed_request, to_state, now)
    # Counted before commit: a rolled-back transition is counted too, which only over-reports.
    SIGN_REQUEST_EVENTS.labels(state=to_state).inc()
