"""The service under test: a fresh data directory, ``signserver serve`` as a subprocess, and its processes.

The data directory is initialised with the benchmark's key policy
(bench/policy). The server's environment names only that directory, so the
benchmark never touches ``var/`` or another running service.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BenchHome", "Credential", "Service", "free_port", "init_home", "service_processes", "PROJECT_ROOT"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = PROJECT_ROOT / "bench" / "policy"
# The console script of the environment that runs the benchmark (the project's .venv under `make bench`).
SIGNSERVER = Path(sys.executable).with_name("signserver")
PKCS11_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "signserver"

# The service's settings during a run (README, "Configuration"). SIGNSERVER_WORKERS sets the number
# of worker processes on one port, and a service without that setting ignores it.
SERVER_SETTINGS = {
    "SIGNSERVER_WORKERS": "2",
    "SIGNSERVER_LOG_FORMAT": "json",
    # Larger than any SAD of a run: the CSC authorization of one SAD is limited to this many hashes.
    "SIGNSERVER_MAX_BATCH_SIZE": "20000",
    "SIGNSERVER_SAD_TTL_SECONDS": "1800",
    # Room for the 100 MiB PDF of the memory figure and its multipart framing.
    "SIGNSERVER_MAX_BODY_BYTES": str(128 * 1024 * 1024),
}
READY_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 60
INIT_TIMEOUT_SECONDS = 240


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Credential:
    """A signing credential of the data directory: its HSM key and certificate."""

    id: str
    key_type: str  # RSA | EC
    key_size: int
    key_id_hex: str  # CKA_ID
    certificate_der: bytes
    chain_pem: str


@dataclass
class BenchHome:
    """An initialised data directory, the port its certificates name, and its demo accounts."""

    home: Path
    port: int
    demo_credentials: dict[str, Any]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def softhsm_conf(self) -> Path:
        return self.home / "softhsm2.conf"

    def user_pin(self) -> str:
        return (self.home / "secrets" / "hsm-user-pin").read_text().strip()

    def environment(self, **extra: str) -> dict[str, str]:
        """Return this process's environment without any SIGNSERVER_ variable, plus this directory's."""
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("SIGNSERVER_") and name != "SOFTHSM2_CONF"}
        env.update(SIGNSERVER_HOME=str(self.home), SIGNSERVER_PORT=str(self.port),
                   SIGNSERVER_POLICIES_DIR=str(POLICY_DIR), SOFTHSM2_CONF=str(self.softhsm_conf))
        env.update(extra)
        return env

    def credential(self, credential_id: str) -> Credential:
        """Read a credential's key and certificate from the store (SQLite, read-only)."""
        with sqlite3.connect(f"file:{self.home / 'signserver.db'}?mode=ro", uri=True) as database:
            row = database.execute(
                "SELECT id, key_type, key_size, key_id_hex, certificate_der, chain_pem FROM credentials WHERE id = ?",
                (credential_id,),
            ).fetchone()
        if row is None:
            raise LookupError(f"credential {credential_id!r} not found in {self.home / 'signserver.db'}")
        return Credential(*row)

    def official_for(self, credential_id: str) -> dict[str, Any]:
        """Return the demo official (username, password, totp_secret) whose personal key is ``credential_id``."""
        for official in self.demo_credentials["officials"]:
            if official["credential_id"] == credential_id:
                return official
        raise LookupError(f"no demo official found for credential {credential_id!r} in demo-credentials.json")


def init_home(home: Path, log_path: Path) -> BenchHome:
    """Run ``signserver init`` in the empty directory ``home`` with the benchmark's key policy."""
    port = free_port()
    bench_home = BenchHome(home, port, {})
    with log_path.open("ab") as log:
        subprocess.run([str(SIGNSERVER), "init"], env=bench_home.environment(), stdout=log,
                       stderr=subprocess.STDOUT, check=True, timeout=INIT_TIMEOUT_SECONDS)
    bench_home.demo_credentials = json.loads((home / "demo-credentials.json").read_text(encoding="utf-8"))
    return bench_home


class Service:
    """``signserver serve`` on a data directory, in its own process group, logging to a file."""

    def __init__(self, home: BenchHome, log_path: Path) -> None:
        self.home = home
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        # Where this start's output begins in the log, which earlier starts may have written to.
        self._log_offset = 0

    @property
    def pid(self) -> int:
        assert self.process is not None, "service not started"
        return self.process.pid

    def start(self) -> "Service":
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SIGNSERVER), "serve"], env=self.home.environment(**SERVER_SETTINGS), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"signserver serve exited with {self.process.returncode}; "
                                   f"log: {self.log_tail()}")
            if _ready(f"{self.home.url}/readyz") and self._all_workers_serving():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"signserver serve not ready within {READY_TIMEOUT_SECONDS} s; log: {self.log_tail()}")

    def _all_workers_serving(self) -> bool:
        """Return False while a service with worker processes has not logged that each of them serves.

        /readyz returns 200 once the first worker serves, while the others may
        still be starting, so a run that began then would measure fewer
        workers than configured. A service without workers logs none of
        these events.
        """
        # NOTE: this reads the supervisor's log events (signserver/workers.py): "workers.ready" once per
        # worker, or "workers.serving" once for all in an earlier version. Renaming them breaks this wait.
        log = self.log_path.read_bytes()[self._log_offset:] if self.log_path.exists() else b""
        if b'"workers.started"' not in log:
            return True
        return b'"workers.serving"' in log or log.count(b'"workers.ready"') >= int(SERVER_SETTINGS["SIGNSERVER_WORKERS"])

    def stop(self) -> int | None:
        """Send SIGTERM and wait; kill the process group if it has not stopped within the timeout."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode

    def log_tail(self, size: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-size:].decode(errors="replace")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def service_processes(root_pid: int) -> list[int]:
    """Return ``root_pid`` and all its descendants, found by the parent ids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue  # the process ended meanwhile
        # The command name in brackets may contain spaces; the fields after its closing bracket do not.
        fields = text[text.rindex(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found = [root_pid]
    position = 0
    while position < len(found):
        found.extend(children.get(found[position], []))
        position += 1
    return found
