"""Handlers of the officials' routes: log in, list and view their requests, approve, reject."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from signserver.core import queries
from signserver.core.auth import Authenticator
from signserver.core.context import CoreContext, utc_now
from signserver.core.decisions import approve_requests, reject_request
from signserver.errors import InvalidInput

from .auth import bearer_token, require_official
from .serialize import iso, sign_request_json, submitted_document_response

__all__ = ["routes"]

routes = web.RouteTableDef()


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise InvalidInput("unsupported_media_type", content_type=request.content_type, expected="application/json")
    try:
        body = await request.json()
    except RecursionError:
        raise InvalidInput("invalid_request", reason="body is JSON nested too deeply") from None
    except ValueError as exc:
        raise InvalidInput("invalid_request", reason=f"body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise InvalidInput("invalid_request", reason="body must be a JSON object")
    return body


def _string_field(body: dict[str, Any], name: str, max_length: int = 1000) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise InvalidInput("field_missing", field=name)
    if not isinstance(value, str):
        raise InvalidInput("field_invalid", field=name, reason="must be a string")
    if len(value) > max_length:
        raise InvalidInput("field_invalid", field=name, reason=f"longer than {max_length} characters")
    return value


@routes.post("/api/v1/sessions")
async def login(request: web.Request) -> web.Response:
    body = await _json_body(request)
    authenticator: Authenticator = request.app["authenticator"]
    session = await authenticator.login_official(
        _string_field(body, "username", 128), _string_field(body, "password", 1024), utc_now()
    )
    official = session.official
    return web.json_response(
        {
            "token": session.token,
            "token_type": "Bearer",
            "expires_at": iso(session.expires_at),
            "official": {"id": official.id, "full_name": official.full_name, "title": official.title,
                         "agency": official.agency},
        },
        status=201,
    )


@routes.delete("/api/v1/sessions/current")
async def logout(request: web.Request) -> web.Response:
    await require_official(request)
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
