"""Independent verifiers for signed PDFs: poppler's pdfsig and pdftotext, and qpdf."""

from __future__ import annotations

import subprocess
from pathlib import Path


def pdfsig(path: Path, nss_dir: Path, *extra: str) -> str:
    """Return the output of ``pdfsig`` for ``path``, checked against the NSS database."""
    result = subprocess.run(
        ["pdfsig", "-nssdir", f"sql:{nss_dir}", *extra, str(path)], capture_output=True, text=True, check=False
    )
    return result.stdout + result.stderr


def pdfsig_signatures(output: str) -> list[str]:
    """Split pdfsig output into one block per signature, in file order."""
    blocks = output.split("Signature #")[1:]
    return ["Signature #" + block for block in blocks]


def qpdf_check(path: Path, password: str | None = None) -> subprocess.CompletedProcess[str]:
    command = ["qpdf", "--check"]
    if password is not None:
        command.append(f"--password={password}")
    command.append(str(path))
    return subprocess.run(command, capture_output=True, text=True, check=False)


def text_in_box(path: Path, page: int, box: tuple[float, float, float, float], page_height: float) -> str:
    """Extract the text of ``page`` inside ``box`` (PDF points, origin bottom left) with pdftotext.

    pdftotext crops in pixels at 72 dpi from the top left corner, which are
    points, so only the y axis is flipped.
    """
    x1, y1, x2, y2 = box
    result = subprocess.run(
        [
            "pdftotext",
            "-f", str(page), "-l", str(page),
            "-x", str(int(x1)), "-y", str(int(page_height - y2)),
            "-W", str(int(x2 - x1) + 1), "-H", str(int(y2 - y1) + 1),
            "-enc", "UTF-8",
            str(path), "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout
