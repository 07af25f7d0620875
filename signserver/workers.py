"""Several worker processes serving one port (``SIGNSERVER_WORKERS`` > 1).

``signserver serve`` binds the listening socket itself, then starts each
worker as a fresh interpreter (``python -m signserver.workers``) that inherits
the socket. The kernel hands each new connection to one of the processes
waiting in accept. A worker loads the PKCS#11 module and logs in on its own,
so no PKCS#11 state crosses a process boundary, and each worker signs on its
own core: the module is not called from two threads of one process (see
:mod:`hsm.library`).

Worker 0 starts first and alone. It fails requests that a crash left in
``signing`` and queues the approved ones again, and only when it is ready
do the others start, so no worker is signing while that recovery runs. It
also runs the expiry sweeper. A worker that exits is started again, without
the recovery, because the other workers are signing meanwhile; repeated
exits stop the service. SIGTERM or SIGINT is passed on to every worker,
which finishes its signatures in flight before it exits.

Prometheus counters are kept per process in ``$SIGNSERVER_HOME/run/metrics``
and summed by ``/metrics`` (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import mmap
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from prometheus_client import multiprocess

from signserver.config import Settings

__all__ = ["WorkerRole", "serve_with_workers", "metrics_dir"]

log = structlog.get_logger(__name__)

# A worker that has not reported ready within this time is stopped. Migrations run
# before it starts, so its start-up only opens the HSM, the database and the TSA.
READY_TIMEOUT_SECONDS = 120
# More exits than this within RESTART_WINDOW_SECONDS stop the whole service.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
# Pause before starting a worker again, so a failing HSM is not hammered.
RESTART_DELAY_SECONDS = 1.0
# Workers get this long after SIGTERM to finish in-flight signatures (aiohttp's shutdown_timeout is 60 s).
STOP_TIMEOUT_SECONDS = 75.0
POLL_SECONDS = 0.2
# Connections the kernel queues for the workers to accept.
LISTEN_BACKLOG = 1024
# Maximum time a worker leaves a new connection to the worker whose turn it is before taking it.
DEFER_SECONDS = 0.02


@dataclass(frozen=True)
class WorkerRole:
    """The duties of one worker process besides serving requests."""

    index: int = 0
    # Fail requests left in signing and queue the approved ones: only before any other worker serves.
    recover: bool = True
    # Run the sweeper that expires requests past their deadline.
    sweep: bool = True
    # A pipe to write one byte to once the worker serves.
    ready_fd: int | None = None


def metrics_dir(settings: Settings) -> Path:
    return settings.run_dir / "metrics"


class DataDirectoryBusy(Exception):
    """Another ``signserver serve`` process serves this data directory."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def lock_data_directory(settings: Settings) -> int:
    """Take the data directory for this service, or raise DataDirectoryBusy; return the lock's descriptor.

    A second service on the same directory would fail the first one's
    requests in ``signing`` as interrupted at its start-up, sign requests
    from its queue and reset its metrics, even if it then found its port
    taken. The lock is an flock(2) of ``run/serve.lock``; workers inherit the
    descriptor, so the lock lasts until the last process of the service ends.
    """
    path = settings.run_dir / "serve.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 64, 0).decode("ascii", "replace").strip() or "?"
        os.close(descriptor)
        raise DataDirectoryBusy(holder) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    os.set_inheritable(descriptor, True)
    return descriptor


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    ready_read: int | None
    ready: bool = False
    started_at: float = field(default_factory=time.monotonic)


class _Supervisor:
    def __init__(self, settings: Settings, listener: socket.socket, lock_descriptor: int) -> None:
        self.settings = settings
        self.listener = listener
        self.lock_descriptor = lock_descriptor
        self.workers: dict[int, _Worker] = {}
        self.stop_signal: int | None = None
        self.restarts: list[float] = []
        metrics = metrics_dir(settings)
        # Counters of an earlier run must not be added to this one's.
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        # The accept counts of an earlier run would skew the turns.
        (metrics.parent / "accept-turns").unlink(missing_ok=True)
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}

    def start(self, index: int, *, recover: bool) -> _Worker:
        ready_read, ready_write = os.pipe()
        command = [sys.executable, "-m", "signserver.workers", "--listen-fd", str(self.listener.fileno()),
                   "--index", str(index), "--ready-fd", str(ready_write)]
        if recover:
            command.append("--recover")
        process = subprocess.Popen(command, env=self.env, pass_fds=(self.listener.fileno(), ready_write, self.lock_descriptor))
        os.close(ready_write)
        worker = _Worker(index, process, ready_read)
        self.workers[index] = worker
        log.info("workers.started", index=index, pid=process.pid, recover=recover)
        return worker

    def wait_ready(self, worker: _Worker) -> bool:
        """Wait until ``worker`` reports ready; False when it exited, did not report in time, or a stop came."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while self.stop_signal is None and worker.ready_read is not None:
            if time.monotonic() > deadline:
                log.error("workers.not_ready", index=worker.index, pid=worker.process.pid,
                          timeout_seconds=READY_TIMEOUT_SECONDS)
                return False
            self._read_ready_pipes(POLL_SECONDS)
        return worker.ready_read is None and worker.ready

    def _read_ready_pipes(self, timeout: float) -> None:
        """Note the workers that reported ready; a pipe that ends without the byte means the worker exited first."""
        pending = {worker.ready_read: worker for worker in self.workers.values() if worker.ready_read is not None}
        if not pending:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(pending), [], [], timeout)
        for descriptor in readable:
            worker = pending[descriptor]
            worker.ready = os.read(descriptor, 1) == b"1"
            os.close(descriptor)
            worker.ready_read = None
            if worker.ready:
                log.info("workers.ready", index=worker.index, pid=worker.process.pid)

    def run(self) -> int:
        first = self.start(0, recover=True)
        if not self.wait_ready(first):
            # The first worker's own message (an ambiguous token, a wrong PIN...) is on standard error already.
            return self.stop_all(failed=None if self.stop_signal is not None else first)
        for index in range(1, self.settings.workers):
            self.start(index, recover=False)

        while self.stop_signal is None:
            self._read_ready_pipes(POLL_SECONDS)
            for index, worker in list(self.workers.items()):
                code = worker.process.poll()
                if code is None and worker.ready_read is not None \
                        and time.monotonic() - worker.started_at > READY_TIMEOUT_SECONDS:
                    log.error("workers.not_ready", index=index, pid=worker.process.pid,
                              timeout_seconds=READY_TIMEOUT_SECONDS)
                    worker.process.kill()
                    code = worker.process.wait()
                if code is None or self.stop_signal is not None:
                    continue
                log.error("workers.exited", index=index, pid=worker.process.pid, exit_code=code)
                # Its gauges (signserver_hsm_up) must not outlive it in /metrics.
                multiprocess.mark_process_dead(worker.process.pid, self.env["PROMETHEUS_MULTIPROC_DIR"])
                if worker.ready_read is not None:
                    os.close(worker.ready_read)
                    worker.ready_read = None
                if not self._may_restart():
                    log.error("workers.too_many_exits", restarts=len(self.restarts),
                              window_seconds=RESTART_WINDOW_SECONDS)
                    return self.stop_all(exit_code=1)
                time.sleep(RESTART_DELAY_SECONDS)
                self.start(index, recover=False)
        return self.stop_all(exit_code=0)

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self.restarts = [moment for moment in self.restarts if now - moment < RESTART_WINDOW_SECONDS]
        self.restarts.append(now)
        return len(self.restarts) <= MAX_RESTARTS

    def stop_all(self, *, failed: _Worker | None = None, exit_code: int = 0) -> int:
        """Send SIGTERM to every worker, wait for them, and return the service's exit code."""
        signal_number = self.stop_signal if self.stop_signal is not None else signal.SIGTERM
        for worker in self.workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal_number)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for worker in self.workers.values():
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("workers.killed", index=worker.index, pid=worker.process.pid)
                worker.process.kill()
                worker.process.wait()
        for worker in self.workers.values():
            if worker.ready_read is not None:
                os.close(worker.ready_read)
                worker.ready_read = None
        if failed is not None:
            code = failed.process.returncode
            # A worker killed by a signal has a negative return code; the service then exits with 1.
            return code if code and code > 0 else 1
        return exit_code


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind ``host:port``, raising OSError when the port is taken (no SO_REUSEPORT, so it is never shared).

    The socket is not listening yet: connections are refused, as with one
    process, until the first worker is ready and starts listening on it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener


def serve_with_workers(settings: Settings, lock_descriptor: int) -> int:
    """Run ``settings.workers`` worker processes on one port until SIGTERM or SIGINT; return the exit code."""
    from signserver.app import say_port_taken
    from signserver.store.migrate import upgrade_to_head

    try:
        listener = bind_listener(settings.host, settings.port)
    except OSError as exc:
        say_port_taken(settings, exc)
        return 1
    # Once, before any worker opens the database.
    upgrade_to_head(settings.database_url)
    supervisor = _Supervisor(settings, listener, lock_descriptor)

    def on_signal(number: int, _frame: object) -> None:
        supervisor.stop_signal = number

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return supervisor.run()
    finally:
        listener.close()


class AcceptTurns:
    """Connections each worker has accepted, in a small file that every worker maps into memory.

    The workers take turns: the next connection belongs to worker
    ``sum of all counts % workers``. Each worker writes only its own slot.
    """

    SLOT = struct.Struct("<q")

    def __init__(self, path: Path, workers: int, index: int) -> None:
        size = self.SLOT.size * workers
        with path.open("a+b") as file:
            if file.seek(0, os.SEEK_END) < size:
                file.truncate(size)
            self._map = mmap.mmap(file.fileno(), size)
        self.workers = workers
        self.index = index
        self._accepted = 0
        self.SLOT.pack_into(self._map, index * self.SLOT.size, 0)

    def is_mine(self) -> bool:
        total = sum(self.SLOT.unpack_from(self._map, other * self.SLOT.size)[0] for other in range(self.workers))
        return total % self.workers == self.index

    def took_one(self) -> None:
        self._accepted += 1
        self.SLOT.pack_into(self._map, self.index * self.SLOT.size, self._accepted)


class SharedListener(socket.socket):
    """The inherited listening socket, with new connections dealt to the workers in turn.

    Every waiting worker wakes when a connection arrives, and the one
    already running won the accept, so one worker took every connection of
    a client's pool and the other cores stayed idle. Here a worker accepts
    only on its turn (:class:`AcceptTurns`). A connection whose worker has
    not taken it within DEFER_SECONDS, because that worker is busy, stuck or
    gone, goes to the next worker that calls accept. The workers serve with an
    asyncio backlog of 1, so each wake-up accepts one connection, and
    ``listen`` keeps the kernel's queue at LISTEN_BACKLOG.
    """

    turns: AcceptTurns | None = None
    _deferring_since: float | None = None

    def listen(self, _backlog: int = 0) -> None:
        super().listen(LISTEN_BACKLOG)

    def accept(self) -> tuple[socket.socket, object]:
        turns = self.turns
        if turns is not None and not turns.is_mine():
            now = time.monotonic()
            if self._deferring_since is None:
                self._deferring_since = now
            if now - self._deferring_since < DEFER_SECONDS:
                raise BlockingIOError
        self._deferring_since = None
        connection, address = super().accept()
        if turns is not None:
            turns.took_one()
        return connection, address


def _exit_with_supervisor() -> None:
    """Ask Linux to send SIGTERM to this worker when the supervisor dies, even by SIGKILL."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:
        # The supervisor died before prctl took effect.
        raise SystemExit(1)


def _worker_main(argv: list[str] | None = None) -> int:
    _exit_with_supervisor()
    parser = argparse.ArgumentParser(prog="signserver-worker")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--recover", action="store_true")
    args = parser.parse_args(argv)

    from signserver.app import run_serving
    from signserver.logging import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_format, logging.INFO)
    structlog.contextvars.bind_contextvars(worker=args.index)
    listener = SharedListener(fileno=args.listen_fd)
    listener.turns = AcceptTurns(metrics_dir(settings).parent / "accept-turns", settings.workers, args.index)
    role = WorkerRole(index=args.index, recover=args.recover, sweep=args.index == 0, ready_fd=args.ready_fd)
    return run_serving(settings, role, sock=listener)


if __name__ == "__main__":
    sys.exit(_worker_main())
