"""CAdES B-B and B-T signatures of non-PDF files through the native API.

Four requests are approved in one batch (one OTP code), signed in the HSM,
downloaded, and checked with OpenSSL, which did not make them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.harness import Client, Server, zip_document
from tests.verifiers import openssl_cms_print, openssl_cms_verify

XML_DOCUMENT = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<HoSo><MaHoSo>000.00.01.H01-261204-0099</MaHoSo><TenThuTuc>Cấp giấy xác nhận</TenThuTuc></HoSo>\n"
).encode()


def _zip_document() -> bytes:
    return zip_document({"to-khai.xml": XML_DOCUMENT, "ghi-chu.txt": "Hồ sơ kèm theo".encode()})


@dataclass(frozen=True)
class SignedCase:
    original: Path
    signed: Path
    content_type: str
    content_disposition: str
    level: str


# name: (document file name, packaging, level)
CASES = {
    "xml-detached-b-t": ("to-khai.xml", "detached", "B-T"),
    "zip-attached-b-t": ("ho-so.zip", "attached", "B-T"),
    "xml-detached-b-b": ("to-khai.xml", None, "B-B"),
    "zip-attached-b-b": ("ho-so.zip", "attached", "B-B"),
}


@pytest.fixture(scope="module")
def chain_pem(server: Server, demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    chain = tmp_path_factory.mktemp("cades-chain") / "chain.pem"
    chain.write_text((server.home / "pki" / "issuing-ca.pem").read_text() + demo_root.read_text())
    return chain


@pytest.fixture(scope="module")
def signed_cases(client: Client, server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, SignedCase]:
    directory = tmp_path_factory.mktemp("cades")
    contents = {"to-khai.xml": XML_DOCUMENT, "ho-so.zip": _zip_document()}
    official = client.official(0)

    request_ids = {}
    for name, (filename, packaging, level) in CASES.items():
        metadata = {"format": "cades", "level": level}
        if packaging is not None:
            metadata["cades_packaging"] = packaging
        submitted = client.submit(contents[filename], filename=filename, **metadata)
        assert submitted.status_code == 201, submitted.text
        request_ids[name] = submitted.json()["id"]

    approved = client.approve(client.login(0), list(request_ids.values()), client.otp.next(official["totp_secret"]))
    assert approved.status_code == 201, approved.text

    cases = {}
    for name, request_id in request_ids.items():
        filename, _packaging, level = CASES[name]
        final = client.wait_final(request_id)
        assert final["state"] == "signed", str(final) + server.log_tail()

        response = requests.get(f"{client.url}/api/v1/sign-requests/{request_id}/signed-document",
                                headers=client.app_headers(), timeout=60)
        assert response.status_code == 200, response.text
        original = directory / f"{name}-{filename}"
        original.write_bytes(contents[filename])
        suffix = ".p7m" if "attached" in name else ".p7s"
        signed = directory / f"{name}{suffix}"
        signed.write_bytes(response.content)
        cases[name] = SignedCase(original=original, signed=signed, content_type=response.headers["Content-Type"],
                                 content_disposition=response.headers["Content-Disposition"], level=level)
    return cases


def _unsigned_attributes(printed: str) -> str:
    """Return the part of ``openssl cms -print`` output from unsignedAttrs on."""
    return printed.split("unsignedAttrs:", 1)[1]


@pytest.mark.parametrize("name", ["xml-detached-b-t", "xml-detached-b-b"])
def test_detached_verifies_with_openssl(signed_cases: dict[str, SignedCase], chain_pem: Path, name: str) -> None:
    case = signed_cases[name]
    result = openssl_cms_verify(case.signed, chain_pem, case.original)
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr


@pytest.mark.parametrize("name", ["zip-attached-b-t", "zip-attached-b-b"])
def test_attached_verifies_and_embeds_original(signed_cases: dict[str, SignedCase], chain_pem: Path,
                                               tmp_path: Path, name: str) -> None:
    case = signed_cases[name]
    extracted = tmp_path / "extracted"
    result = subprocess.run(
        ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(case.signed),
         "-CAfile", str(chain_pem), "-purpose", "any", "-out", str(extracted)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr
    assert extracted.read_bytes() == case.original.read_bytes()


def test_detached_has_no_encapsulated_content(signed_cases: dict[str, SignedCase]) -> None:
    printed = openssl_cms_print(signed_cases["xml-detached-b-t"].signed)
    assert "eContent: <ABSENT>" in printed


@pytest.mark.parametrize("name", list(CASES))
def test_signing_certificate_v2_signed(signed_cases: dict[str, SignedCase], name: str) -> None:
    printed = openssl_cms_print(signed_cases[name].signed)
    signed_part = printed.split("unsignedAttrs:", 1)[0]
    assert "id-smime-aa-signingCertificateV2" in signed_part
    assert "signingTime" in signed_part
    assert "messageDigest" in signed_part


@pytest.mark.parametrize("name", ["xml-detached-b-t", "zip-attached-b-t"])
def test_b_t_has_signature_timestamp(signed_cases: dict[str, SignedCase], name: str) -> None:
    printed = openssl_cms_print(signed_cases[name].signed)
    assert "id-smime-aa-timeStampToken" in _unsigned_attributes(printed)


@pytest.mark.parametrize("name", ["xml-detached-b-b", "zip-attached-b-b"])
def test_b_b_has_no_timestamp(signed_cases: dict[str, SignedCase], name: str) -> None:
    printed = openssl_cms_print(signed_cases[name].signed)
    assert "id-smime-aa-timeStampToken" not in printed


@pytest.mark.parametrize(("name", "content_type", "suffix"), [
    ("xml-detached-b-t", "application/pkcs7-signature", ".p7s"),
    ("zip-attached-b-t", "application/pkcs7-mime", ".p7m"),
])
def test_download_content_type_matches_packaging(signed_cases: dict[str, SignedCase], name: str,
                                                 content_type: str, suffix: str) -> None:
    case = signed_cases[name]
    assert case.content_type == content_type
    assert case.content_disposition.endswith(f'-signed{suffix}"')


def test_cades_level_x_l_rejected(client: Client) -> None:
    # CAdES-X-L is a level of the older TS 101 733, not an EN 319 122-1 baseline level.
    response = client.submit(XML_DOCUMENT, filename="to-khai.xml", format="cades", level="X-L")
    # The service rejects unsupported formats and levels with 422, valid JSON that cannot be processed.
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "level_unsupported"


def test_cades_packaging_bogus_rejected(client: Client) -> None:
    response = client.submit(XML_DOCUMENT, filename="to-khai.xml", format="cades", cades_packaging="bogus")
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "field_invalid"


def test_pades_still_rejects_non_pdf(client: Client) -> None:
    response = client.submit(XML_DOCUMENT, filename="to-khai.xml")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "pdf_invalid"


def test_cades_packaging_with_pades_rejected(client, tmp_path) -> None:
    from signserver.signing.sample import generate_sample_pdf

    response = client.submit(generate_sample_pdf(tmp_path / "in.pdf"), cades_packaging="attached")
    assert response.status_code == 400
    assert response.json()["code"] == "field_invalid"
