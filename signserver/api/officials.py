"""Handlers of the officials' routes: log in, list and view their requests, approve, reject."""

from __future__ import annotations

from aiohttp import web

from signserver.core import queries
from signserver.core.auth import Authenticator
from signserver.core.context import CoreContext, utc_now
from signserver.core.decisions import approve_requests, reject_request
from signserver.core.roles import PERSON_ROLES
from signserver.errors import InvalidInput

from .auth import bearer_token, require_official, require_person
from .bodies import json_body as _json_body
from .bodies import string_field as _string_field
from .serialize import iso, sign_request_json, submitted_document_response

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.post("/api/v1/sessions")
async def login(request: web.Request) -> web.Response:
    body = await _json_body(request)
    authenticator: Authenticator = request.app["authenticator"]
    otp = body.get("otp")
    if otp is not None and not isinstance(otp, str):
        raise InvalidInput("field_invalid", field="otp", reason="must be a string")
    session = await authenticator.login_official(
        _string_field(body, "username", 128), _string_field(body, "password", 1024), utc_now(),
        otp=otp[:16] if otp else None,
    )
    official = session.official
    return web.json_response(
        {
            "token": session.token,
            "token_type": "Bearer",
            "expires_at": iso(session.expires_at),
            "official": {"id": official.id, "full_name": official.full_name, "title": official.title,
                         "agency": official.agency, "roles": sorted(official.role_set)},
        },
        status=201,
    )


@routes.delete("/api/v1/sessions/current")
async def logout(request: web.Request) -> web.Response:
    await require_person(request, *PERSON_ROLES)
    authenticator: Authenticator = request.app["authenticator"]
    await authenticator.logout_official(bearer_token(request) or "")
    return web.Response(status=204)


@routes.get("/api/v1/inbox")
async def inbox(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    official = await require_official(request)
    raw_states = request.query.get("state", "pending_approval")
    states = [s for s in raw_states.split(",") if s] or None
    found = await queries.requests_for_official(ctx, official, states)
    return web.json_response({"items": [sign_request_json(r) for r in found], "count": len(found)})


@routes.get("/api/v1/inbox/{request_id}")
async def inbox_item(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    official = await require_official(request)
    found = await queries.request_for_official(ctx, official, request.match_info["request_id"])
    return web.json_response(sign_request_json(found))


@routes.get("/api/v1/inbox/{request_id}/document")
async def inbox_document(request: web.Request) -> web.StreamResponse:
    ctx: CoreContext = request.app["core"]
    official = await require_official(request)
    found = await queries.request_for_official(ctx, official, request.match_info["request_id"])
    return submitted_document_response(found)


@routes.post("/api/v1/approvals")
async def approve(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    official = await require_official(request)
    body = await _json_body(request)
    request_ids = body.get("request_ids")
    if not isinstance(request_ids, list) or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in request_ids):
        raise InvalidInput("field_invalid", field="request_ids", reason="must be a list of request ids")
    otp = _string_field(body, "otp", 16)
    approval = await approve_requests(ctx, official, request_ids, otp)
    for approved in approval.requests:
        request.app["signing_queue"].submit(approved.id)
    return web.json_response(
        {
            "approval_id": approval.id,
            "official_id": approval.official_id,
            "requests": [{"id": r.id, "state": r.state, "document_sha256": r.document_sha256}
                         for r in approval.requests],
        },
        status=201,
    )


@routes.post("/api/v1/sign-requests/{request_id}/rejection")
async def reject(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    official = await require_official(request)
    body = await _json_body(request)
    rejected = await reject_request(ctx, official, request.match_info["request_id"], _string_field(body, "reason"))
    return web.json_response(sign_request_json(rejected))
