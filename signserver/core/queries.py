"""Read access to sign requests and documents, each scoped to the caller.

An application sees only its own requests; an official sees the requests
they approve. A request outside that scope is reported as not found, so its
existence is not revealed.
"""

from __future__ import annotations

from pathlib import Path

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
]


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
    request = await _current_request(ctx, request_id)
    if request is None or request.approver_official_id != official.id:
        raise RequestNotFound(request_id=request_id)
    return request


async def requests_for_official(ctx: CoreContext, official: Official, states: list[str] | None,
                                limit: int = 100) -> list[SignRequest]:
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
