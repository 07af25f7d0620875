"""One benchmark run, in order: init, the raw limit, start the service, the measurements, profiles, report.

In the full run the raw PKCS#11 loop runs before the service starts, so
nothing else uses the token or the cores meanwhile. The measurements then
run one after the other against the same service, each after a warm-up of
its own.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import structlog

from bench.config import RunConfig
from bench.context import RunContext
from bench.csc_figures import CSC_KEYS, measure_csc_key
from bench.large_pdf import measure_large_pdf
from bench.machine import load_average, machine_info
from bench.pades import measure_pades
from bench.profiling import ATTACH_SECONDS, Profile, ProfileRecorder
from bench.raw_pkcs11 import measure_raw, raw_figures
from bench.report import Report, limit_paragraph
from bench.service import Service, init_home
from bench.tsa import measure_tsa
from bench.verify import make_nss_trust_db

__all__ = ["GROUPS", "run_benchmark"]

log = structlog.get_logger("bench")

# Measurement groups, in the order they run. The raw limit always runs: the other groups compare with it.
GROUPS = ("csc", "tsa", "pades", "memory")
# Average cores used by other processes above which a figure is named in the report's notes.
CONTENTION_CORES = 0.25


async def run_benchmark(config: RunConfig, output_dir: Path, groups: tuple[str, ...], profile_all: bool,
                        profile_failures: bool) -> Report:
    """Run the benchmark and write its report to ``output_dir``; return the report."""
    started = time.monotonic()
    report = Report(machine_info(), datetime.now(timezone.utc).isoformat(timespec="seconds"), config.name)
    work_dir = Path(tempfile.mkdtemp(prefix="signserver-bench-"))
    service: Service | None = None
    try:
        log.info("bench.init", work_dir=str(work_dir))
        home = init_home(work_dir / "home", work_dir / "init.log")

        log.info("bench.raw_pkcs11.started", keys=3, threads=list(config.raw_threads))
        service = Service(home, work_dir / "server.log")
        if config.raw_overlaps_service_start:
            # Both finish before anything is raised, so no start-up goes on unseen by the clean-up below.
            raw_result, start_result = await asyncio.gather(
                asyncio.to_thread(measure_raw, home, config), asyncio.to_thread(service.start),
                return_exceptions=True,
            )
            for outcome in (start_result, raw_result):
                if isinstance(outcome, BaseException):
                    raise outcome
            raw_runs = raw_result
        else:
            raw_runs = measure_raw(home, config)
            service.start()
        figures, baselines = raw_figures(raw_runs)
        report.figures += figures
        log.info("bench.service.ready", pid=service.pid, url=home.url)
        ctx = RunContext(config, home, service, work_dir, output_dir, report,
                         make_nss_trust_db(work_dir / "nssdb", home.home / "demo-root.pem"), baselines)

        await _measure_groups(ctx, groups)
        if profile_all or profile_failures:
            await _profile(ctx, profile_all)
        for figure in report.figures:
            if figure.passed is False and figure.limited_by is None:
                figure.limited_by = limit_paragraph(figure, None)
        _note_contention(report)
    except BaseException as exc:
        report.notes.append(f"The run stopped early: {type(exc).__name__}: {exc}")
        raise
    finally:
        # Logging comes last: a closed standard error must not leave the service or the files behind.
        exit_code = None
        if service is not None:
            exit_code = service.stop()
            if service.log_path.exists():
                output_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(service.log_path, output_dir / "server.log")
        shutil.rmtree(work_dir, ignore_errors=True)
        report.machine["load_average_at_end"] = load_average()
        report.duration_seconds = time.monotonic() - started
        report.write(output_dir)
        log.info("bench.service.stopped", exit_code=exit_code)
    return report


async def _measure_groups(ctx: RunContext, groups: tuple[str, ...]) -> None:
    if "csc" in groups:
        for key in CSC_KEYS:
            log.info("bench.csc.started", key=key)
            ctx.report.figures += await measure_csc_key(ctx, key)
    if "tsa" in groups:
        log.info("bench.tsa.started")
        ctx.report.figures += await measure_tsa(ctx)
    if "pades" in groups:
        log.info("bench.pades.started", documents=[pages for pages, _runs in ctx.config.pades_documents])
        ctx.report.figures += await measure_pades(ctx)
    if "memory" in groups:
        log.info("bench.memory.started", file_bytes=ctx.config.large_pdf_bytes)
        ctx.report.figures += await measure_large_pdf(ctx)


async def _profile(ctx: RunContext, profile_all: bool) -> None:
    """Re-run under py-spy the measurement of each failing figure (or of every figure with a re-run)."""
    for figure in ctx.report.figures:
        if figure.name not in ctx.reruns or not (profile_all or figure.passed is False):
            continue
        rerun, seconds = ctx.reruns[figure.name]
        log.info("bench.profile.started", figure=figure.name, seconds=round(seconds, 1))
        recorder = ProfileRecorder(ctx.service.pid, seconds, ctx.work_dir / f"profile-{figure.name}.collapsed",
                                   figure.name)
        rerun_error = None
        with recorder:
            if recorder.error is None:
                try:
                    # The load stops a little before py-spy does, so the recording covers all of it.
                    await rerun(max(0.5, seconds - ATTACH_SECONDS - 1.0))
                except (RuntimeError, OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    rerun_error = f"the re-run under py-spy failed: {type(exc).__name__}: {exc}"
                    log.error("bench.profile.rerun_failed", figure=figure.name, error=str(exc)[:300])
        profile: Profile = recorder.profile()
        if rerun_error is not None:
            profile.error = rerun_error
        ctx.report.profiles[figure.name] = profile
        if figure.passed is False:
            figure.limited_by = limit_paragraph(figure, profile)


def _note_contention(report: Report) -> None:
    """Add a note naming the figures measured while other processes kept the machine's cores busy."""
    disturbed = [f"{figure.name} ({figure.extra['other_cpu_cores']:.2f})" for figure in report.figures
                 if figure.extra.get("other_cpu_cores", 0.0) > CONTENTION_CORES]
    if disturbed:
        report.notes.append(
            "Other processes of the machine used CPU during these measurements (average cores in brackets), so "
            "their values are lower than on an idle machine. A raw figure measured so lowers the baseline and "
            f"overstates the ratios compared with it: {', '.join(disturbed)}."
        )
