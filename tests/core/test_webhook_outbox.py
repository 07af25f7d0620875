"""The webhook outbox on a real store: events written by transitions, claims, order per request, retries.

The store is SQLite, or PostgreSQL with SIGNSERVER_TEST_STORE=postgresql.
The sender's outcomes (delivered, 410 Gone, Retry-After, a removed URL) are
checked against a receiver on 127.0.0.1 with a fixed clock, so each test
reads the exact time the sender scheduled. There the key is stored
unwrapped: wrapping by the HSM is tested with the whole service in
tests/test_webhooks.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from signserver.config import Settings
from signserver.core.context import CoreContext
from signserver.core.states import APPROVED, REJECTED, SIGNED, SIGNING, transition
from signserver.core.webhooks import new_webhook_secret, signature_headers
from signserver.store.db import Store
from signserver.store.webhooks import (
    NEVER,
    WebhookAttempt,
    WebhookEvent,
    abandon_webhook_event,
    claim_webhook_event,
    due_webhook_event_ids,
    mark_webhook_delivered,
    requeue_webhook_event,
    set_application_webhook,
    webhook_attempts,
    webhook_event,
    webhook_events,
)
from signserver.webhook_sender import WebhookSender, retry_delay
from tests.core.store_helpers import APPLICATION, NOW, QUIET_APPLICATION, new_request, open_seeded_store

RETRY_SECONDS = 10
MAX_DELAY_SECONDS = 3600
# The sender's clock: a second after the events were written, so that they are due.
SENDER_NOW = NOW + timedelta(seconds=1)


class RolledBack(Exception):
    pass


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_seeded_store(tmp_path)
    yield store
    await store.close()


async def move(store: Store, request_id: str, to_state: str, now: datetime = NOW, **values: object) -> None:
    async with store.transaction() as tx:
        request = await tx.sign_request(request_id, for_update=True)
        assert request is not None
        await transition(tx, request, to_state, now, **values)


async def all_events(store: Store) -> list:
    async with store.read_only() as tx:
        return await webhook_events(tx, status="all")


async def test_transition_writes_event(store: Store) -> None:
    await new_request(store, "req-1")
    await move(store, "req-1", REJECTED, decided_by="off-a", rejection_reason="Thiếu chữ ký", state_reason="x")

    events = await all_events(store)
    payload = json.loads(events[0].payload_json)

    assert len(events) == 1
    assert events[0].event_type == "sign_request.rejected"
    assert events[0].request_id == "req-1"
    assert payload["type"] == "sign_request.rejected"
    assert payload["timestamp"] == "2026-12-05T03:00:00.000Z"
    assert payload["data"]["state"] == "rejected"
    assert payload["data"]["rejection_reason"] == "Thiếu chữ ký"
    assert payload["data"]["decided_by"] == "off-a"
    assert payload["data"]["links"] == {"self": "/api/v1/sign-requests/req-1"}
    assert "signed_sha256" not in payload["data"]


async def test_rolled_back_transition_leaves_no_event(store: Store) -> None:
    await new_request(store, "req-1")

    with pytest.raises(RolledBack):
        async with store.transaction() as tx:
            request = await tx.sign_request("req-1", for_update=True)
            assert request is not None
            await transition(tx, request, APPROVED, NOW, decided_by="off-a")
            raise RolledBack()

    async with store.read_only() as tx:
        request = await tx.sign_request("req-1")
    assert request is not None
    assert request.state == "pending_approval"
    assert await all_events(store) == []


async def test_put_back_after_outage_writes_no_event(store: Store) -> None:
    await new_request(store, "req-1", state=SIGNING)
    await move(store, "req-1", APPROVED, signing_instance=None)

    assert await all_events(store) == []


async def test_application_without_url_gets_no_event(store: Store) -> None:
    await new_request(store, "req-1", application_id=QUIET_APPLICATION)
    await move(store, "req-1", APPROVED, decided_by="off-a")

    assert await all_events(store) == []


async def test_signed_event_has_signed_digest_and_link(store: Store) -> None:
    await new_request(store, "req-1", state=SIGNING)
    await move(store, "req-1", SIGNED, signed_sha256="b" * 64, signed_path="/x", signed_at=NOW)

    payload = json.loads((await all_events(store))[0].payload_json)

    assert payload["data"]["signed_sha256"] == "b" * 64
    assert payload["data"]["links"]["signed_document"] == "/api/v1/sign-requests/req-1/signed-document"


async def test_claim_taken_once(store: Store) -> None:
    await new_request(store, "req-1")
    await move(store, "req-1", APPROVED)
    event_id = (await all_events(store))[0].id

    async with store.transaction() as tx:
        first = await claim_webhook_event(tx, event_id, "inst-a", NOW, NOW + timedelta(seconds=30))
    async with store.transaction() as tx:
        second = await claim_webhook_event(tx, event_id, "inst-b", NOW, NOW + timedelta(seconds=30))
    async with store.transaction() as tx:
        after_lapse = await claim_webhook_event(tx, event_id, "inst-b", NOW + timedelta(seconds=31),
                                                NOW + timedelta(seconds=61))

    assert first is not None
    assert first.attempt == 1
    assert first.webhook_url == "http://127.0.0.1:9/hook"
    assert second is None
    assert after_lapse is not None
    assert after_lapse.attempt == 2


async def test_concurrent_claims_one_winner(store: Store) -> None:
    await new_request(store, "req-1")
    await move(store, "req-1", APPROVED)
    event_id = (await all_events(store))[0].id
    # A second engine, as another process or replica has: on PostgreSQL the two claims run at once.
    other = Store(store.database_url)

    async def claim(claimer: Store, instance: str) -> object:
        async with claimer.transaction() as tx:
            return await claim_webhook_event(tx, event_id, instance, NOW, NOW + timedelta(seconds=30))

    try:
        results = await asyncio.gather(*(claim(claimer, f"inst-{n}") for n, claimer in enumerate([store, other] * 4)))
    finally:
        await other.close()

    assert sum(result is not None for result in results) == 1


async def test_later_event_waits_for_earlier(store: Store) -> None:
    await new_request(store, "req-1")
    await move(store, "req-1", APPROVED)
    await move(store, "req-1", SIGNING, NOW + timedelta(seconds=1))
    await move(store, "req-1", SIGNED, NOW + timedelta(seconds=2), signed_sha256="b" * 64)
    approved, signed = await all_events(store)
    later = NOW + timedelta(seconds=10)

    async with store.read_only() as tx:
        due_before = await due_webhook_event_ids(tx, later, 10)
    async with store.transaction() as tx:
        blocked_claim = await claim_webhook_event(tx, signed.id, "inst-a", later, later + timedelta(seconds=30))
        await mark_webhook_delivered(tx, approved.id, later)
    async with store.read_only() as tx:
        due_after = await due_webhook_event_ids(tx, later, 10)

    assert approved.event_type == "sign_request.approved"
    assert due_before == [approved.id]
    assert blocked_claim is None
    assert due_after == [signed.id]


async def test_requeue_starts_new_series(store: Store) -> None:
    await new_request(store, "req-1")
    await move(store, "req-1", APPROVED)
    event_id = (await all_events(store))[0].id
    async with store.transaction() as tx:
        claimed = await claim_webhook_event(tx, event_id, "inst-a", NOW, NOW + timedelta(seconds=30))
        assert claimed is not None
        await abandon_webhook_event(tx, event_id, "inst-a", claimed.series_attempts, NOW, "HTTP 500")
    async with store.read_only() as tx:
        due_abandoned = await due_webhook_event_ids(tx, NOW + timedelta(days=365), 10)

    async with store.transaction() as tx:
        requeued = await requeue_webhook_event(tx, event_id, NOW)
        requeued_twice = await requeue_webhook_event(tx, event_id, NOW)
        again = await claim_webhook_event(tx, event_id, "inst-a", NOW, NOW + timedelta(seconds=30))

    assert due_abandoned == []
    assert requeued is True
    assert requeued_twice is False
    assert again is not None
    assert again.attempt == 2
    assert again.series_attempts == 1


def test_signature_verified_by_standardwebhooks() -> None:
    secret, key = new_webhook_secret()
    body = '{"type":"sign_request.signed","data":{"title":"Giấy xác nhận"}}'.encode()
    now = int(datetime.now(timezone.utc).timestamp())
    headers = signature_headers(key, "evt_0001", now, body)
    verifier = Webhook(secret)

    assert secret.startswith("whsec_")
    assert verifier.verify(body, headers)["type"] == "sign_request.signed"
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body.replace(b"signed", b"failed"), headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, signature_headers(key, "evt_0001", now - 3600, body))


def test_retry_delay_doubles_up_to_cap() -> None:
    delays = [retry_delay(attempt, 10, 3600) for attempt in (1, 2, 3, 10)]
    honoured = retry_delay(1, 10, 3600, retry_after=120)

    assert 10 <= delays[0] <= 11
    assert 20 <= delays[1] <= 22
    assert 40 <= delays[2] <= 44
    assert delays[3] == 3600
    assert 120 <= honoured <= 132


class UnwrappedSecretBox:
    """A secret box that returns what it was given: the sender under test only opens the key."""

    async def seal(self, plaintext: bytes) -> bytes:
        return plaintext

    async def open(self, blob: bytes) -> bytes:
        return blob


@dataclass
class Receiver:
    """A receiver on 127.0.0.1 that responds to every POST with ``status`` and ``headers`` and counts the posts."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    posts: int = 0
    url: str = ""

    async def handle(self, _request: web.Request) -> web.Response:
        self.posts += 1
        return web.Response(status=self.status, headers=self.headers)


@pytest.fixture
async def receiver(store: Store) -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    async with store.transaction() as tx:
        await set_application_webhook(tx, APPLICATION, receiver.url, b"whsec-key-bytes")
    yield receiver
    await runner.cleanup()


def sender_for(store: Store, tmp_path: Path) -> WebhookSender:
    settings = Settings(home=tmp_path, webhook_retry_seconds=RETRY_SECONDS,
                        webhook_max_delay_seconds=MAX_DELAY_SECONDS, webhook_timeout_seconds=5)
    ctx = CoreContext(
        store=store, settings=settings, policies=None, secret_box=UnwrappedSecretBox(),  # type: ignore[arg-type]
        pdf_checker=None, document_signer=None, clock=lambda: SENDER_NOW,  # type: ignore[arg-type]
    )
    return WebhookSender(ctx, "inst-test")


async def one_round(store: Store, tmp_path: Path) -> str:
    """Write an approved event, run one round of a sender, and return the event's id."""
    await new_request(store, "req-1")
    await move(store, "req-1", APPROVED, decided_by="off-a")
    async with store.read_only() as tx:
        (event,) = await webhook_events(tx, status="all")
    async with sender_for(store, tmp_path) as sender:
        claimed = await sender.deliver_due()
    assert claimed == 1
    return event.id


async def outcome(store: Store, event_id: str) -> tuple[WebhookEvent, list[WebhookAttempt]]:
    async with store.read_only() as tx:
        event = await webhook_event(tx, event_id)
        attempts = (await webhook_attempts(tx, [event_id]))[event_id]
    assert event is not None
    return event, attempts


async def test_gone_abandons_at_once(store: Store, receiver: Receiver, tmp_path: Path) -> None:
    receiver.status = 410

    event, attempts = await outcome(store, await one_round(store, tmp_path))

    assert receiver.posts == 1
    assert event.abandoned_at == SENDER_NOW
    assert event.next_attempt_at == NEVER
    assert event.delivered_at is None
    assert event.last_error == "HTTP 410"
    assert [(attempt.status_code, attempt.error) for attempt in attempts] == [(410, "HTTP 410")]


@pytest.mark.parametrize(("retry_after", "least", "most"), [
    (None, RETRY_SECONDS, RETRY_SECONDS * 1.1),
    ("120", 120, 120 * 1.1),
    # A Retry-After beyond the maximum delay is capped at the maximum.
    ("86400", MAX_DELAY_SECONDS, MAX_DELAY_SECONDS),
    # The HTTP-date form is not read, so the usual delay applies.
    ("Wed, 21 Oct 2026 07:28:00 GMT", RETRY_SECONDS, RETRY_SECONDS * 1.1),
])
async def test_retry_after_sets_next_attempt(store: Store, receiver: Receiver, tmp_path: Path,
                                             retry_after: str | None, least: float, most: float) -> None:
    receiver.status = 503
    if retry_after is not None:
        receiver.headers = {"Retry-After": retry_after}

    event, attempts = await outcome(store, await one_round(store, tmp_path))
    delay = (event.next_attempt_at - SENDER_NOW).total_seconds()

    assert receiver.posts == 1
    assert event.abandoned_at is None
    assert event.attempts == 1
    assert least <= delay <= most
    assert [(attempt.status_code, attempt.error) for attempt in attempts] == [(503, "HTTP 503")]


async def test_removed_url_abandons_without_post(store: Store, receiver: Receiver,
                                                 tmp_path: Path) -> None:
    await new_request(store, "req-1")
    await move(store, "req-1", APPROVED, decided_by="off-a")
    async with store.transaction() as tx:
        await set_application_webhook(tx, APPLICATION, None, None)
    async with store.read_only() as tx:
        (written,) = await webhook_events(tx, status="all")
    async with sender_for(store, tmp_path) as sender:
        claimed = await sender.deliver_due()

    event, attempts = await outcome(store, written.id)

    assert claimed == 1
    assert receiver.posts == 0
    assert event.abandoned_at == SENDER_NOW
    assert event.last_error == "webhook_url_removed"
    assert [(attempt.status_code, attempt.error) for attempt in attempts] == [(None, "webhook_url_removed")]


async def test_success_marks_delivered(store: Store, receiver: Receiver, tmp_path: Path) -> None:
    event, attempts = await outcome(store, await one_round(store, tmp_path))

    assert receiver.posts == 1
    assert event.delivered_at == SENDER_NOW
    assert event.abandoned_at is None
    assert [(attempt.status_code, attempt.error) for attempt in attempts] == [(200, None)]
