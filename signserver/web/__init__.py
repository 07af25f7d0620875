"""The officials' web inbox under ``/inbox/``: server-rendered pages to review, approve and reject sign requests.

The pages work without JavaScript. Handlers parse the form, call the same
core functions as the native API (``core.decisions``, ``core.queries``,
``core.auth``), and render a template. So the OTP lockout, the replay rule
and the checks on each request are the API's. The inbox is an aiohttp
sub-application with its own middleware for security headers, CSRF checks,
HTML error pages and the page language.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web

from signserver.api.problems import status_for
from signserver.config import Settings
from signserver.core.errors import AuthenticationFailed
from signserver.errors import SignserverError

from . import delegation_pages, pages, session_pages
from .rendering import error_text, redirect, render, setup_environments
from .security import add_security_headers, check_same_origin, clear_session_cookie
from .translations import LANGUAGE_COOKIE, request_language

__all__ = ["setup_inbox", "INBOX_PREFIX"]

log = structlog.get_logger(__name__)

INBOX_PREFIX = "/inbox/"
STATIC_DIR = Path(__file__).parent / "static"
# The largest form body the inbox reads. A rejection reason of 1,000 characters and a batch of
# Settings.max_batch_size ids and digests fit many times over.
MAX_FORM_BYTES = 256 * 1024


@web.middleware
async def inbox_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Choose the language, check the origin of POSTs, render errors as pages, and add the security headers."""
    request["inbox_language"] = request_language(request.cookies.get(LANGUAGE_COOKIE),
                                                 request.headers.get("Accept-Language"))
    try:
        if request.method == "POST":
            check_same_origin(request)
            _check_form_size(request)
        response = await handler(request)
    except AuthenticationFailed:
        # After an idle timeout, a GET comes back to the same page once the official logs in again.
        target = f"/inbox/login?next={quote(request.path_qs)}" if request.method == "GET" else "/inbox/login"
        response = redirect(target)
        clear_session_cookie(response, request.config_dict["settings"])
    except SignserverError as error:
        log.info("inbox.request_refused", path=request.path, code=error.code)
        response = render(request, "error.html", {"message": error_text(request, error.code, error.params)},
                          status=status_for(error))
    except web.HTTPException as exc:
        response = _http_error_page(request, exc)
    except Exception:  # noqa: BLE001 - the last line of defence: log, then a page without internals
        log.exception("inbox.unhandled_error", path=request.path)
        response = render(request, "error.html", {"message": error_text(
            request, "internal_error", {"request_ref": request.get("request_id")})}, status=500)
    add_security_headers(response)
    return response


def _check_form_size(request: web.Request) -> None:
    """Raise 413 before a form is read when its body is larger than any inbox form, or of unknown length."""
    length = request.content_length
    if length is None or length > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM_BYTES, actual_size=length or 0)


def _http_error_page(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    if exc.status == 403 and exc.reason == "csrf_invalid":
        log.info("inbox.csrf_refused", path=request.path)
        return render(request, "error.html", {"message": error_text(request, "inbox_csrf_invalid")}, status=403)
    if exc.status == 404:
        return render(request, "error.html", {"message": error_text(request, "not_found")}, status=404)
    if exc.status == 405:
        return render(request, "error.html", {"message": error_text(request, "method_not_allowed")}, status=405)
    if exc.status == 413:
        return render(request, "error.html", {"message": error_text(request, "payload_too_large", {
            "limit": MAX_FORM_BYTES})}, status=413)
    return web.Response(status=exc.status, text=exc.text or exc.reason, headers=exc.headers)


async def _to_inbox(_request: web.Request) -> web.Response:
    return redirect(INBOX_PREFIX)


def setup_inbox(app: web.Application, settings: Settings) -> None:
    """Mount the inbox under ``/inbox/`` on ``app``, which must already hold the core and the authenticator."""
    inbox = web.Application(middlewares=[inbox_middleware])
    setup_environments(inbox)
    inbox.add_routes(session_pages.routes)
    inbox.add_routes(pages.routes)
    inbox.add_routes(delegation_pages.routes)
    inbox.router.add_static("/static/", STATIC_DIR, append_version=False)
    # Added first, because the sub-application's prefix resource also matches the path without its slash.
    app.router.add_get(INBOX_PREFIX.rstrip("/"), _to_inbox)
    app.add_subapp(INBOX_PREFIX, inbox)
    log.info("inbox.mounted", prefix=INBOX_PREFIX, cookie_secure=settings.inbox_cookie_secure,
             idle_timeout_seconds=int(settings.inbox_idle_timeout.total_seconds()))
