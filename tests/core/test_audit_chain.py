"""The audit chain detects an edited, deleted or reordered record, and a truncated tail."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from signserver.core.audit import append_audit, append_audit_committed, verify_audit_chain
from signserver.store.db import Store
from signserver.store.migrate import upgrade_to_head
from tests.postgres import new_database_url, query


@pytest.fixture
async def store_with_trail(tmp_path: Path):
    url = new_database_url(tmp_path, 'audit.db')
    upgrade_to_head(url)
    store = Store(url)
    for number in range(5):
        async with store.transaction() as tx:
            await append_audit(tx, action="submitted", actor_type="application", actor_id="app-1",
                               request_id=f"req_{number}", dossier_code="H01-0001",
                               details={"number": number, "otp": "123456"})
    yield store, url
    await store.close()


def _edit(database_url: str, sql: str, *params: object) -> None:
    query(database_url, sql, params)


async def test_untouched_chain_verifies(store_with_trail) -> None:
    store, _db = store_with_trail
    result = await verify_audit_chain(store)
    assert result.ok
    assert result.records_checked == 5


async def test_secret_keys_dropped_from_details(store_with_trail) -> None:
    store, _db = store_with_trail
    async with store.transaction() as tx:
        records = await tx.audit_records()
    assert all("123456" not in record.details_json for record in records)


async def test_edited_record_detected(store_with_trail) -> None:
    store, db = store_with_trail
    _edit(db, "UPDATE audit_log SET actor_id = 'someone-else' WHERE seq = 3")
    result = await verify_audit_chain(store)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert result.problem == "record_modified"


async def test_deleted_record_detected(store_with_trail) -> None:
    store, db = store_with_trail
    _edit(db, "DELETE FROM audit_log WHERE seq = 2")
    result = await verify_audit_chain(store)
    assert not result.ok
    assert result.first_bad_seq == 2


async def test_reordered_records_detected(store_with_trail) -> None:
    store, db = store_with_trail
    # Swap the contents of records 2 and 4, keeping their sequence numbers.
    _edit(db, "UPDATE audit_log SET seq = -2 WHERE seq = 2")
    _edit(db, "UPDATE audit_log SET seq = 2 WHERE seq = 4")
    _edit(db, "UPDATE audit_log SET seq = 4 WHERE seq = -2")
    result = await verify_audit_chain(store)
    assert not result.ok
    assert result.first_bad_seq == 2


async def test_truncated_tail_detected(store_with_trail) -> None:
    store, db = store_with_trail
    _edit(db, "DELETE FROM audit_log WHERE seq = 5")
    result = await verify_audit_chain(store)
    assert not result.ok
    assert result.problem == "tail_truncated"


async def test_recomputed_hash_still_breaks_link(store_with_trail) -> None:
    from signserver.core.audit import record_hash

    store, db = store_with_trail
    async with store.transaction() as tx:
        record = (await tx.audit_records(after_seq=2, limit=1))[0]
    fields = {name: getattr(record, name) for name in (
        "seq", "recorded_at", "actor_type", "action", "request_id", "dossier_code", "document_sha256",
        "key_id_hex", "cert_serial_hex", "details_json", "prev_hash")}
    fields["actor_id"] = "forged"
    _edit(db, "UPDATE audit_log SET actor_id = 'forged', hash = ? WHERE seq = 3", record_hash(fields))
    result = await verify_audit_chain(store)
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.problem == "chain_broken"


async def test_group_commit_shares_transactions_and_keeps_the_chain(store_with_trail) -> None:
    store, _db = store_with_trail
    opened = 0
    original = store.transaction

    def counting_transaction():  # type: ignore[no-untyped-def]
        nonlocal opened
        opened += 1
        return original()

    store.transaction = counting_transaction  # type: ignore[method-assign]
    sequence_numbers = await asyncio.gather(*[
        append_audit_committed(store, action="csc_hashes_signed", actor_type="application", actor_id="app-1",
                               details={"number": number})
        for number in range(30)
    ])
    store.transaction = original  # type: ignore[method-assign]

    assert sorted(sequence_numbers) == list(range(6, 36))
    assert opened < 30
    result = await verify_audit_chain(store)
    assert result.ok
    assert result.records_checked == 35


async def test_group_commit_failure_reaches_every_waiting_task(store_with_trail) -> None:
    store, _db = store_with_trail
    results = await asyncio.gather(*[
        append_audit_committed(store, action="x", actor_type="application", actor_id="app-1",
                               details={"value": object()})  # not JSON: the transaction fails
        for _ in range(3)
    ], return_exceptions=True)
    assert all(isinstance(result, TypeError) for result in results)
    assert (await verify_audit_chain(store)).records_checked == 5
