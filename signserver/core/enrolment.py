"""Enrolment by a security officer: officials and seal holders, and one-stop applications.

The new account's secrets (an official's first password and TOTP seed, an
application's API key) are generated here, returned once for the officer to
hand over, and stored only as a hash or wrapped by the HSM. Administrative
accounts (security officers, auditors) are not enrolled here: a security
officer who could create another one would defeat four-eyes control.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import pyotp
import structlog

from signserver.errors import Conflict, InvalidInput
from signserver.store.db import IntegrityError
from signserver.store.records import Application, Official

from .audit import append_audit
from .auth import hash_password, new_api_key, sha256_hex
from .context import CoreContext
from .roles import SECURITY_OFFICER, SIGNING_ROLES, parse_roles, require_role
from .webhook_registration import new_webhook_values

__all__ = ["EnrolledOfficial", "EnrolledApplication", "enrol_official", "enrol_application", "AccountExists"]

log = structlog.get_logger(__name__)

_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}$")
_USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,127}$")


class AccountExists(Conflict):
    code = "account_exists"


@dataclass(frozen=True)
class EnrolledOfficial:
    official: Official
    password: str
    totp_secret: str
    totp_uri: str


@dataclass(frozen=True)
class EnrolledApplication:
    application: Application
    api_key: str
    # The webhook signing key (whsec_...), when the application was enrolled with a webhook URL.
    webhook_secret: str | None = None


def _text(name: str, value: str, max_length: int) -> str:
    value = unicodedata.normalize("NFC", (value or "").strip())
    if not value:
        raise InvalidInput("field_missing", field=name)
    if len(value) > max_length or any(unicodedata.category(c) == "Cc" for c in value):
        raise InvalidInput("field_invalid", field=name,
                           reason=f"at most {max_length} characters, without control characters")
    return value


def _identifier(name: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.match(value or ""):
        raise InvalidInput("field_invalid", field=name,
                           reason="lowercase letters, digits and - (and . _ for usernames), starting with a letter "
                                  "or digit")
    return value


async def enrol_official(ctx: CoreContext, officer: Official, *, official_id: str, username: str, full_name: str,
                         title: str, agency: str, roles: Sequence[str]) -> EnrolledOfficial:
    """Create an official (or seal holder) account with a first password and TOTP seed, returned once."""
    require_role(officer, SECURITY_OFFICER)
    stored_roles = parse_roles(roles)
    if not set(stored_roles.split(",")) <= SIGNING_ROLES:
        raise InvalidInput("field_invalid", field="roles",
                           reason="only official and seal_holder accounts are enrolled here")
    official_id = _identifier("id", official_id, _ID_PATTERN)
    username = _identifier("username", username, _USERNAME_PATTERN)
    full_name, agency = _text("full_name", full_name, 200), _text("agency", agency, 200)
    title = unicodedata.normalize("NFC", (title or "").strip())[:200]
    password = secrets.token_urlsafe(12)
    totp_secret = pyotp.random_base32()
    now = ctx.clock()
    try:
        async with ctx.store.transaction() as tx:
            await tx.insert_official(
                id=official_id, username=username, full_name=full_name, title=title, agency=agency,
                password_hash=hash_password(password),
                totp_secret_wrapped=await ctx.secret_box.seal(totp_secret.encode()),
                otp_failed_count=0, enabled=True, created_at=now, roles=stored_roles,
            )
            await append_audit(tx, action="official_enrolled", actor_type="security_officer", actor_id=officer.id,
                               details={"official_id": official_id, "username": username, "full_name": full_name,
                                        "agency": agency, "roles": stored_roles}, now=now)
            official = await tx.official(official_id)
    except IntegrityError:
        raise AccountExists(account=f"{official_id} / {username}") from None
    assert official is not None
    log.info("official.enrolled", official_id=official_id, officer_id=officer.id, roles=stored_roles)
    uri = pyotp.TOTP(totp_secret).provisioning_uri(name=username, issuer_name="signserver")
    return EnrolledOfficial(official, password, totp_secret, uri)


async def enrol_application(ctx: CoreContext, officer: Official, *, application_id: str, name: str,
                            agency: str, webhook_url: str | None = None) -> EnrolledApplication:
    """Create a one-stop application account with an API key, returned once.

    With ``webhook_url``, the application also gets its webhook and a new
    signing key, returned once too. The application reaches no key until a
    policy version names it.
    """
    require_role(officer, SECURITY_OFFICER)
    application_id = _identifier("id", application_id, _ID_PATTERN)
    name, agency = _text("name", name, 200), _text("agency", agency, 200)
    webhook_values: dict[str, object] = {}
    webhook_secret = None
    if webhook_url is not None:
        webhook_values, webhook_secret = await new_webhook_values(ctx, webhook_url)
    api_key = new_api_key()
    now = ctx.clock()
    try:
        async with ctx.store.transaction() as tx:
            await tx.insert_application(id=application_id, name=name, agency=agency,
                                        api_key_sha256=sha256_hex(api_key), basic_username=None,
                                        basic_password_hash=None, enabled=True, created_at=now, **webhook_values)
            await append_audit(tx, action="application_enrolled", actor_type="security_officer",
                               actor_id=officer.id, details={"application_id": application_id, "name": name,
                                                             "agency": agency,
                                                             "webhook_url": webhook_values.get("webhook_url")},
                               now=now)
            application = await tx.application(application_id)
    except IntegrityError:
        raise AccountExists(account=application_id) from None
    assert application is not None
    log.info("application.enrolled", application_id=application_id, officer_id=officer.id)
    return EnrolledApplication(application, api_key, webhook_secret)
