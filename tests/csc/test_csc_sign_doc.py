"""CSC v2 signatures/signDoc: a whole PDF signed PAdES B-T with a SAD that covers the PDF's SHA-256."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests

from signserver.signing.sample import generate_sample_pdf
from tests.csc.conftest import ECDSA_WITH_SHA256_OID, SHA256_WITH_RSA_OID, CscClient, assert_csc_error
from tests.harness import Client
from tests.verifiers import pdfsig_signatures, pyhanko_validate


def document_entry(pdf: bytes, sign_algo: str, **extra: Any) -> dict[str, Any]:
    return {"document": base64.b64encode(pdf).decode(), "signature_format": "P", "conformance_level": "Ades-B-T",
            "signAlgo": sign_algo, **extra}


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return generate_sample_pdf(tmp_path_factory.mktemp("csc-sign-doc") / "in.pdf").read_bytes()


@pytest.fixture(scope="module")
def sign_doc_answers(client: Client, csc: CscClient, ec_official: dict, sample_pdf: bytes,
                     tmp_path_factory: pytest.TempPathFactory) -> dict[str, requests.Response]:
    """Authorize the sample PDF's SHA-256, then send another PDF, then the sample PDF.

    The calls follow each other here because the test server's SADs live 3 seconds.
    """
    other_pdf = generate_sample_pdf(tmp_path_factory.mktemp("csc-sign-doc-other") / "other.pdf",
                                    dossier_code="000.00.01.H01-261204-0555").read_bytes()
    credential_id = ec_official["credential_id"]
    sad = csc.sad("v2", credential_id, [hashlib.sha256(sample_pdf).digest()],
                  client.otp.next(ec_official["totp_secret"]))
    answers = {}
    for name, pdf in (("other_document", other_pdf), ("signed", sample_pdf)):
        answers[name] = csc.call("v2", "signatures/signDoc", {
            "credentialID": credential_id, "SAD": sad, "documents": [document_entry(pdf, ECDSA_WITH_SHA256_OID)]})
    return answers


@pytest.fixture(scope="module")
def signed_doc(sign_doc_answers: dict[str, requests.Response], tmp_path_factory: pytest.TempPathFactory) -> Path:
    response = sign_doc_answers["signed"]
    assert response.status_code == 200, response.text
    output = tmp_path_factory.mktemp("csc-sign-doc-out") / "signed.pdf"
    output.write_bytes(base64.b64decode(response.json()["DocumentWithSignature"][0]))
    return output


def test_sign_doc_pdfsig_valid(signed_doc: Path, nss_db: Path) -> None:
    signatures = pdfsig_signatures(signed_doc, nss_db)
    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw


def test_sign_doc_pyhanko_b_t(signed_doc: Path, demo_root: Path) -> None:
    results = pyhanko_validate(signed_doc, demo_root)
    assert results[0]["valid"]
    assert results[0]["timestamp_valid"]


def test_sign_doc_other_document_rejected(sign_doc_answers: dict[str, requests.Response]) -> None:
    body = assert_csc_error(sign_doc_answers["other_document"], 400, "invalid_request")
    assert body["error_description"].startswith("Hash is not authorized by the SAD")


@pytest.mark.parametrize(("field", "value"), [
    ("signature_format", "C"),
    ("conformance_level", "Ades-B-LTV"),
    ("signAlgo", "1.2.840.113549.1.1.10"),
    ("signed_envelope_property", "Certification"),
])
def test_sign_doc_unsupported_option_rejected(csc: CscClient, rsa_official: dict, sample_pdf: bytes, field: str,
                                              value: str) -> None:
    entry = document_entry(sample_pdf, SHA256_WITH_RSA_OID, **{field: value})
    response = csc.call("v2", "signatures/signDoc", {
        "credentialID": rsa_official["credential_id"], "SAD": "unused", "documents": [entry]})
    body = assert_csc_error(response, 400, "invalid_request")
    assert body["error_description"].startswith(f"Invalid parameter {field}")


def test_sign_doc_unknown_level_lists_levels(csc: CscClient, rsa_official: dict, sample_pdf: bytes) -> None:
    entry = document_entry(sample_pdf, SHA256_WITH_RSA_OID, conformance_level="Ades-T")
    response = csc.call("v2", "signatures/signDoc", {
        "credentialID": rsa_official["credential_id"], "SAD": "unused", "documents": [entry]})
    body = assert_csc_error(response, 400, "invalid_request")
    assert "Ades-B-B, Ades-B-T, Ades-B-LT, Ades-B-LTA" in body["error_description"]


def test_sign_doc_mixed_levels_rejected(csc: CscClient, rsa_official: dict, sample_pdf: bytes) -> None:
    entries = [document_entry(sample_pdf, SHA256_WITH_RSA_OID),
               document_entry(sample_pdf, SHA256_WITH_RSA_OID, conformance_level="Ades-B-LT")]
    response = csc.call("v2", "signatures/signDoc", {
        "credentialID": rsa_official["credential_id"], "SAD": "unused", "documents": entries})
    body = assert_csc_error(response, 400, "invalid_request")
    assert body["error_description"].startswith("Invalid parameter conformance_level")
