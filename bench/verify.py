"""Checks of the outputs with tools that share no code with the service: pdfsig, qpdf and OpenSSL.

pdfsig (poppler, with NSS) must report every signature of a PDF as
"Signature is Valid." and its certificate as "Certificate is Trusted." against
an NSS database that trusts only the demo root. poppler checks OCSP for
certificates that name a responder, which for the demo certificates is the
service's own demo CA on loopback, so these checks run while it serves.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

__all__ = ["make_nss_trust_db", "pdfsig_check", "qpdf_check", "openssl_ts_verify"]

# pdfsig's verdicts as poppler 22.12 prints them.
PDFSIG_SIGNATURE_VALID = "Signature is Valid."
PDFSIG_CERTIFICATE_TRUSTED = "Certificate is Trusted."
# qpdf exits with 0 on success and 3 when it found only warnings.
QPDF_ACCEPTED_EXIT_CODES = (0, 3)
TOOL_TIMEOUT_SECONDS = 300

_SIGNATURE_HEADER = re.compile(r"^Signature #\d+:$", re.MULTILINE)


def make_nss_trust_db(directory: Path, root_pem: Path) -> Path:
    """Create an NSS database in ``directory`` that trusts ``root_pem`` for signing (trust flags ",C,")."""
    directory.mkdir(parents=True, exist_ok=True)
    database = f"sql:{directory}"
    _run(["certutil", "-N", "-d", database, "--empty-password"])
    _run(["certutil", "-A", "-d", database, "-n", "demo-root", "-t", ",C,", "-i", str(root_pem)])
    return directory


def pdfsig_check(pdf: Path, nss_dir: Path, expected_signatures: int = 1) -> str:
    """Return pdfsig's report of ``pdf``; raise RuntimeError unless each signature is valid and trusted."""
    result = subprocess.run(["pdfsig", "-nssdir", f"sql:{nss_dir}", str(pdf)], capture_output=True, text=True,
                            timeout=TOOL_TIMEOUT_SECONDS)
    report = result.stdout + result.stderr
    signatures = len(_SIGNATURE_HEADER.findall(report))
    if signatures != expected_signatures:
        raise RuntimeError(f"pdfsig found {signatures} signature(s) in {pdf.name}, expected {expected_signatures}: "
                           f"{report[-800:]}")
    valid = report.count(PDFSIG_SIGNATURE_VALID)
    trusted = report.count(PDFSIG_CERTIFICATE_TRUSTED)
    if valid != signatures or trusted != signatures:
        raise RuntimeError(f"pdfsig reports {valid} valid and {trusted} trusted of {signatures} signature(s) in "
                           f"{pdf.name}: {report[-800:]}")
    return report


def qpdf_check(pdf: Path) -> None:
    """Raise RuntimeError unless ``qpdf --check`` finds no error in ``pdf``."""
    result = subprocess.run(["qpdf", "--check", str(pdf)], capture_output=True, text=True,
                            timeout=TOOL_TIMEOUT_SECONDS)
    if result.returncode not in QPDF_ACCEPTED_EXIT_CODES:
        raise RuntimeError(f"qpdf --check {pdf.name} failed with exit code {result.returncode}: "
                           f"{(result.stdout + result.stderr)[-800:]}")


def openssl_ts_verify(response: Path, digest_hex: str, ca_file: Path) -> None:
    """Raise RuntimeError unless ``openssl ts -verify`` accepts the time-stamp response for the SHA-256 digest."""
    result = subprocess.run(["openssl", "ts", "-verify", "-digest", digest_hex, "-in", str(response),
                             "-CAfile", str(ca_file)], capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS)
    if result.returncode != 0 or "Verification: OK" not in result.stdout:
        raise RuntimeError(f"openssl ts -verify of {response.name} failed: {(result.stdout + result.stderr)[-800:]}")


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:2])} failed with exit code {result.returncode}: "
                           f"{(result.stdout + result.stderr)[-500:]}")
