"""End-to-end tests of visible appearances over HTTP: a signature placed by anchor text, then the seal over it.

The server runs on its own data directory, because its policy must let the
application use the agency seal, which the shared test server's policy
leaves out. Each official approves once.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from PIL import Image, ImageDraw

from signserver.signing.appearance import mm_to_points
from signserver.signing.sample import generate_sample_pdf
from tests.conftest import TEST_SERVER_ENV
from tests.harness import Client, OtpCodes, Server, cli_login, free_port, init_home, run_cli
from tests.verifiers import make_nss_trust_db, pdfsig_signatures, pdftotext_area, pyhanko_validate, qpdf_check

A4_HEIGHT = 842.0
SEAL_CREDENTIAL_ID = "cred-seal-ubnd-mau-son"
SEAL_DIAMETER_POINTS = mm_to_points(36.0)
RENDER_DPI = 144

POLICY_WITH_SEAL = """\
keys:
  - credential: cred-tran-thi-bich-ngoc
    owner: {officials: [off-tran-thi-bich-ngoc]}
    rules:
      - {id: test-ngoc, applications: [app-motcua-demo], formats: [pades]}
  - credential: cred-nguyen-van-an
    owner: {officials: [off-nguyen-van-an]}
    rules:
      - {id: test-an, applications: [app-motcua-demo], formats: [pades]}
  - credential: cred-seal-ubnd-mau-son
    owner: {agency: "Ủy ban nhân dân huyện Mẫu Sơn"}
    rules:
      - {id: test-seal, applications: [app-motcua-demo], formats: [pades]}
"""


@pytest.fixture(scope="module")
def appearance_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("appearance-home")
    # The certificates name the demo CA's OCSP and CRL services on this port, which pdfsig queries.
    port = free_port()
    policies = tmp_path_factory.mktemp("appearance-policies")
    (policies / "seal.yaml").write_text(POLICY_WITH_SEAL, encoding="utf-8")
    credentials = init_home(home, port, SIGNSERVER_POLICIES_DIR=str(policies))
    server = Server(home, port, dict(TEST_SERVER_ENV)).start()
    yield server, credentials
    server.stop()


@pytest.fixture(scope="module")
def api(appearance_server: tuple[Server, dict[str, Any]]) -> Client:
    server, credentials = appearance_server
    return Client(server, credentials, OtpCodes())


@pytest.fixture(scope="module")
def trust_db(appearance_server: tuple[Server, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    server, _ = appearance_server
    return make_nss_trust_db(tmp_path_factory.mktemp("appearance-nss"), server.home / "demo-root.pem")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("appearance-sample") / "giay-xac-nhan.pdf")


def _approve_and_download(api: Client, request_id: str, official_index: int, output: Path) -> Path:
    official = api.official(official_index)
    approved = api.approve(api.login(official_index), [request_id], api.otp.next(official["totp_secret"]))
    assert approved.status_code == 201, approved.text
    final = api.wait_final(request_id)
    assert final["state"] == "signed", final
    return api.download(request_id, output)


@pytest.fixture(scope="module")
def signed_by_anchor(api: Client, sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The sample signed by the first official under "PHÓ CHỦ TỊCH", with the title and name drawn too."""
    response = api.submit(sample, placement={"anchor": "PHÓ CHỦ TỊCH", "anchor_offset": [0, -2],
                                             "signature_text": True})
    assert response.status_code == 201, response.text
    submitted = response.json()
    signed = _approve_and_download(api, submitted["id"], 0, tmp_path_factory.mktemp("signed") / "signed.pdf")
    return signed, submitted["placement"]


@pytest.fixture(scope="module")
def sealed(api: Client, signed_by_anchor: tuple[Path, dict],
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The signed sample with the agency seal over the left third of the official's signature."""
    signed, _ = signed_by_anchor
    response = api.submit(signed, signer=SEAL_CREDENTIAL_ID, placement={"over_field": "Signature1"},
                          title="Đóng dấu giấy xác nhận")
    assert response.status_code == 201, response.text
    submitted = response.json()
    # The agency seal's holder (văn thư) is the second demo official.
    output = _approve_and_download(api, submitted["id"], 1, tmp_path_factory.mktemp("sealed") / "sealed.pdf")
    return output, submitted["placement"]


def _word_boxes(pdf: Path, page: int) -> list[tuple[str, float, float, float, float]]:
    import html
    import re

    output = subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), "-bbox", str(pdf), "-"],
                            capture_output=True, text=True, check=True).stdout
    pattern = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>')
    return [(html.unescape(m[5]), float(m[1]), A4_HEIGHT - float(m[4]), float(m[3]), A4_HEIGHT - float(m[2]))
            for m in pattern.finditer(output)]


def _count_pixels(pdf: Path, box: list[float], matches) -> int:
    """Render page 1 with pdftoppm and count the pixels inside ``box`` (PDF points) that ``matches``."""
    rendered = subprocess.run(["pdftoppm", "-r", str(RENDER_DPI), "-f", "1", "-l", "1", "-png", str(pdf)],
                              capture_output=True, check=True).stdout
    image = Image.open(io.BytesIO(rendered)).convert("RGB")
    scale = RENDER_DPI / 72
    x1, y1, x2, y2 = box
    pixels = image.load()
    return sum(1 for y in range(round((A4_HEIGHT - y2) * scale), round((A4_HEIGHT - y1) * scale))
               for x in range(round(x1 * scale), round(x2 * scale)) if matches(pixels[x, y]))


def test_signature_placed_under_anchor(signed_by_anchor: tuple[Path, dict], sample: Path) -> None:
    _, placement = signed_by_anchor
    words = [w for w in _word_boxes(sample, 1) if w[0] in ("PHÓ", "CHỦ", "TỊCH") and w[2] < 300]
    anchor_left = min(w[1] for w in words)
    anchor_right = max(w[3] for w in words)
    anchor_bottom = min(w[2] for w in words)

    x1, y1, x2, y2 = placement["rect"]
    assert placement["appearance"] == "signature"
    assert placement["page"] == 1
    assert (x1 + x2) / 2 == pytest.approx((anchor_left + anchor_right) / 2, abs=3.0)
    assert y2 == pytest.approx(anchor_bottom - 2, abs=2.0)
    assert placement["anchor"]["text"] == "PHÓ CHỦ TỊCH"


def test_signature_appearance_valid_and_drawn(signed_by_anchor: tuple[Path, dict], trust_db: Path,
                                              appearance_server: tuple[Server, dict]) -> None:
    signed, placement = signed_by_anchor
    server, _ = appearance_server

    signatures = pdfsig_signatures(signed, trust_db)
    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw
    ok, report = qpdf_check(signed)
    assert ok, report
    text = pdftotext_area(signed, 1, tuple(placement["rect"]))
    assert "Trần Thị Bích Ngọc" in text
    assert "PHÓ CHỦ TỊCH" in text
    assert "(+07:00)" in text
    # The demo signature is drawn in blue ink.
    blue = _count_pixels(signed, placement["rect"], lambda p: p[2] > 100 and p[0] < 90 and p[1] < 100)
    assert blue > 300
    assert pyhanko_validate(signed, server.home / "demo-root.pem")[0]["timestamp_valid"]


def test_seal_over_signature_field(sealed: tuple[Path, dict], signed_by_anchor: tuple[Path, dict],
                                   trust_db: Path) -> None:
    output, placement = sealed
    _, signature_placement = signed_by_anchor
    field_x1, field_y1, field_x2, field_y2 = signature_placement["rect"]

    x1, y1, x2, y2 = placement["rect"]
    assert placement["appearance"] == "seal"
    assert placement["over_field"] == "Signature1"
    assert placement["seal_diameter_mm"] == 36.0
    assert x2 - x1 == pytest.approx(SEAL_DIAMETER_POINTS, abs=0.01)
    assert y2 - y1 == pytest.approx(SEAL_DIAMETER_POINTS, abs=0.01)
    assert x2 == pytest.approx(field_x1 + (field_x2 - field_x1) / 3, abs=0.01)
    assert (y1 + y2) / 2 == pytest.approx((field_y1 + field_y2) / 2, abs=0.01)

    signatures = pdfsig_signatures(output, trust_db)
    assert [s.field_name for s in signatures] == ["Signature1", "Signature2"]
    assert [s.signer_common_name for s in signatures] == ["Trần Thị Bích Ngọc", "Ủy ban nhân dân huyện Mẫu Sơn"]
    for signature in signatures:
        assert signature.signature_valid, signature.raw
        assert signature.certificate_trusted, signature.raw
    red = _count_pixels(output, placement["rect"], lambda p: p[0] > 150 and p[1] < 110 and p[2] < 110)
    assert red > 1000


def test_anchor_not_found_rejected(api: Client, sample: Path) -> None:
    placement = {"anchor": "GIÁM ĐỐC SỞ"}
    vietnamese = api.submit(sample, placement=placement)
    english = api.submit(sample, placement=placement, language="en")

    assert vietnamese.status_code == 400, vietnamese.text
    assert vietnamese.json()["code"] == "anchor_not_found"
    assert "Không tìm thấy chữ neo \"GIÁM ĐỐC SỞ\"" in vietnamese.json()["detail"]
    assert english.json()["code"] == "anchor_not_found"
    assert "was not found in the document" in english.json()["detail"]


def test_seal_appearance_needs_seal_image(api: Client, sample: Path) -> None:
    response = api.submit(sample, appearance="seal")

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "appearance_image_missing"


def test_over_field_needs_seal_appearance(api: Client, signed_by_anchor: tuple[Path, dict]) -> None:
    signed, _ = signed_by_anchor

    response = api.submit(signed, placement={"over_field": "Signature1"})

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "field_invalid"
    assert "placement.over_field" in response.json()["detail"]


def test_over_field_unsigned_document_rejected(api: Client, sample: Path) -> None:
    response = api.submit(sample, signer=SEAL_CREDENTIAL_ID, placement={"over_field": "Signature1"})

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "pdf_field_not_found"


@pytest.mark.parametrize(
    ("placement", "field"),
    [({"rect": [300, 100, 500, 200], "anchor": "CHỦ TỊCH"}, "placement.anchor"),
     ({"size": [200, 100]}, "placement.size"),
     ({"anchor": "CHỦ TỊCH", "anchor_occurrence": 0}, "placement.anchor_occurrence"),
     ({"anchor": "   "}, "placement.anchor"),
     ({"anchor": "CHỦ TỊCH", "size": [50, 20]}, "placement.size"),
     ({"signature_text": "yes"}, "placement.signature_text")],
)
def test_placement_fields_validated(api: Client, sample: Path, placement: dict, field: str) -> None:
    response = api.submit(sample, placement=placement)

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "field_invalid"
    assert field in response.json()["detail"]


def test_signature_text_with_seal_rejected(api: Client, sample: Path) -> None:
    response = api.submit(sample, signer=SEAL_CREDENTIAL_ID, placement={"signature_text": True})

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "field_invalid"
    assert "placement.signature_text" in response.json()["detail"]


def test_signature_text_stored(signed_by_anchor: tuple[Path, dict]) -> None:
    _, placement = signed_by_anchor

    assert placement["signature_text"] is True


def test_text_appearance_requested(api: Client, sample: Path) -> None:
    response = api.submit(sample, appearance="text", placement={"anchor": "PHÓ CHỦ TỊCH"})

    assert response.status_code == 201, response.text
    placement = response.json()["placement"]
    assert placement["appearance"] == "text"
    assert "image_sha256" not in placement
    x1, y1, x2, y2 = placement["rect"]
    assert (x2 - x1, y2 - y1) == pytest.approx((250.0, 100.0))


def _signature_like_png() -> bytes:
    image = Image.new("RGBA", (320, 120), (0, 0, 0, 0))
    ImageDraw.Draw(image).line([(10, 100), (90, 20), (160, 90), (300, 30)], fill=(20, 30, 150, 255), width=6)
    output = io.BytesIO()
    image.save(output, format="PNG")
    return output.getvalue()


def test_cli_sets_signature_image(appearance_server: tuple[Server, dict], api: Client, sample: Path,
                                  tmp_path: Path) -> None:
    server, credentials = appearance_server
    image = tmp_path / "chu-ky.png"
    image.write_bytes(_signature_like_png())
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    credential_id = credentials["officials"][1]["credential_id"]

    officer = credentials["security_officers"][0]
    officer_session = cli_login(server.home, officer, api.otp)
    official_session = cli_login(server.home, credentials["officials"][0], api.otp)
    arguments = ["credentials", "set-appearance", credential_id, "--signature-image", str(image),
                 "--default", "signature"]
    rejected = run_cli(server.home, *arguments, session=official_session)
    assert rejected.returncode == 2, rejected.stdout + rejected.stderr
    assert "security_officer" in rejected.stderr
    result = run_cli(server.home, *arguments, session=officer_session)
    assert result.returncode == 0, result.stderr
    assert result.stdout.index("Đã cập nhật hình thức hiển thị") < result.stdout.index("Updated the signature")
    assert digest in result.stdout

    auditor_session = cli_login(server.home, credentials["auditors"][0], api.otp)
    audit = run_cli(server.home, "audit", "list", "--json", session=auditor_session)
    assert audit.returncode == 0, audit.stderr
    records = [r for r in json.loads(audit.stdout) if r["action"] == "credential_appearance_set"]
    assert records[-1]["actor_type"] == "security_officer"
    assert records[-1]["actor_id"] == officer["id"]
    assert records[-1]["details"]["signature_image"]["sha256"] == digest
    assert "iVBOR" not in audit.stdout  # the start of a base64-encoded PNG
    verified = run_cli(server.home, "audit", "verify", session=auditor_session)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    response = api.submit(sample, signer=credentials["officials"][1]["id"])
    assert response.status_code == 201, response.text
    assert response.json()["placement"]["image_sha256"] == digest


def test_cli_rejects_invalid_image(appearance_server: tuple[Server, dict], api: Client, tmp_path: Path) -> None:
    server, credentials = appearance_server
    not_png = tmp_path / "chu-ky.png"
    not_png.write_bytes(b"GIF89a not a png")
    session = cli_login(server.home, credentials["security_officers"][1], api.otp)

    result = run_cli(server.home, "credentials", "set-appearance", credentials["officials"][0]["credential_id"],
                     "--signature-image", str(not_png), session=session)

    assert result.returncode == 2
    assert "không dùng được" in result.stderr
    assert "cannot be used" in result.stderr
