"""The hardware and software a run measured on, read at run time."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

__all__ = ["load_average", "machine_info"]

PACKAGES = ("aiohttp", "python-pkcs11", "pyHanko", "cryptography", "SQLAlchemy", "aiosqlite", "py-spy")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _command_version(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else None


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> str | None:
    """Return the 1, 5 and 15-minute load averages of /proc/loadavg, which show other work on the machine."""
    try:
        with open("/proc/loadavg", encoding="ascii") as loadavg:
            return " ".join(loadavg.read().split()[:3])
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """Return the CPU model, cores, RAM, kernel, load, and the versions of SoftHSM, Python and the main packages."""
    memory = _memory_bytes()
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "kernel": platform.release(),
        "load_average_at_start": load_average(),
        "python": platform.python_version(),
        "softhsm": _command_version(["softhsm2-util", "--version"]),
        "openssl": _command_version(["openssl", "version"]),
        "poppler_pdfsig": _command_version(["pdfsig", "-v"]),
        "packages": {name: _package_version(name) for name in PACKAGES},
    }
