"""A security officer's management of application webhooks: the URL and its signing key, and the outbox.

Setting a URL always makes a new signing key. The key is returned once,
for the officer to hand to the integrator, and stored only wrapped by the
HSM, as TOTP seeds are. Every change is an audit record that names the URL,
never the key. An event the sender abandoned can be queued again for a
new series of attempts.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog

from signserver.errors import Conflict, InvalidInput, NotFound
from signserver.store.db import Transaction
from signserver.store.records import Application, Official
from signserver.store.webhooks import (
    WebhookAttempt,
    WebhookEvent,
    application_webhook_url,
    requeue_webhook_event,
    set_application_webhook,
    webhook_attempts,
    webhook_event,
    webhook_events,
)

from .audit import append_audit
from .context import CoreContext
from .roles import AUDITOR, SECURITY_OFFICER, require_role
from .webhooks import new_webhook_secret

__all__ = [
    "ApplicationNotFound",
    "WebhookEventNotFound",
    "WebhookEventNotAbandoned",
    "WebhookUrlMissing",
    "RegisteredWebhook",
    "EventWithAttempts",
    "EVENT_STATUSES",
    "parse_webhook_url",
    "new_webhook_values",
    "set_webhook",
    "remove_webhook",
    "list_webhook_events",
    "requeue_event",
]

log = structlog.get_logger(__name__)

MAX_URL_LENGTH = 2000
# The statuses ``list_webhook_events`` filters by.
EVENT_STATUSES = ("pending", "abandoned", "delivered", "all")


class ApplicationNotFound(NotFound):
    code = "application_not_found"


class WebhookEventNotFound(NotFound):
    code = "webhook_event_not_found"


class WebhookEventNotAbandoned(Conflict):
    code = "webhook_event_not_abandoned"


class WebhookUrlMissing(Conflict):
    """The event's application has no webhook URL, so a requeued event would be abandoned again."""

    code = "webhook_url_missing"


@dataclass(frozen=True)
class RegisteredWebhook:
    application: Application
    # The signing key as the integrator enters it (whsec_...); it is shown only this once.
    secret: str


@dataclass(frozen=True)
class EventWithAttempts:
    event: WebhookEvent
    attempts: tuple[WebhookAttempt, ...]


def parse_webhook_url(value: Any) -> str:
    """Return ``value`` if it is an absolute http or https URL that a sender may post to, else raise InvalidInput."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("field_missing", field="webhook_url")
    url = value.strip()
    if len(url) > MAX_URL_LENGTH or any(c in string.whitespace or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidInput("field_invalid", field="webhook_url",
                           reason=f"at most {MAX_URL_LENGTH} characters, without spaces or control characters")
    parts = urlsplit(url)
    try:
        parts.port
    except ValueError:
        raise InvalidInput("field_invalid", field="webhook_url", reason="the port is not a number from 0 to 65535") \
            from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidInput("field_invalid", field="webhook_url",
                           reason="must be an absolute http:// or https:// URL with a host name")
    if parts.username is not None or parts.password is not None:
        # A password in the URL would reach the audit trail and the logs.
        raise InvalidInput("field_invalid", field="webhook_url", reason="must not contain a user name or password")
    if parts.fragment:
        raise InvalidInput("field_invalid", field="webhook_url", reason="must not contain a #fragment")
    return url


async def new_webhook_values(ctx: CoreContext, url: Any) -> tuple[dict[str, Any], str]:
    """Return the application columns of a webhook at ``url`` with a new key, and the key as shown once."""
    checked_url = parse_webhook_url(url)
    secret, key = new_webhook_secret()
    return {"webhook_url": checked_url, "webhook_secret_wrapped": await ctx.secret_box.seal(key)}, secret


async def _application(tx: Transaction, application_id: str) -> Application:
    application = await tx.application(application_id)
    if application is None:
        raise ApplicationNotFound(application_id=application_id)
    return application


async def set_webhook(ctx: CoreContext, officer: Official, application_id: str, url: Any) -> RegisteredWebhook:
    """Set or replace the application's webhook URL, with a new signing key returned once."""
    require_role(officer, SECURITY_OFFICER)
    values, secret = await new_webhook_values(ctx, url)
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        previous = await _application(tx, application_id)
        await set_application_webhook(tx, application_id, values["webhook_url"], values["webhook_secret_wrapped"])
        await append_audit(tx, action="application_webhook_set", actor_type="security_officer", actor_id=officer.id,
                           details={"application_id": application_id, "webhook_url": values["webhook_url"],
                                    "previous_webhook_url": previous.webhook_url, "signing_key_renewed": True},
                           now=now)
        application = await _application(tx, application_id)
    log.info("application.webhook_set", application_id=application_id, officer_id=officer.id,
             replaced=previous.webhook_url is not None)
    return RegisteredWebhook(application, secret)


async def remove_webhook(ctx: CoreContext, officer: Official, application_id: str) -> Application:
    """Remove the application's webhook; events still in the outbox are abandoned when their turn comes."""
    require_role(officer, SECURITY_OFFICER)
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        previous = await _application(tx, application_id)
        await set_application_webhook(tx, application_id, None, None)
        await append_audit(tx, action="application_webhook_removed", actor_type="security_officer",
                           actor_id=officer.id, details={"application_id": application_id,
                                                         "previous_webhook_url": previous.webhook_url}, now=now)
        application = await _application(tx, application_id)
    log.info("application.webhook_removed", application_id=application_id, officer_id=officer.id)
    return application


async def list_webhook_events(ctx: CoreContext, person: Official, status: str, *,
                              application_id: str | None = None, request_id: str | None = None,
                              limit: int = 100) -> list[EventWithAttempts]:
    """Return outbox events by status (see EVENT_STATUSES), oldest first, each with its attempts."""
    require_role(person, SECURITY_OFFICER, AUDITOR)
    if status not in EVENT_STATUSES:
        raise InvalidInput("field_invalid", field="status", reason=f"use one of {', '.join(EVENT_STATUSES)}")
    async with ctx.store.read_only() as tx:
        # An unknown id would list nothing, which reads as "no events" for a real application.
        if application_id is not None and await tx.application(application_id) is None:
            raise ApplicationNotFound(application_id=application_id)
        events = await webhook_events(tx, status=status, application_id=application_id, request_id=request_id,
                                      limit=limit)
        attempts = await webhook_attempts(tx, [event.id for event in events])
    return [EventWithAttempts(event, tuple(attempts[event.id])) for event in events]


async def requeue_event(ctx: CoreContext, officer: Official, event_id: str) -> WebhookEvent:
    """Make an abandoned event due again, with a new series of attempts."""
    require_role(officer, SECURITY_OFFICER)
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        event = await webhook_event(tx, event_id)
        if event is None:
            raise WebhookEventNotFound(event_id=event_id)
        if event.delivered_at is None and await application_webhook_url(tx, event.application_id) is None:
            log.info("webhook.requeue_without_url", event_id=event_id, application_id=event.application_id)
            raise WebhookUrlMissing(event_id=event_id, application_id=event.application_id)
        if not await requeue_webhook_event(tx, event_id, now):
            state = "delivered" if event.delivered_at is not None else "pending"
            raise WebhookEventNotAbandoned(event_id=event_id, state=state)
        request = await tx.sign_request(event.request_id) if event.request_id else None
        await append_audit(tx, action="webhook_event_requeued", actor_type="security_officer", actor_id=officer.id,
                           request_id=event.request_id, dossier_code=request.dossier_code if request else None,
                           details={"event_id": event_id, "application_id": event.application_id,
                                    "event_type": event.event_type, "attempts_before": event.attempts}, now=now)
        requeued = await webhook_event(tx, event_id)
    assert requeued is not None
    log.info("webhook.requeued", event_id=event_id, application_id=event.application_id, officer_id=officer.id)
    return requeued
