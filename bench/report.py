"""The report of a run: latest.json, latest.md (the table), and the profile summaries."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.figures import Figure
from bench.profiling import Profile

__all__ = ["Report", "limit_paragraph"]


@dataclass
class Report:
    machine: dict[str, Any]
    started_at: str
    config_name: str
    duration_seconds: float = 0.0
    figures: list[Figure] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)  # by figure name
    notes: list[str] = field(default_factory=list)

    def figure(self, name: str) -> Figure:
        for figure in self.figures:
            if figure.name == name:
                return figure
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "started_at": self.started_at,
            "duration_seconds": round(self.duration_seconds, 1),
            "run": self.config_name,
            "figures": [figure.as_json() for figure in self.figures],
            "profiles": {name: f"profile-{name}.txt" if profile.error is None else profile.error
                         for name, profile in self.profiles.items()},
            "notes": self.notes,
        }

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # Profiles of an earlier run would read as this run's.
        for stale in directory.glob("profile-*.txt"):
            stale.unlink()
        (directory / "latest.json").write_text(json.dumps(self.as_json(), indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
        for name, profile in self.profiles.items():
            (directory / f"profile-{name}.txt").write_text(profile.as_text(), encoding="utf-8")
        (directory / "latest.md").write_text(self.markdown(), encoding="utf-8")

    def markdown(self) -> str:
        lines = [
            f"# signserver benchmark: {self.config_name} run of {self.started_at}",
            "",
            "Bảng kết quả đo hiệu năng; cách đo và cách đọc bảng có trong bench/README.md. "
            "(The figures of one run; bench/README.md explains each.)",
            "",
            f"Duration: {self.duration_seconds:.0f} s, including `signserver init`.",
            "",
            "| figure | value | unit | baseline | ratio | goal | pass |",
            "| --- | ---: | --- | --- | ---: | --- | --- |",
        ]
        for figure in self.figures:
            baseline = (f"{figure.baseline.name} = {_number(figure.baseline.value)} {figure.baseline.unit}"
                        if figure.baseline else "")
            verdict = {True: "pass", False: "**fail**", None: ""}[figure.passed]
            lines.append(f"| {figure.name} | {_number(figure.value)} | {figure.unit} | {baseline} | "
                         f"{_number(figure.ratio)} | {figure.goal or ''} | {verdict} |")

        failing = [figure for figure in self.figures if figure.passed is False]
        if failing:
            lines += ["", "## What limits the failing figures", ""]
            for figure in failing:
                lines += [f"**{figure.name}**: {figure.limited_by or 'not analysed in this run.'}", ""]

        if self.profiles:
            lines += ["## Profiles", ""]
            for name, profile in self.profiles.items():
                lines += [f"### {name}", "", "```", profile.as_text().rstrip(), "```", ""]

        if self.notes:
            lines += ["## Notes", ""] + [f"- {note}" for note in self.notes] + [""]

        lines += ["## Machine", ""]
        for key, value in self.machine.items():
            if isinstance(value, dict):
                value = ", ".join(f"{name} {version}" for name, version in value.items())
            lines.append(f"- {key}: {value}")
        return "\n".join(lines) + "\n"


def limit_paragraph(figure: Figure, profile: Profile | None) -> str:
    """Describe from the measurements what limits ``figure``: CPU use, errors and the profile's top functions."""
    parts = []
    if figure.extra.get("errors"):
        parts.append(f"{figure.extra['errors']} request(s) failed ({figure.extra.get('first_error', '')}), "
                     "which fails the figure whatever its rate.")
    service_cores = figure.extra.get("service_cpu_cores")
    client_cores = figure.extra.get("client_cpu_cores")
    if service_cores is not None:
        per_process = ", ".join(f"{cores:.2f}" for cores in figure.extra.get("service_cpu_cores_per_process", []))
        parts.append(f"During the run the service's processes used {service_cores:.2f} cores on average "
                     f"({per_process} by process, busiest first), the benchmark client {client_cores:.2f} "
                     f"and other processes of the machine {figure.extra.get('other_cpu_cores', 0.0):.2f}.")
        for unit in ("request", "signature"):
            cpu_ms = figure.extra.get(f"service_cpu_ms_per_{unit}")
            if cpu_ms is not None:
                parts.append(f"The service spent {cpu_ms:.2f} ms of CPU per {unit}.")
                parts.append(_cpu_budget(figure, unit))
    if profile is None:
        parts.append("No profile was recorded.")
    elif profile.error is not None:
        parts.append(f"No profile: {profile.error}")
    else:
        own = "; ".join(f"{name} {100 * profile.share(count):.0f}%" for name, count in profile.own[:5])
        project = "; ".join(f"{name} {100 * profile.share(count):.0f}%" for name, count in profile.project[:6])
        parts.append(f"In the profile of a re-run ({profile.samples} samples), the functions running most "
                     f"were: {own}. The project's functions most often on the stack were: {project}.")
    return " ".join(parts)


def _cpu_budget(figure: Figure, unit: str) -> str:
    """Describe the CPU time per unit that the machine's cores allow at the goal rate of a throughput figure."""
    if figure.goal is None or not figure.goal.startswith(">=") or figure.baseline is None:
        return ""
    goal_rate = float(figure.goal.split()[1]) * figure.baseline.value
    cores = os.cpu_count() or 1
    # In a one-hash request the unit of work is one signature, so the goal rate applies to requests too.
    return (f"At the goal rate of {goal_rate:.0f} signatures/s, {cores} cores allow at most "
            f"{cores * 1000 / goal_rate:.2f} ms of CPU per {unit}, the client's and the token's included.")


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
