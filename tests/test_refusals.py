"""Every bad input named in the service's contract gets a 4xx with a stable code and a bilingual message."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import requests
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers

from signserver import demo_pki
from signserver.signing.sample import generate_sample_pdf
from tests.harness import Client


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("refusals") / "sample.pdf")


def assert_problem(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    assert body["detail"]
    return body


def test_not_a_pdf_rejected(client: Client) -> None:
    assert_problem(client.submit(b"this is a text file, not a PDF\n"), 422, "pdf_invalid")


def test_truncated_pdf_rejected(client: Client, sample_pdf: Path) -> None:
    assert_problem(client.submit(sample_pdf.read_bytes()[:400]), 422, "pdf_invalid")


def test_empty_document_rejected(client: Client) -> None:
    assert_problem(client.submit(b""), 422, "pdf_invalid")


def test_encrypted_pdf_without_password_rejected(client: Client, corpus_dir: Path) -> None:
    assert_problem(client.submit(corpus_dir / "pyhanko-minimal-aes256.pdf"), 422, "pdf_password_required")


def test_encrypted_pdf_wrong_password_rejected(client: Client, corpus_dir: Path) -> None:
    response = client.submit(corpus_dir / "pyhanko-minimal-aes256.pdf", pdf_password="not-the-password")
    assert_problem(response, 422, "pdf_password_invalid")


def _certified_no_changes(source: Path, output: Path) -> Path:
    root = demo_pki.create_root_ca("Test Root", "Test")
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives import serialization

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    certificate = demo_pki.issue_signing_certificate(root, spki, demo_pki.SubjectSpec("Người chứng thực", "Test"))
    key_path = output.with_suffix(".key")
    cert_path = output.with_suffix(".pem")
    demo_pki.write_private_key(key_path, key)
    demo_pki.write_pem(cert_path, certificate)
    signer = signers.SimpleSigner.load(str(key_path), str(cert_path))
    with source.open("rb") as handle:
        writer = IncrementalPdfFileWriter(handle)
        meta = signers.PdfSignatureMetadata(field_name="Certification", certify=True,
                                            docmdp_permissions=fields.MDPPerm.NO_CHANGES)
        out = io.BytesIO()
        signers.sign_pdf(writer, meta, signer=signer, output=out)
    output.write_bytes(out.getvalue())
    return output


def test_certified_no_changes_rejected(client: Client, sample_pdf: Path, tmp_path: Path) -> None:
    certified = _certified_no_changes(sample_pdf, tmp_path / "certified.pdf")
    assert_problem(client.submit(certified), 422, "pdf_certified_no_changes")


def test_oversized_body_rejected(client: Client) -> None:
    oversized = b"%PDF-1.7\n" + b"0" * (9 * 1024 * 1024)
    assert_problem(client.submit(oversized), 413, "payload_too_large")


def test_unknown_signer_rejected(client: Client, sample_pdf: Path) -> None:
    assert_problem(client.submit(sample_pdf, signer="off-does-not-exist"), 422, "signer_unknown")


def test_key_not_granted_answers_like_unknown(client: Client, sample_pdf: Path) -> None:
    """The test policy grants the seal to no application, so it must look like no key at all."""
    body = assert_problem(client.submit(sample_pdf, signer="cred-seal-ubnd-mau-son"), 422, "signer_unknown")
    unknown = assert_problem(client.submit(sample_pdf, signer="cred-khong-co"), 422, "signer_unknown")
    assert body["detail"].replace("cred-seal-ubnd-mau-son", "X") == unknown["detail"].replace("cred-khong-co", "X")


def test_page_out_of_range_rejected(client: Client, sample_pdf: Path) -> None:
    response = client.submit(sample_pdf, placement={"page": 7, "rect": [300, 100, 500, 200]})
    assert_problem(response, 422, "pdf_page_out_of_range")


def test_missing_field_rejected(client: Client, sample_pdf: Path) -> None:
    body = assert_problem(client.submit(sample_pdf, dossier_code=""), 400, "field_missing")
    assert "dossier_code" in body["detail"]


def test_message_in_english_when_asked(client: Client, sample_pdf: Path) -> None:
    body = assert_problem(client.submit(sample_pdf, signer="nobody", language="en"), 422, "signer_unknown")
    assert body["detail"].startswith("Signer")


def test_message_in_vietnamese_by_default(client: Client, sample_pdf: Path) -> None:
    body = assert_problem(client.submit(sample_pdf, signer="nobody"), 422, "signer_unknown")
    assert body["detail"].startswith("Không tìm thấy người ký")


def test_missing_api_key_unauthenticated(client: Client) -> None:
    response = requests.get(f"{client.url}/api/v1/sign-requests", timeout=10)
    assert_problem(response, 401, "unauthenticated")


def test_wrong_api_key_unauthenticated(client: Client) -> None:
    response = requests.get(f"{client.url}/api/v1/sign-requests", headers={"Authorization": "Bearer ssk_wrong"},
                            timeout=10)
    assert_problem(response, 401, "unauthenticated")


def test_application_cannot_approve(client: Client) -> None:
    response = requests.post(f"{client.url}/api/v1/approvals", json={"request_ids": ["req_x"], "otp": "123456"},
                             headers=client.app_headers(), timeout=10)
    assert_problem(response, 401, "session_invalid")


def test_wrong_password_login_rejected(client: Client) -> None:
    response = requests.post(f"{client.url}/api/v1/sessions",
                             json={"username": client.official(0)["username"], "password": "wrong"}, timeout=30)
    assert_problem(response, 401, "login_failed")


def test_wrong_otp_rejected(client: Client, sample_pdf: Path) -> None:
    request_id = client.submit(sample_pdf).json()["id"]
    assert_problem(client.approve(client.login(0), [request_id], "000000"), 403, "otp_invalid")
    assert client.get(request_id)["state"] == "pending_approval"


def test_non_numeric_otp_rejected(client: Client, sample_pdf: Path) -> None:
    request_id = client.submit(sample_pdf).json()["id"]
    assert_problem(client.approve(client.login(0), [request_id], "abcdef"), 403, "otp_invalid")


def test_replayed_otp_rejected(client: Client, sample_pdf: Path) -> None:
    official = client.official(1)
    token = client.login(1)
    first = client.submit(sample_pdf, signer=official["id"]).json()["id"]
    second = client.submit(sample_pdf, signer=official["id"]).json()["id"]
    code = client.otp.next(official["totp_secret"])
    assert client.approve(token, [first], code).status_code == 201
    assert_problem(client.approve(token, [second], code), 403, "otp_replayed")
    assert client.get(second)["state"] == "pending_approval"
    assert client.wait_final(first)["state"] == "signed"


def test_lockout_after_five_wrong_codes(client: Client, sample_pdf: Path) -> None:
    official = client.official(1)
    token = client.login(1)
    request_id = client.submit(sample_pdf, signer=official["id"]).json()["id"]
    # Taken before the lock: getting a fresh code may wait for the next TOTP step, longer than the lock lasts.
    good = client.otp.next(official["totp_secret"])
    for _attempt in range(4):
        assert_problem(client.approve(token, [request_id], "111111"), 403, "otp_invalid")
    assert_problem(client.approve(token, [request_id], "111111"), 403, "official_locked")

    # Even the right code is refused while locked (the test server locks for 4 seconds).
    assert_problem(client.approve(token, [request_id], good), 403, "official_locked")
    time.sleep(4.5)
    assert client.approve(token, [request_id], client.otp.next(official["totp_secret"])).status_code == 201
    assert client.wait_final(request_id)["state"] == "signed"


def test_approving_someone_elses_request_rejected(client: Client, sample_pdf: Path) -> None:
    request_for_first = client.submit(sample_pdf).json()["id"]
    token_second = client.login(1)
    foreign = assert_problem(client.approve(token_second, [request_for_first], "123456"), 404, "request_not_found")
    unknown = assert_problem(client.approve(token_second, ["req_khong_ton_tai"], "123456"), 404, "request_not_found")
    assert foreign["detail"].replace(request_for_first, "X") == unknown["detail"].replace("req_khong_ton_tai", "X")
    assert client.get(request_for_first)["state"] == "pending_approval"


def test_rejecting_someone_elses_request_rejected(client: Client, sample_pdf: Path) -> None:
    request_for_first = client.submit(sample_pdf).json()["id"]
    headers = {"Authorization": f"Bearer {client.login(1)}"}

    def reject(request_id: str) -> requests.Response:
        return requests.post(f"{client.url}/api/v1/sign-requests/{request_id}/rejection", json={"reason": "Sai mẫu"},
                             headers=headers, timeout=30)

    foreign = assert_problem(reject(request_for_first), 404, "request_not_found")
    unknown = assert_problem(reject("req_khong_ton_tai"), 404, "request_not_found")
    assert foreign["detail"].replace(request_for_first, "X") == unknown["detail"].replace("req_khong_ton_tai", "X")
    assert client.get(request_for_first)["state"] == "pending_approval"


def test_approving_expired_request_rejected(client: Client, sample_pdf: Path) -> None:
    request_id = client.submit(sample_pdf, expires_in_seconds=1).json()["id"]
    time.sleep(1.5)
    assert_problem(client.approve(client.login(0), [request_id], "123456"), 409, "request_expired")


def test_approving_decided_request_rejected(client: Client, sample_pdf: Path) -> None:
    request_id = client.submit(sample_pdf).json()["id"]
    token = client.login(0)
    requests.post(f"{client.url}/api/v1/sign-requests/{request_id}/rejection", json={"reason": "Sai mẫu"},
                  headers={"Authorization": f"Bearer {token}"}, timeout=30).raise_for_status()
    body = assert_problem(client.approve(token, [request_id], "123456"), 409, "request_already_decided")
    assert "rejected" in body["detail"]


def test_batch_with_one_bad_request_approves_none(client: Client, sample_pdf: Path) -> None:
    good = client.submit(sample_pdf).json()["id"]
    response = client.approve(client.login(0), [good, "req_unknown"], "123456")
    assert_problem(response, 404, "request_not_found")
    assert client.get(good)["state"] == "pending_approval"


def test_download_before_signed_conflicts(client: Client, sample_pdf: Path) -> None:
    request_id = client.submit(sample_pdf).json()["id"]
    response = requests.get(f"{client.url}/api/v1/sign-requests/{request_id}/signed-document",
                            headers=client.app_headers(), timeout=10)
    assert_problem(response, 409, "request_not_signed")


def test_malformed_metadata_rejected(client: Client, sample_pdf: Path) -> None:
    files = {"metadata": (None, "{not json", "application/json"),
             "document": ("a.pdf", sample_pdf.read_bytes(), "application/pdf")}
    response = requests.post(f"{client.url}/api/v1/sign-requests", files=files, headers=client.app_headers(),
                             timeout=30)
    assert_problem(response, 400, "metadata_invalid")


def test_deeply_nested_metadata_rejected(client: Client, sample_pdf: Path) -> None:
    files = {"metadata": (None, "[" * 20000, "application/json"),
             "document": ("a.pdf", sample_pdf.read_bytes(), "application/pdf")}
    response = requests.post(f"{client.url}/api/v1/sign-requests", files=files, headers=client.app_headers(),
                             timeout=30)
    assert_problem(response, 400, "metadata_invalid")


def test_deeply_nested_login_rejected(client: Client) -> None:
    response = requests.post(f"{client.url}/api/v1/sessions", data="[" * 20000,
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert_problem(response, 400, "invalid_request")


def test_json_body_instead_of_multipart_rejected(client: Client) -> None:
    response = requests.post(f"{client.url}/api/v1/sign-requests", json={"title": "x"},
                             headers=client.app_headers(), timeout=30)
    assert_problem(response, 415, "unsupported_media_type")


def test_stamp_outside_page_rejected(client: Client, sample_pdf: Path) -> None:
    response = client.submit(sample_pdf, placement={"page": 1, "rect": [500, 700, 800, 900]})
    body = assert_problem(response, 422, "pdf_stamp_outside_page")
    assert "595.28" in body["detail"]


def test_stamp_too_small_rejected(client: Client, sample_pdf: Path) -> None:
    response = client.submit(sample_pdf, placement={"page": 1, "rect": [100, 100, 150, 130]})
    body = assert_problem(response, 400, "field_invalid")
    assert "placement.rect" in body["detail"]


def test_nul_in_upload_filename_rejected(client: Client, sample_pdf: Path) -> None:
    files = {"metadata": (None, json.dumps({"idempotency_key": "nul-name", "dossier_code": "D", "title": "T",
                                            "signer": client.official(0)["id"]}), "application/json"),
             "document": ("a\x00b.pdf", sample_pdf.read_bytes(), "application/pdf")}
    response = requests.post(f"{client.url}/api/v1/sign-requests", files=files, headers=client.app_headers(),
                             timeout=30)
    assert_problem(response, 400, "invalid_request")


def test_bidi_override_in_title_rejected(client: Client, sample_pdf: Path) -> None:
    body = assert_problem(client.submit(sample_pdf, title="Giấy xác nhận \u202eLTR"), 400, "field_invalid")
    assert "title" in body["detail"]


def test_control_character_in_dossier_code_rejected(client: Client, sample_pdf: Path) -> None:
    body = assert_problem(client.submit(sample_pdf, dossier_code="A\x00B\nC"), 400, "field_invalid")
    assert "dossier_code" in body["detail"]


def test_decomposed_text_stored_composed(client: Client, sample_pdf: Path) -> None:
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "HỒ-SƠ-NFD-1")
    created = client.submit(sample_pdf, dossier_code=decomposed)
    assert created.status_code == 201, created.text
    assert created.json()["dossier_code"] == unicodedata.normalize("NFC", decomposed)


def test_idempotency_header_and_body_differ_rejected(client: Client, sample_pdf: Path) -> None:
    files = {"metadata": (None, json.dumps({"idempotency_key": "body-key", "dossier_code": "D", "title": "T",
                                            "signer": client.official(0)["id"]}), "application/json"),
             "document": ("a.pdf", sample_pdf.read_bytes(), "application/pdf")}
    headers = dict(client.app_headers(), **{"Idempotency-Key": "header-key"})
    response = requests.post(f"{client.url}/api/v1/sign-requests", files=files, headers=headers, timeout=30)
    assert_problem(response, 400, "field_invalid")


def test_too_long_idempotency_key_invalid(client: Client, sample_pdf: Path) -> None:
    assert_problem(client.submit(sample_pdf, key="k" * 300), 400, "field_invalid")


def test_integer_otp_reported_invalid(client: Client, sample_pdf: Path) -> None:
    request_id = client.submit(sample_pdf).json()["id"]
    response = requests.post(f"{client.url}/api/v1/approvals", json={"request_ids": [request_id], "otp": 123456},
                             headers={"Authorization": f"Bearer {client.login(0)}"}, timeout=30)
    assert_problem(response, 400, "field_invalid")


def test_expired_request_reads_expired_at_once(client: Client, sample_pdf: Path) -> None:
    request_id = client.submit(sample_pdf, expires_in_seconds=1).json()["id"]
    time.sleep(1.5)
    state = client.get(request_id)
    assert state["state"] == "expired"
    assert state["state_reason"] == "approval_deadline_passed"


def test_original_document_downloadable(client: Client, sample_pdf: Path) -> None:
    created = client.submit(sample_pdf).json()
    response = requests.get(f"{client.url}{created['links']['document']}", headers=client.app_headers(), timeout=30)
    assert response.status_code == 200
    assert response.content == sample_pdf.read_bytes()


# JSON's \u escapes can carry a lone UTF-16 surrogate, which is not text: every JSON body refuses it with a 400.
LONE_SURROGATE = '"\\ud800"'


def test_login_refuses_lone_surrogate(client: Client) -> None:
    body = '{"username": ' + LONE_SURROGATE + ', "password": "x"}'
    response = requests.post(f"{client.url}/api/v1/sessions", data=body,
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert_problem(response, 400, "invalid_request")


def test_metadata_refuses_lone_surrogate(client: Client, sample_pdf: Path) -> None:
    metadata = ('{"idempotency_key": "surrogate-1", "dossier_code": "000.00.01.H01-261205-0001", '
                '"title": ' + LONE_SURROGATE + ', "signer": "' + client.official(0)["credential_id"] + '"}')
    files = {"metadata": (None, metadata, "application/json"),
             "document": ("document.pdf", sample_pdf.read_bytes(), "application/pdf")}
    response = requests.post(f"{client.url}/api/v1/sign-requests", files=files, headers=client.app_headers(),
                             timeout=60)
    assert_problem(response, 400, "metadata_invalid")


def test_csc_refuses_lone_surrogate(client: Client) -> None:
    response = requests.post(f"{client.url}/csc/v2/credentials/info", data='{"credentialID": ' + LONE_SURROGATE + '}',
                             headers={**client.app_headers(), "Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


# Header bytes that are not UTF-8 reach the service as lone surrogates; they must be refused, not crash it.


def test_non_ascii_api_key_unauthenticated(client: Client) -> None:
    response = requests.get(f"{client.url}/api/v1/credentials", headers={"Authorization": b"Bearer ssk_\xff\xfe"},
                            timeout=30)
    assert_problem(response, 401, "unauthenticated")


def test_non_utf8_idempotency_key_refused(client: Client, sample_pdf: Path) -> None:
    metadata = {"dossier_code": "000.00.01.H01-261205-0002", "title": "Tờ khai", "signer":
                client.official(0)["credential_id"]}
    files = {"metadata": (None, json.dumps(metadata, ensure_ascii=False), "application/json"),
             "document": ("document.pdf", sample_pdf.read_bytes(), "application/pdf")}
    response = requests.post(f"{client.url}/api/v1/sign-requests", files=files,
                             headers={**client.app_headers(), "Idempotency-Key": b"key-\xff\xfe"}, timeout=60)
    body = assert_problem(response, 400, "field_invalid")
    assert "Idempotency-Key" in body["detail"]
