"""The state that the steps of a run share: settings, the service, baselines, TOTP codes, profile re-runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import RunConfig
from bench.csc import TotpCodes
from bench.figures import Baseline
from bench.report import Report
from bench.service import BenchHome, Service

__all__ = ["RunContext", "Rerun"]

# Re-runs a figure's measurement for about the given seconds, while py-spy records the service.
Rerun = Callable[[float], Awaitable[None]]


@dataclass
class RunContext:
    config: RunConfig
    home: BenchHome
    service: Service
    work_dir: Path  # temporary: the data directory, generated PDFs, signed outputs
    output_dir: Path
    report: Report
    nss_dir: Path
    baselines: dict[str, Baseline] = field(default_factory=dict)  # raw rates by key name
    totp: TotpCodes = field(default_factory=TotpCodes)
    # Figure name -> (re-run, seconds py-spy records it).
    reruns: dict[str, tuple[Rerun, float]] = field(default_factory=dict)
