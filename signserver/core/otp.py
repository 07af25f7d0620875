"""One-time password check for approvals (RFC 6238 TOTP, 30-second steps, 6 digits).

The rules, in the order they are applied:
1. an official whose approvals are locked is refused before the code is looked at;
2. the code is compared, in constant time, with the codes of the current step
   and one step either side (clock drift of up to 30 seconds);
3. a step already accepted for that official is refused as a replay; the
   database's primary key on (official, step) makes this hold across replicas;
4. wrong codes count toward a lockout. The threshold and the lockout period
   are settings (5 codes and 15 minutes by default), and a good code resets the count.
   A replayed code is refused and audited but does not count: it was right once.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp

from signserver.store.db import Transaction
from signserver.store.records import Official

from .audit import append_audit
from .errors import OfficialLocked, OtpInvalid, OtpReplayed
from .ports import SecretBox

__all__ = ["OtpPolicy", "check_otp", "TOTP_STEP_SECONDS"]

TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6


@dataclass(frozen=True)
class OtpPolicy:
    lockout_threshold: int = 5
    lockout_period: timedelta = timedelta(minutes=15)


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS)
    current = int(now.timestamp()) // TOTP_STEP_SECONDS
    matched = None
    # Compare all three candidates so that timing does not tell which step matched.
    for step in (current - 1, current, current + 1):
        if step < 0:
            continue
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()) and matched is None:
            matched = step
    return matched


async def check_otp(
    tx: Transaction,
    official: Official,
    code: str,
    *,
    now: datetime,
    secret_box: SecretBox,
    policy: OtpPolicy,
    context: dict[str, object],
) -> tuple[int | None, Exception | None]:
    """Check ``code`` for ``official`` inside ``tx``.

    Returns ``(step, None)`` on success, or ``(None, error)`` on failure so that
    the caller can commit the failure count before raising ``error``: a raised
    exception would roll the count back and make the lockout useless.
    """
    if official.otp_locked_until is not None and official.otp_locked_until > now:
        return None, OfficialLocked(until=official.otp_locked_until.isoformat(timespec="seconds"))

    code = code.strip()
    step = None
    if len(code) == TOTP_DIGITS and code.isdigit():
        secret = (await secret_box.open(official.totp_secret_wrapped)).decode()
        step = _matching_step(secret, code, now)

    error: Exception | None = None
    if step is None:
        error = OtpInvalid()
    elif not await tx.record_otp_step(official.id, step, now):
        error = OtpReplayed()

    if error is None:
        await tx.update_official(official.id, otp_failed_count=0, otp_locked_until=None)
        return step, None

    # A replayed code was right once: it is refused and recorded, but only wrong codes count toward the lockout.
    failed = official.otp_failed_count + (1 if isinstance(error, OtpInvalid) else 0)
    values: dict[str, object] = {"otp_failed_count": failed}
    if failed >= policy.lockout_threshold:
        values["otp_locked_until"] = now + policy.lockout_period
        values["otp_failed_count"] = 0
    await tx.update_official(official.id, **values)
    await append_audit(
        tx,
        action="otp_failed",
        actor_type="official",
        actor_id=official.id,
        details={"reason": error.code, "consecutive_failures": failed, "locked": "otp_locked_until" in values,  # type: ignore[attr-defined]
                 **context},
        now=now,
    )
    if "otp_locked_until" in values:
        until = values["otp_locked_until"]
        error = OfficialLocked(until=until.isoformat(timespec="seconds"))  # type: ignore[union-attr]
    return None, error
