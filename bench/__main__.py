"""Command line of the benchmark: ``python -m bench [--smoke] [--output DIR] [--profile] [--only GROUP...]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import aiohttp
import structlog

from bench.config import FULL, SMOKE
from bench.runner import GROUPS, run_benchmark
from bench.service import PROJECT_ROOT

DEFAULT_OUTPUT = PROJECT_ROOT / "bench" / "results"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Đo hiệu năng signserver trên một thư mục dữ liệu mới; ghi latest.json và latest.md. "
                    "(Benchmark signserver on a fresh data directory; writes latest.json and latest.md.)",
    )
    parser.add_argument("--smoke", action="store_true",
                        help="tiny counts, to check that every step runs (about 30 s); the figures mean nothing")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, metavar="DIR",
                        help=f"directory of latest.json, latest.md, the profiles and server.log "
                             f"(default {DEFAULT_OUTPUT.relative_to(PROJECT_ROOT)})")
    parser.add_argument("--profile", action="store_true",
                        help="record every measurement again under py-spy, not only those that fail their goal")
    parser.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP",
                        help=f"run only these groups ({', '.join(GROUPS)}); the raw PKCS#11 limit always runs, "
                             "because the other figures are compared with it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    config = SMOKE if arguments.smoke else FULL
    groups = tuple(arguments.only) if arguments.only else GROUPS
    output = arguments.output.resolve()
    try:
        # Failing figures are profiled in the full run only; the smoke run has no time for it.
        report = asyncio.run(run_benchmark(config, output, groups, profile_all=arguments.profile,
                                           profile_failures=not arguments.smoke))
    except (RuntimeError, OSError, LookupError, subprocess.SubprocessError, aiohttp.ClientError,
            asyncio.TimeoutError) as exc:
        print(f"Đo hiệu năng thất bại: {exc}\n  (Benchmark failed: {exc})", file=sys.stderr)
        return 1

    failed = [figure.name for figure in report.figures if figure.passed is False]
    passed = sum(1 for figure in report.figures if figure.passed)
    print(f"Đã ghi {output / 'latest.json'} và latest.md: {len(report.figures)} chỉ số; đạt mục tiêu: {passed}, "
          f"không đạt: {len(failed)}; trong {report.duration_seconds:.0f} giây.\n"
          f"  (Wrote {output / 'latest.json'} and latest.md: {len(report.figures)} figures; goals met: {passed}, "
          f"failed: {len(failed)}; in {report.duration_seconds:.0f} s.)")
    for name in failed:
        print(f"  không đạt / fails: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
