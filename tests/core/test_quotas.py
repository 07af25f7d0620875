"""Signature quotas counted in a real SQLite store: exact-count limits, interacting counters, Vietnam-time
periods, and transactions rolled back leaving the counters unchanged."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from signserver.core.policy import KeyPolicy, parse_policy_documents
from signserver.core.quotas import (
    QuotaCounter,
    QuotaExceeded,
    QuotaUsage,
    consume_quota,
    day_period,
    month_period,
    quota_denial,
    quota_exceeded,
    quota_usage,
)
from signserver.i18n import message
from signserver.store import tables
from signserver.store.db import Store
from signserver.store.migrate import upgrade_to_head
from tests.postgres import new_database_url

CREDENTIAL = "cred-quota"
APP_A = "app-a"
APP_B = "app-b"
NOW = datetime(2026, 12, 5, 3, 0, tzinfo=timezone.utc)  # 10:00 on 5 December in Vietnam


def key_policy(quota: str) -> KeyPolicy:
    text = (f"keys:\n  - credential: {CREDENTIAL}\n    owner: {{agency: A}}\n    quota: {quota}\n"
            f"    rules: [{{id: r, applications: [{APP_A}, {APP_B}]}}]\n")
    policy = parse_policy_documents([("q.yaml", text)]).key_policy(CREDENTIAL)
    assert policy is not None
    return policy


@pytest.fixture
async def store(tmp_path: Path):
    url = new_database_url(tmp_path, 'quotas.db')
    upgrade_to_head(url)
    store = Store(url)
    async with store.transaction() as tx:
        # key_usage.credential_id references credentials.id, so the counted key must exist.
        await tx.insert_credential(
            id=CREDENTIAL, kind="seal", key_id_hex="01", key_label=CREDENTIAL, key_type="EC", key_size=256,
            certificate_der=b"\x30\x00", chain_pem="", cert_serial_hex="01", display_name="Cơ quan A", agency="A",
            status="active", created_at=NOW,
        )
    yield store
    await store.close()


async def consume(store: Store, policy: KeyPolicy | None, application: str, count: int = 1,
                  now: datetime = NOW) -> None:
    async with store.transaction() as tx:
        await consume_quota(tx, policy, CREDENTIAL, application, count, now)


async def rejected(store: Store, policy: KeyPolicy | None, application: str, count: int = 1,
                  now: datetime = NOW) -> dict[str, Any]:
    with pytest.raises(QuotaExceeded) as caught:
        await consume(store, policy, application, count, now)
    return caught.value.params


async def count_of(store: Store, application: str, period: str) -> int:
    async with store.transaction() as tx:
        return await tx.key_usage(CREDENTIAL, application, period)


async def usage_of(store: Store, policy: KeyPolicy | None, application: str, now: datetime = NOW) -> QuotaUsage:
    async with store.transaction() as tx:
        return await quota_usage(tx, policy, CREDENTIAL, application, now)


# Exact counts


async def test_lifetime_stops_at_exact_count(store: Store) -> None:
    policy = key_policy("{lifetime: 3}")
    for _ in range(3):
        await consume(store, policy, APP_A)
    params = await rejected(store, policy, APP_A)
    assert params == {"rule": "cred-quota.quota.lifetime", "limit": 3, "period": "lifetime",
                      "period_vi": "trong suốt thời gian dùng khóa (hạn mức này không tự làm mới)",
                      "period_en": "over the key's whole life (this limit does not renew)"}
    assert await count_of(store, "", "lifetime") == 3


async def test_batch_over_remaining_rejected_whole(store: Store) -> None:
    policy = key_policy("{lifetime: 3}")
    await consume(store, policy, APP_A, count=2)
    await rejected(store, policy, APP_A, count=2)
    assert await count_of(store, "", "lifetime") == 2
    await consume(store, policy, APP_A, count=1)
    assert await count_of(store, "", "lifetime") == 3


async def test_batch_equal_to_limit_passes(store: Store) -> None:
    await consume(store, key_policy("{daily: 5}"), APP_A, count=5)
    assert await count_of(store, "", "2026-12-05") == 5


async def test_zero_quota_rejects_first(store: Store) -> None:
    params = await rejected(store, key_policy("{monthly: 0}"), APP_A)
    assert params["rule"] == "cred-quota.quota.monthly"
    assert await count_of(store, "", "2026-12") == 0


async def test_rejection_counts_nothing(store: Store) -> None:
    policy = key_policy("{daily: 10, lifetime: 2}")
    await consume(store, policy, APP_A, count=2)
    await rejected(store, policy, APP_A)
    assert await count_of(store, "", "2026-12-05") == 2
    assert await count_of(store, APP_A, "2026-12-05") == 2
    assert await count_of(store, APP_A, "2026-12") == 2


# Periods in Vietnam time


def test_day_period_vietnam_midnight() -> None:
    assert day_period(datetime(2026, 12, 5, 16, 59, 59, tzinfo=timezone.utc)) == "2026-12-05"
    assert day_period(datetime(2026, 12, 5, 17, 0, 0, tzinfo=timezone.utc)) == "2026-12-06"


def test_month_period_vietnam_midnight() -> None:
    assert month_period(datetime(2026, 11, 30, 16, 59, 59, tzinfo=timezone.utc)) == "2026-11"
    assert month_period(datetime(2026, 11, 30, 17, 0, 0, tzinfo=timezone.utc)) == "2026-12"


def test_naive_time_rejected() -> None:
    with pytest.raises(ValueError):
        day_period(datetime(2026, 12, 5, 10, 0))


async def test_daily_resets_at_vietnam_midnight(store: Store) -> None:
    policy = key_policy("{daily: 2}")
    last_second = datetime(2026, 12, 5, 16, 59, 59, tzinfo=timezone.utc)
    next_day = datetime(2026, 12, 5, 17, 0, 0, tzinfo=timezone.utc)
    await consume(store, policy, APP_A, count=2, now=last_second)
    params = await rejected(store, policy, APP_A, now=last_second)
    assert params["period"] == "2026-12-05"
    await consume(store, policy, APP_A, now=next_day)
    assert await count_of(store, "", "2026-12-06") == 1


async def test_monthly_limit_across_days(store: Store) -> None:
    policy = key_policy("{monthly: 3}")
    for day in (1, 2, 3):
        await consume(store, policy, APP_A, now=datetime(2026, 12, day, 3, tzinfo=timezone.utc))
    params = await rejected(store, policy, APP_A, now=datetime(2026, 12, 20, 3, tzinfo=timezone.utc))
    assert params == {"rule": "cred-quota.quota.monthly", "limit": 3, "period": "2026-12",
                      "period_vi": "trong tháng 2026-12; hạn mức làm mới vào tháng sau",
                      "period_en": "in month 2026-12; it renews next month"}
    await consume(store, policy, APP_A, now=datetime(2027, 1, 1, 3, tzinfo=timezone.utc))
    assert await count_of(store, "", "2027-01") == 1


# Counters that interact


async def test_application_and_key_daily_interact(store: Store) -> None:
    policy = key_policy("{daily: 3, per_application: {daily: 2}}")
    await consume(store, policy, APP_A, count=2)
    assert (await rejected(store, policy, APP_A))["rule"] == "cred-quota.quota.per_application.daily"

    await consume(store, policy, APP_B)
    # Application B has used one of its two, but the key's three for the day are gone.
    assert (await rejected(store, policy, APP_B))["rule"] == "cred-quota.quota.daily"

    assert await count_of(store, "", "2026-12-05") == 3
    assert await count_of(store, APP_A, "2026-12-05") == 2
    assert await count_of(store, APP_B, "2026-12-05") == 1


async def test_per_application_monthly(store: Store) -> None:
    policy = key_policy("{per_application: {monthly: 1}}")
    await consume(store, policy, APP_A)
    params = await rejected(store, policy, APP_A, now=datetime(2026, 12, 28, tzinfo=timezone.utc))
    assert params == {"rule": "cred-quota.quota.per_application.monthly", "limit": 1, "period": "2026-12",
                      "period_vi": "trong tháng 2026-12; hạn mức làm mới vào tháng sau",
                      "period_en": "in month 2026-12; it renews next month"}
    await consume(store, policy, APP_B)


async def test_counted_without_limits(store: Store) -> None:
    await consume(store, None, APP_A, count=2)
    usage = await usage_of(store, None, APP_A)
    assert [counter.used for counter in usage.counters] == [2, 2, 2, 2, 2]
    assert [counter.limit for counter in usage.counters] == [None] * 5
    assert usage.counter("lifetime").remaining is None


async def test_usage_reports_counters(store: Store) -> None:
    policy = key_policy("{daily: 10, lifetime: 100, per_application: {daily: 4}}")
    await consume(store, policy, APP_A, count=3)
    await consume(store, policy, APP_B, count=1)
    usage = await usage_of(store, policy, APP_A)
    daily = usage.counter("daily")
    assert daily.application_id == ""
    assert daily.period == "2026-12-05"
    assert daily.limit == 10
    assert daily.used == 4
    assert daily.remaining == 6
    own_daily = usage.counter("per_application.daily")
    assert own_daily.application_id == APP_A
    assert own_daily.used == 3
    assert own_daily.remaining == 1
    assert usage.counter("lifetime").used == 4


async def test_usage_read_writes_nothing(store: Store) -> None:
    await usage_of(store, key_policy("{daily: 1}"), APP_A)
    async with store.transaction() as tx:
        rows = (await tx.connection.execute(select(func.count()).select_from(tables.key_usage))).scalar_one()
    assert rows == 0


# Transactions


async def test_rolled_back_transaction_leaves_counts(store: Store) -> None:
    policy = key_policy("{lifetime: 3}")
    await consume(store, policy, APP_A)
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await consume_quota(tx, policy, CREDENTIAL, APP_A, 2, NOW)
            raise RuntimeError("the HSM signature failed")
    assert await count_of(store, "", "lifetime") == 1
    assert await count_of(store, APP_A, "2026-12-05") == 1
    await consume(store, policy, APP_A, count=2)


class StaleReads:
    """A transaction whose reads see no usage, as when another replica counted after this one read."""

    def __init__(self, tx: Any) -> None:
        self.tx = tx

    async def key_usages(self, credential_id: str, counters: Any) -> dict[Any, int]:
        return {counter: 0 for counter in counters}

    async def add_key_usages(self, *args: Any) -> list[tuple[str, str]]:
        return await self.tx.add_key_usages(*args)


async def test_concurrent_count_caught_by_sql_limit(store: Store) -> None:
    policy = key_policy("{daily: 10, per_application: {daily: 2}}")
    await consume(store, policy, APP_A, count=2)

    with pytest.raises(QuotaExceeded) as caught:
        async with store.transaction() as tx:
            await consume_quota(StaleReads(tx), policy, CREDENTIAL, APP_A, 1, NOW)
    assert caught.value.params["rule"] == "cred-quota.quota.per_application.daily"

    # The key's counters were added before the application's counter rejected the batch. The rollback undid them.
    assert await count_of(store, "", "2026-12-05") == 2
    assert await count_of(store, "", "lifetime") == 2
    assert await count_of(store, APP_A, "2026-12-05") == 2


# Arguments and messages


async def test_count_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError):
        await consume(store, None, APP_A, count=0)


async def test_empty_application_rejected(store: Store) -> None:
    with pytest.raises(ValueError):
        await consume(store, None, "")


def sample_usage(used: int, limit: int | None) -> QuotaUsage:
    counters = (
        QuotaCounter("daily", "", "2026-12-05", None, used),
        QuotaCounter("lifetime", "", "lifetime", limit, used),
    )
    return QuotaUsage(CREDENTIAL, APP_A, counters)


def test_quota_denial_when_fits() -> None:
    assert quota_denial(sample_usage(used=1, limit=3), 2) is None


def test_quota_denial_when_over() -> None:
    denied = quota_denial(sample_usage(used=2, limit=3), 2)
    assert denied is not None
    assert denied.rule == "cred-quota.quota.lifetime"
    assert denied.limit == 3
    assert denied.period == "lifetime"
    assert denied.used == 2
    assert denied.requested == 2


def test_quota_denial_unlimited() -> None:
    assert quota_denial(sample_usage(used=10**9, limit=None), 10**9) is None


def test_quota_exceeded_message() -> None:
    error = quota_exceeded("cred-quota.quota.daily", 500, "2026-12-05")
    assert error.code == "quota_exceeded"
    assert message(error.code, "vi", error.params).startswith(
        "Đã dùng hết hạn mức ký cred-quota.quota.daily: tối đa 500 chữ ký trong ngày 2026-12-05; "
        "hạn mức làm mới vào ngày mai.")
    assert message(error.code, "en", error.params).startswith(
        "The signing quota cred-quota.quota.daily is used up: at most 500 signatures on 2026-12-05; it renews "
        "tomorrow.")


def test_lifetime_quota_message_says_no_renewal() -> None:
    error = quota_exceeded("cred-quota.quota.lifetime", 3, "lifetime")
    assert "không tự làm mới" in message(error.code, "vi", error.params)
    assert "does not renew" in message(error.code, "en", error.params)
