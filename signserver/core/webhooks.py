"""Webhook events of sign requests, and their signature by the Standard Webhooks specification 1.0.0.

Each state change an application must learn of (approved, rejected,
signed, failed, expired) writes one row to the ``webhook_events`` outbox in
the transaction that makes the change. So nothing is sent for a change that
rolled back, and nothing committed is lost. ``signserver.webhook_sender``
posts the rows later.

The body follows the specification's payload structure: ``type``,
``timestamp`` and ``data``. It has identifiers, digests and links, never
document content or secrets. The headers are ``webhook-id`` (the event id,
the same on every retry, for the receiver to drop duplicates),
``webhook-timestamp`` (Unix seconds of the attempt) and
``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of
``{id}.{timestamp}.{body}`` under the application's key. The key is 32
random bytes, shown to the integrator once as ``whsec_`` and its base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import datetime, timezone
from typing import Any

from signserver.store.db import Transaction
from signserver.store.records import SignRequest
from signserver.store.webhooks import application_webhook_url, insert_webhook_event

from .context import new_id

__all__ = [
    "WEBHOOK_EVENT_TYPES",
    "SECRET_PREFIX",
    "enqueue_state_event",
    "event_payload",
    "new_webhook_secret",
    "signature_headers",
]

# The sign request states that produce a webhook event. Each state is also the event's name.
WEBHOOK_EVENT_TYPES = frozenset({"approved", "rejected", "signed", "failed", "expired"})

SECRET_PREFIX = "whsec_"
# The specification requires 24 to 64 random bytes.
SECRET_BYTES = 32


def _utc_iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(request: SignRequest, event_type: str, now: datetime) -> str:
    """Return the webhook body for ``request`` as it is after the change, as compact UTF-8 JSON."""
    links = {"self": f"/api/v1/sign-requests/{request.id}"}
    data: dict[str, Any] = {
        "request_id": request.id,
        "dossier_code": request.dossier_code,
        "idempotency_key": request.idempotency_key,
        "state": request.state,
        "state_reason": request.state_reason,
        "title": request.title,
        "credential_id": request.credential_id,
        "document_sha256": request.document_sha256,
        "decided_by": request.decided_by,
        "links": links,
    }
    if event_type == "signed":
        data["signed_sha256"] = request.signed_sha256
        links["signed_document"] = f"/api/v1/sign-requests/{request.id}/signed-document"
    if event_type == "rejected":
        data["rejection_reason"] = request.rejection_reason
    body = {"type": f"sign_request.{event_type}", "timestamp": _utc_iso(now), "data": data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


async def enqueue_state_event(tx: Transaction, request: SignRequest, event_type: str, now: datetime) -> str | None:
    """Write the event of ``request``'s change to ``event_type`` into the outbox, in the caller's transaction.

    ``request`` is the request as it is after the change. Returns the event
    id, or None when the request's application has no webhook URL.
    """
    if event_type not in WEBHOOK_EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}; use one of {sorted(WEBHOOK_EVENT_TYPES)}")
    if await application_webhook_url(tx, request.application_id) is None:
        return None
    event_id = new_id("evt")
    await insert_webhook_event(
        tx, id=event_id, application_id=request.application_id, request_id=request.id,
        event_type=f"sign_request.{event_type}", payload_json=event_payload(request, event_type, now),
        created_at=now, next_attempt_at=now, attempts=0,
    )
    return event_id


def new_webhook_secret() -> tuple[str, bytes]:
    """Return a new signing key: as shown to the integrator (``whsec_...``), and its raw bytes."""
    key = secrets.token_bytes(SECRET_BYTES)
    return SECRET_PREFIX + base64.b64encode(key).decode("ascii"), key


def signature_headers(key: bytes, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Return the webhook-id, webhook-timestamp and webhook-signature headers of one attempt."""
    signed_content = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed_content, hashlib.sha256).digest()
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode("ascii"),
    }
