"""Handlers of the security officers' and auditors' routes: keys, certificates, policies, four-eyes changes, audit.

Each route names the role it needs; the rules live in ``signserver.core``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from signserver.core import changes, enrolment, keys
from signserver.core.audit import verify_audit_chain
from signserver.core.change_details import describe_change
from signserver.core.context import CoreContext
from signserver.core.key_access import explain_key_use
from signserver.core.policy import PolicyQuery
from signserver.core.roles import AUDITOR, SECURITY_OFFICER
from signserver.errors import InvalidInput
from signserver.i18n import negotiate_language
from signserver.store.records import Application, Official, PolicyVersion

from .auth import require_person
from .bodies import json_body, optional_string, string_field
from .serialize import (
    audit_record_json,
    change_details_json,
    change_json,
    hsm_key_json,
    iso,
    officer_credential_json,
)

__all__ = ["routes"]

routes = web.RouteTableDef()


def policy_version_json(version: PolicyVersion) -> dict[str, Any]:
    return {"version": version.version, "digest": version.digest, "author_id": version.author_id,
            "approver_id": version.approver_id, "change_id": version.change_id,
            "applied_at": iso(version.applied_at)}


def _list_response(items: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"items": items, "count": len(items)})


def _states_query(request: web.Request) -> list[str] | None:
    """Return the states of the comma-separated ``state`` query parameter, or None when it names none."""
    return [state for state in request.query.get("state", "").split(",") if state] or None


# The range of a signed 64-bit integer, which SQLite's INTEGER and PostgreSQL's BIGINT columns store.
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _integer_query(request: web.Request, name: str, default: int) -> int:
    try:
        value = int(request.query.get(name, str(default)))
    except ValueError:
        raise InvalidInput("field_invalid", field=name, reason="must be an integer") from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidInput("field_invalid", field=name, reason=f"must be between {_INT64_MIN} and {_INT64_MAX}")
    return value


def _dataclass_from(cls: type, data: Any, field: str) -> Any:
    """Build ``cls`` from a JSON object, rejecting unknown members so that a typo is not silently dropped."""
    if not isinstance(data, dict):
        raise InvalidInput("field_invalid", field=field, reason="must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InvalidInput("field_invalid", field=f"{field}.{unknown[0]}",
                           reason=f"unknown member; use {', '.join(sorted(names))}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise InvalidInput("field_invalid", field=field, reason=str(exc)) from None


def _documents(body: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the (name, text) pairs of ``documents``. The core checks their number, names and size."""
    items = body.get("documents")
    if not isinstance(items, list):
        raise InvalidInput("field_invalid", field="documents", reason="must be a list of objects with name and text")
    documents = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or \
                not isinstance(item.get("text"), str):
            raise InvalidInput("field_invalid", field=f"documents[{index}]",
                               reason="must be an object with the strings name (a .yaml file name) and text")
        documents.append((item["name"], item["text"]))
    return documents


# Keys and certificates


@routes.get("/api/v1/admin/keys")
async def list_keys(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    found = await keys.list_keys(ctx, officer, _states_query(request))
    return _list_response([hsm_key_json(key) for key in found])


@routes.post("/api/v1/admin/keys")
async def generate_key(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    body = await json_body(request)
    key_size = body.get("key_size")
    if not isinstance(key_size, int) or isinstance(key_size, bool):
        raise InvalidInput("field_invalid", field="key_size", reason="must be an integer such as 2048 or 256")
    key = await keys.generate_key(ctx, officer, string_field(body, "key_type", 8).upper(), key_size,
                                  optional_string(body, "label", 128))
    return web.json_response(hsm_key_json(key), status=201)


@routes.post("/api/v1/admin/keys/{key_id}/csr")
async def create_csr(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    body = await json_body(request)
    subject = _dataclass_from(keys.CsrSubject, body.get("subject"), "subject")
    csr_pem = await keys.create_csr(ctx, officer, request.match_info["key_id"], subject)
    return web.json_response({"key_id": request.match_info["key_id"], "csr_pem": csr_pem.decode()}, status=201)


@routes.post("/api/v1/admin/keys/{key_id}/certificate")
async def import_certificate(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    body = await json_body(request)
    certificate_pem = string_field(body, "certificate_pem", 100_000).encode()
    chain = optional_string(body, "chain_pem", 500_000)
    rotate = optional_string(body, "rotate_credential_id", 64)
    new_credential = None
    if rotate is None:
        new_credential = _dataclass_from(keys.NewCredential, body.get("credential"), "credential")
    elif body.get("credential") is not None:
        raise InvalidInput("field_invalid", field="credential",
                           reason="give credential or rotate_credential_id, not both")
    credential = await keys.import_certificate(ctx, officer, request.match_info["key_id"], certificate_pem,
                                               chain.encode() if chain else None, new_credential=new_credential,
                                               rotate_credential_id=rotate)
    return web.json_response(officer_credential_json(credential), status=201)


@routes.post("/api/v1/admin/keys/{key_id}/destruction")
async def request_key_destruction(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    change = await changes.request_key_destruction(ctx, officer, request.match_info["key_id"])
    return web.json_response(change_json(change), status=202)


@routes.post("/api/v1/admin/credentials/{credential_id}/{action:(enable|disable)}")
async def set_credential_enabled(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    enabled = request.match_info["action"] == "enable"
    credential = await keys.set_credential_enabled(ctx, officer, request.match_info["credential_id"], enabled)
    return web.json_response(officer_credential_json(credential))


@routes.post("/api/v1/admin/credentials/{credential_id}/rotation")
async def start_rotation(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    key, csr_pem = await keys.start_rotation(ctx, officer, request.match_info["credential_id"])
    return web.json_response({"key": hsm_key_json(key), "csr_pem": csr_pem.decode()}, status=201)


# Enrolment of officials and applications


def official_json(official: Official) -> dict[str, Any]:
    return {"id": official.id, "username": official.username, "full_name": official.full_name,
            "title": official.title, "agency": official.agency, "roles": sorted(official.role_set),
            "enabled": official.enabled, "created_at": iso(official.created_at)}


def application_json(application: Application) -> dict[str, Any]:
    return {"id": application.id, "name": application.name, "agency": application.agency,
            "enabled": application.enabled, "created_at": iso(application.created_at),
            "webhook_url": application.webhook_url}


@routes.get("/api/v1/admin/officials")
async def list_officials(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    await require_person(request, SECURITY_OFFICER, AUDITOR)
    async with ctx.store.transaction() as tx:
        found = await tx.officials()
    return _list_response([official_json(official) for official in found])


@routes.post("/api/v1/admin/officials")
async def enrol_official(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    body = await json_body(request)
    roles = body.get("roles", ["official"])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise InvalidInput("field_invalid", field="roles", reason="must be a list such as [\"official\"]")
    enrolled = await enrolment.enrol_official(
        ctx, officer, official_id=string_field(body, "id", 64), username=string_field(body, "username", 128),
        full_name=string_field(body, "full_name", 200), title=optional_string(body, "title", 200) or "",
        agency=string_field(body, "agency", 200), roles=roles,
    )
    return web.json_response({**official_json(enrolled.official), "password": enrolled.password,
                              "totp_secret": enrolled.totp_secret, "totp_uri": enrolled.totp_uri}, status=201,
                             headers={"Cache-Control": "no-store"})


@routes.get("/api/v1/admin/applications")
async def list_applications(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    await require_person(request, SECURITY_OFFICER, AUDITOR)
    async with ctx.store.transaction() as tx:
        found = await tx.applications()
    return _list_response([application_json(application) for application in found])


@routes.post("/api/v1/admin/applications")
async def enrol_application(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    body = await json_body(request)
    webhook_url = body.get("webhook_url")
    enrolled = await enrolment.enrol_application(ctx, officer, application_id=string_field(body, "id", 64),
                                                 name=string_field(body, "name", 200),
                                                 agency=string_field(body, "agency", 200),
                                                 webhook_url=None if webhook_url in (None, "") else webhook_url)
    shown_once = {"api_key": enrolled.api_key}
    if enrolled.webhook_secret is not None:
        shown_once["webhook_secret"] = enrolled.webhook_secret
    return web.json_response({**application_json(enrolled.application), **shown_once}, status=201,
                             headers={"Cache-Control": "no-store"})


# Policies and four-eyes changes


@routes.get("/api/v1/admin/policies")
async def list_policy_versions(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    await require_person(request, SECURITY_OFFICER, AUDITOR)
    async with ctx.store.transaction() as tx:
        versions = await tx.policy_versions()
    return _list_response([policy_version_json(version) for version in versions])


@routes.post("/api/v1/admin/policies/check")
async def check_policy(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    parsed = await changes.check_policy_change(ctx, officer, _documents(await json_body(request)))
    return web.json_response({"valid": True, "digest": parsed.digest,
                              "credentials": sorted(parsed.credential_ids())})


@routes.post("/api/v1/admin/policies")
async def request_policy_change(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    change = await changes.request_policy_change(ctx, officer, _documents(await json_body(request)))
    return web.json_response(change_json(change), status=202)


@routes.get("/api/v1/admin/policies/explanation")
async def explain_policy(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    person = await require_person(request, SECURITY_OFFICER, AUDITOR)
    query_args = request.query
    for name in ("app", "key"):
        if not query_args.get(name):
            raise InvalidInput("field_missing", field=name)
    query = PolicyQuery(
        application_id=query_args["app"], credential_id=query_args["key"],
        signature_format=query_args.get("format", "pades"), signature_level=_level(query_args.get("level", "B-T")),
        document_type=query_args.get("doc_type") or None,
    )
    explanation = await explain_key_use(ctx, person, query)
    language = negotiate_language(request.headers.get("Accept-Language"))
    return web.json_response({**explanation.to_json(), "text": explanation.lines(language)})


def _level(value: str) -> str:
    """Return a level as the policy writes it: B-B..B-LTA in capitals, "none" for a raw signature."""
    return "none" if value.lower() == "none" else value.upper()


@routes.get("/api/v1/admin/changes")
async def list_changes(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    found = await changes.list_changes(ctx, officer, _states_query(request))
    return _list_response([change_json(change) for change in found])


@routes.get("/api/v1/admin/changes/{change_id}")
async def show_change(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    details = await describe_change(ctx, officer, request.match_info["change_id"])
    return web.json_response(change_details_json(details))


@routes.post("/api/v1/admin/changes/{change_id}/approval")
async def approve_change(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    change = await changes.approve_change(ctx, officer, request.match_info["change_id"])
    return web.json_response(change_json(change))


@routes.post("/api/v1/admin/changes/{change_id}/rejection")
async def reject_change(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    body = await json_body(request)
    change = await changes.reject_change(ctx, officer, request.match_info["change_id"], string_field(body, "note"))
    return web.json_response(change_json(change))


# Audit trail


@routes.get("/api/v1/audit")
async def audit_list(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    await require_person(request, AUDITOR)
    after = _integer_query(request, "after", 0)
    limit = min(max(_integer_query(request, "limit", 500), 1), 5000)
    async with ctx.store.transaction() as tx:
        records = await tx.audit_records(dossier_code=request.query.get("dossier_code"),
                                         request_id=request.query.get("request_id"), after_seq=after, limit=limit)
    return _list_response([audit_record_json(record) for record in records])


@routes.get("/api/v1/audit/verification")
async def audit_verify(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    await require_person(request, AUDITOR)
    result = await verify_audit_chain(ctx.store)
    return web.json_response(dataclasses.asdict(result))
