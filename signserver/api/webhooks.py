"""Handlers of a security officer's routes for application webhooks: set or replace the URL, remove it."""

from __future__ import annotations

from aiohttp import web

from signserver.core import webhook_registration
from signserver.core.context import CoreContext
from signserver.core.roles import SECURITY_OFFICER

from .admin import application_json
from .auth import require_person
from .bodies import json_body

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.put("/api/v1/admin/applications/{application_id}/webhook")
async def set_webhook(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    body = await json_body(request)
    registered = await webhook_registration.set_webhook(ctx, officer, request.match_info["application_id"],
                                                        body.get("webhook_url"))
    return web.json_response({**application_json(registered.application), "webhook_secret": registered.secret},
                             headers={"Cache-Control": "no-store"})


@routes.delete("/api/v1/admin/applications/{application_id}/webhook")
async def remove_webhook(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    officer = await require_person(request, SECURITY_OFFICER)
    application = await webhook_registration.remove_webhook(ctx, officer, request.match_info["application_id"])
    return web.json_response(application_json(application))
