"""Service authorization on the CSC API: who the calling application is.

Two bearer tokens are accepted: the access tokens of auth/login, and the
native API's API keys (``ssk_...``), so integrators that already have a key
need no login step. auth/login itself takes HTTP Basic (RFC 7617).
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from signserver.core.auth import API_KEY_PREFIX, Authenticator
from signserver.core.context import CoreContext
from signserver.core.csc_tokens import TokenInvalid, application_for_access_token
from signserver.errors import Unauthenticated
from signserver.store.records import Application

__all__ = ["BasicAuthMalformed", "bearer_application", "basic_credentials"]


class BasicAuthMalformed(Unauthenticated):
    code = "csc_basic_auth_malformed"


def _authorization(request: web.Request) -> tuple[str, str]:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower(), value.strip()


async def bearer_application(request: web.Request) -> Application:
    """Return the application of the request's bearer token, an access token or an API key."""
    scheme, token = _authorization(request)
    if scheme != "bearer" or not token:
        raise TokenInvalid()
    if token.startswith(API_KEY_PREFIX):
        authenticator: Authenticator = request.app["authenticator"]
        return await authenticator.application_by_api_key(token)
    ctx: CoreContext = request.app["core"]
    return await application_for_access_token(ctx, token)


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """Return the username and password of an ``Authorization: Basic`` header, or None without one."""
    scheme, value = _authorization(request)
    if scheme != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BasicAuthMalformed() from None
    username, separator, password = decoded.partition(":")
    if not separator or not username:
        raise BasicAuthMalformed()
    return username, password
