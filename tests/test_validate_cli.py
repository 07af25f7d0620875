"""``signserver validate FILE``: the report on the command line, its exit codes and its JSON.

The data directory contains only the certomancer root as ``pki/root.pem``: the
command needs no HSM, database or server. The samples are signed by pyHanko
and ``openssl cms`` against the certomancer PKI, whose OCSP responder and
TSA run on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certomancer_pki import CertomancerPki
from tests.harness import SIGNSERVER, service_env
from tests.signing import report_samples
from tests.signing.conftest import write_pdf


@dataclass(frozen=True)
class CliSamples:
    home: Path
    signed: Path
    tampered: Path
    unsigned: Path
    content: Path
    detached: Path


@pytest.fixture(scope="module")
def cli_samples(certomancer_pki: CertomancerPki, tmp_path_factory: pytest.TempPathFactory) -> CliSamples:
    directory = tmp_path_factory.mktemp("validate-cli")
    home = directory / "home"
    (home / "pki").mkdir(parents=True)
    certomancer_pki.write_pem("root", home / "pki" / "root.pem")

    unsigned = write_pdf(directory / "unsigned.pdf", 1)
    signed = asyncio.run(report_samples.sign_with_pyhanko(certomancer_pki, unsigned, directory / "signed.pdf",
                                                          level="B-LT"))
    tampered = report_samples.flip_signed_byte(signed, directory / "tampered.pdf")
    content = directory / "to-khai.xml"
    content.write_text("<HoSo><MaHoSo>000.00.01.H01-261204-0099</MaHoSo></HoSo>\n", encoding="utf-8")
    detached = report_samples.openssl_cms_sign(certomancer_pki, content, directory / "to-khai.p7s")
    return CliSamples(home, signed, tampered, unsigned, content, detached)


def _validate(samples: CliSamples, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIGNSERVER, "validate", *map(str, args)], env=service_env(samples.home),
                          capture_output=True, text=True, timeout=120)


def test_validate_cli_valid_pdf(cli_samples: CliSamples) -> None:
    result = _validate(cli_samples, cli_samples.signed)

    assert result.returncode == 0, result.stderr
    vietnamese = result.stdout.index("BÁO CÁO KIỂM TRA CHỮ KÝ SỐ")
    english = result.stdout.index("DIGITAL SIGNATURE VALIDATION REPORT")
    assert vietnamese < english
    assert "Chữ ký hợp lệ: Lê Văn Hùng" in result.stdout[:english]
    assert "Mức chữ ký: B-LT" in result.stdout[:english]
    assert "Valid signature: Lê Văn Hùng" in result.stdout[english:]
    assert "Level: B-LT" in result.stdout[english:]


def test_validate_cli_json(cli_samples: CliSamples) -> None:
    result = _validate(cli_samples, cli_samples.signed, "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["indication"] == "TOTAL-PASSED"
    assert report["signatures"][0]["level"] == "B-LT"
    assert report["signatures"][0]["revocation"]["source"] == "embedded"
    assert report["document"]["sha256"] == hashlib.sha256(cli_samples.signed.read_bytes()).hexdigest()


def test_validate_cli_tampered_exits_1(cli_samples: CliSamples) -> None:
    result = _validate(cli_samples, cli_samples.tampered, "--json")

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["signatures"][0]["sub_indication"] == "HASH_FAILURE"


def test_validate_cli_unsigned_exits_1(cli_samples: CliSamples) -> None:
    result = _validate(cli_samples, cli_samples.unsigned)

    assert result.returncode == 1
    assert "Tài liệu không có chữ ký số nào." in result.stdout
    assert "The document contains no digital signature." in result.stdout


def test_validate_cli_detached_cms_with_content(cli_samples: CliSamples) -> None:
    result = _validate(cli_samples, cli_samples.detached, "--content", cli_samples.content, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["document"]["content"] == "detached_file"


def test_validate_cli_detached_cms_with_digest(cli_samples: CliSamples) -> None:
    digest = hashlib.sha256(cli_samples.content.read_bytes()).hexdigest()

    result = _validate(cli_samples, cli_samples.detached, "--digest", digest, "--digest-algorithm", "sha256")

    assert result.returncode == 0, result.stderr


def test_validate_cli_detached_cms_without_content(cli_samples: CliSamples) -> None:
    result = _validate(cli_samples, cli_samples.detached, "--json")

    assert result.returncode == 1
    assert json.loads(result.stdout)["signatures"][0]["sub_indication"] == "SIGNED_DATA_NOT_FOUND"


def test_validate_cli_missing_file_exits_2(cli_samples: CliSamples) -> None:
    result = _validate(cli_samples, cli_samples.home / "absent.pdf")

    assert result.returncode == 2
    assert "Không tìm thấy tệp" in result.stderr


def test_validate_cli_unrecognized_file_exits_2(cli_samples: CliSamples) -> None:
    result = _validate(cli_samples, cli_samples.content)

    assert result.returncode == 2
    assert "Tệp không phải PDF" in result.stderr
    assert "neither a PDF" in result.stderr


def test_validate_cli_bad_digest_exits_2(cli_samples: CliSamples) -> None:
    result = _validate(cli_samples, cli_samples.detached, "--digest", "not-hex")

    assert result.returncode == 2


def test_validate_cli_content_and_digest_exclusive(cli_samples: CliSamples) -> None:
    result = _validate(cli_samples, cli_samples.detached, "--content", cli_samples.content, "--digest", "00")

    assert result.returncode == 2


def test_validate_cli_uninitialised_home_exits_2(cli_samples: CliSamples, tmp_path: Path) -> None:
    result = subprocess.run([SIGNSERVER, "validate", str(cli_samples.signed)], env=service_env(tmp_path),
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert "signserver init" in result.stderr


@pytest.mark.corpus
def test_validate_cli_encrypted_pdf(cli_samples: CliSamples, corpus_dir: Path) -> None:
    path = corpus_dir / "pyhanko-minimal-aes256.pdf"

    without = _validate(cli_samples, path)
    with_password = _validate(cli_samples, path, "--password", "usersecret")

    assert without.returncode == 2
    assert "--password" in without.stderr
    assert with_password.returncode == 1
    assert "Tài liệu không có chữ ký số nào." in with_password.stdout


@pytest.mark.corpus
def test_validate_cli_corpus_signed_pdf(cli_samples: CliSamples, corpus_dir: Path) -> None:
    result = _validate(cli_samples, corpus_dir / "qpdf-minimal-signed-restricted.pdf", "--json")

    assert result.returncode == 1
    [signature] = json.loads(result.stdout)["signatures"]
    assert signature["signer"]["common_name"] == "Adobe Acrobat Sign"
    assert signature["sub_indication"] == "NO_CERTIFICATE_CHAIN_FOUND"


def test_validate_cli_b_lt_days_later(cli_samples: CliSamples) -> None:
    # libfaketime moves the command's clock two days on: the embedded OCSP responses (valid 10 minutes)
    # are then stale, and the B-LT signature must still validate from them at its time-stamp's time.
    result = subprocess.run(["faketime", "-f", "+2d", SIGNSERVER, "validate", str(cli_samples.signed), "--json"],
                            env=service_env(cli_samples.home), capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    signature = report["signatures"][0]
    assert report["indication"] == "TOTAL-PASSED"
    assert signature["level"] == "B-LT"
    assert signature["timestamp"]["trusted"] is True
    assert signature["revocation"]["status"] == "good"
    assert signature["revocation"]["source"] == "embedded"
