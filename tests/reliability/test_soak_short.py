"""A short soak (tests/reliability/soak.py): 20 s of mixed load from 8 clients on a fresh service with two workers.

The full soak (``python -m tests.reliability.soak``, 10 minutes at
concurrency 32 by default) runs outside the test suite. This one checks that
the soak's promises hold on a short run and that its report has every figure.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.reliability.soak import SoakOptions, run_soak

SECONDS = 20
CONCURRENCY = 8


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The report as the run wrote it to disk."""
    path = tmp_path_factory.mktemp("soak") / "soak.json"
    run_soak(SoakOptions(seconds=SECONDS, concurrency=CONCURRENCY, report=path))
    return json.loads(path.read_text(encoding="utf-8"))


def test_short_soak_has_no_errors(report: dict[str, Any]) -> None:
    assert report["errors_total"] == 0, report["error_samples"]


def test_short_soak_ran_every_kind(report: dict[str, Any]) -> None:
    assert report["promises"]["every_kind_ran"], report["requests"]


def test_short_soak_memory_flat(report: dict[str, Any]) -> None:
    # NOTE: 16 s after a 4 s warm-up is too short to show a slow leak. This catches only fast growth and
    # broken sampling. The full soak is the leak check.
    memory = {name: value for name, value in report["memory"].items() if name != "samples"}
    assert report["promises"]["memory_flat"], memory


def test_short_soak_nothing_lost_or_duplicated(report: dict[str, Any]) -> None:
    assert report["promises"]["nothing_lost_or_duplicated"], report["items"]


def test_short_soak_samples_verified(report: dict[str, Any]) -> None:
    assert report["promises"]["samples_verified"], report["verified_samples"]


def test_short_soak_nothing_left_in_progress(report: dict[str, Any]) -> None:
    assert report["left_in_approved_or_signing"] == {}


def test_short_soak_audit_trail_verified(report: dict[str, Any]) -> None:
    assert report["audit_verify"]["passed"], report["audit_verify"]["output"]


def test_short_soak_server_stopped_cleanly(report: dict[str, Any]) -> None:
    assert report["server_exit_code"] == 0


def test_short_soak_report_has_figures(report: dict[str, Any]) -> None:
    for kind in ("csc_sign_hash", "seal_completed", "tsa"):
        assert set(report["latency"][kind]) == {"p50_ms", "p95_ms", "p99_ms", "max_ms"}, kind
    assert len(report["memory"]["samples"]) >= 10
    assert report["machine"]["load_average_at_start"]
