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
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from signserver.store.db import Store
from signserver.store.records import Application, Official

from .audit import append_audit
from .errors import AuthenticationFailed
from .otp import OtpPolicy, check_otp
from .ports import SecretBox
from .roles import AUDITOR, SECURITY_OFFICER, login_needs_otp, require_role

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
    def __init__(self, store: Store, session_ttl: timedelta, secret_box: SecretBox | None = None,
                 otp_policy: OtpPolicy | None = None) -> None:
        self.store = store
        self.session_ttl = session_ttl
        # Needed to check the TOTP code of security officers and auditors at login.
        self.secret_box = secret_box
        self.otp_policy = otp_policy

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

    async def login_official(self, username: str, password: str, now: datetime, otp: str | None = None,
                             channel: str = "api") -> OfficialSession:
        """Check the password, and the TOTP code for administrative roles, then open a session."""
        official = await self.authenticate_person(username, password, now, otp=otp, channel=channel)
        token = new_session_token()
        expires_at = now + self.session_ttl
        async with self.store.transaction() as tx:
            await tx.insert_session(
                token_sha256=sha256_hex(token), official_id=official.id, created_at=now, expires_at=expires_at
            )
        return OfficialSession(token, official, expires_at)

    async def authenticate_person(self, username: str, password: str, now: datetime, *, otp: str | None = None,
                                  roles: tuple[str, ...] = (), channel: str = "api") -> Official:
        """Check the password, and the TOTP code of an administrative account, and return the person.

        A wrong password, an unknown user and a disabled account fail with the
        same error, and each attempt is audited. A missing or wrong code of a
        security officer or auditor fails too, and counts toward the same
        lockout as approvals. With ``roles``, the person must also have one of them.
        """
        otp_error: Exception | None = None
        async with self.store.transaction() as tx:
            official = await tx.official_by_username(username)
            password_ok = verify_password(official.password_hash if official else None, password)
            if official is None or not official.enabled or not password_ok:
                await append_audit(
                    tx, action="official_login_failed", actor_type="official",
                    actor_id=official.id if official else "unknown",
                    details={"username": username[:128], "channel": channel}, now=now,
                )
                failed = True
            else:
                failed = False
                if login_needs_otp(official):
                    otp_error = await self._check_login_otp(tx, official, otp, now)
                if otp_error is None:
                    await append_audit(tx, action="official_logged_in", actor_type=_actor_type(official),
                                       actor_id=official.id, details={"channel": channel}, now=now)
        if failed:
            raise AuthenticationFailed("login_failed")
        if otp_error is not None:
            raise otp_error
        assert official is not None
        if roles:
            require_role(official, *roles)
        return official

    async def _check_login_otp(self, tx: Any, official: Official, otp: str | None, now: datetime) -> Exception | None:
        if not otp:
            await append_audit(tx, action="official_login_failed", actor_type=_actor_type(official),
                               actor_id=official.id, details={"reason": "otp_missing"}, now=now)
            return AuthenticationFailed("login_otp_required")
        assert self.secret_box is not None and self.otp_policy is not None, "administrative login needs the HSM"
        current = await tx.official(official.id, for_update=True)
        _step, error = await check_otp(tx, current, otp, now=now, secret_box=self.secret_box,
                                       policy=self.otp_policy, context={"purpose": "login"})
        return error

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


def _actor_type(person: Official) -> str:
    """Return the audit actor type of a person: their administrative role if they have one, else "official"."""
    for role in (SECURITY_OFFICER, AUDITOR):
        if role in person.role_set:
            return role
    return "official"
