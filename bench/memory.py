"""Resident memory and CPU time of the service: its serve process and every descendant.

A sampler thread sums VmRSS (/proc/PID/status) over the processes every
``period`` seconds and keeps the peak. The process list is refreshed every
``REFRESH_SECONDS``, so a worker started during a run is counted from then
on. CPU time is read once at the start and once at the end (utime + stime
of /proc/PID/stat), for processes alive at both reads. The busy time of
the whole machine (/proc/stat) is read at the same moments, to show what
other processes took.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from bench.service import service_processes

__all__ = ["ProcessSampler", "Usage", "cpu_seconds", "machine_busy_seconds", "rss_bytes"]

REFRESH_SECONDS = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pids: list[int]) -> int:
    """Sum VmRSS of ``pids``; a process that ended meanwhile counts 0."""
    return sum(_status_bytes(pid, b"VmRSS:") for pid in pids)


def _status_bytes(pid: int, field_name: bytes) -> int:
    """Return a memory field of /proc/PID/status in bytes, or 0 when the process ended."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(field_name):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    return 0


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """Return user + system CPU seconds of each process in ``pids`` that still exists."""
    times = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue
        # Fields after the command name: state is field 3, utime field 14 and stime field 15 of proc(5).
        fields = text[text.rindex(b")") + 2:].split()
        times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


@dataclass
class Usage:
    """Resource use of one sampled period: memory before and at the peak, CPU of the service and of this process."""

    idle_rss: int
    peak_rss: int
    samples: int
    seconds: float
    service_cpu_seconds: float
    client_cpu_seconds: float
    processes: int
    # CPU seconds of each service process, largest first: shows whether the work spread over the workers.
    cpu_seconds_per_process: list[float]
    # CPU seconds that the whole machine was busy (/proc/stat), so the rest is other processes' use.
    machine_cpu_seconds: float
    # Sum over the processes of the growth of VmHWM, the kernel's own peak RSS, which also catches a peak
    # between two samples. It stays 0 for a process whose earlier peak was higher.
    high_water_increase: int

    @property
    def increase(self) -> int:
        return self.peak_rss - self.idle_rss

    def cpu_ms_per(self, count: int) -> float | None:
        """Return the service's CPU milliseconds per unit of work (request or signature), None for no work."""
        return self.service_cpu_seconds * 1000 / count if count else None

    def as_extra(self) -> dict[str, float | int | list[float]]:
        """CPU use as cores busy on average, for a figure's extra fields."""
        seconds = self.seconds or 1.0
        return {
            "service_cpu_cores": self.service_cpu_seconds / seconds,
            "service_cpu_cores_per_process": [round(cpu / seconds, 3) for cpu in self.cpu_seconds_per_process],
            "client_cpu_cores": self.client_cpu_seconds / seconds,
            "other_cpu_cores": max(0.0, self.machine_cpu_seconds - self.service_cpu_seconds
                                   - self.client_cpu_seconds) / seconds,
            "service_processes": self.processes,
        }


class ProcessSampler:
    """Samples the service's memory in a thread during a ``with`` block; ``usage`` is set on exit."""

    def __init__(self, root_pid: int, period: float) -> None:
        self.root_pid = root_pid
        self.period = period
        self.usage: Usage | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._peak = 0
        self._samples = 0

    def __enter__(self) -> "ProcessSampler":
        pids = service_processes(self.root_pid)
        self._idle = rss_bytes(pids)
        self._peak = self._idle
        self._cpu_start = cpu_seconds(pids)
        self._high_water_start = {pid: _status_bytes(pid, b"VmHWM:") for pid in pids}
        self._client_start = _own_cpu_seconds()
        self._machine_start = machine_busy_seconds()
        self._started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        pids = service_processes(self.root_pid)
        refreshed = time.monotonic()
        while not self._stop.wait(self.period):
            if time.monotonic() - refreshed > REFRESH_SECONDS:
                pids = service_processes(self.root_pid)
                refreshed = time.monotonic()
            self._peak = max(self._peak, rss_bytes(pids))
            self._samples += 1

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        seconds = time.monotonic() - self._started
        pids = service_processes(self.root_pid)
        self._peak = max(self._peak, rss_bytes(pids))
        cpu_end = cpu_seconds(pids)
        per_process = sorted((cpu_end[pid] - self._cpu_start[pid] for pid in cpu_end if pid in self._cpu_start),
                             reverse=True)
        high_water = sum(max(0, _status_bytes(pid, b"VmHWM:") - start)
                         for pid, start in self._high_water_start.items())
        self.usage = Usage(self._idle, self._peak, self._samples, seconds, sum(per_process),
                           _own_cpu_seconds() - self._client_start, len(pids), per_process,
                           machine_busy_seconds() - self._machine_start, high_water)


def machine_busy_seconds() -> float:
    """Return the CPU seconds all cores have spent busy since boot (first line of /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = stat.readline().split()
    # user nice system idle iowait irq softirq steal: idle and iowait are not busy; guest time is in user.
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system
