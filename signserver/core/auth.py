"""Authentication of applications (API key) and officials (password, then a session token).

API keys and session tokens are 256-bit random values, stored as SHA-256
digests: their entropy makes a slow hash unnecessary. Passwords are stored as
Argon2id hashes. No secret is logged or written to the audit trail.

A session has a kind: "api" sessions are bearer tokens of the native API,
"inbox" sessions are the cookie of the officials' web inbox. Each kind is
accepted only by its own interface, and an inbox session also ends after an
idle timeout.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from signserver.store.db import Store
from signserver.store.inbox_sessions import touch_session
from signserver.store.records import Application, Official

from .audit import append_audit
from .errors import AuthenticationFailed, OfficialLocked
from .otp import OtpPolicy, check_otp, count_failure, is_locked
from .ports import SecretBox
from .refusals import require_role_audited
from .roles import SIGNING_ROLES, audit_actor_type, login_needs_otp

__all__ = [
    "sha256_hex",
    "new_api_key",
    "new_session_token",
    "hash_password",
    "verify_password",
    "Authenticator",
    "OfficialSession",
    "SESSION_KIND_API",
    "SESSION_KIND_INBOX",
]

API_KEY_PREFIX = "ssk_"
SESSION_TOKEN_PREFIX = "sso_"

SESSION_KIND_API = "api"
SESSION_KIND_INBOX = "inbox"
# An inbox session's last_seen_at is written at most this often (or a quarter of the idle timeout, if shorter),
# so that reading pages does not write on every request. A session may therefore end up to this much before
# the idle timeout has passed since its last request.
INBOX_TOUCH_INTERVAL = timedelta(seconds=30)

log = structlog.get_logger(__name__)

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
        async with self.store.read_only() as tx:
            application = await tx.application_by_api_key(sha256_hex(api_key))
        if application is None or not application.enabled:
            raise AuthenticationFailed()
        return application

    async def application_by_password(self, username: str, password: str) -> Application:
        async with self.store.read_only() as tx:
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
                token_sha256=sha256_hex(token), official_id=official.id, created_at=now, expires_at=expires_at,
                kind=SESSION_KIND_API,
            )
        return OfficialSession(token, official, expires_at)

    async def login_inbox(self, username: str, password: str, otp: str, now: datetime,
                          lifetime: timedelta) -> OfficialSession:
        """Check the password and the TOTP code of an official or seal holder, then open an inbox session.

        Unlike the API's login, every person gives a code here, checked by
        ``otp.check_otp`` with its replay rule and lockout. A person without a
        signing role is refused with RoleRequired and an ``access_denied`` record.
        """
        official = await self.authenticate_person(username, password, now, otp=otp, channel=SESSION_KIND_INBOX,
                                                  require_otp=True)
        await require_role_audited(self.store, official, sorted(SIGNING_ROLES), operation="POST /inbox/login",
                                   channel=SESSION_KIND_INBOX, now=now)
        token = new_session_token()
        expires_at = now + lifetime
        async with self.store.transaction() as tx:
            await tx.insert_session(
                token_sha256=sha256_hex(token), official_id=official.id, created_at=now, expires_at=expires_at,
                kind=SESSION_KIND_INBOX, last_seen_at=now,
            )
        log.info("inbox.session_opened", official_id=official.id)
        return OfficialSession(token, official, expires_at)

    async def authenticate_person(self, username: str, password: str, now: datetime, *, otp: str | None = None,
                                  channel: str = "api", require_otp: bool = False) -> Official:
        """Check the password, and the TOTP code of an administrative account, and return the person.

        With ``require_otp`` every person must give a right TOTP code, as the web inbox requires.

        Every failure raises the same ``login_failed``: an unknown username, a
        disabled or locked account, a wrong password, and a missing, wrong or
        replayed code of a security officer or auditor. So a caller cannot
        tell which part was wrong, but the audit record names the reason.
        Wrong passwords and wrong codes count toward the lockout that also
        stops approvals (``otp.count_failure``).
        """
        async with self.store.transaction() as tx:
            found = await tx.official_by_username(username)
            password_ok = verify_password(found.password_hash if found else None, password)
            official = await tx.official(found.id, for_update=True) if found else None
            reason, details = await self._login_failure(tx, official, password_ok, otp, now, require_otp)
            if reason is None:
                assert official is not None
                await append_audit(tx, action="official_logged_in", actor_type=audit_actor_type(official),
                                   actor_id=official.id, details={"channel": channel}, now=now)
            else:
                await append_audit(tx, action="official_login_failed",
                                   actor_type=audit_actor_type(official) if official else "official",
                                   actor_id=official.id if official else "unknown",
                                   details={**_attempted_username(official, username), "channel": channel,
                                            "reason": reason, **details}, now=now)

        if reason is not None:
            log.info("official.login_failed", official_id=official.id if official else None, channel=channel,
                     reason=reason)
            raise AuthenticationFailed("login_failed")
        assert official is not None
        return official

    async def _login_failure(self, tx: Any, official: Official | None, password_ok: bool, otp: str | None,
                             now: datetime, require_otp: bool = False) -> tuple[str | None, dict[str, Any]]:
        """Return why the login of ``official`` fails, or None, and the details for its audit record.

        A locked account is refused before its password counts, as check_otp
        refuses a code. Officials sign in with a password only. So their
        login leaves the count alone, because resetting it would give an
        attacker who has the password new guesses at approval codes. An
        administrative login resets it through the right TOTP code.
        """
        if official is None:
            return "unknown_user", {}
        if not official.enabled:
            return "account_disabled", {}
        if is_locked(official, now):
            return "locked", {}
        if not password_ok:
            failed, locked_until = await count_failure(tx, official, now=now, policy=self._otp_policy())
            return "password_invalid", {"consecutive_failures": failed, "locked": locked_until is not None}
        if not (require_otp or login_needs_otp(official)):
            return None, {}
        if not otp:
            return "otp_missing", {}
        assert self.secret_box is not None, "administrative login needs the HSM"
        _step, error = await check_otp(tx, official, otp, now=now, secret_box=self.secret_box,
                                       policy=self._otp_policy(), context={"purpose": "login"})
        if error is None:
            return None, {}
        # check_otp's own otp_failed record carries the count. A wrong code that started the lock is still wrong.
        return ("otp_invalid" if isinstance(error, OfficialLocked) else error.code), {}  # type: ignore[attr-defined]

    def _otp_policy(self) -> OtpPolicy:
        assert self.otp_policy is not None, "logins need the lockout settings (Settings.otp_lockout_threshold)"
        return self.otp_policy

    async def official_by_session(self, token: str, now: datetime, kind: str = SESSION_KIND_API) -> Official:
        """Return the person of the session ``token`` of ``kind``; raise ``session_invalid`` if it ended."""
        async with self.store.transaction() as tx:
            session = await tx.session(sha256_hex(token))
            official = await tx.official(session["official_id"]) if session else None
        expires_at = _aware(session["expires_at"], now) if session else None
        if (official is None or not official.enabled or expires_at is None or expires_at <= now
                or session["kind"] != kind):  # type: ignore[index]
            raise AuthenticationFailed("session_invalid")
        return official

    async def official_by_inbox_session(self, token: str, now: datetime, idle_timeout: timedelta) -> Official:
        """Return the official or seal holder of the inbox session ``token``, and note the activity.

        The session ends, and is deleted, when it was idle for ``idle_timeout``
        or passed its absolute lifetime. Raises ``session_invalid`` then, and
        RoleRequired when the person has lost their signing roles since login.
        """
        token_sha256 = sha256_hex(token)
        async with self.store.read_only() as tx:
            session = await tx.session(token_sha256)
            official = await tx.official(session["official_id"]) if session else None
        if session is None or official is None or session["kind"] != SESSION_KIND_INBOX:
            raise AuthenticationFailed("session_invalid")

        last_seen_at = _aware(session["last_seen_at"] or session["created_at"], now)
        if not official.enabled or _aware(session["expires_at"], now) <= now or last_seen_at + idle_timeout <= now:
            await self.logout_official(token)
            log.info("inbox.session_ended", official_id=official.id,
                     reason="disabled" if not official.enabled else "timeout")
            raise AuthenticationFailed("session_invalid")
        if now - last_seen_at >= min(INBOX_TOUCH_INTERVAL, idle_timeout / 4):
            async with self.store.transaction() as tx:
                await touch_session(tx, token_sha256, now)

        await require_role_audited(self.store, official, sorted(SIGNING_ROLES), operation="inbox",
                                   channel=SESSION_KIND_INBOX, now=now)
        return official

    async def logout_official(self, token: str) -> None:
        async with self.store.transaction() as tx:
            await tx.delete_session(sha256_hex(token))


def _aware(value: datetime, now: datetime) -> datetime:
    """Return ``value`` with the time zone of ``now`` when the database returned it naive (SQLite)."""
    return value.replace(tzinfo=now.tzinfo) if value.tzinfo is None else value


def _attempted_username(official: Official | None, username: str) -> dict[str, str]:
    """Name the account of a failed login in the audit trail.

    A known username is recorded as it is. An unknown one is recorded only as
    a SHA-256 prefix, because people type their password into the username
    field, and the trail can never be edited.
    """
    if official is not None:
        return {"username": official.username}
    return {"username_sha256": sha256_hex(username.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))[:16]}
