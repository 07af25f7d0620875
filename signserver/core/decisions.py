"""Officials' decisions on sign requests: approve (one or a batch, with one OTP), reject, and expiry.

An approval covers exactly the listed requests and records, for each, the
digest of the document the official was shown. The requests are checked
before the OTP, so a batch with a decided or foreign request is rejected
without spending the code. A request of another official is reported as not
found, like an unknown id. The OTP is checked before anything changes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import structlog

from signserver.errors import InvalidInput
from signserver.store.db import Transaction
from signserver.store.records import Official, SignRequest

from .audit import append_audit
from .context import CoreContext, new_id
from .errors import (
    BatchTooLarge,
    KeyDisabled,
    RequestAlreadyDecided,
    RequestExpired,
    RequestNotFound,
)
from .metrics import OTP_FAILURES
from .otp import check_otp
from .states import APPROVED, EXPIRED, PENDING_APPROVAL, REJECTED, transition

__all__ = ["Approval", "approve_requests", "reject_request", "expire_due_requests"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Approval:
    id: str
    official_id: str
    requests: tuple[SignRequest, ...]


async def _decidable_request(tx: Transaction, ctx: CoreContext, official: Official, request_id: str) -> SignRequest:
    request = await tx.sign_request(request_id, for_update=True)
    if request is None:
        raise RequestNotFound(request_id=request_id)
    if request.approver_official_id != official.id:
        # Raised like an unknown id, so that an official cannot learn which ids exist in other agencies.
        log.info("sign_request.decision_by_other_official", request_id=request_id, official_id=official.id)
        raise RequestNotFound(request_id=request_id)
    if request.state == EXPIRED or (request.state == PENDING_APPROVAL and request.expires_at <= ctx.clock()):
        raise RequestExpired(request_id=request_id, expired_at=request.expires_at.isoformat(timespec="seconds"))
    if request.state != PENDING_APPROVAL:
        raise RequestAlreadyDecided(request_id=request_id, state=request.state)
    return request


async def approve_requests(ctx: CoreContext, official: Official, request_ids: list[str], otp: str) -> Approval:
    """Approve ``request_ids`` with one TOTP code, atomically: all are approved or none."""
    unique_ids = list(dict.fromkeys(request_ids))
    if not unique_ids:
        raise InvalidInput("field_missing", field="request_ids")
    if len(unique_ids) > ctx.settings.max_batch_size:
        raise BatchTooLarge(count=len(unique_ids), limit=ctx.settings.max_batch_size)

    now = ctx.clock()
    approval_id = new_id("apv")
    otp_error: Exception | None = None
    approved: list[SignRequest] = []

    async with ctx.store.transaction() as tx:
        requests = [await _decidable_request(tx, ctx, official, request_id) for request_id in unique_ids]
        await _check_keys_enabled(tx, requests)
        await _check_batch_limits(tx, ctx, requests)
        current = await tx.official(official.id, for_update=True)
        assert current is not None
        step, otp_error = await check_otp(
            tx, current, otp, now=now, secret_box=ctx.secret_box, policy=ctx.otp_policy,
            context={"request_ids": unique_ids},
        )
        if otp_error is None:
            assert step is not None
            await tx.insert_approval(approval_id, official.id, step, now,
                                     [(request.id, request.document_sha256) for request in requests])
            for request in requests:
                await transition(tx, request, APPROVED, now, approval_id=approval_id, decided_by=official.id,
                                 decided_at=now)
                credential = await tx.credential(request.credential_id)
                await append_audit(
                    tx, action="approved", actor_type="official", actor_id=official.id, request_id=request.id,
                    dossier_code=request.dossier_code, document_sha256=request.document_sha256,
                    key_id_hex=credential.key_id_hex if credential else None,
                    cert_serial_hex=credential.cert_serial_hex if credential else None,
                    details={"approval_id": approval_id, "batch_size": len(requests), "otp_step": step},
                    now=now,
                )
                approved.append(await tx.sign_request(request.id))  # type: ignore[arg-type]

    if otp_error is not None:
        OTP_FAILURES.labels(reason=getattr(otp_error, "code", "unknown")).inc()
        log.info("approval.otp_rejected", official_id=official.id, code=getattr(otp_error, "code", None),
                 request_count=len(unique_ids))
        raise otp_error
    for request in approved:
        log.info("sign_request.approved", request_id=request.id, dossier_code=request.dossier_code,
                 approval_id=approval_id, official_id=official.id)
    return Approval(approval_id, official.id, tuple(approved))


async def _check_keys_enabled(tx: Transaction, requests: list[SignRequest]) -> None:
    """Refuse, before the code is spent, a batch with a request whose key a security officer disabled."""
    for credential_id in dict.fromkeys(request.credential_id for request in requests):
        credential = await tx.credential(credential_id)
        if credential is None or credential.status != "active":
            raise KeyDisabled(signer=credential_id)


async def _check_batch_limits(tx: Transaction, ctx: CoreContext, requests: list[SignRequest]) -> None:
    """Raise BatchTooLarge when a key's policy allows fewer signatures per approval than the batch holds."""
    policy = await ctx.policies.current(tx)
    per_credential = Counter(request.credential_id for request in requests)
    for credential_id, count in per_credential.items():
        key_policy = policy.key_policy(credential_id)
        limit = key_policy.max_batch if key_policy is not None else None
        if limit is not None and count > limit:
            raise BatchTooLarge(count=count, limit=limit)


async def reject_request(ctx: CoreContext, official: Official, request_id: str, reason: str) -> SignRequest:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("field_missing", field="reason")
    if len(reason) > 1000:
        raise InvalidInput("field_invalid", field="reason", reason="longer than 1000 characters")
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        request = await _decidable_request(tx, ctx, official, request_id)
        await transition(tx, request, REJECTED, now, decided_by=official.id, decided_at=now, rejection_reason=reason,
                         state_reason="rejected_by_official")
        credential = await tx.credential(request.credential_id)
        await append_audit(
            tx, action="rejected", actor_type="official", actor_id=official.id, request_id=request.id,
            dossier_code=request.dossier_code, document_sha256=request.document_sha256,
            key_id_hex=credential.key_id_hex if credential else None,
            cert_serial_hex=credential.cert_serial_hex if credential else None,
            details={"reason": reason}, now=now,
        )
        updated = await tx.sign_request(request.id)
    log.info("sign_request.rejected", request_id=request_id, dossier_code=request.dossier_code,
             official_id=official.id)
    assert updated is not None
    return updated


async def expire_due_requests(ctx: CoreContext, limit: int = 500) -> int:
    """Mark pending requests past their expiry as expired; returns how many changed."""
    now = ctx.clock()
    count = 0
    async with ctx.store.transaction() as tx:
        due = await tx.sign_requests(states=[PENDING_APPROVAL], expires_before=now, limit=limit)
        for request in due:
            try:
                await transition(tx, request, EXPIRED, now, state_reason="approval_deadline_passed")
            except RequestAlreadyDecided:
                continue
            await append_audit(
                tx, action="expired", actor_type="system", actor_id="signserver", request_id=request.id,
                dossier_code=request.dossier_code, document_sha256=request.document_sha256, now=now,
            )
            count += 1
    if count:
        log.info("sign_request.expired", count=count)
    return count
