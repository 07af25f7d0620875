"""Closed-loop HTTP load: a number of client coroutines sending requests back to back.

Every run is bounded twice, by a duration and by a request count, so that a
fast server cannot exhaust what the run was authorized for (the hashes of a
SAD) and a slow one cannot keep the benchmark going.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["LoadResult", "RequestFailed", "closed_loop", "client_session", "percentile", "run_summary"]

# Time allowed to one request, so that a stuck server ends the run instead of hanging it.
REQUEST_TIMEOUT_SECONDS = 120


class RequestFailed(Exception):
    """A response that the run counts as an error: wrong status or wrong content."""


@dataclass
class LoadResult:
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, of the successful requests
    first_error: str | None = None
    # What each successful request returned, by request index, for checks after the run.
    outputs: dict[int, Any] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return self.requests - self.errors

    @property
    def throughput(self) -> float:
        """Successful requests per second of wall time."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self, rank: float) -> float | None:
        value = percentile(self.latencies, rank)
        return None if value is None else value * 1000


def percentile(values: list[float], rank: float) -> float | None:
    """Return the nearest-rank percentile ``rank`` (0 to 100) of ``values``, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    position = max(1, math.ceil(rank / 100 * len(ordered)))
    return ordered[position - 1]


def client_session(concurrency: int) -> aiohttp.ClientSession:
    """Return a client session whose one keep-alive connector allows ``concurrency`` connections."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, force_close=False)
    return aiohttp.ClientSession(connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS))


async def closed_loop(concurrency: int, seconds: float, max_requests: int,
                      send: Callable[[int], Awaitable[Any]]) -> LoadResult:
    """Run ``concurrency`` coroutines that call ``send(index)`` back to back.

    Stops starting requests after ``seconds`` or once ``max_requests`` were
    started, whichever comes first, and waits for those in flight. ``send``
    returns what the caller wants to check later, or raises RequestFailed.
    """
    result = LoadResult(concurrency)
    next_index = 0
    started = time.monotonic()
    deadline = started + seconds

    async def client() -> None:
        nonlocal next_index
        while next_index < max_requests and time.monotonic() < deadline:
            index = next_index
            next_index += 1
            result.requests += 1
            began = time.monotonic()
            try:
                output = await send(index)
            except (RequestFailed, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                result.errors += 1
                if result.first_error is None:
                    result.first_error = f"request {index}: {type(exc).__name__}: {exc}"[:500]
                continue
            result.latencies.append(time.monotonic() - began)
            result.outputs[index] = output

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    return result


def run_summary(result: LoadResult) -> dict[str, Any]:
    """Return the run's counts and latency percentiles, as extra fields of its figure."""
    return {
        "requests": result.requests,
        "errors": result.errors,
        "seconds": result.seconds,
        "concurrency": result.concurrency,
        "p50_ms": result.latency_ms(50),
        "p95_ms": result.latency_ms(95),
        "p99_ms": result.latency_ms(99),
        **({"first_error": result.first_error} if result.first_error else {}),
    }
