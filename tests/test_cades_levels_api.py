"""CAdES B-LT and B-LTA through the native API, with the demo CA's OCSP and CRL services on the session server.

Four requests are approved in one batch (one OTP code). The downloaded files
are checked with OpenSSL against the demo root, and with pyHanko using only
the validation data that the files embed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import cms, core, ocsp, pem, x509
from pyhanko.sign.validation import async_validate_detached_cms
from pyhanko_certvalidator import ValidationContext

from signserver.signing.cades_levels import cades_level
from signserver.signing.validate import SIGNER_KEY_USAGE
from tests.harness import Client, Server, zip_document
from tests.verifiers import openssl_cms_print, openssl_cms_verify

XML_DOCUMENT = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<HoSo><MaHoSo>000.00.01.H01-261204-0123</MaHoSo><TenThuTuc>Đăng ký hộ kinh doanh</TenThuTuc></HoSo>\n"
).encode()

# name: (document file name, packaging, level)
CASES = {
    "xml-detached-b-lt": ("to-khai.xml", "detached", "B-LT"),
    "zip-attached-b-lt": ("ho-so.zip", "attached", "B-LT"),
    "xml-detached-b-lta": ("to-khai.xml", "detached", "B-LTA"),
    "zip-attached-b-lta": ("ho-so.zip", "attached", "B-LTA"),
}


def _zip_document() -> bytes:
    return zip_document({"to-khai.xml": XML_DOCUMENT, "giay-to-kem-theo.txt": "Bản sao giấy chứng nhận".encode()})


@dataclass(frozen=True)
class SignedCase:
    original: Path
    signed: Path
    attached: bool
    level: str
    state: dict


@pytest.fixture(scope="module")
def signed_cases(client: Client, server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, SignedCase]:
    directory = tmp_path_factory.mktemp("cades-levels-api")
    contents = {"to-khai.xml": XML_DOCUMENT, "ho-so.zip": _zip_document()}
    official = client.official(0)

    request_ids = {}
    for name, (filename, packaging, level) in CASES.items():
        submitted = client.submit(contents[filename], filename=filename, format="cades", level=level,
                                  cades_packaging=packaging)
        assert submitted.status_code == 201, submitted.text
        request_ids[name] = submitted.json()["id"]

    approved = client.approve(client.login(0), list(request_ids.values()), client.otp.next(official["totp_secret"]))
    assert approved.status_code == 201, approved.text

    cases = {}
    for name, request_id in request_ids.items():
        filename, packaging, level = CASES[name]
        final = client.wait_final(request_id)
        assert final["state"] == "signed", str(final) + server.log_tail()
        original = directory / f"{name}-{filename}"
        original.write_bytes(contents[filename])
        signed = client.download(request_id, directory / f"{name}.{'p7m' if packaging == 'attached' else 'p7s'}")
        cases[name] = SignedCase(original=original, signed=signed, attached=packaging == "attached", level=level,
                                 state=final)
    return cases


def _signed_data(path: Path) -> cms.SignedData:
    return cms.ContentInfo.load(path.read_bytes())["content"]


@pytest.mark.parametrize("name", list(CASES))
def test_openssl_verifies_against_demo_root(signed_cases: dict[str, SignedCase], demo_root: Path, name: str) -> None:
    case = signed_cases[name]

    result = openssl_cms_verify(case.signed, demo_root, None if case.attached else case.original)

    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_request_reports_level(signed_cases: dict[str, SignedCase], name: str) -> None:
    case = signed_cases[name]
    assert case.state["level"] == case.level


@pytest.mark.parametrize("name", list(CASES))
def test_file_reaches_requested_level(signed_cases: dict[str, SignedCase], name: str) -> None:
    case = signed_cases[name]
    assert cades_level(_signed_data(case.signed)) == case.level


@pytest.mark.parametrize("name", list(CASES))
async def test_pyhanko_validates_with_embedded_data_only(signed_cases: dict[str, SignedCase], demo_root: Path,
                                                         name: str) -> None:
    case = signed_cases[name]
    signed_data = _signed_data(case.signed)
    crls = [choice.chosen for choice in signed_data["crls"] if choice.name == "crl"]
    ocsps = [ocsp.OCSPResponse.load(choice.chosen["other_rev_info"].dump())
             for choice in signed_data["crls"] if choice.name == "other"]
    (root_der,) = [der for _type, _headers, der in pem.unarmor(demo_root.read_bytes(), multiple=True)]
    context = ValidationContext(trust_roots=[x509.Certificate.load(root_der)], other_certs=[c.chosen for c in signed_data["certificates"]],
                                crls=crls, ocsps=ocsps, allow_fetching=False, revocation_mode="hard-fail")
    signed_data["encap_content_info"] = {"content_type": "data"}

    status = await async_validate_detached_cms(case.original.read_bytes(), signed_data,
                                               signer_validation_context=context, ts_validation_context=context,
                                               key_usage_settings=SIGNER_KEY_USAGE)

    assert ocsps, "the demo CA's OCSP responses are embedded"
    assert status.intact
    assert status.valid
    assert status.trusted
    assert status.timestamp_validity is not None
    assert status.timestamp_validity.trusted


@pytest.mark.parametrize("name", ["xml-detached-b-lta", "zip-attached-b-lta"])
def test_b_lta_has_archive_time_stamp_v3(signed_cases: dict[str, SignedCase], name: str) -> None:
    printed = openssl_cms_print(signed_cases[name].signed)
    unsigned = printed.split("unsignedAttrs:", 1)[1]
    assert "0.4.0.1733.2.4" in unsigned
    assert "0.4.0.19122.1.5" in unsigned


def test_detached_b_lt_keeps_no_content(signed_cases: dict[str, SignedCase]) -> None:
    embedded = _signed_data(signed_cases["xml-detached-b-lt"].signed)["encap_content_info"]["content"]
    assert isinstance(embedded, core.Void)
