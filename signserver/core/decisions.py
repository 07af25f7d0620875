"""Officials' decisions on sign requests: approve (one or a batch, with one OTP), reject, and expiry.

An approval covers exactly the listed requests and records, for each, the
digest of the document the official was shown. The requests are checked
before the OTP, so a batch with a decided or foreign request, or a document
other than the one the official was shown, is rejected without spending the
code. A request of another official is reported as not found, like an unknown
id. The OTP is checked before anything changes.

A request with an approval chain (see ``core.chains``) is decided one step at
a time: only the assignee of its current step may approve or reject it, an
approval of a step before the last hands the request to the next step's
assignee, and a rejection at any step ends the request.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from signserver.errors import InvalidInput
from signserver.store import chains as chain_store
from signserver.store.chains import ApprovalStep
from signserver.store.db import Transaction
from signserver.store.records import Official, SignRequest

from .audit import append_audit
from .chain_errors import DocumentDigestMismatch
from .chains import STEP_APPROVED, STEP_CURRENT, STEP_EXPIRED, STEP_REJECTED, STEP_WAITING
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
from .stored_documents import check_stored_document

__all__ = ["Approval", "approve_requests", "reject_request", "expire_due_requests"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Approval:
    """One approval by one official with one OTP code.

    ``requests`` are all the requests it covered, as stored after it.
    ``ready_to_sign`` are those whose last step it was, now approved; the
    others moved on to their next step and are not signed yet.
    """

    id: str
    official_id: str
    requests: tuple[SignRequest, ...]
    ready_to_sign: tuple[SignRequest, ...] = ()


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


@dataclass(frozen=True)
class _Turn:
    """A decidable request with its chain: the current step and the next one, if any."""

    request: SignRequest
    steps: tuple[ApprovalStep, ...]
    # None for a request stored without steps (submitted before migration 0007): one step, its approver's.
    current: ApprovalStep | None
    next: ApprovalStep | None

    @property
    def position(self) -> int:
        return self.current.position if self.current else 1

    @property
    def step_count(self) -> int:
        return len(self.steps) or 1

    def audit_fields(self) -> dict[str, Any]:
        """Return the step's position and, for a delegated step, the delegation and the delegator."""
        fields: dict[str, Any] = {"position": self.position, "step_count": self.step_count}
        if self.current is not None and self.current.delegation_id is not None:
            fields.update(delegation_id=self.current.delegation_id, delegator_official_id=self.current.official_id)
        return fields


async def _turn_of(tx: Transaction, ctx: CoreContext, official: Official, request_id: str) -> _Turn:
    """Load a request ``official`` may decide now: they must be the assignee of its current step."""
    request = await _decidable_request(tx, ctx, official, request_id)
    steps = tuple(await chain_store.approval_steps(tx, request.id))
    if not steps:
        return _Turn(request, steps, None, None)
    current = next((step for step in steps if step.state == STEP_CURRENT), None)
    if current is None or current.assignee_official_id != official.id:
        log.warning("sign_request.current_step_mismatch", request_id=request_id, official_id=official.id)
        raise RequestNotFound(request_id=request_id)
    following = next((step for step in steps if step.position > current.position), None)
    return _Turn(request, steps, current, following)


def _check_expected_digests(turns: list[_Turn], expected_digests: Mapping[str, str] | None) -> None:
    """Raise DocumentDigestMismatch when a request's document is not the one the official was shown."""
    if expected_digests is None:
        return
    batch = {turn.request.id for turn in turns}
    for request_id in expected_digests:
        if request_id not in batch:
            raise InvalidInput("field_invalid", field="document_sha256",
                               reason=f"names request {request_id}, which is not in request_ids")
    for turn in turns:
        expected = expected_digests.get(turn.request.id)
        if expected is not None and expected.strip().lower() != turn.request.document_sha256:
            raise DocumentDigestMismatch(request_id=turn.request.id, expected=expected,
                                         actual=turn.request.document_sha256)


async def approve_requests(ctx: CoreContext, official: Official, request_ids: list[str], otp: str,
                           expected_digests: Mapping[str, str] | None = None) -> Approval:
    """Approve the current step of each of ``request_ids`` with one TOTP code, atomically: all or none.

    ``official`` must be the assignee of the current step of every request;
    any other request is reported as not found. ``expected_digests`` maps a
    request id to the SHA-256 (hex) of the document the official was shown.
    A mismatch rejects the whole batch before the code is checked, so the
    code is not spent. A stored document that no longer has its recorded
    digest rejects the batch the same way (StoredDocumentChanged). A request whose last step this is
    becomes approved and is listed in ``Approval.ready_to_sign``; the others
    move to their next step.
    """
    unique_ids = list(dict.fromkeys(request_ids))
    if not unique_ids:
        raise InvalidInput("field_missing", field="request_ids")
    if len(unique_ids) > ctx.settings.max_batch_size:
        raise BatchTooLarge(count=len(unique_ids), limit=ctx.settings.max_batch_size)

    await _check_stored_documents(ctx, official, unique_ids)

    now = ctx.clock()
    approval_id = new_id("apv")
    otp_error: Exception | None = None
    decided: list[SignRequest] = []
    ready: list[SignRequest] = []
    moved: list[tuple[_Turn, str]] = []

    async with ctx.store.transaction() as tx:
        turns = [await _turn_of(tx, ctx, official, request_id) for request_id in unique_ids]
        _check_expected_digests(turns, expected_digests)
        requests = [turn.request for turn in turns]
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
            for turn in turns:
                details = {"approval_id": approval_id, "batch_size": len(turns), "otp_step": step,
                           **turn.audit_fields()}
                if turn.next is not None:
                    await _advance(tx, turn, approval_id, official, details, now)
                    moved.append((turn, turn.next.assignee_official_id))
                else:
                    await _approve_last_step(tx, turn, approval_id, official, details, now)
                updated = await tx.sign_request(turn.request.id)
                assert updated is not None
                decided.append(updated)
                if turn.next is None:
                    ready.append(updated)

    if otp_error is not None:
        OTP_FAILURES.labels(reason=getattr(otp_error, "code", "unknown")).inc()
        log.info("approval.otp_rejected", official_id=official.id, code=getattr(otp_error, "code", None),
                 request_count=len(unique_ids))
        raise otp_error
    for turn, next_assignee in moved:
        log.info("sign_request.approval_step_approved", request_id=turn.request.id,
                 dossier_code=turn.request.dossier_code, approval_id=approval_id, official_id=official.id,
                 position=turn.position, next_assignee_official_id=next_assignee)
    for request in ready:
        log.info("sign_request.approved", request_id=request.id, dossier_code=request.dossier_code,
                 approval_id=approval_id, official_id=official.id)
    return Approval(approval_id, official.id, tuple(decided), tuple(ready))


async def _advance(tx: Transaction, turn: _Turn, approval_id: str, official: Official, details: dict[str, Any],
                   now: datetime) -> None:
    """Approve a step before the last: the next step becomes current and its assignee the request's approver."""
    assert turn.current is not None and turn.next is not None
    request = turn.request
    await _decide_step(tx, turn.current, STEP_APPROVED, now, approval_id=approval_id)
    if not await chain_store.update_approval_step(tx, request.id, turn.next.position, STEP_WAITING,
                                                  state=STEP_CURRENT):
        raise RequestAlreadyDecided(request_id=request.id, state=request.state)
    if not await tx.update_sign_request(request.id, PENDING_APPROVAL, updated_at=now,
                                        approver_official_id=turn.next.assignee_official_id):
        raise RequestAlreadyDecided(request_id=request.id, state=request.state)
    credential = await tx.credential(request.credential_id)
    await append_audit(
        tx, action="approval_step_approved", actor_type="official", actor_id=official.id, request_id=request.id,
        dossier_code=request.dossier_code, document_sha256=request.document_sha256,
        key_id_hex=credential.key_id_hex if credential else None,
        cert_serial_hex=credential.cert_serial_hex if credential else None,
        details={**details, "next_assignee_official_id": turn.next.assignee_official_id}, now=now,
    )


async def _approve_last_step(tx: Transaction, turn: _Turn, approval_id: str, official: Official,
                             details: dict[str, Any], now: datetime) -> None:
    request = turn.request
    if turn.current is not None:
        await _decide_step(tx, turn.current, STEP_APPROVED, now, approval_id=approval_id)
    await transition(tx, request, APPROVED, now, approval_id=approval_id, decided_by=official.id, decided_at=now)
    credential = await tx.credential(request.credential_id)
    await append_audit(
        tx, action="approved", actor_type="official", actor_id=official.id, request_id=request.id,
        dossier_code=request.dossier_code, document_sha256=request.document_sha256,
        key_id_hex=credential.key_id_hex if credential else None,
        cert_serial_hex=credential.cert_serial_hex if credential else None,
        details=details, now=now,
    )


async def _decide_step(tx: Transaction, step: ApprovalStep, state: str, now: datetime,
                       approval_id: str | None = None) -> None:
    if not await chain_store.update_approval_step(tx, step.request_id, step.position, STEP_CURRENT, state=state,
                                                  decided_at=now, approval_id=approval_id):
        raise RequestAlreadyDecided(request_id=step.request_id, state=PENDING_APPROVAL)


async def _check_stored_documents(ctx: CoreContext, official: Official, request_ids: list[str]) -> None:
    """Hash again, outside the write transaction, the stored files of the requests waiting for ``official``.

    Other requests are left to the transaction, which reports them as not found or decided.
    """
    async with ctx.store.read_only() as tx:
        requests = [await tx.sign_request(request_id) for request_id in request_ids]
    for request in requests:
        if request is not None and request.state == PENDING_APPROVAL and request.approver_official_id == official.id:
            await check_stored_document(request)


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
    """Reject a request at its current step, whose assignee ``official`` must be; the later steps never start."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("field_missing", field="reason")
    if len(reason) > 1000:
        raise InvalidInput("field_invalid", field="reason", reason="longer than 1000 characters")
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        turn = await _turn_of(tx, ctx, official, request_id)
        request = turn.request
        if turn.current is not None:
            await _decide_step(tx, turn.current, STEP_REJECTED, now)
        await transition(tx, request, REJECTED, now, decided_by=official.id, decided_at=now, rejection_reason=reason,
                         state_reason="rejected_by_official")
        credential = await tx.credential(request.credential_id)
        await append_audit(
            tx, action="rejected", actor_type="official", actor_id=official.id, request_id=request.id,
            dossier_code=request.dossier_code, document_sha256=request.document_sha256,
            key_id_hex=credential.key_id_hex if credential else None,
            cert_serial_hex=credential.cert_serial_hex if credential else None,
            details={"reason": reason, **turn.audit_fields()}, now=now,
        )
        updated = await tx.sign_request(request.id)
    log.info("sign_request.rejected", request_id=request_id, dossier_code=request.dossier_code,
             official_id=official.id, position=turn.position)
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
            await chain_store.close_current_step(tx, request.id, STEP_EXPIRED, now)
            await append_audit(
                tx, action="expired", actor_type="system", actor_id="signserver", request_id=request.id,
                dossier_code=request.dossier_code, document_sha256=request.document_sha256, now=now,
            )
            count += 1
    if count:
        log.info("sign_request.expired", count=count)
    return count
