"""A ``signserver serve`` on loopback that can be killed with SIGKILL, whole or one worker at a time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.harness import SIGNSERVER, Server, service_env

__all__ = ["KillableServer", "ServiceNotReady"]


class ServiceNotReady(RuntimeError):
    """The service exited at start-up, or /readyz did not return 200 in time."""


@dataclass
class KillableServer(Server):
    """A harness server started in a session of its own, so one signal reaches the supervisor and every worker.

    ``Server.start`` leaves the service in the caller's process group, where
    ``os.killpg`` would also kill the caller.
    """

    def start(self, timeout: float = 120) -> "KillableServer":
        self.log_path = self.home / f"server-{self.port}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [SIGNSERVER, "serve"], env=service_env(self.home, self.port, **self.extra_env),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        last_answer = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceNotReady(f"server exited with {self.process.returncode}: {self.log_tail()}")
            try:
                response = requests.get(f"{self.url}/readyz", timeout=2)
                if response.status_code == 200:
                    return self
                last_answer = f"{response.status_code} {response.text[:300]}"
            except requests.RequestException as exc:
                # Refused until the first worker listens. /readyz may also time out while the HSM opens.
                last_answer = str(exc)[:300]
            time.sleep(0.2)
        stacks = self.python_stacks()
        self.kill_group()
        raise ServiceNotReady(f"server not ready after {timeout} s; last /readyz answer: {last_answer}\n"
                           f"{stacks}\nlog tail: {self.log_tail()}")

    def python_stacks(self) -> str:
        """Return the Python stacks of the service's processes from ``py-spy dump``, or why there are none."""
        assert self.process is not None
        py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if py_spy is None:
            return "py-spy not found on PATH or beside the Python interpreter: no stacks"
        dumps = []
        for pid in [self.process.pid, *self.worker_pids()]:
            result = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
            dumps.append(f"py-spy dump of {pid}:\n{result.stdout}{result.stderr}")
        return "\n".join(dumps)

    def kill_group(self) -> None:
        """Send SIGKILL to the supervisor and every worker at once, and reap the supervisor."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self._wait_group_gone(timeout=30)

    def kill_worker(self, choice: int) -> int | None:
        """Send SIGKILL to worker number ``choice`` (modulo their count); return its pid, or None without workers.

        The supervisor starts the worker again, without the start-up recovery.
        """
        workers = sorted(self.worker_pids())
        if not workers:
            return None
        victim = workers[choice % len(workers)]
        os.kill(victim, signal.SIGKILL)
        return victim

    def worker_pids(self) -> list[int]:
        """Return the pids of the supervisor's child processes, read from the parent pid field of /proc/PID/stat."""
        assert self.process is not None
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may contain spaces, so the fields are read after the last ')'.
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                children.append(int(entry.name))
        return children

    def stop_group(self, timeout: float = 90) -> int | None:
        """Stop the service with SIGTERM as an operator would, then SIGKILL whatever is left of its group.

        The supervisor gets SIGKILL too if it has not exited within ``timeout`` seconds. Returns its exit code.
        """
        code = self.stop(signal.SIGTERM, timeout=timeout)
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait_group_gone(timeout=30)
        return code

    def _wait_group_gone(self, timeout: float) -> None:
        """Wait until no process of the service's group is left, since the next start needs the data directory's lock."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"processes of group {self.process.pid} still run {timeout} s after SIGKILL; "
                           f"list them with `ps -g {self.process.pid}`")
