"""Rendering of the inbox's pages: one Jinja2 environment per language, and the helpers every handler uses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from babel.support import Translations

from signserver.core.auth import Authenticator
from signserver.core.context import CoreContext, utc_now
from signserver.core.errors import AuthenticationFailed
from signserver.i18n import LANGUAGES, message
from signserver.signing.stamp import VIETNAM_TIME_ZONE
from signserver.store.records import Official

from .security import SESSION_COOKIE, csrf_token
from .translations import load_translations

__all__ = [
    "TEMPLATES_DIR",
    "setup_environments",
    "render",
    "redirect",
    "signed_in",
    "core_of",
    "gettext_of",
    "error_text",
    "local_time",
    "safe_next",
]

TEMPLATES_DIR = Path(__file__).parent / "templates"
ENVIRONMENT_KEYS = {language: web.AppKey(f"inbox_jinja2_{language}", jinja2.Environment) for language in LANGUAGES}
TRANSLATIONS_KEY = web.AppKey("inbox_translations", dict)
# A session token the service issues has 47 characters, so a longer cookie value cannot be one.
MAX_TOKEN_LENGTH = 128


def setup_environments(app: web.Application) -> None:
    """Create one autoescaping Jinja2 environment per language, each with its gettext catalog installed."""
    translations: dict[str, Translations] = {}
    for language in LANGUAGES:
        catalog = load_translations(language)
        translations[language] = catalog
        environment = aiohttp_jinja2.setup(
            app, app_key=ENVIRONMENT_KEYS[language], loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=True, extensions=["jinja2.ext.i18n"], undefined=jinja2.StrictUndefined,
            default_helpers=False,
        )
        environment.install_gettext_translations(catalog, newstyle=True)  # type: ignore[attr-defined]
        environment.filters["local_time"] = local_time
    app[TRANSLATIONS_KEY] = translations


def render(request: web.Request, template: str, context: dict[str, Any] | None = None,
           status: int = 200) -> web.Response:
    """Render ``template`` in the request's language, with the values every page uses."""
    language = request["inbox_language"]
    values = {
        "lang": language,
        "official": request.get("inbox_official"),
        "csrf": request.get("inbox_csrf", ""),
        # The page to come back to after choosing a language. A POST's result cannot be fetched again.
        "current_path": request.path_qs if request.method == "GET" else "/inbox/",
        "errors": {},
        "error_summary": [],
        "notice": None,
        **(context or {}),
    }
    return aiohttp_jinja2.render_template(template, request, values, app_key=ENVIRONMENT_KEYS[language],
                                          status=status)


def redirect(location: str) -> web.Response:
    """Return a 303 See Other to ``location``, so the browser follows it with a GET."""
    return web.Response(status=303, headers={"Location": location})


def core_of(request: web.Request) -> CoreContext:
    return request.config_dict["core"]


def gettext_of(request: web.Request) -> Callable[[str], str]:
    """Return the gettext function of the request's language, for messages built in a handler."""
    return request.config_dict[TRANSLATIONS_KEY][request["inbox_language"]].gettext


def error_text(request: web.Request, code: str, params: dict[str, Any] | None = None) -> str:
    """Return the bilingual catalog's message for ``code`` in the request's language, as the API shows it."""
    return message(code, request["inbox_language"], params)


async def signed_in(request: web.Request) -> Official:
    """Return the official of the request's session cookie, and keep the CSRF token of their forms.

    Raises AuthenticationFailed ``session_invalid`` without a live session,
    which the middleware turns into a redirect to the login page.
    """
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise AuthenticationFailed("session_invalid")
    authenticator: Authenticator = request.config_dict["authenticator"]
    settings = request.config_dict["settings"]
    official = await authenticator.official_by_inbox_session(token, utc_now(), settings.inbox_idle_timeout)
    request["inbox_official"] = official
    request["inbox_csrf"] = csrf_token(token)
    request["inbox_session_token"] = token
    return official


def local_time(value: datetime | None) -> str:
    """Format an aware time in Vietnam time, day first, as in Vietnamese administrative documents."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=utc_now().tzinfo)
    return value.astimezone(VIETNAM_TIME_ZONE).strftime("%d/%m/%Y %H:%M")


def safe_next(value: str | None, default: str = "/inbox/") -> str:
    """Return ``value`` when it is a path inside the inbox, else ``default``: no redirect leaves the site."""
    if value and value.startswith("/inbox/") and "//" not in value and "\\" not in value and value.isprintable():
        return value
    return default
