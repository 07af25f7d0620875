"""Sessions, CSRF protection and security headers of the officials' web inbox.

The session cookie contains a random token, stored as a SHA-256 digest in
``official_sessions`` (kind "inbox"). It is HttpOnly, SameSite=Strict,
limited to ``/inbox`` and Secure unless a setting turns that off.

Every form carries a CSRF token. For a signed-in official it is the
HMAC-SHA256 of the fixed label ``inbox-csrf`` keyed by the session token, so
only a page read with the session cookie can know it. The login form carries
a random value that must equal the one in a short-lived pre-session cookie.
Every POST also
checks the ``Origin`` and ``Sec-Fetch-Site`` headers when the browser sends
them. Browsers send ``Origin: null`` under ``Referrer-Policy: no-referrer``
(Chromium 156 did for these pages, with ``Sec-Fetch-Site: same-origin``), so
that value is accepted only together with ``Sec-Fetch-Site: same-origin``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from signserver.config import Settings

__all__ = [
    "SESSION_COOKIE",
    "LOGIN_COOKIE",
    "COOKIE_PATH",
    "SECURITY_HEADERS",
    "csrf_token",
    "new_login_token",
    "check_csrf",
    "check_same_origin",
    "set_session_cookie",
    "clear_session_cookie",
    "set_login_cookie",
    "add_security_headers",
]

SESSION_COOKIE = "inbox_session"
LOGIN_COOKIE = "inbox_login"
COOKIE_PATH = "/inbox"
CSRF_FIELD = "csrf_token"
LOGIN_COOKIE_SECONDS = 3600

# No inline script or style: the pages use one stylesheet and no JavaScript.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'none'; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def csrf_token(session_token: str) -> str:
    """Return the CSRF token of the forms of the session ``session_token``."""
    return hmac.new(session_token.encode(), b"inbox-csrf", hashlib.sha256).hexdigest()


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def check_csrf(form: Any, expected: str | None) -> None:
    """Raise 403 unless the form's ``csrf_token`` equals ``expected`` (compared in constant time)."""
    submitted = form.get(CSRF_FIELD)
    if not expected or not isinstance(submitted, str) or not hmac.compare_digest(submitted.encode(), expected.encode()):
        raise web.HTTPForbidden(reason="csrf_invalid")


def check_same_origin(request: web.Request) -> None:
    """Raise 403 when the browser reports that the request comes from another site or origin."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise web.HTTPForbidden(reason="csrf_invalid")
    origin = request.headers.get("Origin")
    if origin == "null":
        # Chromium sends "null" with Sec-Fetch-Site from these pages, because of no-referrer.
        # A "null" without that header comes from a sandboxed frame, a data: page or a forged request.
        if fetch_site != "same-origin":
            raise web.HTTPForbidden(reason="csrf_invalid")
    elif origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
        raise web.HTTPForbidden(reason="csrf_invalid")


def _cookie_options(settings: Settings) -> dict[str, Any]:
    return {"path": COOKIE_PATH, "httponly": True, "samesite": "Strict", "secure": settings.inbox_cookie_secure}


def set_session_cookie(response: web.StreamResponse, token: str, settings: Settings) -> None:
    """Set the session cookie for the browser's session, without Max-Age: the server decides when it ends."""
    response.set_cookie(SESSION_COOKIE, token, **_cookie_options(settings))


def clear_session_cookie(response: web.StreamResponse, settings: Settings) -> None:
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=settings.inbox_cookie_secure, httponly=True,
                        samesite="Strict")


def set_login_cookie(response: web.StreamResponse, token: str, settings: Settings) -> None:
    response.set_cookie(LOGIN_COOKIE, token, max_age=LOGIN_COOKIE_SECONDS, **_cookie_options(settings))


def add_security_headers(response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
