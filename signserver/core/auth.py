"""Authentication of applications (API key) and officials (password, then a session token).

API keys and session tokens are 256-bit random values, stored as SHA-256
digests: their entropy makes a slow hash unnecessary. Passwords are stored as
Argon2id hashes. No secret is logged or written to the audit trail.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from signserver.store.db import Store
from signserver.store.records import Application, Official

from .audit import append_audit
from .errors import AuthenticationFailed

__all__ = [
    "sha256_hex",
    "new_api_key",
    "new_session_token",
    "hash_password",
    "verify_password",
    "Authenticator",
    "OfficialSession",
]

API_KEY_PREFIX = "ssk_"
SESSION_TOKEN_PREFIX = "sso_"

_password_hasher = PasswordHasher()
# Verifying against this hash when a username is unknown keeps the response time
# the same as for a wrong password, so timing does not reveal which usernames exist.
_DUMMY_HASH = _password_hasher.hash(secrets.token_urlsafe(16))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_session_token() -> str:
    return SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _password_hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class OfficialSession:
    token: str
    official: Official
    expires_at: datetime


class Authenticator:
    def __init__(self, store: Store, session_ttl: timedelta) -> None:
        self.store = store
        self.session_ttl = session_ttl

    async def application_by_api_key(self, api_key: str) -> Application:
        async with self.store.transaction() as tx:
            application = await tx.application_by_api_key(sha256_hex(api_key))
        if application is None or not application.enabled:
            raise AuthenticationFailed()
        return application

    async def application_by_password(self, username: str, password: str) -> Application:
        async with self.store.transaction() as tx:
            application = await tx.application_by_username(username)
        if not verify_password(application.basic_password_hash if application else None, password):
            raise AuthenticationFailed()
        assert application is not None
        if not application.enabled:
            raise AuthenticationFailed()
        return application

    async def login_official(self, username: str, password: str, now: datetime) -> OfficialSession:
        async with self.store.transaction() as tx:
            official = await tx.official_by_username(username)
            if official is None or not official.enabled or not verify_password(official.password_hash, password):
                if official is None:
                    verify_password(None, password)
                await append_audit(
                    tx, action="official_login_failed", actor_type="official",
                    actor_id=official.id if official else "unknown", details={"username": username[:128]}, now=now,
                )
                failed = True
            else:
                token = new_session_token()
                expires_at = now + self.session_ttl
                await tx.insert_session(
                    token_sha256=sha256_hex(token), official_id=official.id, created_at=now, expires_at=expires_at
                )
                await append_audit(tx, action="official_logged_in", actor_type="official", actor_id=official.id, now=now)
                failed = False
        if failed:
            raise AuthenticationFailed("login_failed")
        return OfficialSession(token, official, expires_at)

    async def official_by_session(self, token: str, now: datetime) -> Official:
        async with self.store.transaction() as tx:
            session = await tx.session(sha256_hex(token))
            official = await tx.official(session["official_id"]) if session else None
        expires_at = session["expires_at"] if session else None
        if expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=now.tzinfo)
        if official is None or not official.enabled or expires_at is None or expires_at <= now:
            raise AuthenticationFailed("session_invalid")
        return official

    async def logout_official(self, token: str) -> None:
        async with self.store.transaction() as tx:
            await tx.delete_session(sha256_hex(token))
