"""Delivery of the webhook outbox: claim due events, post them signed, record every attempt, back off.

Every serving process runs one :class:`WebhookSender`. It polls the outbox
(a read-only query, cheap when nothing is due), claims due events with a
compare-and-set, and posts each to its application's current URL with the
Standard Webhooks headers (``core.webhooks``). Redirects are not followed.
A 2xx response marks the event delivered. Any other response, a timeout or a
connection error schedules the next attempt after a delay that doubles
from ``SIGNSERVER_WEBHOOK_RETRY_SECONDS`` up to
``SIGNSERVER_WEBHOOK_MAX_DELAY_SECONDS``, or later when the receiver's
``Retry-After`` requests it. After ``SIGNSERVER_WEBHOOK_MAX_ATTEMPTS``
attempts, or at once on ``410 Gone``, the event is abandoned until an
operator queues it again.

Delivery is at least once: a process that stops after the receiver
responded but before the response was stored posts the event again later,
with the same ``webhook-id``, by which receivers drop duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from datetime import timedelta

import aiohttp
import structlog
from prometheus_client import Counter

from signserver.core.context import CoreContext
from signserver.core.webhooks import signature_headers
from signserver.errors import DatabaseUnavailable, SignserverError
from signserver.store.webhooks import (
    WebhookDelivery,
    abandon_webhook_event,
    claim_webhook_event,
    due_webhook_event_ids,
    finish_webhook_attempt,
    mark_webhook_delivered,
    schedule_webhook_retry,
)

__all__ = ["WebhookSender", "retry_delay", "WEBHOOK_DELIVERIES"]

log = structlog.get_logger(__name__)

WEBHOOK_DELIVERIES = Counter(
    "signserver_webhook_deliveries_total",
    "Webhook attempts by outcome: delivered, retry_scheduled or abandoned.",
    ["outcome"],
)

# Events claimed, and posted concurrently, per round.
CLAIM_BATCH = 10
# Extra delay of each retry, as a fraction, drawn at random so that many failed events do not all return at once.
RETRY_JITTER = 0.1
USER_AGENT = "signserver-webhooks/1"
# Seconds between tries to store an attempt's outcome while the database is unreachable.
STORE_RETRY_SECONDS = 1.0


def retry_delay(series_attempts: int, base_seconds: float, max_seconds: float,
                retry_after: float | None = None) -> float:
    """Seconds before the attempt after ``series_attempts`` failed ones: base, doubling, at most ``max_seconds``.

    A receiver's ``Retry-After`` lengthens the delay, within the same bound.
    """
    delay = base_seconds * 2 ** max(0, series_attempts - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(max_seconds, delay * (1 + random.uniform(0, RETRY_JITTER)))


def _retry_after_seconds(value: str | None) -> float | None:
    # Only the delay-seconds form is read. An HTTP-date is ignored, so the usual back-off applies.
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


class WebhookSender:
    """Posts this process's share of the outbox until stopped."""

    def __init__(self, ctx: CoreContext, instance_id: str) -> None:
        self.ctx = ctx
        self.instance_id = instance_id
        settings = ctx.settings
        self.timeout_seconds = settings.webhook_timeout_seconds
        # A claim lasts past one POST's timeout, with room to store its outcome in a busy database.
        self.claim_duration = timedelta(seconds=2 * settings.webhook_timeout_seconds + 5)
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> "WebhookSender":
        """Open the HTTP client session that :meth:`deliver_due` posts with."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds), headers={"User-Agent": USER_AGENT})
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        log.info("webhook_sender.started", instance_id=self.instance_id)
        try:
            async with self:
                while not self._stopping.is_set():
                    claimed = 0
                    try:
                        claimed = await self.deliver_due()
                    except DatabaseUnavailable:
                        log.warning("webhook_sender.store_unavailable",
                                    retry_in_seconds=self.ctx.settings.webhook_poll_seconds)
                    except Exception:  # noqa: BLE001 - the sender must outlive a failed round
                        log.exception("webhook_sender.error")
                    if claimed < CLAIM_BATCH:
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._stopping.wait(), self.ctx.settings.webhook_poll_seconds)
        finally:
            log.info("webhook_sender.stopped", instance_id=self.instance_id)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current round, whose posts end within the timeout."""
        self._stopping.set()

    async def deliver_due(self) -> int:
        """Claim the due events, post them, and store each outcome. Returns how many were claimed."""
        if self._session is None:
            # Raised before any claim, so that the mistake is not recorded as a failed delivery attempt.
            raise RuntimeError("WebhookSender.deliver_due called outside 'async with sender'")
        now = self.ctx.clock()
        # Read-only first: on SQLite, a poll that finds nothing does not take the write lock.
        async with self.ctx.store.read_only() as tx:
            due = await due_webhook_event_ids(tx, now, CLAIM_BATCH)
        if not due:
            return 0

        claimed: list[WebhookDelivery] = []
        async with self.ctx.store.transaction() as tx:
            for event_id in due:
                delivery = await claim_webhook_event(tx, event_id, self.instance_id, now, now + self.claim_duration)
                if delivery is not None:
                    claimed.append(delivery)
        await asyncio.gather(*(self._deliver(delivery) for delivery in claimed))
        return len(claimed)

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        event = delivery.event
        if delivery.webhook_url is None or delivery.webhook_secret_wrapped is None:
            await self._store_outcome(delivery, None, "webhook_url_removed", 0, None, give_up=True)
            return

        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        started = time.monotonic()
        try:
            key = await self.ctx.secret_box.open(delivery.webhook_secret_wrapped)
            body = event.payload_json.encode()
            headers = signature_headers(key, event.id, int(self.ctx.clock().timestamp()), body)
            headers["Content-Type"] = "application/json"
            assert self._session is not None  # checked by deliver_due
            async with self._session.post(delivery.webhook_url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                status = response.status
                retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
            if not 200 <= status <= 299:
                error = f"HTTP {status}"
        except asyncio.TimeoutError:
            error = f"timed out after {self.timeout_seconds} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        except SignserverError as exc:
            # The HSM could not unwrap the key: nothing was sent.
            error = exc.code
        except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt, so the event is retried or abandoned
            log.exception("webhook.post_error", event_id=event.id, attempt=delivery.attempt)
            error = f"{type(exc).__name__}: {exc}"[:300]
        duration_ms = int((time.monotonic() - started) * 1000)
        await self._store_outcome(delivery, status, error, duration_ms, retry_after, give_up=status == 410)

    async def _store_outcome(self, delivery: WebhookDelivery, status: int | None, error: str | None,
                             duration_ms: int, retry_after: float | None, *, give_up: bool) -> None:
        """Record the attempt and deliver, reschedule or abandon the event, retrying while the database is away.

        If the claim lapses first, the outcome is left unstored. Another
        sender takes the event, and this attempt is recorded as interrupted.
        """
        while True:
            try:
                await self._store_outcome_once(delivery, status, error, duration_ms, retry_after, give_up=give_up)
                return
            except DatabaseUnavailable:
                claim_end = delivery.event.claimed_until
                if claim_end is None or self.ctx.clock() + timedelta(seconds=STORE_RETRY_SECONDS) >= claim_end:
                    log.warning("webhook.outcome_not_stored", event_id=delivery.event.id, attempt=delivery.attempt)
                    return
                await asyncio.sleep(STORE_RETRY_SECONDS)

    async def _store_outcome_once(self, delivery: WebhookDelivery, status: int | None, error: str | None,
                                  duration_ms: int, retry_after: float | None, *, give_up: bool) -> None:
        settings = self.ctx.settings
        event = delivery.event
        now = self.ctx.clock()
        context = {"event_id": event.id, "event_type": event.event_type, "request_id": event.request_id,
                   "application_id": event.application_id, "attempt": delivery.attempt, "status": status}
        async with self.ctx.store.transaction() as tx:
            await finish_webhook_attempt(tx, event.id, delivery.attempt, duration_ms=duration_ms,
                                         status_code=status, error=error)
            if error is None:
                await mark_webhook_delivered(tx, event.id, now)
                outcome = "delivered"
            elif give_up or delivery.series_attempts >= settings.webhook_max_attempts:
                stored = await abandon_webhook_event(tx, event.id, self.instance_id, delivery.series_attempts, now,
                                                     error)
                outcome = "abandoned" if stored else "claim_lost"
            else:
                delay = retry_delay(delivery.series_attempts, settings.webhook_retry_seconds,
                                    settings.webhook_max_delay_seconds, retry_after)
                stored = await schedule_webhook_retry(tx, event.id, self.instance_id, delivery.series_attempts,
                                                      now + timedelta(seconds=delay), error)
                context["retry_in_seconds"] = round(delay, 1)
                outcome = "retry_scheduled" if stored else "claim_lost"

        if outcome == "claim_lost":
            log.warning("webhook.claim_lost", **context, error=error)
            return
        WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()
        if outcome == "delivered":
            log.info("webhook.delivered", **context, duration_ms=duration_ms)
        elif outcome == "abandoned":
            log.warning("webhook.abandoned", **context, error=error)
        else:
            log.info("webhook.retry_scheduled", **context, error=error)
