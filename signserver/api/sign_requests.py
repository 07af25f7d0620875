"""Handlers of the one-stop applications' routes: submit, poll, download."""

from __future__ import annotations

import unicodedata

from aiohttp import web

from signserver.core import queries
from signserver.core.context import CoreContext
from signserver.core.errors import HsmUnavailable
from signserver.core.states import APPROVED, FINAL_STATES, PENDING_APPROVAL
from signserver.core.submission import SubmitMetadata, submit_sign_request
from signserver.errors import InvalidInput

from .auth import require_application
from .serialize import credential_json, document_file_response, sign_request_json, submitted_document_response
from .uploads import read_sign_request_upload

__all__ = ["routes"]

routes = web.RouteTableDef()

_KNOWN_STATES = FINAL_STATES | {PENDING_APPROVAL, "approved", "signing"}


def _states_filter(request: web.Request) -> list[str] | None:
    raw = request.query.get("state")
    if not raw:
        return None
    states = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = [s for s in states if s not in _KNOWN_STATES]
    if unknown:
        raise InvalidInput("field_invalid", field="state", reason=f"unknown state {unknown[0]!r}")
    return states


@routes.post("/api/v1/sign-requests")
async def create_sign_request(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    application = await require_application(request)
    if not request.app["hsm"].available:
        # Nothing could be approved or signed meanwhile, so the caller gets 503 with Retry-After instead of a wait.
        raise HsmUnavailable()
    metadata, document = await read_sign_request_upload(
        request, ctx.settings.documents_dir / "incoming", ctx.settings.max_body_bytes
    )
    try:
        meta = SubmitMetadata.parse(metadata, request.headers.get("Idempotency-Key"),
                                    int(ctx.settings.min_request_ttl.total_seconds()))
        sign_request, created = await submit_sign_request(ctx, application, meta, document)
        if created and sign_request.state == APPROVED:
            # The policy needs no official's approval (an agency seal on a named document type): sign now.
            request.app["signing_queue"].submit(sign_request.id)
    finally:
        # Moved into place on success; anything left is a refused or retried upload.
        if document is not None:
            document.path.unlink(missing_ok=True)
    status = 201 if created else 200
    return web.json_response(sign_request_json(sign_request), status=status,
                             headers={"Location": f"/api/v1/sign-requests/{sign_request.id}"})


@routes.get("/api/v1/sign-requests")
async def list_sign_requests(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    application = await require_application(request)
    dossier_code = request.query.get("dossier_code")
    found = await queries.requests_for_application(
        ctx, application, _states_filter(request),
        unicodedata.normalize("NFC", dossier_code) if dossier_code else None,
    )
    return web.json_response({"items": [sign_request_json(r) for r in found], "count": len(found)})


@routes.get("/api/v1/sign-requests/{request_id}")
async def get_sign_request(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    application = await require_application(request)
    found = await queries.request_for_application(ctx, application, request.match_info["request_id"])
    credential = await queries.signer_credential(ctx, found)
    chain = await queries.approval_chain(ctx, found.id)
    return web.json_response(sign_request_json(found, credential, chain))


@routes.get("/api/v1/sign-requests/{request_id}/signed-document")
async def download_signed_document(request: web.Request) -> web.StreamResponse:
    ctx: CoreContext = request.app["core"]
    application = await require_application(request)
    found, path = await queries.signed_document_for_application(ctx, application, request.match_info["request_id"])
    return document_file_response(path, found.signed_sha256, f"{found.id}-signed")


@routes.get("/api/v1/sign-requests/{request_id}/document")
async def download_original_document(request: web.Request) -> web.StreamResponse:
    ctx: CoreContext = request.app["core"]
    application = await require_application(request)
    found = await queries.request_for_application(ctx, application, request.match_info["request_id"])
    return submitted_document_response(found)


@routes.get("/api/v1/credentials")
async def list_credentials(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    application = await require_application(request)
    found = await queries.credentials_for_application(ctx, application)
    return web.json_response({"items": [credential_json(c) for c in found]})
