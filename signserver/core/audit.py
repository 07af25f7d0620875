"""The audit trail: append-only records chained by SHA-256.

Each record's hash covers its own fields and the previous record's hash, so
editing, deleting or reordering any record breaks the chain from that point.
The ``audit_head`` row keeps the newest sequence number and hash; it detects a
truncated tail and, updated in the same transaction, serialises appends.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from signserver.store.db import Store, Transaction
from signserver.store.records import AuditRecord

__all__ = ["append_audit", "append_audit_committed", "verify_audit_chain", "ChainVerification", "GENESIS_HASH",
           "record_hash"]

GENESIS_HASH = "0" * 64

# Keys that must never reach the trail, whatever a caller passes in details.
_SECRET_KEYS = {"otp", "password", "api_key", "pin", "totp_secret", "token", "pdf_password"}


def _canonical_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_hash(fields: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of a record's fields (sorted keys, UTF-8)."""
    canonical = dict(fields)
    canonical["recorded_at"] = _canonical_time(canonical["recorded_at"])
    encoded = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


async def append_audit(
    tx: Transaction,
    *,
    action: str,
    actor_type: str,
    actor_id: str,
    request_id: str | None = None,
    dossier_code: str | None = None,
    document_sha256: str | None = None,
    key_id_hex: str | None = None,
    cert_serial_hex: str | None = None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> int:
    """Append one record inside the caller's transaction and return its sequence number."""
    clean_details = {k: v for k, v in (details or {}).items() if k not in _SECRET_KEYS}
    head = await tx.audit_head()
    seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)

    fields = {
        "seq": seq,
        "recorded_at": (now or datetime.now(timezone.utc)).astimezone(timezone.utc),
        "actor_type": actor_type,
        "actor_id": actor_id,
        "action": action,
        "request_id": request_id,
        "dossier_code": dossier_code,
        "document_sha256": document_sha256,
        "key_id_hex": key_id_hex,
        "cert_serial_hex": cert_serial_hex,
        "details_json": json.dumps(clean_details, sort_keys=True, ensure_ascii=False, separators=(",", ":")),
        "prev_hash": prev_hash,
    }
    fields["hash"] = record_hash(fields)
    await tx.append_audit_row(fields, first=head is None)
    return seq


class _GroupCommit:
    """Appends the records that tasks of one process hand in at about the same time, in one transaction.

    A task waits until the transaction holding its record has committed, so
    no caller goes on before its record is durable. While one transaction
    commits, the records handed in meanwhile wait for the next one: under
    load, several records share a transaction and its commit.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.waiting: list[tuple[dict[str, Any], asyncio.Future[int]]] = []
        self.writer: asyncio.Task[None] | None = None

    async def append(self, fields: dict[str, Any]) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiting.append((fields, future))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write(), name="audit-group-commit")
        return await future

    async def _write(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting, []
            try:
                async with self.store.transaction() as tx:
                    sequence_numbers = [await append_audit(tx, **fields) for fields, _ in batch]
            except Exception as exc:  # noqa: BLE001 - every waiting task gets the failure of its transaction
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), sequence_number in zip(batch, sequence_numbers):
                if not future.done():
                    future.set_result(sequence_number)


_group_commits: "weakref.WeakKeyDictionary[Store, _GroupCommit]" = weakref.WeakKeyDictionary()


async def append_audit_committed(store: Store, **fields: Any) -> int:
    """Append one record as :func:`append_audit` does, in a transaction of its own, and return once it is committed.

    Records appended at the same moment by other tasks of the process share
    that transaction, which saves a commit and a turn of the store's lock each.
    """
    group = _group_commits.get(store)
    if group is None:
        group = _group_commits[store] = _GroupCommit(store)
    return await group.append(fields)


def _fields_of(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "recorded_at": record.recorded_at,
        "actor_type": record.actor_type,
        "actor_id": record.actor_id,
        "action": record.action,
        "request_id": record.request_id,
        "dossier_code": record.dossier_code,
        "document_sha256": record.document_sha256,
        "key_id_hex": record.key_id_hex,
        "cert_serial_hex": record.cert_serial_hex,
        "details_json": record.details_json,
        "prev_hash": record.prev_hash,
    }


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    records_checked: int
    first_bad_seq: int | None = None
    problem: str | None = None  # a stable code: record_modified, chain_broken, sequence_gap, tail_truncated


async def verify_audit_chain(store: Store, batch_size: int = 5000) -> ChainVerification:
    """Walk the whole trail in sequence order and check every link and the head."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    async with store.transaction() as tx:
        head = await tx.audit_head()
        while True:
            records = await tx.audit_records(after_seq=expected_seq - 1, limit=batch_size)
            if not records:
                break
            for record in records:
                if record.seq != expected_seq:
                    return ChainVerification(False, checked, expected_seq, "sequence_gap")
                if record.prev_hash != expected_prev:
                    return ChainVerification(False, checked, record.seq, "chain_broken")
                if record_hash(_fields_of(record)) != record.hash:
                    return ChainVerification(False, checked, record.seq, "record_modified")
                expected_prev = record.hash
                expected_seq += 1
                checked += 1
    if head is None:
        if checked:
            return ChainVerification(False, checked, None, "head_missing")
        return ChainVerification(True, 0)
    if head != (expected_seq - 1, expected_prev):
        return ChainVerification(False, checked, expected_seq, "tail_truncated")
    return ChainVerification(True, checked)
