"""One measured figure, its baseline, its ratio to the baseline and its goal."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Figure", "Baseline", "compare"]

_GOAL_OPERATORS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Baseline:
    """The reference of a compared figure: a name (often another figure's), its value and unit."""

    name: str
    value: float
    unit: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": _rounded(self.value), "unit": self.unit}


@dataclass
class Figure:
    """A figure of the report. ``passed`` is None when the figure has no goal."""

    name: str
    value: float | None
    unit: str
    description: str
    baseline: Baseline | None = None
    ratio: float | None = None
    goal: str | None = None  # such as ">= 0.85": the ratio compared with a number
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # What limits the figure when it fails its goal, filled from the profile and the measurements.
    limited_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "value": _rounded(self.value),
            "unit": self.unit,
            "baseline": self.baseline.as_json() if self.baseline else None,
            "ratio": _rounded(self.ratio),
            "goal": self.goal,
            "pass": self.passed,
            "description": self.description,
        }
        data.update({key: _rounded(value) for key, value in self.extra.items()})
        if self.limited_by is not None:
            data["limited_by"] = self.limited_by
        return data


def compare(figure: Figure, baseline: Baseline | None, goal: str | None = None) -> Figure:
    """Set the figure's baseline, its ratio value / baseline, and whether the ratio meets ``goal``.

    A figure without a value, or whose run had errors (``extra["errors"]``
    above 0), fails its goal.
    """
    figure.baseline = baseline
    figure.goal = goal
    if baseline is not None and figure.value is not None and baseline.value:
        figure.ratio = figure.value / baseline.value
    if goal is None:
        figure.passed = None
        return figure
    symbol, _space, number = goal.partition(" ")
    if symbol not in _GOAL_OPERATORS:
        raise ValueError(f"goal {goal!r} must start with >= or <= and a space")
    errors = figure.extra.get("errors") or 0
    figure.passed = figure.ratio is not None and errors == 0 and _GOAL_OPERATORS[symbol](figure.ratio, float(number))
    return figure


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    return value
