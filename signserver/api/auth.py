"""Caller authentication: an application (API key or HTTP Basic) or an official (session token)."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from signserver.core.auth import SESSION_TOKEN_PREFIX, Authenticator
from signserver.core.context import utc_now
from signserver.core.errors import AuthenticationFailed
from signserver.core.refusals import require_role_audited
from signserver.core.roles import OFFICIAL, SEAL_HOLDER
from signserver.store.records import Application, Official

__all__ = ["require_application", "require_official", "require_person", "bearer_token"]


def bearer_token(request: web.Request) -> str | None:
    """Return the bearer token, or None when there is none.

    A token with non-ASCII bytes cannot be one the service issued, so it counts as missing.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip() and value.isascii():
        return value.strip()
    return None


async def require_application(request: web.Request) -> Application:
    authenticator: Authenticator = request.app["authenticator"]
    token = bearer_token(request) or request.headers.get("X-API-Key")
    if token and not token.isascii():
        raise AuthenticationFailed()
    if token and not token.startswith(SESSION_TOKEN_PREFIX):
        return await authenticator.application_by_api_key(token)

    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            username, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationFailed() from None
        return await authenticator.application_by_password(username, password)
    raise AuthenticationFailed()


async def require_person(request: web.Request, *roles: str) -> Official:
    """Return the person of the session token, who must have one of ``roles``. An API key is never accepted here.

    A person without the role is refused with RoleRequired and an ``access_denied`` audit record.
    """
    token = bearer_token(request)
    if not token or not token.startswith(SESSION_TOKEN_PREFIX):
        raise AuthenticationFailed("session_invalid")
    authenticator: Authenticator = request.app["authenticator"]
    person = await authenticator.official_by_session(token, utc_now())
    # The path names ids such as a key or credential id, never a secret. The query string is left out.
    await require_role_audited(authenticator.store, person, roles, operation=f"{request.method} {request.path}",
                               channel="api", now=utc_now())
    return person


async def require_official(request: web.Request) -> Official:
    """Return the official or seal holder of the session token: the people who approve signatures."""
    return await require_person(request, OFFICIAL, SEAL_HOLDER)
