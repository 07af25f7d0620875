"""The kill loop, short: three SIGKILLs of a real service on SQLite under load, then every promise checked.

``make crash-test`` runs the full loop of 20 kills; see tests/reliability/crash_loop.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.crash_loop import CrashLoopOptions, run_crash_loop


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # `make test-postgres` sends every data directory to PostgreSQL, but this loop stays on SQLite.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tests.postgres.TEST_STORE", "sqlite")
        options = CrashLoopOptions(kills=3, store="sqlite", seal_threads=2, two_workers_every=0,
                                   max_wait_seconds=1.5, settle_seconds=60,
                                   workdir=Path(tmp_path_factory.mktemp("crash-loop")))
        return run_crash_loop(options)


def test_crash_loop_kills_three_times(report: dict) -> None:
    assert report["kills"] == 3
    assert report["restarts"] == 3


def test_crash_loop_signs_under_load(report: dict) -> None:
    assert report["requests"]["signed"] > 0, report["requests"]
    assert report["signatures"]["documents_downloaded"] > 0, report["signatures"]


def test_crash_loop_loses_nothing(report: dict) -> None:
    assert report["lost"] == [], report["seed"]


def test_crash_loop_duplicates_nothing(report: dict) -> None:
    assert report["duplicated"] == [], report["seed"]


def test_crash_loop_leaves_nothing_stuck(report: dict) -> None:
    assert report["stuck"] == [], report["seed"]
    assert report["requests"]["unsettled_after_wait"] == 0


def test_crash_loop_recovery_leaves_no_trace(report: dict) -> None:
    assert report["recovery_faults"] == [], report["seed"]


def test_crash_loop_signatures_verify(report: dict) -> None:
    assert report["invalid_signatures"] == [], report["seed"]
    assert report["signatures"]["pdf_signatures_checked"] == report["signatures"]["documents_downloaded"]


def test_crash_loop_audit_chain_verifies(report: dict) -> None:
    assert report["audit_verify"]["passed"], report["audit_verify"]["output"]


def test_crash_loop_report_passed(report: dict) -> None:
    assert report["passed"], report
