"""Handlers of the officials' routes: log in, list and view their requests, approve, reject, delegate."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web

from signserver.core import queries
from signserver.core.auth import Authenticator
from signserver.core.context import CoreContext, utc_now
from signserver.core.decisions import approve_requests, reject_request
from signserver.core.delegations import (
    create_delegation,
    delegations_for_officer,
    delegations_for_official,
    revoke_delegation,
)
from signserver.core.roles import OFFICIAL, PERSON_ROLES, SEAL_HOLDER, SECURITY_OFFICER
from signserver.store.chains import Delegation
from signserver.errors import InvalidInput

from .auth import bearer_token, require_official, require_person
from .bodies import json_body as _json_body
from .bodies import string_field as _string_field
from .serialize import iso, sign_request_json, submitted_document_response

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

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
    chain = await queries.approval_chain(ctx, found.id)
    return web.json_response(sign_request_json(found, chain=chain))


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
    expected_digests = _expected_digests(body.get("document_sha256"))
    otp = _string_field(body, "otp", 16)
    approval = await approve_requests(ctx, official, request_ids, otp, expected_digests)
    for approved in approval.ready_to_sign:
        request.app["signing_queue"].submit(approved.id)
    return web.json_response(
        {
            "approval_id": approval.id,
            "official_id": approval.official_id,
            "requests": [{"id": r.id, "state": r.state, "document_sha256": r.document_sha256,
                          "approver_official_id": r.approver_official_id} for r in approval.requests],
            "ready_to_sign": [r.id for r in approval.ready_to_sign],
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


def _expected_digests(value: Any) -> dict[str, str] | None:
    """Parse ``document_sha256``: an object from request id to the SHA-256 (hex) of the document shown."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(digest, str) and _SHA256_HEX.fullmatch(digest)
        for key, digest in value.items()
    ):
        raise InvalidInput("field_invalid", field="document_sha256",
                           reason="must be an object from request id to a SHA-256 of 64 hexadecimal digits")
    return {key: digest.lower() for key, digest in value.items()}


def _aware_time(body: dict[str, Any], name: str, default: datetime | None = None) -> datetime:
    value = body.get(name)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise InvalidInput("field_missing" if value is None else "field_invalid", field=name,
                           reason="must be an ISO 8601 time with a UTC offset")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("field_invalid", field=name, reason="must be an ISO 8601 time with a UTC offset") from None
    if parsed.tzinfo is None:
        raise InvalidInput("field_invalid", field=name, reason="needs a UTC offset, such as +07:00")
    return parsed


def _delegation_json(delegation: Delegation, now: datetime) -> dict[str, Any]:
    return {
        "id": delegation.id,
        "delegator": {"official_id": delegation.delegator_official_id, "username": delegation.delegator_username,
                      "full_name": delegation.delegator_name},
        "deputy": {"official_id": delegation.deputy_official_id, "username": delegation.deputy_username,
                   "full_name": delegation.deputy_name},
        "starts_at": iso(delegation.starts_at),
        "ends_at": iso(delegation.ends_at),
        "reason": delegation.reason,
        "created_at": iso(delegation.created_at),
        "created_by": delegation.created_by,
        "revoked_at": iso(delegation.revoked_at),
        "revoked_by": delegation.revoked_by,
        "in_force": delegation.in_force(now),
    }


@routes.post("/api/v1/delegations")
async def create_delegation_route(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    actor = await require_person(request, OFFICIAL, SEAL_HOLDER, SECURITY_OFFICER)
    body = await _json_body(request)
    delegator_id = body.get("delegator_official_id", actor.id)
    if not isinstance(delegator_id, str) or not 0 < len(delegator_id) <= 64:
        raise InvalidInput("field_invalid", field="delegator_official_id", reason="must be an official id")
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise InvalidInput("field_invalid", field="reason", reason="must be a string")
    now = utc_now()
    created = await create_delegation(
        ctx, actor, delegator_id, _string_field(body, "deputy", 128), _aware_time(body, "starts_at", now),
        _aware_time(body, "ends_at"), reason,
    )
    return web.json_response(_delegation_json(created, utc_now()), status=201,
                             headers={"Location": f"/api/v1/delegations/{created.id}"})


@routes.get("/api/v1/delegations")
async def list_delegations(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    person = await require_person(request, OFFICIAL, SEAL_HOLDER, SECURITY_OFFICER)
    official_id = request.query.get("official_id")
    if official_id:
        found = await delegations_for_officer(ctx, person, official_id)
    else:
        found = await delegations_for_official(ctx, person)
    now = utc_now()
    return web.json_response({"given": [_delegation_json(d, now) for d in found.given],
                              "received": [_delegation_json(d, now) for d in found.received]})


@routes.delete("/api/v1/delegations/{delegation_id}")
async def revoke_delegation_route(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    actor = await require_person(request, OFFICIAL, SEAL_HOLDER, SECURITY_OFFICER)
    revoked = await revoke_delegation(ctx, actor, request.match_info["delegation_id"])
    return web.json_response(_delegation_json(revoked, utc_now()))
