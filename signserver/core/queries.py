"""Read access to sign requests and documents, each scoped to the caller.

An application sees only its own requests; an official sees the requests
whose current approval step is theirs, and those where they approved or
rejected a step. A request outside that scope is reported as not found, so its
existence is not revealed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from signserver.store import chains as chain_store

from signserver.store.records import Application, AuditRecord, Credential, Official, SignRequest

from .audit import append_audit
from .context import CoreContext
from .errors import RequestNotFound, RequestNotSigned
from .decisions import expire_due_requests
from .states import PENDING_APPROVAL, SIGNED

__all__ = [
    "request_for_application",
    "request_for_official",
    "requests_for_official",
    "requests_for_application",
    "signed_document_for_application",
    "audit_trail",
    "credentials_for_application",
    "signer_credential",
    "ChainStep",
    "HistoryEntry",
    "approval_chain",
    "history_for_official",
]


@dataclass(frozen=True)
class ChainStep:
    """One step of a request's approval chain, with the names of its official and of its assignee."""

    position: int
    official_id: str
    official_username: str
    official_name: str
    # The official who approves the step: the official, or their deputy under ``delegation_id``.
    assignee_official_id: str
    assignee_username: str
    assignee_name: str
    delegation_id: str | None
    state: str  # waiting | current | approved | rejected
    decided_at: datetime | None
    approval_id: str | None


@dataclass(frozen=True)
class HistoryEntry:
    """A step an official decided: the request as it is now, and the official's decision on it."""

    request: SignRequest
    decision: str  # approved | rejected
    decided_at: datetime | None
    position: int
    step_count: int
    # Set when the official decided as a deputy; ``delegator_official_id`` is then the step's official.
    delegation_id: str | None
    delegator_official_id: str | None


async def _current_request(ctx: CoreContext, request_id: str) -> SignRequest | None:
    """Read a request, first expiring it if its deadline has passed since the last sweep."""
    async with ctx.store.read_only() as tx:
        request = await tx.sign_request(request_id)
    if request is not None and request.state == PENDING_APPROVAL and request.expires_at <= ctx.clock():
        await expire_due_requests(ctx)
        async with ctx.store.read_only() as tx:
            request = await tx.sign_request(request_id)
    return request


async def request_for_application(ctx: CoreContext, application: Application, request_id: str) -> SignRequest:
    request = await _current_request(ctx, request_id)
    if request is None or request.application_id != application.id:
        raise RequestNotFound(request_id=request_id)
    return request


async def request_for_official(ctx: CoreContext, official: Official, request_id: str) -> SignRequest:
    """Return a request whose current step ``official`` approves, or one with a step they decided.

    A request where the official's step is still waiting for an earlier one
    is not found, like any request outside their scope.
    """
    request = await _current_request(ctx, request_id)
    if request is None:
        raise RequestNotFound(request_id=request_id)
    # The approver is the assignee of the current step, or of the last one once the request is decided.
    if request.approver_official_id == official.id:
        return request
    async with ctx.store.read_only() as tx:
        visible = await chain_store.has_visible_step(tx, request.id, official.id)
    if not visible:
        raise RequestNotFound(request_id=request_id)
    return request


async def approval_of_official(ctx: CoreContext, official: Official, approval_id: str) -> list[SignRequest] | None:
    """Return the requests of an approval that ``official`` made, or None when they made no such approval."""
    async with ctx.store.read_only() as tx:
        request_ids = await tx.approval_request_ids(approval_id, official.id)
        if request_ids is None:
            return None
        found = [await tx.sign_request(request_id) for request_id in request_ids]
    return [request for request in found if request is not None]


async def requests_for_official(ctx: CoreContext, official: Official, states: list[str] | None,
                                limit: int = 100) -> list[SignRequest]:
    """Return the requests whose ``approver_official_id`` is ``official``, oldest first.

    For a pending request that is the assignee of its current step, so with
    ``states=["pending_approval"]`` this is the official's pending list.
    """
    await expire_due_requests(ctx)
    async with ctx.store.read_only() as tx:
        return await tx.sign_requests(approver_official_id=official.id, states=states, limit=limit)


async def requests_for_application(ctx: CoreContext, application: Application, states: list[str] | None,
                                   dossier_code: str | None, limit: int = 100) -> list[SignRequest]:
    await expire_due_requests(ctx)
    async with ctx.store.read_only() as tx:
        return await tx.sign_requests(application_id=application.id, states=states, dossier_code=dossier_code,
                                      limit=limit)


async def signed_document_for_application(ctx: CoreContext, application: Application, request_id: str) -> tuple[SignRequest, Path]:
    """Return the signed PDF's path and record the download in the audit trail."""
    request = await request_for_application(ctx, application, request_id)
    if request.state != SIGNED or request.signed_path is None:
        raise RequestNotSigned(request_id=request_id, state=request.state)
    async with ctx.store.transaction() as tx:
        await append_audit(
            tx, action="downloaded", actor_type="application", actor_id=application.id, request_id=request.id,
            dossier_code=request.dossier_code, document_sha256=request.document_sha256,
            details={"signed_sha256": request.signed_sha256}, now=ctx.clock(),
        )
    return request, Path(request.signed_path)


async def signer_credential(ctx: CoreContext, request: SignRequest) -> Credential | None:
    """Return the credential a request is signed with, to show its certificate; None if it was removed."""
    # NOTE: this is the credential's current certificate. A certificate
    # replaced after the request was signed is shown in place of the one used.
    async with ctx.store.read_only() as tx:
        return await tx.credential(request.credential_id)


async def approval_chain(ctx: CoreContext, request_id: str) -> list[ChainStep]:
    """Return the steps of a request's approval chain in order; empty for a request that needs no approval.

    The caller must have checked that its user may see the request.
    """
    async with ctx.store.read_only() as tx:
        rows = await chain_store.chain_rows(tx, request_id)
    return [
        ChainStep(
            position=row.step.position, official_id=row.step.official_id, official_username=row.official_username,
            official_name=row.official_name, assignee_official_id=row.step.assignee_official_id,
            assignee_username=row.assignee_username, assignee_name=row.assignee_name,
            delegation_id=row.step.delegation_id, state=row.step.state, decided_at=row.step.decided_at,
            approval_id=row.step.approval_id,
        )
        for row in rows
    ]


async def history_for_official(ctx: CoreContext, official: Official, limit: int = 100) -> list[HistoryEntry]:
    """Return the steps ``official`` approved or rejected, newest decision first, at most ``limit``."""
    async with ctx.store.read_only() as tx:
        found = await chain_store.decided_steps_of(tx, official.id, limit)
    return [
        HistoryEntry(
            request=request, decision=step.state, decided_at=step.decided_at, position=step.position,
            step_count=step_count, delegation_id=step.delegation_id,
            delegator_official_id=step.official_id if step.delegation_id else None,
        )
        for step, request, step_count in found
    ]


async def audit_trail(ctx: CoreContext, *, dossier_code: str | None = None,
                      request_id: str | None = None) -> list[AuditRecord]:
    async with ctx.store.read_only() as tx:
        return await tx.audit_records(dossier_code=dossier_code, request_id=request_id)


async def credentials_for_application(ctx: CoreContext, application: Application) -> list[Credential]:
    """The signing credentials whose policy names ``application``; other agencies' keys are left out unseen."""
    async with ctx.store.read_only() as tx:
        allowed = (await ctx.policies.current(tx)).credentials_for(application.id)
        everything = await tx.credentials()
    return [c for c in everything if c.kind != "tsa" and c.id in allowed]
