"""The webhook outbox on a real store: events written by transitions, claims, order per request, retries.

The store is SQLite, or PostgreSQL with SIGNSERVER_TEST_STORE=postgresql.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from signserver.core.states import APPROVED, REJECTED, SIGNED, SIGNING, transition
from signserver.core.webhooks import new_webhook_secret, signature_headers
from signserver.store.db import Store
from signserver.store.migrate import upgrade_to_head
from signserver.store.records import SignRequest
from signserver.store.webhooks import (
    claim_webhook_event,
    due_webhook_event_ids,
    mark_webhook_delivered,
    requeue_webhook_event,
    abandon_webhook_event,
    webhook_events,
)
from signserver.webhook_sender import retry_delay
from tests.postgres import new_database_url

NOW = datetime(2026, 12, 5, 3, 0, tzinfo=timezone.utc)
APPLICATION = "app-webhooks"
QUIET_APPLICATION = "app-no-webhook"
CREDENTIAL = "cred-webhooks"


class RolledBack(Exception):
    pass


@pytest.fixture
async def store(tmp_path: Path):
    url = new_database_url(tmp_path, "outbox.db")
    upgrade_to_head(url)
    store = Store(url)
    async with store.transaction() as tx:
        await tx.insert_application(id=APPLICATION, name="Một cửa thử", agency="A", api_key_sha256="1" * 64,
                                    enabled=True, created_at=NOW, webhook_url="http://127.0.0.1:9/hook",
                                    webhook_secret_wrapped=b"wrapped")
        await tx.insert_application(id=QUIET_APPLICATION, name="Một cửa khác", agency="A", api_key_sha256="2" * 64,
                                    enabled=True, created_at=NOW)
        await tx.insert_credential(
            id=CREDENTIAL, kind="seal", key_id_hex="01", key_label=CREDENTIAL, key_type="EC", key_size=256,
            certificate_der=b"\x30\x00", chain_pem="", cert_serial_hex="01", display_name="Cơ quan A", agency="A",
            status="active", created_at=NOW,
        )
    yield store
    await store.close()


async def new_request(store: Store, request_id: str, state: str = "pending_approval",
                      application_id: str = APPLICATION) -> SignRequest:
    async with store.transaction() as tx:
        await tx.insert_sign_request(
            id=request_id, application_id=application_id, idempotency_key=f"key-{request_id}",
            fingerprint="f" * 64, dossier_code="000.00.01.H01-261205-0001", title="Giấy xác nhận",
            credential_id=CREDENTIAL, signature_format="pades", signature_level="B-T", document_name="a.pdf",
            document_path="/nonexistent/a.pdf", document_sha256="a" * 64, document_size=10, state=state,
            created_at=NOW, updated_at=NOW, expires_at=NOW + timedelta(hours=1),
        )
        request = await tx.sign_request(request_id)
    assert request is not None
    return request


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
