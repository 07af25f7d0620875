"""One-time password check for approvals (RFC 6238 TOTP, 30-second steps, 6 digits).

The rules, in the order they are applied:
1. an official who is locked is refused before the code is looked at;
2. the code is compared, in constant time, with the codes of the current step
   and one step either side (clock drift of up to 30 seconds);
3. a step already accepted for that official is refused as a replay; the
   database's primary key on (official, step) makes this hold across replicas;
4. wrong codes count toward a lockout. The threshold and the lockout period
   are settings (5 codes and 15 minutes by default), and a good code resets the count.
   A replayed code is refused and audited but does not count: it was right once.

Wrong login passwords count toward the same lockout (``count_failure``), and
the lock stops both logins and approvals.
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

__all__ = ["OtpPolicy", "check_otp", "count_failure", "is_locked", "TOTP_STEP_SECONDS"]

TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6


@dataclass(frozen=True)
class OtpPolicy:
    lockout_threshold: int = 5
    lockout_period: timedelta = timedelta(minutes=15)


def is_locked(official: Official, now: datetime) -> bool:
    """Return whether logins and approvals of ``official`` are locked at ``now``."""
    return official.otp_locked_until is not None and official.otp_locked_until > now


async def count_failure(tx: Transaction, official: Official, *, now: datetime,
                        policy: OtpPolicy) -> tuple[int, datetime | None]:
    """Add one failure to the count of ``official``, read for update in ``tx``, and lock them at the threshold.

    Returns the count including this failure and the end of the lock that it
    started, or None. Reaching the threshold sets the count back to 0.
    """
    failed = official.otp_failed_count + 1
    if failed < policy.lockout_threshold:
        await tx.update_official(official.id, otp_failed_count=failed)
        return failed, None
    locked_until = now + policy.lockout_period
    await tx.update_official(official.id, otp_failed_count=0, otp_locked_until=locked_until)
    return failed, locked_until


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
    failed, locked_until = official.otp_failed_count, None
    if isinstance(error, OtpInvalid):
        failed, locked_until = await count_failure(tx, official, now=now, policy=policy)
    await append_audit(
        tx,
        action="otp_failed",
        actor_type="official",
        actor_id=official.id,
        details={"reason": error.code, "consecutive_failures": failed, "locked": locked_until is not None,  # type: ignore[attr-defined]
                 **context},
        now=now,
    )
    if locked_until is not None:
        error = OfficialLocked(until=locked_until.isoformat(timespec="seconds"))
    return None, error
