"""Kill loop: SIGKILL the service again and again under a steady load of sign requests, then check every promise.

Run it as ``python -m tests.reliability.crash_loop --kills 20 --store sqlite
--report reports/crash-test.json``. It initialises a fresh data directory,
starts ``signserver serve`` on a free loopback port, and starts client
threads that submit seal requests (which the demo policy signs without
approval) and CSC signHash calls. Each round waits a random time, then sends
SIGKILL to the whole service or, when it runs two worker processes, to one
worker, and starts the service again on the same directory and port.

At the end it waits until no request is approved or signing, then checks
these promises:

- no request is stuck in ``approved`` or ``signing``;
- every signed document and CSC signature a client received is in the audit trail;
- no idempotency key or request produced two signatures;
- interrupted requests are failed as ``signing_interrupted``, with no output left;
- ``signserver audit verify`` passes, and every signature verifies (pdfsig for PDFs).

The JSON report lists the counts and every broken promise. The exit code
is 0 only when all of them held.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from signserver.signing.sample import generate_sample_pdf
from tests.harness import CLI_OTP_VALID_SECONDS, OtpCodes, free_port, init_home, run_cli
from tests.postgres import database_url_for_home
from tests.verifiers import make_nss_trust_db

from .checks import Findings, check_run, wait_until_settled
from .load import CscLoad, Ledger, SealLoad
from .service import KillableServer, ServiceNotReady

__all__ = ["CrashLoopOptions", "run_crash_loop", "main"]

# Short, so that the requests of a killed worker are failed within seconds by another worker of the service.
SERVICE_ENV = {
    "SIGNSERVER_INSTANCE_LEASE_SECONDS": "5",
    "SIGNSERVER_HEARTBEAT_SECONDS": "1",
    "SIGNSERVER_LOG_FORMAT": "json",
}
# Server log events counted in the report, by event name.
RECOVERY_EVENTS = ("sign_request.recovered_as_failed", "sign_request.claim_lost", "sign_request.signing_postponed",
                   "instance.reregistered", "workers.exited")


@dataclass
class CrashLoopOptions:
    kills: int = 20
    store: str = "sqlite"
    seal_threads: int = 3
    csc: bool = True
    # Every N-th start of the service runs two worker processes. With 0, every start runs one process.
    two_workers_every: int = 3
    min_wait_seconds: float = 0.3
    max_wait_seconds: float = 3.0
    # Time allowed after the last restart for every request to reach a final state.
    settle_seconds: float = 120.0
    # The kill loop stops early, with fewer kills, once it has run this long.
    max_loop_seconds: float = 1200.0
    seed: int | None = None
    # Directory for the data directory, the downloads and the server log. None creates one under /tmp.
    workdir: Path | None = None
    # Keep the work directory even when every check passed.
    keep: bool = False


@dataclass
class Round:
    number: int
    wait_seconds: float
    kind: str  # "group" (the whole service) or "worker" (one worker process)
    workers: int
    killed_pid: int | None = None
    restart_seconds: float | None = None


@dataclass
class _Run:
    options: CrashLoopOptions
    seed: int
    rng: random.Random
    workdir: Path
    home: Path
    port: int
    database_url: str
    credentials: dict[str, Any]
    server: KillableServer | None = None
    starts: int = 0
    starts_with_two_workers: int = 0
    rounds: list[Round] = field(default_factory=list)


def run_crash_loop(options: CrashLoopOptions) -> dict[str, Any]:
    """Run the kill loop and its checks; return the report, whose ``passed`` is True only if every promise held.

    A start of the service that fails ends the loop: the report then carries
    the error, the checks that need no running service, and ``passed`` False.
    """
    started = time.monotonic()
    run = _prepare(options)
    ledger = Ledger()
    stop = threading.Event()
    loads: list[SealLoad | CscLoad] = []
    start_error: str | None = None
    try:
        _start_service(run)
        loads = _start_loads(run, ledger, stop)
        try:
            _kill_rounds(run, started)
        except ServiceNotReady as exc:
            start_error = str(exc)

        _stop_loads(loads, stop, options.settle_seconds if start_error is None else 0)
        unsettled = wait_until_settled(run.database_url, options.settle_seconds if start_error is None else 0)
        # The certificates name the service's demo OCSP responder, which pdfsig queries, so the service must still run.
        nss_dir = None if start_error else make_nss_trust_db(run.workdir / "nss", run.home / "demo-root.pem")
        findings = check_run(run.database_url, ledger, nss_dir)
        assert run.server is not None
        run.server.stop_group()
        audit_verify = _audit_verify(run)
    finally:
        stop.set()
        if run.server is not None and run.server.process is not None and run.server.process.poll() is None:
            run.server.kill_group()

    report = _report(run, ledger, findings, audit_verify, unsettled, time.monotonic() - started, start_error)
    if report["passed"] and not options.keep:
        shutil.rmtree(run.workdir, ignore_errors=True)
    return report


def _stop_loads(loads: list[SealLoad | CscLoad], stop: threading.Event, grace_seconds: float) -> None:
    """Stop new submissions and let each seal client wait up to ``grace_seconds`` for its requests' final states."""
    for load in loads:
        if isinstance(load, SealLoad):
            load.give_up_at = time.monotonic() + grace_seconds
    stop.set()
    for load in loads:
        load.join(timeout=grace_seconds + 60)


def _prepare(options: CrashLoopOptions) -> _Run:
    seed = options.seed if options.seed is not None else int.from_bytes(os.urandom(4), "big")
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="signserver-crash-"))
    home = workdir / "home"
    home.mkdir(parents=True)
    (workdir / "downloads").mkdir()
    port = free_port()
    if options.store == "postgresql":
        database_url = database_url_for_home(home)
    else:
        database_url = f"sqlite+aiosqlite:///{home / 'signserver.db'}"
    credentials = init_home(home, port, SIGNSERVER_DATABASE_URL=database_url)
    return _Run(options, seed, random.Random(seed), workdir, home, port, database_url, credentials)


def _start_service(run: _Run) -> float:
    """Start the service, with two workers on every ``two_workers_every``-th start; return the seconds it took."""
    every = run.options.two_workers_every
    workers = 2 if every and run.starts % every == every - 1 else 1
    run.starts += 1
    if workers == 2:
        run.starts_with_two_workers += 1
    env = {**SERVICE_ENV, "SIGNSERVER_DATABASE_URL": run.database_url, "SIGNSERVER_WORKERS": str(workers)}
    began = time.monotonic()
    # Assigned before the start, so that run_crash_loop's clean-up also reaches a service that failed to start.
    run.server = KillableServer(run.home, run.port, env)
    run.server.start()
    return time.monotonic() - began


def _start_loads(run: _Run, ledger: Ledger, stop: threading.Event) -> list[SealLoad | CscLoad]:
    assert run.server is not None
    document = generate_sample_pdf(run.workdir / "bien-nhan.pdf").read_bytes()
    loads: list[SealLoad | CscLoad] = [
        SealLoad(index, run.server.url, run.credentials["application"]["api_key"], document, ledger,
                 run.workdir / "downloads", stop, seed=run.seed)
        for index in range(run.options.seal_threads)
    ]
    if run.options.csc:
        loads.append(CscLoad(run.server.url, run.credentials["application"], run.credentials["officials"], ledger,
                             stop))
    for load in loads:
        load.start()
    return loads


def _kill_rounds(run: _Run, started: float) -> None:
    options = run.options
    for number in range(1, options.kills + 1):
        if time.monotonic() - started > options.max_loop_seconds:
            break
        wait = run.rng.uniform(options.min_wait_seconds, options.max_wait_seconds)
        time.sleep(wait)
        assert run.server is not None
        workers = int(run.server.extra_env["SIGNSERVER_WORKERS"])
        previous = run.rounds[-1].kind if run.rounds else None
        # The supervisor stops the service after 5 worker exits within 60 s, so worker kills never come twice in a row.
        if workers == 2 and previous != "worker" and run.rng.random() < 0.5:
            round_ = Round(number, round(wait, 2), "worker", workers, killed_pid=run.server.kill_worker(run.rng.randrange(2)))
        else:
            killed_pid = run.server.process.pid if run.server.process else None
            run.server.kill_group()
            round_ = Round(number, round(wait, 2), "group", workers, killed_pid=killed_pid)
            round_.restart_seconds = round(_start_service(run), 2)
        run.rounds.append(round_)


def _audit_verify(run: _Run) -> dict[str, Any]:
    """Log in as the demo auditor and run ``signserver audit verify``; return its exit code and output."""
    auditor = run.credentials["auditors"][0]
    store = {"SIGNSERVER_DATABASE_URL": run.database_url}
    code = OtpCodes().next(auditor["totp_secret"], valid_for=CLI_OTP_VALID_SECONDS)
    login = run_cli(run.home, "login", "--user", auditor["username"], "--otp", code,
                    SIGNSERVER_PASSWORD=auditor["password"], **store)
    if login.returncode != 0:
        return {"passed": False, "exit_code": None, "output": f"auditor login failed: {login.stderr.strip()}"}
    result = run_cli(run.home, "audit", "verify", session=login.stdout.strip(), **store)
    return {"passed": result.returncode == 0, "exit_code": result.returncode,
            "output": (result.stdout + result.stderr).strip()[-2000:]}


def _server_log_events(run: _Run) -> dict[str, Any]:
    """Count the recovery events of every start in the server log, and the requests queued again at start-up."""
    counts: Counter = Counter()
    resumed = 0
    log_path = run.home / f"server-{run.port}.log"
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        name = event.get("event")
        if name in RECOVERY_EVENTS:
            counts[name] += 1
        elif name == "signserver.started":
            resumed += int(event.get("resumed") or 0)
        if event.get("level") == "error":
            counts["errors"] += 1
    return {"approved_requeued_at_start": resumed, **dict(counts)}


def _report(run: _Run, ledger: Ledger, findings: Findings, audit_verify: dict[str, Any], unsettled: int,
            duration: float, start_error: str | None) -> dict[str, Any]:
    kinds = Counter(round_.kind for round_ in run.rounds)
    signed = findings.states.get("signed", 0)
    passed = (start_error is None and not findings.lost and not findings.duplicated and not findings.stuck
              and audit_verify["passed"] and not findings.invalid_signatures and not findings.recovery_faults
              and signed > 0)
    return {
        "passed": passed,
        "start_error": start_error,
        "store": run.options.store,
        "seed": run.seed,
        "duration_seconds": round(duration, 1),
        "kills": len(run.rounds),
        "kills_requested": run.options.kills,
        "kills_by_kind": dict(kinds),
        "restarts": kinds.get("group", 0),
        "starts_with_two_workers": run.starts_with_two_workers,
        "requests": {
            "idempotency_keys_submitted": ledger.keys_submitted,
            "created": sum(findings.states.values()),
            "states": findings.states,
            "signed": signed,
            "failed_by_reason": findings.failed_by_reason,
            "interrupted_recovered": findings.interrupted_recovered,
            "unsettled_after_wait": unsettled,
            "retries_after_error": ledger.retries_after_error,
            "responses_lost_request_stored": ledger.responses_lost_request_stored,
            "repeats_after_final": ledger.repeats_after_final,
            "keys_without_request": ledger.keys_without_request,
            "unfinished_for_client": len(ledger.requests_unfinished),
        },
        "signatures": {
            "documents_downloaded": len(ledger.downloads),
            "pdf_signatures_checked": findings.pdf_signatures_checked,
            "csc_authorizations": ledger.csc_authorizations,
            "csc_signatures_received": len(ledger.csc_signatures),
            "csc_signatures_checked": findings.csc_signatures_checked,
            "csc_calls_without_response": ledger.csc_calls_without_response,
        },
        "client_errors": {
            # Expected while the service is down: the service was killed or was starting again.
            "connection": dict(ledger.connection_errors),
            "http": dict(ledger.http_errors),
        },
        "server_log": _server_log_events(run),
        "counts": {"lost": len(findings.lost), "duplicated": len(findings.duplicated), "stuck": len(findings.stuck),
                   "invalid_signatures": len(findings.invalid_signatures),
                   "recovery_faults": len(findings.recovery_faults)},
        "lost": findings.lost,
        "duplicated": findings.duplicated,
        "stuck": findings.stuck,
        "invalid_signatures": findings.invalid_signatures,
        "recovery_faults": findings.recovery_faults,
        "anomalies": ledger.anomalies,
        "audit_verify": audit_verify,
        "rounds": [asdict(round_) for round_ in run.rounds],
        "workdir": None if passed and not run.options.keep else str(run.workdir),
    }


def _print_summary(report: dict[str, Any], report_path: Path) -> None:
    counts = report["counts"]
    requests = report["requests"]
    verdict_vi = "ĐẠT" if report["passed"] else "KHÔNG ĐẠT"
    verdict_en = "PASSED" if report["passed"] else "FAILED"
    print(f"Kiểm thử sập tiến trình: {verdict_vi}. {report['kills']} lần SIGKILL, {requests['created']} yêu cầu ký, "
          f"{requests['signed']} đã ký, {requests['interrupted_recovered']} bị gián đoạn đã khôi phục, "
          f"{report['signatures']['csc_signatures_received']} chữ ký CSC; mất {counts['lost']}, trùng "
          f"{counts['duplicated']}, kẹt {counts['stuck']}. Báo cáo: {report_path}")
    print(f"Crash test: {verdict_en}. {report['kills']} SIGKILLs, {requests['created']} sign requests, "
          f"{requests['signed']} signed, {requests['interrupted_recovered']} interrupted and recovered, "
          f"{report['signatures']['csc_signatures_received']} CSC signatures; lost {counts['lost']}, duplicated "
          f"{counts['duplicated']}, stuck {counts['stuck']}. Report: {report_path}")
    if report["workdir"]:
        print(f"Thư mục làm việc được giữ lại / Work directory kept: {report['workdir']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.crash_loop", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="number of SIGKILL rounds (default 20)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="store of the data directory; postgresql starts a cluster of its own under /tmp")
    parser.add_argument("--report", type=Path, default=Path("reports/crash-test.json"),
                        help="path of the JSON report (default reports/crash-test.json)")
    parser.add_argument("--seal-threads", type=int, default=3, help="client threads submitting seal requests")
    parser.add_argument("--no-csc", action="store_true", help="leave out the CSC signHash client")
    parser.add_argument("--two-workers-every", type=int, default=3,
                        help="every N-th start of the service runs two worker processes; 0 for never (default 3)")
    parser.add_argument("--seed", type=int, help="seed of the random waits and kill kinds, to repeat a run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory even when every check passed")
    args = parser.parse_args(argv)
    if args.kills < 0:
        parser.error(f"--kills must be 0 or more, not {args.kills}")

    options = CrashLoopOptions(kills=args.kills, store=args.store, seal_threads=args.seal_threads, csc=not args.no_csc,
                               two_workers_every=args.two_workers_every, seed=args.seed, keep=args.keep)
    report = run_crash_loop(options)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _print_summary(report, args.report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
