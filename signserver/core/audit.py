"""The audit trail: append-only records chained by SHA-256.

Each record's hash covers its own fields and the previous record's hash, so
editing, deleting or reordering any record breaks the chain from that point.
The ``audit_head`` row keeps the newest sequence number and hash; it detects a
truncated tail and, updated in the same transaction, serialises appends.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from signserver.store.db import Store, Transaction
from signserver.store.records import AuditRecord

__all__ = ["append_audit", "verify_audit_chain", "ChainVerification", "GENESIS_HASH", "record_hash"]

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
