"""CSC v2 signatures/signDoc with SHA-384 and SHA-512: the hash that signAlgo names signs the PDF."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
import requests

from signserver.signing.sample import generate_sample_pdf
from tests.csc.conftest import SHA256_WITH_RSA_OID, CscClient, assert_csc_error
from tests.harness import Client
from tests.verifiers import pdfsig_signatures

SHA384_WITH_RSA_OID = "1.2.840.113549.1.1.12"
SHA512_WITH_RSA_OID = "1.2.840.113549.1.1.13"


def _entry(pdf: bytes, sign_algo: str) -> dict[str, str]:
    return {"document": base64.b64encode(pdf).decode(), "signature_format": "P", "conformance_level": "Ades-B-T",
            "signAlgo": sign_algo}


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return generate_sample_pdf(tmp_path_factory.mktemp("csc-sign-doc-digest") / "in.pdf",
                               dossier_code="000.00.01.H01-261204-0384").read_bytes()


@pytest.fixture(scope="module")
def signed_sha384(client: Client, csc: CscClient, rsa_official: dict, sample_pdf: bytes,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    credential_id = rsa_official["credential_id"]
    # The SAD binds the PDF by its SHA-256, whatever hash signs it.
    sad = csc.sad("v2", credential_id, [hashlib.sha256(sample_pdf).digest()],
                  client.otp.next(rsa_official["totp_secret"]))
    response = csc.call("v2", "signatures/signDoc", {
        "credentialID": credential_id, "SAD": sad, "documents": [_entry(sample_pdf, SHA384_WITH_RSA_OID)]})
    assert response.status_code == 200, response.text
    output = tmp_path_factory.mktemp("csc-sign-doc-digest-out") / "signed.pdf"
    output.write_bytes(base64.b64decode(response.json()["DocumentWithSignature"][0]))
    return output


def test_sign_doc_sha384_verified_by_pdfsig(signed_sha384: Path, nss_db: Path) -> None:
    signatures = pdfsig_signatures(signed_sha384, nss_db)

    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert "Signing Hash Algorithm: SHA-384" in signatures[0].raw


def test_sign_doc_mixed_hashes_rejected(csc: CscClient, rsa_official: dict, sample_pdf: bytes) -> None:
    response: requests.Response = csc.call("v2", "signatures/signDoc", {
        "credentialID": rsa_official["credential_id"], "SAD": "unused",
        "documents": [_entry(sample_pdf, SHA256_WITH_RSA_OID), _entry(sample_pdf, SHA512_WITH_RSA_OID)]})

    body = assert_csc_error(response, 400, "invalid_request")
    assert body["error_description"].startswith("Invalid parameter signAlgo")
