"""Smoke run of the benchmark (``python -m bench --smoke``): it runs to the end and reports every figure.

The smoke run's counts are tiny, so its figures mean nothing and no goal is
checked here; `make bench` runs the real measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE_TIMEOUT_SECONDS = 180
REQUIRED_KEYS = ("name", "value", "unit", "baseline", "ratio", "goal", "pass")

# Every figure of the report: the raw limit, CSC signHash, PAdES B-T, the TSA and memory.
EXPECTED_FIGURES = [
    "raw_pkcs11.rsa2048.threads1",
    "raw_pkcs11.rsa2048.threads2",
    "raw_pkcs11.rsa2048.best",
    "raw_pkcs11.ecp256.threads1",
    "raw_pkcs11.ecp256.threads2",
    "raw_pkcs11.ecp256.best",
    "raw_pkcs11.tsa_rsa2048.threads1",
    "raw_pkcs11.tsa_rsa2048.threads2",
    "raw_pkcs11.tsa_rsa2048.best",
    "csc.sign_hash.rsa2048.c1",
    "csc.sign_hash.rsa2048.c8",
    "csc.sign_hash.rsa2048.c32",
    "csc.sign_hash.rsa2048.c32.p99_latency",
    "csc.sign_hash_batch100.rsa2048",
    "csc.sign_hash.ecp256.c1",
    "csc.sign_hash.ecp256.c8",
    "csc.sign_hash.ecp256.c32",
    "csc.sign_hash.ecp256.c32.p99_latency",
    "csc.sign_hash_batch100.ecp256",
    "pades_bt.1page",
    "pades_bt.1page.pyhanko_in_process",
    "pades_bt.100page",
    "pades_bt.100page.pyhanko_in_process",
    "tsa.timestamps.c8",
    "memory.sign_100mb_pdf",
    "memory.sign_hash_c32.rsa2048",
    "memory.sign_hash_c32.ecp256",
]

# Compared figures and their goals: batches >= 0.85 and c=8 >= 0.6 of the raw rate, p99 <= 5 x p50,
# PAdES <= 1.3 x pyHanko in-process, memory increase <= 1.5 x the file size.
EXPECTED_GOALS = {
    "csc.sign_hash_batch100.rsa2048": ">= 0.85",
    "csc.sign_hash_batch100.ecp256": ">= 0.85",
    "csc.sign_hash.rsa2048.c8": ">= 0.6",
    "csc.sign_hash.ecp256.c8": ">= 0.6",
    "csc.sign_hash.rsa2048.c32.p99_latency": "<= 5",
    "csc.sign_hash.ecp256.c32.p99_latency": "<= 5",
    "pades_bt.1page": "<= 1.3",
    "pades_bt.100page": "<= 1.3",
    "memory.sign_100mb_pdf": "<= 1.5",
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    output = tmp_path_factory.mktemp("bench-smoke")
    completed = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--output", str(output)], cwd=REPO,
                               capture_output=True, text=True, timeout=SMOKE_TIMEOUT_SECONDS)
    return completed, output


@pytest.fixture(scope="module")
def report(smoke_run: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, Any]:
    completed, output = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads((output / "latest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def figures(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {figure["name"]: figure for figure in report["figures"]}


def test_smoke_run_exits_zero(smoke_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    completed, _output = smoke_run
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_smoke_run_writes_markdown_table(smoke_run: tuple[subprocess.CompletedProcess[str], Path],
                                          report: dict[str, Any]) -> None:
    _completed, output = smoke_run
    table = (output / "latest.md").read_text(encoding="utf-8")
    assert "| figure | value | unit | baseline | ratio | goal | pass |" in table
    for figure in report["figures"]:
        assert f"| {figure['name']} |" in table


@pytest.mark.parametrize("name", EXPECTED_FIGURES)
def test_smoke_report_has_figure(figures: dict[str, dict[str, Any]], name: str) -> None:
    assert name in figures, sorted(figures)


@pytest.mark.parametrize("name", EXPECTED_FIGURES)
def test_smoke_figure_has_required_keys(figures: dict[str, dict[str, Any]], name: str) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in figures.get(name, {})]
    assert missing == [], f"{name} lacks {missing}"


@pytest.mark.parametrize("name", EXPECTED_FIGURES)
def test_smoke_figure_has_measured_value(figures: dict[str, dict[str, Any]], name: str) -> None:
    assert isinstance(figures[name]["value"], (int, float)), figures[name]


@pytest.mark.parametrize(("name", "goal"), sorted(EXPECTED_GOALS.items()))
def test_smoke_compared_figure_has_goal(figures: dict[str, dict[str, Any]], name: str, goal: str) -> None:
    assert figures[name]["goal"] == goal


@pytest.mark.parametrize("name", sorted(EXPECTED_GOALS))
def test_smoke_compared_figure_has_baseline(figures: dict[str, dict[str, Any]], name: str) -> None:
    baseline = figures[name]["baseline"]
    assert isinstance(baseline, dict), figures[name]
    assert baseline["name"], figures[name]
    assert baseline["value"] > 0, figures[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_GOALS))
def test_smoke_compared_figure_has_ratio_and_verdict(figures: dict[str, dict[str, Any]], name: str) -> None:
    figure = figures[name]
    assert isinstance(figure["ratio"], (int, float)), figure
    assert figure["pass"] in (True, False), figure


def test_smoke_report_records_machine(report: dict[str, Any]) -> None:
    machine = report["machine"]
    assert machine["cpu_cores"] >= 1
    assert machine["softhsm"], machine


def test_smoke_runs_without_request_errors(figures: dict[str, dict[str, Any]]) -> None:
    failed = {name: figure.get("first_error") for name, figure in figures.items() if figure.get("errors")}
    assert failed == {}
