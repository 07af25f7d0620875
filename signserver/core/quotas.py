"""Signature quotas of a key: counted in the store, checked before every HSM signature.

Each signature counts on five counters of its key: the key's day, month and
lifetime over all applications (application id ``""``), and the requesting
application's day and month. Days and months are in Vietnam time (UTC+7, no
daylight saving time), so a day runs from 00:00 to 24:00 in Hà Nội. Every
counter is counted whether or not the policy limits it, so that usage is
known when a limit is added later.

A limit stops signing at the exact count: with ``lifetime: 3``, three single
signatures pass and the fourth is rejected, and a batch of 2 when 1 remains is
rejected whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from signserver.errors import Forbidden

if TYPE_CHECKING:
    from signserver.store.db import Transaction

    from .policy import KeyPolicy

__all__ = [
    "VIETNAM_TIME",
    "ALL_APPLICATIONS",
    "LIFETIME_PERIOD",
    "QuotaCounter",
    "QuotaUsage",
    "QuotaDenied",
    "QuotaExceeded",
    "day_period",
    "month_period",
    "quota_usage",
    "quota_denial",
    "consume_quota",
    "quota_exceeded",
]

VIETNAM_TIME = timezone(timedelta(hours=7), "ICT")
# The application id of the counters that sum over every application of a key.
ALL_APPLICATIONS = ""
LIFETIME_PERIOD = "lifetime"

# Counter names, in the order they are checked. Each is also the suffix of its quota's rule id.
DAILY = "daily"
MONTHLY = "monthly"
LIFETIME = "lifetime"
PER_APPLICATION_DAILY = "per_application.daily"
PER_APPLICATION_MONTHLY = "per_application.monthly"


class QuotaExceeded(Forbidden):
    """A quota would be passed. ``params``: ``rule`` (``<credential>.quota.<counter>``), ``limit`` and ``period``."""

    code = "quota_exceeded"


def quota_exceeded(rule: str, limit: int, period: str) -> QuotaExceeded:
    """Build the error, with the period in words: a day and a month start again, a lifetime limit never does."""
    if period == LIFETIME:
        words = ("trong suốt thời gian dùng khóa (hạn mức này không tự làm mới)",
                 "over the key's whole life (this limit does not renew)")
    elif len(period) == len("2026-12"):
        words = (f"trong tháng {period}; hạn mức làm mới vào tháng sau", f"in month {period}; it renews next month")
    else:
        words = (f"trong ngày {period}; hạn mức làm mới vào ngày mai", f"on {period}; it renews tomorrow")
    return QuotaExceeded(rule=rule, limit=limit, period=period, period_vi=words[0], period_en=words[1])


@dataclass(frozen=True)
class QuotaCounter:
    name: str  # daily | monthly | lifetime | per_application.daily | per_application.monthly
    application_id: str  # ALL_APPLICATIONS for the key's own counters
    period: str  # "2026-12-05", "2026-12" or "lifetime"
    limit: int | None  # None: unlimited
    used: int

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)


@dataclass(frozen=True)
class QuotaUsage:
    """The five counters of one key and one application at one moment."""

    credential_id: str
    application_id: str
    counters: tuple[QuotaCounter, ...]

    def counter(self, name: str) -> QuotaCounter:
        for counter in self.counters:
            if counter.name == name:
                return counter
        raise KeyError(name)


@dataclass(frozen=True)
class QuotaDenied:
    """The first counter that ``requested`` more signatures would pass."""

    rule: str  # <credential>.quota.<counter name>
    limit: int
    period: str
    used: int
    requested: int

    def error(self) -> QuotaExceeded:
        return quota_exceeded(self.rule, self.limit, self.period)


def day_period(now: datetime) -> str:
    """Return the Vietnam-time day of ``now`` (timezone-aware), such as "2026-12-05"."""
    return _in_vietnam(now).strftime("%Y-%m-%d")


def month_period(now: datetime) -> str:
    """Return the Vietnam-time month of ``now`` (timezone-aware), such as "2026-12"."""
    return _in_vietnam(now).strftime("%Y-%m")


def _in_vietnam(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(VIETNAM_TIME)


def _counter_slots(key_policy: KeyPolicy | None, application_id: str,
                   now: datetime) -> list[tuple[str, str, str, int | None]]:
    """Return (name, application id, period, limit) of the five counters a signature counts on."""
    if not application_id:
        raise ValueError("application_id must not be empty: the empty id is the sum over all applications")
    limits = key_policy.quota if key_policy is not None else None
    day, month = day_period(now), month_period(now)
    return [
        (DAILY, ALL_APPLICATIONS, day, limits.daily if limits else None),
        (MONTHLY, ALL_APPLICATIONS, month, limits.monthly if limits else None),
        (LIFETIME, ALL_APPLICATIONS, LIFETIME_PERIOD, limits.lifetime if limits else None),
        (PER_APPLICATION_DAILY, application_id, day, limits.per_application_daily if limits else None),
        (PER_APPLICATION_MONTHLY, application_id, month, limits.per_application_monthly if limits else None),
    ]


async def quota_usage(tx: Transaction, key_policy: KeyPolicy | None, credential_id: str, application_id: str,
                      now: datetime) -> QuotaUsage:
    """Read the counters of ``credential_id`` for ``application_id`` at ``now`` without writing anything."""
    slots = _counter_slots(key_policy, application_id, now)
    used = await tx.key_usages(credential_id, [(application, period) for _, application, period, _ in slots])
    counters = tuple(QuotaCounter(name, application, period, limit, used[(application, period)])
                     for name, application, period, limit in slots)
    return QuotaUsage(credential_id, application_id, counters)


def quota_denial(usage: QuotaUsage, count: int) -> QuotaDenied | None:
    """Return the first limit that ``count`` more signatures would pass, or None when they fit."""
    for counter in usage.counters:
        if counter.limit is not None and counter.used + count > counter.limit:
            return QuotaDenied(rule=f"{usage.credential_id}.quota.{counter.name}", limit=counter.limit,
                               period=counter.period, used=counter.used, requested=count)
    return None


async def consume_quota(tx: Transaction, key_policy: KeyPolicy | None, credential_id: str, application_id: str,
                        count: int, now: datetime) -> None:
    """Count ``count`` signatures on every counter, or raise QuotaExceeded when one would pass its limit.

    The counters are read first, so a limit already reached raises before anything is written. Each addition
    is then conditional in SQL as well, because on PostgreSQL a concurrent transaction can count between the
    read and the write. In that case earlier counters of this call are already added when QuotaExceeded is
    raised, so the caller must roll its transaction back on QuotaExceeded.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    usage = await quota_usage(tx, key_policy, credential_id, application_id, now)
    denied = quota_denial(usage, count)
    if denied is not None:
        raise denied.error()

    existing = {(counter.application_id, counter.period) for counter in usage.counters if counter.used > 0}
    slots = _counter_slots(key_policy, application_id, now)
    not_raised = await tx.add_key_usages(credential_id, [(application, period, limit)
                                                         for _, application, period, limit in slots],
                                         count, existing)
    for name, application, period, limit in slots:
        if (application, period) in not_raised:
            assert limit is not None
            raise quota_exceeded(f"{credential_id}.quota.{name}", limit, period)
