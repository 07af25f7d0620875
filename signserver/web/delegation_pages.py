"""The inbox's delegation page (ủy quyền): the delegations an official gave and received, create and revoke."""

from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web

from signserver.api.problems import status_for
from signserver.core.delegations import create_delegation, delegations_for_official, revoke_delegation
from signserver.errors import SignserverError
from signserver.signing.stamp import VIETNAM_TIME_ZONE
from signserver.store.records import Official

from .rendering import core_of, error_text, gettext_of, redirect, render, signed_in
from .security import check_csrf

__all__ = ["routes"]

routes = web.RouteTableDef()

MAX_USERNAME_LENGTH = 128
MAX_REASON_LENGTH = 500


async def _delegations_page(request: web.Request, official: Official, *, values: dict[str, str] | None = None,
                            errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    found = await delegations_for_official(core_of(request), official)
    errors = errors or {}
    return render(request, "delegations.html", {
        "given": found.given,
        "received": found.received,
        "now": core_of(request).clock(),
        "values": values or {},
        "errors": errors,
        "error_summary": list(errors.items()),
        "notice": request.query.get("notice"),
    }, status=status)


@routes.get("/delegations")
async def delegations(request: web.Request) -> web.Response:
    official = await signed_in(request)
    return await _delegations_page(request, official)


def _local_datetime(value: str) -> datetime | None:
    """Parse a ``datetime-local`` field's value as Vietnam time and return it in UTC; None when it is not one.

    UTC because SQLite stores a time without its offset, and the store reads every time back as UTC.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=VIETNAM_TIME_ZONE)
    return parsed.astimezone(timezone.utc)


@routes.post("/delegations")
async def create(request: web.Request) -> web.Response:
    official = await signed_in(request)
    form = await request.post()
    check_csrf(form, request["inbox_csrf"])
    _ = gettext_of(request)
    values = {name: str(form.get(name, "")).strip() for name in ("deputy", "starts_at", "ends_at", "reason")}
    values["deputy"] = values["deputy"][:MAX_USERNAME_LENGTH]
    values["reason"] = values["reason"][:MAX_REASON_LENGTH]
    starts_at, ends_at = _local_datetime(values["starts_at"]), _local_datetime(values["ends_at"])

    errors = {}
    if not values["deputy"]:
        errors["deputy"] = _("Enter the deputy's username.")
    if starts_at is None:
        errors["starts_at"] = _("Enter the start as a date and time.")
    if ends_at is None:
        errors["ends_at"] = _("Enter the end as a date and time.")
    if errors:
        return await _delegations_page(request, official, values=values, errors=errors, status=400)

    assert starts_at is not None and ends_at is not None
    try:
        await create_delegation(core_of(request), official, official.id, values["deputy"], starts_at, ends_at,
                                values["reason"])
    except SignserverError as error:
        field = "deputy" if error.code in ("deputy_unknown", "delegation_to_self") else "ends_at"
        return await _delegations_page(request, official, values=values, status=status_for(error),
                                       errors={field: error_text(request, error.code, error.params)})
    return redirect("/inbox/delegations?notice=created")


@routes.post("/delegations/{delegation_id}/revoke")
async def revoke(request: web.Request) -> web.Response:
    official = await signed_in(request)
    form = await request.post()
    check_csrf(form, request["inbox_csrf"])
    await revoke_delegation(core_of(request), official, request.match_info["delegation_id"])
    return redirect("/inbox/delegations?notice=revoked")
