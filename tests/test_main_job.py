"""The main job end to end: submit, approve with TOTP, sign PAdES B-T in the HSM, download.

Outputs are checked with tools that did not make them: pdfsig (with an NSS
database trusting only the demo root), qpdf, pdftotext and pyHanko validation.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from signserver.signing.sample import SAMPLE_STAMP_BOX, generate_sample_pdf
from tests.harness import SIGNSERVER, Client, Server, service_env
from tests.postgres import query
from tests.verifiers import pdfsig_signatures, pdftotext_area, pyhanko_validate, qpdf_check


def run_demo(server: Server, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIGNSERVER, "demo", "--server", server.url, "--output", str(output), *extra],
        env=service_env(server.home), capture_output=True, text=True, timeout=240,
    )


@pytest.fixture(scope="module")
def demo_output(server: Server, tmp_path_factory: pytest.TempPathFactory, otp_codes) -> Path:
    output = tmp_path_factory.mktemp("demo") / "signed.pdf"
    started = time.time()
    result = run_demo(server, output)
    # The demo spent a code of the step current when it approved, which may be a step before the current one.
    otp_codes.mark_used_since(
        json.loads((server.home / "demo-credentials.json").read_text())["officials"][0]["totp_secret"], started)
    assert result.returncode == 0, result.stderr + server.log_tail()
    return output


def test_demo_output_pdfsig_valid_and_trusted(demo_output: Path, nss_db: Path) -> None:
    signatures = pdfsig_signatures(demo_output, nss_db)
    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw
    assert signatures[0].signer_common_name == "Trần Thị Bích Ngọc"


def test_demo_output_passes_qpdf_check(demo_output: Path) -> None:
    ok, output = qpdf_check(demo_output)
    assert ok, output


def test_demo_stamp_text_has_vietnamese_time(demo_output: Path) -> None:
    # The demo official's profile has a signature image, drawn between the sample's typed title and name.
    text = pdftotext_area(demo_output, 1, SAMPLE_STAMP_BOX)
    assert "Thời gian ký:" in text
    assert "(+07:00)" in text
    assert "PHÓ CHỦ TỊCH" not in text


def test_demo_output_pyhanko_b_t(demo_output: Path, demo_root: Path) -> None:
    results = pyhanko_validate(demo_output, demo_root)
    assert len(results) == 1
    assert results[0]["intact"]
    assert results[0]["valid"]
    assert results[0]["trusted"]
    assert results[0]["timestamp_valid"]
    assert results[0]["coverage"] == "ENTIRE_FILE"


def test_demo_without_server_fails_cleanly(tmp_path: Path, server: Server) -> None:
    result = subprocess.run(
        [SIGNSERVER, "demo", "--server", "http://127.0.0.1:9", "--output", str(tmp_path / "x.pdf")],
        env=service_env(server.home), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_ec_official_signs_valid(client: Client, tmp_path: Path, nss_db: Path, demo_root: Path) -> None:
    official = client.official(1)
    pdf = generate_sample_pdf(tmp_path / "in.pdf", pages=2)
    submitted = client.submit(pdf, signer=official["id"], placement={"rect": list(SAMPLE_STAMP_BOX)})
    assert submitted.status_code == 201, submitted.text
    request_id = submitted.json()["id"]
    token = client.login(1)
    approved = client.approve(token, [request_id], client.otp.next(official["totp_secret"]))
    assert approved.status_code == 201, approved.text

    final = client.wait_final(request_id)
    assert final["state"] == "signed", final
    signed = client.download(request_id, tmp_path / "out.pdf")
    signatures = pdfsig_signatures(signed, nss_db)
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw
    assert pyhanko_validate(signed, demo_root)[0]["timestamp_valid"]
    assert "Thời gian ký:" in pdftotext_area(signed, 2, SAMPLE_STAMP_BOX)


def test_idempotent_retry_returns_same_request(client: Client, tmp_path: Path) -> None:
    pdf = generate_sample_pdf(tmp_path / "in.pdf")
    first = client.submit(pdf, key="retry-key-1")
    second = client.submit(pdf, key="retry-key-1")
    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]


def test_idempotency_key_with_other_content_conflicts(client: Client, tmp_path: Path) -> None:
    pdf = generate_sample_pdf(tmp_path / "in.pdf")
    first = client.submit(pdf, key="retry-key-2")
    other = client.submit(pdf, key="retry-key-2", title="Một văn bản khác")
    assert first.status_code == 201, first.text
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"


def test_approval_records_request_and_digest(client: Client, server: Server, tmp_path: Path) -> None:
    official = client.official(0)
    pdf = generate_sample_pdf(tmp_path / "in.pdf")
    submitted = client.submit(pdf).json()
    approved = client.approve(client.login(0), [submitted["id"]], client.otp.next(official["totp_secret"]))
    assert approved.status_code == 201, approved.text
    body = approved.json()
    assert body["requests"][0]["document_sha256"] == submitted["document"]["sha256"]

    rows = query(server.home, "SELECT request_id, document_sha256 FROM approval_items WHERE approval_id = ?",
                 (body["approval_id"],))
    assert rows == [(submitted["id"], submitted["document"]["sha256"])]
    assert client.wait_final(submitted["id"])["state"] == "signed"


def test_rejection_needs_reason_and_is_final(client: Client, tmp_path: Path) -> None:
    import requests

    pdf = generate_sample_pdf(tmp_path / "in.pdf")
    request_id = client.submit(pdf).json()["id"]
    token = client.login(0)
    url = f"{client.url}/api/v1/sign-requests/{request_id}/rejection"
    headers = {"Authorization": f"Bearer {token}"}

    missing = requests.post(url, json={}, headers=headers, timeout=30)
    assert missing.status_code == 400
    assert missing.json()["code"] == "field_missing"

    rejected = requests.post(url, json={"reason": "Hồ sơ thiếu chữ ký của người nộp"}, headers=headers, timeout=30)
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["state"] == "rejected"
    assert rejected.json()["rejection_reason"] == "Hồ sơ thiếu chữ ký của người nộp"


def test_openapi_document_served(server: Server) -> None:
    import requests

    document = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    assert document["openapi"] == "3.1.0"
    assert "/api/v1/sign-requests" in document["paths"]
    assert "/api/v1/approvals" in document["paths"]


def _word_boxes(pdf: Path, page: int) -> list[tuple[str, float, float, float, float]]:
    """Words of a page with their boxes (PDF points, origin top-left) from pdftotext -bbox."""
    import re

    html = subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), "-bbox", str(pdf), "-"],
                          capture_output=True, text=True, check=True).stdout
    pattern = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>')
    return [(m[5], float(m[1]), float(m[2]), float(m[3]), float(m[4])) for m in pattern.finditer(html)]


def test_demo_stamp_text_inside_box(demo_output: Path) -> None:
    import html as html_lib

    page_height = 842.0  # A4, the size of the generated sample
    x1, y1, x2, y2 = SAMPLE_STAMP_BOX
    top, bottom = page_height - y2, page_height - y1
    words = [(html_lib.unescape(w), left, upper, right, lower)
             for w, left, upper, right, lower in _word_boxes(demo_output, 1)]
    # Words that start inside the box; the "Nơi nhận" list to its left is at the same height.
    inside = [w for w in words if top <= w[2] and w[4] <= bottom and x1 <= w[1] <= x2]
    line = " ".join(w[0] for w in inside)
    assert "Thời gian ký:" in line
    for word, _left, _upper, right, _lower in inside:
        # Glyph widths in the wrong units spread the letters past the box's right edge.
        assert right <= x2, (word, right)


def test_long_reason_wrapped_inside_stamp(client: Client, tmp_path: Path) -> None:
    official = client.official(0)
    reason = "Phê duyệt kết quả giải quyết thủ tục hành chính " * 10
    pdf = generate_sample_pdf(tmp_path / "in.pdf")
    # Only the text-only appearance shows the reason.
    request_id = client.submit(pdf, reason=reason, placement={"rect": list(SAMPLE_STAMP_BOX)},
                               appearance="text").json()["id"]
    approved = client.approve(client.login(0), [request_id], client.otp.next(official["totp_secret"]))
    assert approved.status_code == 201, approved.text
    assert client.wait_final(request_id)["state"] == "signed"
    signed = client.download(request_id, tmp_path / "out.pdf")

    x1, y1, x2, y2 = SAMPLE_STAMP_BOX
    top, bottom = 842.0 - y2, 842.0 - y1
    inside = [w for w in _word_boxes(signed, 1) if top <= w[2] and w[4] <= bottom and x1 <= w[1] <= x2]
    assert inside
    for word, _left, upper, right, lower in inside:
        assert right <= x2, (word, right)
        # Glyphs of about 3 points or more stay readable when printed.
        assert lower - upper >= 3, (word, lower - upper)
