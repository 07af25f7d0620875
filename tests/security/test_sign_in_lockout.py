"""Sign-in lockout and refusal records in the core, on a real SQLite store and TOTP seeds wrapped by SoftHSM.

The Authenticator gets an explicit ``now``, so a test moves time past a lock
instead of waiting. TOTP codes are computed with pyotp from the seed the test
stored, at that same ``now``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyotp
import pytest

from hsm import Hsm
from signserver.config import Settings
from signserver.core.auth import Authenticator, hash_password
from signserver.core.changes import FourEyesRequired, approve_change
from signserver.core.context import CoreContext
from signserver.core.errors import AuthenticationFailed, OfficialLocked, RoleRequired
from signserver.core.otp import OtpPolicy, check_otp
from signserver.core.refusals import require_role_audited
from signserver.hsm_bridge import HsmSecretBox
from signserver.store.db import Store
from signserver.store.migrate import upgrade_to_head
from signserver.store.records import AuditRecord, Official
from tests.hsm.conftest import hsm, softhsm_tokens  # noqa: F401 - SoftHSM fixtures
from tests.postgres import new_database_url

NOW = datetime(2026, 12, 7, 2, 0, 15, tzinfo=timezone.utc)
POLICY = OtpPolicy(lockout_threshold=5, lockout_period=timedelta(minutes=15))
PASSWORD = "mat-khau-thu-nghiem"
OFFICIAL = "off-le-thi-mai"
OFFICER = "so-pham-quoc-bao"
OTHER_OFFICER = "so-do-thanh-tam"
AUDITOR = "aud-vu-hong-nhung"


@dataclass
class SignIn:
    store: Store
    authenticator: Authenticator
    totp_secrets: dict[str, str]

    def code(self, person_id: str, now: datetime) -> str:
        return pyotp.TOTP(self.totp_secrets[person_id]).at(now)

    def wrong_code(self, person_id: str, now: datetime) -> str:
        """Return a six-digit code that none of the three accepted steps around ``now`` produces."""
        totp = pyotp.TOTP(self.totp_secrets[person_id])
        accepted = {totp.at(now + timedelta(seconds=offset)) for offset in (-30, 0, 30)}
        return next(code for code in ("000000", "111111", "222222", "333333") if code not in accepted)

    async def person(self, person_id: str) -> Official:
        async with self.store.transaction() as tx:
            found = await tx.official(person_id)
        assert found is not None
        return found

    async def records(self, action: str, actor_id: str) -> list[AuditRecord]:
        async with self.store.transaction() as tx:
            return [record for record in await tx.audit_records()
                    if record.action == action and record.actor_id == actor_id]

    async def login_fails(self, username: str, password: str, now: datetime, otp: str | None = None) -> None:
        with pytest.raises(AuthenticationFailed) as refused:
            await self.authenticator.login_official(username, password, now, otp=otp)
        assert refused.value.code == "login_failed"
        assert refused.value.params == {}


def details(record: AuditRecord) -> dict[str, Any]:
    return json.loads(record.details_json)


@pytest.fixture(scope="module")
def secret_box(hsm: Hsm) -> HsmSecretBox:  # noqa: F811
    """A box on the session's SoftHSM token. The token is a temporary one, so the key is left on it."""
    wrap_key_id = secrets.token_bytes(8)
    hsm.generate_secret_key(wrap_key_id, f"wrap-{wrap_key_id.hex()}")
    return HsmSecretBox(hsm, wrap_key_id)


@pytest.fixture
async def sign_in(tmp_path: Path, secret_box: HsmSecretBox) -> AsyncIterator[SignIn]:
    url = new_database_url(tmp_path, 'sign-in.db')
    upgrade_to_head(url)
    store = Store(url)
    people = [(OFFICIAL, "Lê Thị Mai", "official"), (OFFICER, "Phạm Quốc Bảo", "security_officer"),
              (OTHER_OFFICER, "Đỗ Thanh Tâm", "security_officer"), (AUDITOR, "Vũ Hồng Nhung", "auditor")]
    totp_secrets = {}
    password_hash = hash_password(PASSWORD)
    async with store.transaction() as tx:
        for person_id, full_name, roles in people:
            totp_secrets[person_id] = pyotp.random_base32()
            await tx.insert_official(
                id=person_id, username=person_id, full_name=full_name, title="", agency="Sở Nội vụ",
                password_hash=password_hash, totp_secret_wrapped=await secret_box.seal(totp_secrets[person_id].encode()),
                otp_failed_count=0, enabled=True, created_at=NOW, roles=roles,
            )
    authenticator = Authenticator(store, timedelta(hours=8), secret_box, POLICY)
    yield SignIn(store, authenticator, totp_secrets)
    await store.close()


# Password guessing


async def test_right_password_refused_after_threshold(sign_in: SignIn) -> None:
    for attempt in range(8):
        await sign_in.login_fails(OFFICIAL, f"doan-sai-{attempt}", NOW + timedelta(seconds=attempt))

    await sign_in.login_fails(OFFICIAL, PASSWORD, NOW + timedelta(seconds=10))

    reasons = [details(record)["reason"] for record in await sign_in.records("official_login_failed", OFFICIAL)]
    assert reasons == ["password_invalid"] * 5 + ["locked"] * 4
    assert await sign_in.records("official_logged_in", OFFICIAL) == []


async def test_lock_ends_after_period(sign_in: SignIn) -> None:
    for attempt in range(5):
        await sign_in.login_fails(OFFICIAL, "doan-sai", NOW + timedelta(seconds=attempt))
    locked = await sign_in.person(OFFICIAL)
    assert locked.otp_locked_until == NOW + timedelta(seconds=4) + POLICY.lockout_period

    await sign_in.login_fails(OFFICIAL, PASSWORD, NOW + timedelta(minutes=15))
    session = await sign_in.authenticator.login_official(OFFICIAL, PASSWORD, NOW + timedelta(minutes=15, seconds=5))
    assert session.official.id == OFFICIAL


async def test_password_lock_stops_approval_codes(sign_in: SignIn) -> None:
    for attempt in range(5):
        await sign_in.login_fails(OFFICIAL, "doan-sai", NOW + timedelta(seconds=attempt))
    last = (await sign_in.records("official_login_failed", OFFICIAL))[-1]
    assert details(last)["consecutive_failures"] == 5
    assert details(last)["locked"] is True

    now = NOW + timedelta(seconds=10)
    assert sign_in.authenticator.secret_box is not None
    async with sign_in.store.transaction() as tx:
        official = await tx.official(OFFICIAL, for_update=True)
        assert official is not None
        step, error = await check_otp(tx, official, sign_in.code(OFFICIAL, now), now=now,
                                      secret_box=sign_in.authenticator.secret_box, policy=POLICY,
                                      context={"request_ids": ["req-test"]})
    assert step is None
    assert isinstance(error, OfficialLocked)


async def test_official_login_keeps_failure_count(sign_in: SignIn) -> None:
    for attempt in range(3):
        await sign_in.login_fails(OFFICIAL, "doan-sai", NOW + timedelta(seconds=attempt))
    await sign_in.authenticator.login_official(OFFICIAL, PASSWORD, NOW + timedelta(seconds=5))
    assert (await sign_in.person(OFFICIAL)).otp_failed_count == 3


async def test_administrative_login_resets_count(sign_in: SignIn) -> None:
    for attempt in range(4):
        await sign_in.login_fails(OFFICER, "doan-sai", NOW + timedelta(seconds=attempt))
    assert (await sign_in.person(OFFICER)).otp_failed_count == 4

    now = NOW + timedelta(seconds=5)
    await sign_in.authenticator.login_official(OFFICER, PASSWORD, now, otp=sign_in.code(OFFICER, now))
    officer = await sign_in.person(OFFICER)
    assert officer.otp_failed_count == 0
    assert officer.otp_locked_until is None


async def test_unknown_user_login_audited(sign_in: SignIn) -> None:
    await sign_in.login_fails("khong-ton-tai", PASSWORD, NOW)
    records = await sign_in.records("official_login_failed", "unknown")
    assert len(records) == 1
    assert details(records[0])["reason"] == "unknown_user"
    # A password typed into the username field must not land in the trail, which can never be edited.
    assert "username" not in details(records[0])
    assert details(records[0])["username_sha256"] == hashlib.sha256(b"khong-ton-tai").hexdigest()[:16]


# Administrative accounts


async def test_admin_failures_answer_alike(sign_in: SignIn) -> None:
    await sign_in.login_fails(AUDITOR, "doan-sai", NOW)
    await sign_in.login_fails(AUDITOR, PASSWORD, NOW)
    await sign_in.login_fails(AUDITOR, PASSWORD, NOW, otp=sign_in.wrong_code(AUDITOR, NOW))
    await sign_in.login_fails(AUDITOR, PASSWORD, NOW, otp="12ab56")

    reasons = [details(record)["reason"] for record in await sign_in.records("official_login_failed", AUDITOR)]
    assert reasons == ["password_invalid", "otp_missing", "otp_invalid", "otp_invalid"]
    for record in await sign_in.records("official_login_failed", AUDITOR):
        assert record.actor_type == "auditor"


async def test_admin_wrong_codes_count(sign_in: SignIn) -> None:
    await sign_in.login_fails(AUDITOR, "doan-sai", NOW)
    await sign_in.login_fails(AUDITOR, PASSWORD, NOW, otp="12ab56")
    await sign_in.login_fails(AUDITOR, PASSWORD, NOW)
    assert (await sign_in.person(AUDITOR)).otp_failed_count == 2


async def test_admin_replayed_code_fails(sign_in: SignIn) -> None:
    code = sign_in.code(OFFICER, NOW)
    await sign_in.authenticator.login_official(OFFICER, PASSWORD, NOW, otp=code)
    await sign_in.login_fails(OFFICER, PASSWORD, NOW + timedelta(seconds=1), otp=code)
    reasons = [details(record)["reason"] for record in await sign_in.records("official_login_failed", OFFICER)]
    assert reasons == ["otp_replayed"]


async def test_admin_code_lock_fails_login(sign_in: SignIn) -> None:
    wrong = sign_in.wrong_code(OFFICER, NOW)
    for attempt in range(5):
        await sign_in.login_fails(OFFICER, PASSWORD, NOW + timedelta(seconds=attempt), otp=wrong)
    now = NOW + timedelta(seconds=6)
    await sign_in.login_fails(OFFICER, PASSWORD, now, otp=sign_in.code(OFFICER, now))

    reasons = [details(record)["reason"] for record in await sign_in.records("official_login_failed", OFFICER)]
    assert reasons == ["otp_invalid"] * 5 + ["locked"]
    otp_records = await sign_in.records("otp_failed", OFFICER)
    assert details(otp_records[-1])["locked"] is True


# Refusal records


async def test_role_refusal_recorded(sign_in: SignIn) -> None:
    auditor = await sign_in.person(AUDITOR)
    with pytest.raises(RoleRequired):
        await require_role_audited(sign_in.store, auditor, ("security_officer",), operation="keys destroy",
                                   channel="cli", now=NOW)
    records = await sign_in.records("access_denied", AUDITOR)
    assert len(records) == 1
    assert records[0].actor_type == "auditor"
    assert details(records[0]) == {"roles": ["auditor"], "required_roles": ["security_officer"],
                                   "operation": "keys destroy", "channel": "cli"}


async def test_role_granted_not_recorded(sign_in: SignIn) -> None:
    officer = await sign_in.person(OFFICER)
    await require_role_audited(sign_in.store, officer, ("security_officer", "auditor"), operation="audit list",
                               channel="cli", now=NOW)
    assert await sign_in.records("access_denied", OFFICER) == []


async def test_own_change_refusal_recorded(sign_in: SignIn, tmp_path: Path) -> None:
    async with sign_in.store.transaction() as tx:
        await tx.insert_admin_change(
            id="chg-test-own", kind="policy_apply", summary="policy test", payload_json="{}", requested_by=OFFICER,
            requested_at=NOW, expires_at=NOW + timedelta(days=7), state="pending",
        )
    ctx = CoreContext(
        store=sign_in.store, settings=Settings(home=tmp_path), policies=None, secret_box=None,  # type: ignore[arg-type]
        pdf_checker=None, document_signer=None, clock=lambda: NOW + timedelta(minutes=1),  # type: ignore[arg-type]
    )

    with pytest.raises(FourEyesRequired):
        await approve_change(ctx, await sign_in.person(OFFICER), "chg-test-own")

    records = await sign_in.records("four_eyes_refused", OFFICER)
    assert len(records) == 1
    assert details(records[0]) == {"change_id": "chg-test-own", "kind": "policy_apply", "requested_by": OFFICER,
                                   "officer_id": OFFICER}
    async with sign_in.store.transaction() as tx:
        change = await tx.admin_change("chg-test-own")
    assert change is not None
    assert change.state == "pending"
