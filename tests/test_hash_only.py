"""Hash-only requests, raw signatures and the digest algorithm choice through the native API over HTTP.

The application sends only a digest (or, for a raw signature, a file the
service hashes). Each official approves their requests in one batch with one
TOTP code, the HSM signs, and OpenSSL, which did not make the results,
verifies them against the original file that the service never saw. The
last tests check the decoding of the digest field without the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from signserver.core.signature_options import parse_signature_options
from signserver.signing.sample import generate_sample_pdf
from tests.harness import Client, Server
from tests.verifiers import openssl_cms_print, openssl_cms_verify, pdfsig_signatures

ORIGINAL = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<HoSo><MaHoSo>000.00.01.H01-261204-0123</MaHoSo><TenThuTuc>Cấp giấy xác nhận</TenThuTuc></HoSo>\n"
).encode()
RSA_SIGNER = "off-tran-thi-bich-ngoc"
EC_SIGNER = "off-nguyen-van-an"


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def submit_digest(client: Client, *, signer: str = RSA_SIGNER, language: str = "en",
                  **metadata: Any) -> requests.Response:
    """Submit a sign request whose multipart body has the metadata part only, no document."""
    body = {
        "idempotency_key": f"hash-only-{time.time_ns()}",
        "dossier_code": "000.00.01.H01-261204-0123",
        "title": "Tờ khai đăng ký hộ kinh doanh",
        "signer": signer,
    }
    body.update(metadata)
    files = {"metadata": (None, json.dumps(body, ensure_ascii=False), "application/json")}
    return requests.post(f"{client.url}/api/v1/sign-requests", files=files, headers=client.app_headers(language),
                         timeout=60)


@dataclass(frozen=True)
class Case:
    """One request: how it is submitted, and which official approves it."""

    signer: str
    metadata: dict[str, Any]
    # Sent as the document part; None for a hash-only request.
    document: bytes | None = None


CASES = {
    "cades-digest-sha256-b-t": Case(RSA_SIGNER, {"format": "cades", "digest_algorithm": "sha256",
                                                 "digest": hashlib.sha256(ORIGINAL).hexdigest()}),
    "cades-digest-sha512-b-b": Case(RSA_SIGNER, {"format": "cades", "level": "B-B", "digest_algorithm": "sha512",
                                                 "digest": _base64url(hashlib.sha512(ORIGINAL).digest())}),
    "cades-document-sha384": Case(RSA_SIGNER, {"format": "cades", "digest_algorithm": "sha384"}, ORIGINAL),
    "raw-pkcs1-sha384-digest": Case(RSA_SIGNER, {"format": "raw", "signature_algorithm": "rsa_pkcs1v15",
                                                 "digest_algorithm": "sha384",
                                                 "digest": hashlib.sha384(ORIGINAL).hexdigest()}),
    "raw-pss-sha256-document": Case(RSA_SIGNER, {"format": "raw", "signature_algorithm": "rsa_pss"}, ORIGINAL),
    "raw-ecdsa-sha256-digest": Case(EC_SIGNER, {"format": "raw", "signature_algorithm": "ecdsa",
                                                "digest": _base64url(hashlib.sha256(ORIGINAL).digest())}),
    "raw-ecdsa-sha512-document": Case(EC_SIGNER, {"format": "raw", "signature_algorithm": "ecdsa",
                                                  "digest_algorithm": "sha512"}, ORIGINAL),
}
PADES_SHA384 = "pades-sha384"


@dataclass(frozen=True)
class Result:
    submitted: dict[str, Any]
    final: dict[str, Any]
    # The approval response's entry for this request.
    approved: dict[str, Any]
    signed: Path
    content_type: str
    content_disposition: str


def _approve_batch(client: Client, official_index: int, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    official = client.official(official_index)
    response = client.approve(client.login(official_index), request_ids, client.otp.next(official["totp_secret"]))
    assert response.status_code == 201, response.text
    return {item["id"]: item for item in response.json()["requests"]}


@pytest.fixture(scope="module")
def results(client: Client, server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    directory = tmp_path_factory.mktemp("hash-only")
    submitted: dict[str, dict[str, Any]] = {}
    for name, case in CASES.items():
        if case.document is None:
            response = submit_digest(client, signer=case.signer, **case.metadata)
        else:
            response = client.submit(case.document, signer=case.signer, filename="to-khai.xml", **case.metadata)
        assert response.status_code == 201, f"{name}: {response.text}"
        submitted[name] = response.json()
    pdf = generate_sample_pdf(directory / "sample.pdf")
    response = client.submit(pdf, signer=RSA_SIGNER, digest_algorithm="sha384")
    assert response.status_code == 201, response.text
    submitted[PADES_SHA384] = response.json()

    by_official: dict[int, list[str]] = {0: [], 1: []}
    for name, body in submitted.items():
        index = 1 if name in CASES and CASES[name].signer == EC_SIGNER else 0
        by_official[index].append(body["id"])
    approved = {**_approve_batch(client, 0, by_official[0]), **_approve_batch(client, 1, by_official[1])}

    results = {}
    for name, body in submitted.items():
        final = client.wait_final(body["id"])
        assert final["state"] == "signed", f"{name}: {final} {server.log_tail()}"
        response = requests.get(f"{client.url}/api/v1/sign-requests/{body['id']}/signed-document",
                                headers=client.app_headers(), timeout=60)
        assert response.status_code == 200, response.text
        signed = directory / f"{name}.out"
        signed.write_bytes(response.content)
        results[name] = Result(submitted=body, final=final, approved=approved[body["id"]], signed=signed,
                               content_type=response.headers["Content-Type"],
                               content_disposition=response.headers["Content-Disposition"])
    return results


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hash-only-original") / "to-khai.xml"
    path.write_bytes(ORIGINAL)
    return path


def _public_key_pem(result: Result, directory: Path) -> Path:
    """Extract the public key of the signer certificate that the request view shows, with OpenSSL."""
    certificate = directory / "signer.der"
    certificate.write_bytes(base64.b64decode(result.final["signer"]["certificate"]))
    public_key = directory / "signer.pub.pem"
    subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(certificate), "-pubkey", "-noout",
                    "-out", str(public_key)], check=True, capture_output=True)
    return public_key


@pytest.mark.parametrize("name", ["cades-digest-sha256-b-t", "cades-digest-sha512-b-b", "cades-document-sha384"])
def test_cades_verifies_against_original(results: dict[str, Result], original: Path, demo_root: Path,
                                         name: str) -> None:
    verified = openssl_cms_verify(results[name].signed, demo_root, original)

    assert verified.returncode == 0, verified.stderr
    assert "Verification successful" in verified.stderr


@pytest.mark.parametrize(("name", "digest_algorithm"), [
    ("cades-digest-sha256-b-t", "sha256"), ("cades-digest-sha512-b-b", "sha512"), ("cades-document-sha384", "sha384"),
])
def test_cades_uses_requested_digest_algorithm(results: dict[str, Result], name: str, digest_algorithm: str) -> None:
    signer_info = openssl_cms_print(results[name].signed).split("signerInfos:", 1)[1]
    digest_line = signer_info.split("digestAlgorithm:", 1)[1].split("algorithm:", 1)[1]
    assert digest_line.split()[0] == digest_algorithm


def test_cades_digest_fails_against_other_file(results: dict[str, Result], demo_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.xml"
    other.write_bytes(ORIGINAL.replace(b"0123", b"0124"))

    verified = openssl_cms_verify(results["cades-digest-sha256-b-t"].signed, demo_root, other)

    assert verified.returncode != 0


@pytest.mark.parametrize(("name", "has_timestamp"), [("cades-digest-sha256-b-t", True),
                                                      ("cades-digest-sha512-b-b", False)])
def test_cades_digest_reaches_requested_level(results: dict[str, Result], name: str, has_timestamp: bool) -> None:
    printed = openssl_cms_print(results[name].signed)

    assert ("id-smime-aa-timeStampToken" in printed) is has_timestamp
    assert "eContent: <ABSENT>" in printed
    assert results[name].final["level"] == ("B-T" if has_timestamp else "B-B")


def test_cades_digest_download_is_p7s(results: dict[str, Result]) -> None:
    result = results["cades-digest-sha256-b-t"]

    assert result.content_type == "application/pkcs7-signature"
    assert result.content_disposition.endswith('-signed.p7s"')


@pytest.mark.parametrize(("name", "digest_algorithm", "pss"), [
    ("raw-pkcs1-sha384-digest", "sha384", False),
    ("raw-pss-sha256-document", "sha256", True),
    ("raw-ecdsa-sha256-digest", "sha256", False),
    ("raw-ecdsa-sha512-document", "sha512", False),
])
def test_raw_signature_verified_by_openssl(results: dict[str, Result], original: Path, tmp_path: Path, name: str,
                                          digest_algorithm: str, pss: bool) -> None:
    result = results[name]
    command = ["openssl", "dgst", f"-{digest_algorithm}", "-verify", str(_public_key_pem(result, tmp_path)),
               "-signature", str(result.signed)]
    if pss:
        # rsa_pss_saltlen:digest makes OpenSSL require a salt exactly as long as the hash.
        command += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]

    verified = subprocess.run([*command, str(original)], capture_output=True, text=True)

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verified OK" in verified.stdout


def test_raw_ecdsa_is_der_sequence(results: dict[str, Result]) -> None:
    signature = results["raw-ecdsa-sha256-digest"].signed
    parsed = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", str(signature)],
                            capture_output=True, text=True, check=True).stdout

    assert "SEQUENCE" in parsed.splitlines()[0]
    assert parsed.count("INTEGER") == 2


def test_raw_signer_certificate_chains_to_demo_root(results: dict[str, Result], server: Server, demo_root: Path,
                                                    tmp_path: Path) -> None:
    certificate = tmp_path / "signer.der"
    certificate.write_bytes(base64.b64decode(results["raw-ecdsa-sha256-digest"].final["signer"]["certificate"]))
    pem = tmp_path / "signer.pem"
    subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(certificate), "-out", str(pem)], check=True)

    verified = subprocess.run(["openssl", "verify", "-CAfile", str(demo_root), "-untrusted",
                               str(server.home / "pki" / "issuing-ca.pem"), str(pem)], capture_output=True, text=True)

    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_raw_view_reports_no_level(results: dict[str, Result]) -> None:
    final = results["raw-pss-sha256-document"].final

    assert final["format"] == "raw"
    assert final["level"] == "none"
    assert final["signature_algorithm"] == "rsa_pss"
    assert final["digest_algorithm"] == "sha256"


def test_raw_download_is_octet_stream(results: dict[str, Result]) -> None:
    result = results["raw-ecdsa-sha256-digest"]

    assert result.content_type == "application/octet-stream"
    assert result.content_disposition.endswith('-signed.bin"')


def test_hash_only_view_shows_digest(results: dict[str, Result]) -> None:
    final = results["cades-digest-sha512-b-b"].final

    assert final["document"] is None
    assert final["digest"] == {"algorithm": "sha512", "value": hashlib.sha512(ORIGINAL).hexdigest()}


def test_approval_binds_sha256_digest(results: dict[str, Result]) -> None:
    assert results["cades-digest-sha256-b-t"].approved["document_sha256"] == hashlib.sha256(ORIGINAL).hexdigest()


def test_approval_binds_sha384_digest_by_its_sha256(results: dict[str, Result]) -> None:
    digest = hashlib.sha384(ORIGINAL).digest()

    assert results["raw-pkcs1-sha384-digest"].approved["document_sha256"] == hashlib.sha256(digest).hexdigest()


def test_hash_only_document_route_returns_digest(client: Client, results: dict[str, Result]) -> None:
    request_id = results["cades-digest-sha512-b-b"].submitted["id"]
    response = requests.get(f"{client.url}/api/v1/sign-requests/{request_id}/document", headers=client.app_headers(),
                            timeout=30)
    digest = hashlib.sha512(ORIGINAL).digest()

    assert response.status_code == 200
    assert response.content == digest
    assert response.headers["Digest"] == f"sha-256={hashlib.sha256(digest).hexdigest()}"


def test_pades_uses_requested_digest_algorithm(results: dict[str, Result], nss_db: Path) -> None:
    signatures = pdfsig_signatures(results[PADES_SHA384].signed, nss_db)

    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw
    assert "Signing Hash Algorithm: SHA-384" in signatures[0].raw


def test_inbox_shows_digest_to_official(client: Client) -> None:
    digest = hashlib.sha384(ORIGINAL + b"inbox").hexdigest()
    submitted = submit_digest(client, format="raw", signature_algorithm="rsa_pkcs1v15", digest_algorithm="sha384",
                              digest=digest)
    assert submitted.status_code == 201, submitted.text
    token = client.login(0)

    response = requests.get(f"{client.url}/api/v1/inbox/{submitted.json()['id']}",
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)

    assert response.status_code == 200, response.text
    assert response.json()["digest"] == {"algorithm": "sha384", "value": digest}


def test_hash_only_retry_returns_same_request(client: Client) -> None:
    metadata = {"format": "cades", "digest": hashlib.sha256(b"retry").hexdigest(), "idempotency_key": "hash-only-retry"}

    first = submit_digest(client, **metadata)
    second = submit_digest(client, **metadata)

    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]


def assert_problem(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert body["detail"], body
    return body


def test_document_and_digest_rejected(client: Client) -> None:
    response = client.submit(ORIGINAL, filename="to-khai.xml", format="cades",
                             digest=hashlib.sha256(ORIGINAL).hexdigest())

    assert_problem(response, 400, "digest_with_document")


def test_neither_document_nor_digest_rejected(client: Client) -> None:
    body = assert_problem(submit_digest(client, format="cades"), 400, "document_missing")

    assert "digest" in body["detail"]


def test_digest_length_mismatch_rejected(client: Client) -> None:
    # A SHA-256 digest in hex, declared as SHA-384.
    response = submit_digest(client, format="cades", digest_algorithm="sha384",
                             digest=hashlib.sha256(ORIGINAL).hexdigest())

    body = assert_problem(response, 400, "digest_length_invalid")
    assert "48" in body["detail"]


def test_digest_algorithm_unknown_rejected(client: Client) -> None:
    response = submit_digest(client, format="cades", digest_algorithm="md5", digest=hashlib.md5(ORIGINAL).hexdigest())

    assert_problem(response, 400, "digest_algorithm_unsupported")


def test_digest_not_encoded_rejected(client: Client) -> None:
    response = submit_digest(client, format="cades", digest="không phải giá trị băm")

    assert_problem(response, 400, "digest_invalid")


def test_raw_with_level_rejected(client: Client) -> None:
    response = submit_digest(client, format="raw", level="B-T", signature_algorithm="rsa_pkcs1v15",
                             digest=hashlib.sha256(ORIGINAL).hexdigest())

    assert_problem(response, 400, "level_not_applicable")


def test_raw_without_signature_algorithm_rejected(client: Client) -> None:
    response = submit_digest(client, format="raw", digest=hashlib.sha256(ORIGINAL).hexdigest())

    body = assert_problem(response, 400, "field_missing")
    assert "signature_algorithm" in body["detail"]


def test_raw_unknown_signature_algorithm_rejected(client: Client) -> None:
    response = submit_digest(client, format="raw", signature_algorithm="dsa",
                             digest=hashlib.sha256(ORIGINAL).hexdigest())

    assert_problem(response, 400, "signature_algorithm_unsupported")


def test_raw_algorithm_for_other_key_type_rejected(client: Client) -> None:
    response = submit_digest(client, signer=RSA_SIGNER, format="raw", signature_algorithm="ecdsa",
                             digest=hashlib.sha256(ORIGINAL).hexdigest())

    assert_problem(response, 400, "signature_algorithm_key_mismatch")


def test_pades_with_digest_rejected(client: Client) -> None:
    response = submit_digest(client, format="pades", digest=hashlib.sha256(ORIGINAL).hexdigest())

    assert_problem(response, 400, "digest_format_unsupported")


def test_attached_cades_with_digest_rejected(client: Client) -> None:
    response = submit_digest(client, format="cades", cades_packaging="attached",
                             digest=hashlib.sha256(ORIGINAL).hexdigest())

    body = assert_problem(response, 400, "field_invalid")
    assert "cades_packaging" in body["detail"]


def test_signature_algorithm_outside_raw_rejected(client: Client) -> None:
    response = submit_digest(client, format="cades", signature_algorithm="rsa_pss",
                             digest=hashlib.sha256(ORIGINAL).hexdigest())

    assert_problem(response, 400, "field_invalid")


def test_refusal_detail_in_vietnamese(client: Client) -> None:
    response = submit_digest(client, format="raw", level="B-B", signature_algorithm="rsa_pss", language="vi",
                             digest=hashlib.sha256(ORIGINAL).hexdigest())

    body = assert_problem(response, 400, "level_not_applicable")
    assert "không có mức chữ ký" in body["detail"]


@pytest.mark.parametrize("encode", [
    lambda digest: digest.hex().upper(),
    lambda digest: base64.urlsafe_b64encode(digest).decode("ascii"),
    _base64url,
], ids=["hex-upper", "base64url-padded", "base64url-unpadded"])
@pytest.mark.parametrize("digest_algorithm", ["sha256", "sha384", "sha512"])
def test_digest_encodings_decoded(encode: Any, digest_algorithm: str) -> None:
    digest = hashlib.new(digest_algorithm, ORIGINAL).digest()

    options = parse_signature_options({"digest": encode(digest), "digest_algorithm": digest_algorithm}, "cades",
                                      "B-T", "detached")

    assert options.digest == digest


def test_sha384_base64url_not_read_as_hex() -> None:
    # A SHA-384 digest is 64 characters in base64url, as long as a SHA-256 digest in hex.
    digest = hashlib.sha384(b"\x00" * 7).digest()

    options = parse_signature_options({"digest": _base64url(digest), "digest_algorithm": "SHA-384"}, "cades", "B-B",
                                      "detached")

    assert options.digest == digest
    assert options.digest_algorithm == "sha384"


def test_binding_of_sha512_digest_is_its_sha256() -> None:
    digest = hashlib.sha512(ORIGINAL).digest()

    options = parse_signature_options({"digest": digest.hex(), "digest_algorithm": "sha512"}, "cades", "B-T",
                                      "detached")

    assert options.binding_sha256() == hashlib.sha256(digest).hexdigest()
