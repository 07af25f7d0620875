"""Bearer tokens of the CSC API's service authorization (auth/login, auth/revoke).

An application logs in with HTTP Basic and receives a short-lived access
token and, with ``rememberMe``, a long-lived refresh token (CSC API v1.0.4.0
section 11.2, v2.0.0.2 section 11.2). Like API keys, the tokens are 256-bit
random values stored only as SHA-256 digests. Revocation follows RFC 7009
section 2.1: revoking a refresh token revokes the access tokens of its grant,
revoking an access token leaves the refresh token valid.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

import structlog

from signserver.errors import InvalidInput, Unauthenticated
from signserver.store.db import Transaction
from signserver.store.records import Application, from_row

from .auth import sha256_hex
from .context import CoreContext, new_id

__all__ = [
    "ACCESS_TOKEN_PREFIX",
    "REFRESH_TOKEN_PREFIX",
    "IssuedTokens",
    "issue_tokens",
    "refresh_access_token",
    "application_for_access_token",
    "revoke_token",
    "TokenInvalid",
    "TokenExpired",
    "RefreshTokenInvalid",
]

log = structlog.get_logger(__name__)

ACCESS_TOKEN_PREFIX = "csa_"
REFRESH_TOKEN_PREFIX = "csr_"


class TokenInvalid(Unauthenticated):
    code = "token_invalid"


class TokenExpired(Unauthenticated):
    code = "token_expired"


class RefreshTokenInvalid(InvalidInput):
    code = "refresh_token_invalid"


@dataclass(frozen=True)
class _StoredToken:
    token_sha256: str
    kind: str
    grant_id: str
    application_id: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int  # seconds
    refresh_token: str | None


async def issue_tokens(ctx: CoreContext, application: Application, *, remember_me: bool) -> IssuedTokens:
    """Issue an access token, and a refresh token of the same grant when ``remember_me``."""
    now = ctx.clock()
    grant_id = new_id("grant")
    access_token = ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)
    refresh_token = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32) if remember_me else None
    async with ctx.store.transaction() as tx:
        await tx.delete_expired_csc_tokens(now)
        await tx.insert_csc_token(token_sha256=sha256_hex(access_token), kind="access", grant_id=grant_id,
                                  application_id=application.id, created_at=now,
                                  expires_at=now + ctx.settings.csc_access_token_ttl)
        if refresh_token is not None:
            await tx.insert_csc_token(token_sha256=sha256_hex(refresh_token), kind="refresh", grant_id=grant_id,
                                      application_id=application.id, created_at=now,
                                      expires_at=now + ctx.settings.csc_refresh_token_ttl)
    log.info("csc.token_issued", application_id=application.id, grant_id=grant_id, refresh=remember_me)
    return IssuedTokens(access_token, int(ctx.settings.csc_access_token_ttl.total_seconds()), refresh_token)


async def refresh_access_token(ctx: CoreContext, refresh_token: str) -> tuple[Application, IssuedTokens]:
    """Issue a new access token in the grant of a valid refresh token, which stays valid."""
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        stored = await _stored(tx, refresh_token)
        if stored is None or stored.kind != "refresh" or stored.expires_at <= now:
            raise RefreshTokenInvalid()
        application = await tx.application(stored.application_id)
        if application is None or not application.enabled:
            raise RefreshTokenInvalid()
        access_token = ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await tx.insert_csc_token(token_sha256=sha256_hex(access_token), kind="access", grant_id=stored.grant_id,
                                  application_id=application.id, created_at=now,
                                  expires_at=now + ctx.settings.csc_access_token_ttl)
    log.info("csc.token_refreshed", application_id=application.id, grant_id=stored.grant_id)
    return application, IssuedTokens(access_token, int(ctx.settings.csc_access_token_ttl.total_seconds()), None)


async def application_for_access_token(ctx: CoreContext, access_token: str) -> Application:
    """Return the enabled application an unexpired access token was issued to."""
    async with ctx.store.read_only() as tx:
        stored = await _stored(tx, access_token)
        application = await tx.application(stored.application_id) if stored is not None else None
    if stored is None or stored.kind != "access" or application is None or not application.enabled:
        raise TokenInvalid()
    if stored.expires_at <= ctx.clock():
        raise TokenExpired()
    return application


async def revoke_token(ctx: CoreContext, application: Application, token: str, token_type_hint: str | None) -> None:
    """Revoke one of the application's tokens, ignoring an unknown token or another application's.

    Ignoring unknown tokens follows RFC 7009 section 2.2, and it does not tell
    an application whether someone else's token exists. The hint is not needed
    to find the token, because access and refresh tokens share one table.
    """
    async with ctx.store.transaction() as tx:
        stored = await _stored(tx, token)
        if stored is None or stored.application_id != application.id:
            log.info("csc.token_revoke_ignored", application_id=application.id, token_type_hint=token_type_hint)
            return
        if stored.kind == "refresh":
            await tx.delete_csc_grant(stored.grant_id)
        else:
            await tx.delete_csc_token(stored.token_sha256)
    log.info("csc.token_revoked", application_id=application.id, grant_id=stored.grant_id, kind=stored.kind)


async def _stored(tx: Transaction, token: str) -> _StoredToken | None:
    row = await tx.csc_token(sha256_hex(token))
    return from_row(_StoredToken, row) if row is not None else None
