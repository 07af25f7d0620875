"""``POST /api/v1/validations`` on the session server: documents the service signed, tampered copies, CMS files.

PAdES and detached CAdES requests at every level, and an attached CAdES
request, are approved in one batch with one OTP code, signed in the HSM and
downloaded.
Integrity verdicts are checked against pdfsig and ``openssl cms -verify``,
and every response against the report schema of the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from signserver.config import PROJECT_ROOT
from tests.certomancer_pki import CertomancerPki
from tests.harness import Client, Server, run_cli
from tests.signing import report_samples
from tests.signing.conftest import write_pdf
from tests.verifiers import pdfsig_signatures

XML_DOCUMENT = "<HoSo><MaHoSo>000.00.01.H01-261204-0099</MaHoSo><TenThuTuc>Cấp giấy xác nhận</TenThuTuc></HoSo>\n"


LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")


@dataclass(frozen=True)
class SignedByService:
    directory: Path
    # B-T, the default level, for the tampering tests.
    pdf: Path
    pdf_by_level: dict[str, Path]
    content: Path
    detached_by_level: dict[str, Path]
    attached: Path

    @property
    def detached(self) -> Path:
        return self.detached_by_level["B-T"]


@pytest.fixture(scope="module")
def signed_by_service(client: Client, tmp_path_factory: pytest.TempPathFactory) -> SignedByService:
    """PAdES and detached CAdES at every level, and attached CAdES B-T, approved in one batch."""
    directory = tmp_path_factory.mktemp("validations")
    source = write_pdf(directory / "source.pdf", 1)
    content = directory / "to-khai.xml"
    content.write_text(XML_DOCUMENT, encoding="utf-8")

    submissions = {}
    for level in LEVELS:
        submissions[f"pdf-{level}"] = client.submit(source, level=level)
        submissions[f"detached-{level}"] = client.submit(content.read_bytes(), filename="to-khai.xml",
                                                         format="cades", level=level)
    submissions["attached"] = client.submit(content.read_bytes(), filename="to-khai.xml", format="cades",
                                            level="B-T", cades_packaging="attached")
    for name, response in submissions.items():
        assert response.status_code == 201, f"{name}: {response.text}"
    request_ids = {name: response.json()["id"] for name, response in submissions.items()}

    official = client.official(0)
    approved = client.approve(client.login(0), list(request_ids.values()), client.otp.next(official["totp_secret"]))
    assert approved.status_code == 201, approved.text

    outputs = {}
    for name, request_id in request_ids.items():
        final = client.wait_final(request_id)
        assert final["state"] == "signed", final
        outputs[name] = client.download(request_id, directory / f"{name}.signed")
    return SignedByService(
        directory=directory,
        pdf=outputs["pdf-B-T"],
        pdf_by_level={level: outputs[f"pdf-{level}"] for level in LEVELS},
        content=content,
        detached_by_level={level: outputs[f"detached-{level}"] for level in LEVELS},
        attached=outputs["attached"],
    )


@pytest.fixture(scope="module")
def report_schema() -> jsonschema.protocols.Validator:
    document = yaml.safe_load((PROJECT_ROOT / "signserver" / "openapi.yaml").read_text(encoding="utf-8"))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("openapi", resource)
    schema = {"$ref": "openapi#/components/schemas/ValidationReport"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _validate(client: Client, file: Path | bytes, *, content: Path | None = None, metadata: dict | None = None,
              headers: dict[str, str] | None = None, language: str = "vi") -> requests.Response:
    files: dict[str, Any] = {"file": ("file", file.read_bytes() if isinstance(file, Path) else file,
                                      "application/octet-stream")}
    if content is not None:
        files["content"] = ("content", content.read_bytes(), "application/octet-stream")
    if metadata is not None:
        files["metadata"] = (None, json.dumps(metadata), "application/json")
    return requests.post(f"{client.url}/api/v1/validations", files=files,
                         headers=headers if headers is not None else client.app_headers(language), timeout=120)


def _report(response: requests.Response, schema: jsonschema.protocols.Validator) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    report = response.json()
    schema.validate(report)
    return report


@pytest.mark.parametrize("level", LEVELS)
def test_validation_service_signed_pdf(client: Client, signed_by_service: SignedByService, nss_db: Path,
                                       report_schema, level: str) -> None:
    pdf = signed_by_service.pdf_by_level[level]

    report = _report(_validate(client, pdf), report_schema)

    signature = report["signatures"][0]
    assert report["indication"] == "TOTAL-PASSED"
    assert signature["indication"] == "TOTAL-PASSED"
    assert signature["level"] == level
    assert signature["format"] == "PAdES"
    assert signature["coverage"]["scope"] in ("entire_document", "earlier_revision")
    assert signature["chain"]["trusted"] is True
    assert signature["revocation"]["status"] in ("good", "not_applicable")
    assert report["summary"]["vi"].startswith("Hợp lệ")
    assert report["summary"]["en"].startswith("Valid")
    assert pdfsig_signatures(pdf, nss_db)[0].signature_valid is True


@pytest.mark.parametrize("level", LEVELS)
def test_validation_service_signed_cades(client: Client, server: Server, signed_by_service: SignedByService,
                                         report_schema, level: str) -> None:
    signature_file = signed_by_service.detached_by_level[level]

    report = _report(_validate(client, signature_file, content=signed_by_service.content), report_schema)

    [signature] = report["signatures"]
    assert signature["indication"] == "TOTAL-PASSED"
    assert signature["level"] == level
    assert signature["format"] == "CAdES"
    assert _openssl_verifies(signature_file, signed_by_service.content, server, signed_by_service.directory) is True


def test_validation_cades_b_lt_revocation_embedded(client: Client, signed_by_service: SignedByService,
                                                   report_schema) -> None:
    report = _report(_validate(client, signed_by_service.detached_by_level["B-LT"],
                               content=signed_by_service.content), report_schema)

    assert report["signatures"][0]["revocation"]["status"] == "good"
    assert report["signatures"][0]["revocation"]["source"] == "embedded"


def test_validation_byte_changed(client: Client, signed_by_service: SignedByService, nss_db: Path,
                                 report_schema) -> None:
    tampered = report_samples.flip_signed_byte(signed_by_service.pdf, signed_by_service.directory / "byte.pdf")

    report = _report(_validate(client, tampered), report_schema)

    [signature] = report["signatures"]
    assert signature["indication"] == "TOTAL-FAILED"
    assert signature["sub_indication"] == "HASH_FAILURE"
    assert signature["integrity"]["digest_matches"] is False
    assert pdfsig_signatures(tampered, nss_db)[0].signature_valid is False


def test_validation_appended_bytes(client: Client, signed_by_service: SignedByService, nss_db: Path,
                                   report_schema) -> None:
    tampered = report_samples.append_bytes(signed_by_service.pdf, signed_by_service.directory / "appended.pdf")

    report = _report(_validate(client, tampered), report_schema)

    [signature] = report["signatures"]
    assert signature["coverage"]["scope"] != "entire_document"
    assert signature["coverage"]["unsigned_trailing_bytes"] > 0
    assert report["indication"] != "TOTAL-PASSED"
    assert signature["integrity"]["digest_matches"] is True
    [pdfsig] = pdfsig_signatures(tampered, nss_db)[:1]
    assert pdfsig.signature_valid is True
    assert pdfsig.total_document_signed is False


def test_validation_page_added(client: Client, signed_by_service: SignedByService, nss_db: Path,
                               report_schema) -> None:
    tampered = report_samples.add_page_incrementally(signed_by_service.pdf, signed_by_service.directory / "page.pdf")

    report = _report(_validate(client, tampered), report_schema)

    signature = report["signatures"][0]
    assert signature["modifications"]["allowed"] is False
    assert signature["modifications"]["level"] == "other"
    assert signature["indication"] == "TOTAL-FAILED"
    assert report["indication"] == "TOTAL-FAILED"
    assert pdfsig_signatures(tampered, nss_db)[0].signature_valid is True


def _openssl_verifies(signature: Path, content: Path | None, server: Server, directory: Path) -> bool:
    chain = directory / "chain.pem"
    chain.write_text((server.home / "pki" / "issuing-ca.pem").read_text() + (server.home / "demo-root.pem").read_text())
    command = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature),
               "-CAfile", str(chain), "-purpose", "any", "-out", "/dev/null"]
    if content is not None:
        command += ["-content", str(content)]
    return subprocess.run(command, capture_output=True, timeout=60).returncode == 0


def test_validation_cades_detached_with_content(client: Client, server: Server, signed_by_service: SignedByService,
                                                report_schema) -> None:
    report = _report(_validate(client, signed_by_service.detached, content=signed_by_service.content), report_schema)

    [signature] = report["signatures"]
    assert signature["indication"] == "TOTAL-PASSED"
    assert signature["format"] == "CAdES"
    assert signature["level"] == "B-T"
    assert report["document"]["content"] == "detached_file"
    assert _openssl_verifies(signed_by_service.detached, signed_by_service.content, server,
                             signed_by_service.directory) is True


def test_validation_cades_detached_with_digest(client: Client, signed_by_service: SignedByService,
                                               report_schema) -> None:
    digest = hashlib.sha256(signed_by_service.content.read_bytes()).hexdigest()

    report = _report(_validate(client, signed_by_service.detached,
                               metadata={"digest": digest, "digest_algorithm": "SHA-256"}), report_schema)

    assert report["signatures"][0]["indication"] == "TOTAL-PASSED"
    assert report["document"]["content"] == "detached_digest"


def test_validation_cades_detached_other_content(client: Client, server: Server,
                                                 signed_by_service: SignedByService, report_schema) -> None:
    other = signed_by_service.directory / "other.xml"
    other.write_text(XML_DOCUMENT.replace("0099", "0100"), encoding="utf-8")

    report = _report(_validate(client, signed_by_service.detached, content=other), report_schema)

    assert report["signatures"][0]["sub_indication"] == "HASH_FAILURE"
    assert _openssl_verifies(signed_by_service.detached, other, server, signed_by_service.directory) is False


def test_validation_cades_detached_alone(client: Client, signed_by_service: SignedByService, report_schema) -> None:
    report = _report(_validate(client, signed_by_service.detached), report_schema)

    assert report["signatures"][0]["indication"] == "INDETERMINATE"
    assert report["signatures"][0]["sub_indication"] == "SIGNED_DATA_NOT_FOUND"


def test_validation_cades_attached(client: Client, server: Server, signed_by_service: SignedByService,
                                   report_schema) -> None:
    report = _report(_validate(client, signed_by_service.attached), report_schema)

    [signature] = report["signatures"]
    assert signature["indication"] == "TOTAL-PASSED"
    assert signature["coverage"]["scope"] == "attached_content"
    assert _openssl_verifies(signed_by_service.attached, None, server, signed_by_service.directory) is True


def test_validation_audit_record(client: Client, server: Server, signed_by_service: SignedByService,
                                 auditor_session: str) -> None:
    response = _validate(client, signed_by_service.pdf)
    assert response.status_code == 200, response.text
    sha256 = hashlib.sha256(signed_by_service.pdf.read_bytes()).hexdigest()

    listing = run_cli(server.home, "audit", "list", "--json", session=auditor_session)
    assert listing.returncode == 0, listing.stderr
    records = [r for r in json.loads(listing.stdout)
               if r["action"] == "document_validated" and r["document_sha256"] == sha256]
    assert records
    record = records[-1]
    assert record["actor_type"] == "application"
    assert record["actor_id"] == client.credentials["application"]["id"]
    assert record["details"]["indication"] == "TOTAL-PASSED"
    assert record["details"]["kind"] == "pdf"
    assert set(record["details"]) == {"kind", "indication", "signatures"}


def test_validation_official_session(client: Client, signed_by_service: SignedByService, report_schema) -> None:
    headers = {"Authorization": f"Bearer {client.login(0)}"}

    report = _report(_validate(client, signed_by_service.pdf, headers=headers), report_schema)

    assert report["indication"] == "TOTAL-PASSED"


def test_validation_requires_authentication(client: Client, signed_by_service: SignedByService) -> None:
    response = _validate(client, signed_by_service.pdf, headers={})

    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_validation_wrong_api_key(client: Client, signed_by_service: SignedByService) -> None:
    response = _validate(client, signed_by_service.pdf, headers={"Authorization": "Bearer ssk_wrong"})

    assert response.status_code == 401


def test_validation_body_limit(client: Client) -> None:
    # The session server allows 8 MiB (tests/conftest.py).
    response = _validate(client, b"%PDF-1.7\n" + b"0" * (9 * 1024 * 1024))

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_validation_not_multipart(client: Client) -> None:
    response = requests.post(f"{client.url}/api/v1/validations", data=b"%PDF-1.7",
                             headers={**client.app_headers(), "Content-Type": "application/pdf"}, timeout=30)

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_validation_file_part_missing(client: Client, signed_by_service: SignedByService) -> None:
    response = requests.post(f"{client.url}/api/v1/validations", headers=client.app_headers(), timeout=30,
                             files={"content": ("content", signed_by_service.content.read_bytes())})

    assert response.status_code == 400
    assert response.json()["code"] == "validation_file_missing"


def test_validation_unrecognized_file(client: Client, signed_by_service: SignedByService) -> None:
    vietnamese = _validate(client, signed_by_service.content)
    english = _validate(client, signed_by_service.content, language="en")

    assert vietnamese.status_code == 400
    assert vietnamese.json()["code"] == "validation_document_unrecognized"
    assert vietnamese.json()["detail"].startswith("Tệp không phải PDF")
    assert english.json()["detail"].startswith("The file is neither a PDF")


def test_validation_digest_not_hex(client: Client, signed_by_service: SignedByService) -> None:
    response = _validate(client, signed_by_service.detached, metadata={"digest": "xyz"})

    assert response.status_code == 400
    assert response.json()["code"] == "field_invalid"


def test_validation_content_and_digest_together(client: Client, signed_by_service: SignedByService) -> None:
    digest = hashlib.sha256(signed_by_service.content.read_bytes()).hexdigest()

    response = _validate(client, signed_by_service.detached, content=signed_by_service.content,
                         metadata={"digest": digest})

    assert response.status_code == 400
    assert response.json()["code"] == "validation_content_unexpected"


def test_validation_unsigned_pdf(client: Client, signed_by_service: SignedByService, report_schema) -> None:
    report = _report(_validate(client, signed_by_service.directory / "source.pdf"), report_schema)

    assert report["indication"] == "NO_SIGNATURE"
    assert report["signatures"] == []


def test_validation_keeps_no_upload(client: Client, server: Server, signed_by_service: SignedByService) -> None:
    response = _validate(client, signed_by_service.detached, content=signed_by_service.content)
    assert response.status_code == 200, response.text

    directory = server.home / "documents" / "validations"
    assert list(directory.iterdir()) == []


def test_validation_leaves_event_loop_free(client: Client, certomancer_pki: CertomancerPki,
                                           tmp_path: Path) -> None:
    # pyHanko's difference analysis of a page added to a 4000-page signed
    # document takes seconds of CPU, which must not stall other requests.
    signed = asyncio.run(report_samples.sign_with_pyhanko(certomancer_pki, write_pdf(tmp_path / "big.pdf", 4000),
                                                          tmp_path / "big-signed.pdf"))
    changed = report_samples.add_page_incrementally(signed, tmp_path / "big-changed.pdf")
    latencies: list[float] = []

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        started = time.monotonic()
        validation = executor.submit(_validate, client, changed)
        while not validation.done() and time.monotonic() - started < 120:
            before = time.monotonic()
            assert requests.get(f"{client.url}/healthz", timeout=30).status_code == 200
            latencies.append(time.monotonic() - before)
            time.sleep(0.05)
        response = validation.result()
        duration = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert response.json()["signatures"][0]["modifications"]["allowed"] is False
    assert duration > 1.0
    assert len(latencies) >= 5
    assert max(latencies) < duration / 2


@pytest.mark.corpus
def test_validation_corpus_encrypted_pdf(client: Client, corpus_dir: Path, report_schema) -> None:
    path = corpus_dir / "pyhanko-minimal-aes256.pdf"

    without = _validate(client, path)
    with_password = _validate(client, path, metadata={"password": "usersecret"})

    assert without.status_code == 422
    assert without.json()["code"] == "pdf_password_required"
    assert _report(with_password, report_schema)["indication"] == "NO_SIGNATURE"


@pytest.mark.corpus
def test_validation_corpus_signed_pdf(client: Client, corpus_dir: Path, nss_db: Path, report_schema) -> None:
    path = corpus_dir / "qpdf-digitally-signed.pdf"

    report = _report(_validate(client, path), report_schema)

    [signature] = report["signatures"]
    assert signature["signer"]["common_name"] == "John Doe"
    assert signature["integrity"]["digest_matches"] is True
    assert signature["sub_indication"] == "NO_CERTIFICATE_CHAIN_FOUND"
    assert pdfsig_signatures(path, nss_db)[0].signature_valid is True
