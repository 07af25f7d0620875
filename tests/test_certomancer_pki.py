"""Checks with openssl that the certomancer test PKI serves OCSP responses and CRLs as a CA would."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import requests

from tests.certomancer_pki import ARCH, CertomancerPki


def _ocsp_status(pki: CertomancerPki, label: str, directory: Path) -> str:
    issuer = pki.write_pem("interm", directory / "interm.pem")
    cert = pki.write_pem(label, directory / f"{label}.pem")
    roots = pki.write_pem("root", directory / "root.pem")
    result = subprocess.run(
        ["openssl", "ocsp", "-issuer", str(issuer), "-cert", str(cert), "-url", pki.ocsp_url,
         "-CAfile", str(roots), "-verify_other", str(issuer)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert "Response verify OK" in result.stderr, result.stderr
    return result.stdout.split(f"{cert}: ", 1)[1].split()[0]


def test_ocsp_good_and_revoked(certomancer_pki: CertomancerPki, tmp_path: Path) -> None:
    assert _ocsp_status(certomancer_pki, "signer", tmp_path) == "good"
    assert _ocsp_status(certomancer_pki, "signer-revoked", tmp_path) == "revoked"


def test_crl_lists_revoked_signer(certomancer_pki: CertomancerPki, tmp_path: Path) -> None:
    response = requests.get(f"{certomancer_pki.base_url}/{ARCH}/crls/interm/latest.crl", timeout=10)
    assert response.status_code == 200
    crl_path = tmp_path / "interm.crl"
    crl_path.write_bytes(response.content)
    listing = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(crl_path), "-noout", "-text"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    # Only the serial number lines: the serials are short enough to appear inside the CRL's dates.
    listed = {int(serial, 16) for serial in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", listing)}
    assert certomancer_pki.cert("signer-revoked").serial_number in listed
    assert certomancer_pki.cert("signer").serial_number not in listed


def test_expired_signer_validity(certomancer_pki: CertomancerPki) -> None:
    assert certomancer_pki.cert("signer-expired").not_valid_after.year == 2021
