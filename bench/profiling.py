"""Profiles of the service's processes with py-spy, summarised by function.

``py-spy record --format raw`` writes collapsed stacks, one line per
distinct stack: frames from the root to the leaf separated by ``;``, a space
and the number of samples. With ``--subprocesses`` (py-spy 0.4) the first
frames name the process and its parents, such as
``process 7541:"... serve";process 7642:"... signserver.workers ..."``. The summary counts, for each function, its own samples (it was the
leaf) and its total samples (it was anywhere on the stack, once per stack).
py-spy leaves out idle threads by default, so the samples are of threads
that were running Python code or a native call.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Profile", "ProfileRecorder", "py_spy_path", "summarise_collapsed"]

SAMPLE_RATE = 200  # samples per second and process
TOP_FUNCTIONS = 15
# Seconds py-spy is given to attach before the measured load starts.
ATTACH_SECONDS = 1.0

_COUNT_SUFFIX = re.compile(r"^(.*) (\d+)$")
_PROCESS_FRAME = re.compile(r"^process \d+")
# Frames of the project's code end with "(signserver/FILE:LINE)" or "(hsm/FILE:LINE)"; the workers.py and
# app.py entry points are on every stack and tell nothing.
_PROJECT_FRAME = re.compile(r"\((signserver|hsm)/(?!workers\.py|app\.py)[^)]*\)$")


def py_spy_path() -> str | None:
    """Return py-spy next to the running interpreter (the project's virtualenv), else on PATH, else None."""
    import sys

    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@dataclass
class Profile:
    """A summary of one recording: the top functions by own and by total samples."""

    figure: str
    samples: int
    own: list[tuple[str, int]]
    total: list[tuple[str, int]]
    processes: int
    # The project's own functions (signserver/, hsm/) with the most total samples.
    project: list[tuple[str, int]] = field(default_factory=list)
    error: str | None = None

    def as_text(self) -> str:
        if self.error is not None:
            return f"Profile of {self.figure}: not recorded. {self.error}\n"
        lines = [f"Profile of {self.figure}: {self.samples} samples at {SAMPLE_RATE} Hz over {self.processes} "
                 "process(es) of the service (py-spy record --subprocesses; idle threads left out)", "",
                 f"Top {len(self.own)} functions by own samples (the function was running):"]
        lines += [f"  {count:7d}  {100 * count / max(1, self.samples):5.1f}%  {name}" for name, count in self.own]
        lines += ["", f"Top {len(self.total)} functions by total samples (the function was on the stack):"]
        lines += [f"  {count:7d}  {100 * count / max(1, self.samples):5.1f}%  {name}" for name, count in self.total]
        lines += ["", f"Top {len(self.project)} functions of signserver/ and hsm/ by total samples:"]
        lines += [f"  {count:7d}  {100 * count / max(1, self.samples):5.1f}%  {name}" for name, count in self.project]
        return "\n".join(lines) + "\n"

    def share(self, count: int) -> float:
        return count / self.samples if self.samples else 0.0


def summarise_collapsed(figure: str, text: str, top: int = TOP_FUNCTIONS) -> Profile:
    """Summarise py-spy's collapsed stacks ``text`` into the top functions by own and total samples."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    project: collections.Counter[str] = collections.Counter()
    processes = set()
    samples = 0
    for line in text.splitlines():
        match = _COUNT_SUFFIX.match(line.strip())
        if not match:
            continue
        stack, count = match.group(1), int(match.group(2))
        frames = [frame for frame in stack.split(";") if frame]
        # A child's stack starts with its parent's process frame, then its own.
        process = None
        while frames and _PROCESS_FRAME.match(frames[0]):
            process = frames[0].split(":")[0]
            frames = frames[1:]
        if process is not None:
            processes.add(process)
        # The thread's frame is a root too ("thread (0x...)") in some py-spy versions.
        frames = [frame for frame in frames if not frame.startswith("thread (")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
            if _PROJECT_FRAME.search(frame):
                project[frame] += count
    return Profile(figure, samples, own.most_common(top), total.most_common(top), max(1, len(processes)),
                   project.most_common(top))


class ProfileRecorder:
    """``py-spy record`` of a process and its children for a fixed duration, started before the load."""

    def __init__(self, pid: int, seconds: float, output: Path, figure: str) -> None:
        self.pid = pid
        self.seconds = seconds
        self.output = output
        self.figure = figure
        self.process: subprocess.Popen[str] | None = None
        self.error: str | None = None

    def __enter__(self) -> "ProfileRecorder":
        executable = py_spy_path()
        if executable is None:
            self.error = "py-spy is not installed (pip install '.[bench]')."
            return self
        command = [executable, "record", "--format", "raw", "--pid", str(self.pid), "--subprocesses",
                   "--duration", str(max(1, round(self.seconds))), "--rate", str(SAMPLE_RATE), "--nonblocking",
                   "-o", str(self.output)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(ATTACH_SECONDS)
        if self.process.poll() is not None:
            self.error = self._failure()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.error is None and (self.process.returncode != 0 or not self.output.exists()):
            self.error = self._failure()

    def _failure(self) -> str:
        assert self.process is not None
        output = self.process.stdout.read() if self.process.stdout else ""
        return (f"py-spy exited with {self.process.returncode}: {output.strip()[-600:]} "
                "(py-spy needs ptrace permission on the service's processes)")

    def profile(self) -> Profile:
        if self.error is not None or not self.output.exists():
            return Profile(self.figure, 0, [], [], 0, error=self.error or "py-spy wrote no output")
        return summarise_collapsed(self.figure, self.output.read_text(encoding="utf-8", errors="replace"))
