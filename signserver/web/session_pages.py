"""Login, logout and the choice of language of the inbox."""

from __future__ import annotations

import re

from aiohttp import web

from signserver.core.auth import Authenticator
from signserver.core.context import utc_now
from signserver.core.errors import AuthenticationFailed
from signserver.i18n import LANGUAGES

from .rendering import error_text, gettext_of, redirect, render, safe_next, signed_in
from .security import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    check_csrf,
    clear_session_cookie,
    new_login_token,
    set_login_cookie,
    set_session_cookie,
)
from .translations import LANGUAGE_COOKIE

__all__ = ["routes"]

routes = web.RouteTableDef()

LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600
MAX_USERNAME_LENGTH = 128
MAX_PASSWORD_LENGTH = 1024
MAX_OTP_LENGTH = 16
LOGIN_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def _login_page(request: web.Request, *, username: str = "", next_path: str = "/inbox/",
                errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    """Render the login form with the pre-session CSRF token of the login cookie, new if there is none.

    Keeping the cookie's token lets a login form opened in another tab still be sent.
    """
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not LOGIN_TOKEN_PATTERN.fullmatch(token):
        token = new_login_token()
    errors = errors or {}
    response = render(request, "login.html", {
        "csrf": token, "username": username, "next": next_path, "errors": errors,
        "error_summary": [(field, text) for field, text in errors.items()],
    }, status=status)
    set_login_cookie(response, token, request.config_dict["settings"])
    return response


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    return _login_page(request, next_path=safe_next(request.query.get("next")))


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    check_csrf(form, request.cookies.get(LOGIN_COOKIE))
    _ = gettext_of(request)
    username = str(form.get("username", "")).strip()[:MAX_USERNAME_LENGTH]
    password = str(form.get("password", ""))[:MAX_PASSWORD_LENGTH]
    otp = str(form.get("otp", "")).strip()[:MAX_OTP_LENGTH]
    next_path = safe_next(str(form.get("next", "")))

    errors = {}
    if not username:
        errors["username"] = _("Enter your username.")
    if not password:
        errors["password"] = _("Enter your password.")
    if not otp:
        errors["otp"] = _("Enter the OTP code from your authenticator app.")
    if errors:
        return _login_page(request, username=username, next_path=next_path, errors=errors, status=400)

    authenticator: Authenticator = request.config_dict["authenticator"]
    settings = request.config_dict["settings"]
    try:
        session = await authenticator.login_inbox(username, password, otp, utc_now(), settings.inbox_session_ttl)
    except AuthenticationFailed:
        return _login_page(request, username=username, next_path=next_path,
                           errors={"otp": error_text(request, "inbox_login_failed")}, status=401)

    response = redirect(next_path)
    set_session_cookie(response, session.token, settings)
    response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    await signed_in(request)
    form = await request.post()
    check_csrf(form, request["inbox_csrf"])
    authenticator: Authenticator = request.config_dict["authenticator"]
    await authenticator.logout_official(request["inbox_session_token"])
    response = redirect("/inbox/login")
    clear_session_cookie(response, request.config_dict["settings"])
    return response


@routes.get("/language")
async def choose_language(request: web.Request) -> web.Response:
    """Set the ``lang`` cookie and go back: a link, so it works before login and without JavaScript."""
    language = request.query.get("lang", "")
    response = redirect(safe_next(request.query.get("next")))
    if language in LANGUAGES:
        settings = request.config_dict["settings"]
        response.set_cookie(LANGUAGE_COOKIE, language, max_age=LANGUAGE_COOKIE_SECONDS, path=COOKIE_PATH,
                            httponly=True, samesite="Strict", secure=settings.inbox_cookie_secure)
    return response
