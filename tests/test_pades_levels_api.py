"""PAdES levels B-B to B-LTA, certification and two officials through the native API and CSC signDoc.

The session server's demo CA serves OCSP and CRLs, so B-LT and B-LTA embed
real revocation data. Five requests are approved in one batch with one OTP
code. The downloaded PDFs are checked with pdfsig against the demo root,
and with pyHanko's AdES validation using only the data the files contain.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from pyhanko.sign.ades.report import AdESStatus

from signserver.signing.pdf_inspect import inspect_pdf
from signserver.signing.sample import generate_sample_pdf
from signserver.signing.validate import validate_pdf
from tests.ades_checks import ades_lta_result, ades_with_time_result
from tests.csc.conftest import ECDSA_WITH_SHA256_OID, CscClient, csc  # noqa: F401 - csc is a fixture
from tests.harness import Client, Server
from tests.verifiers import pdfsig_signatures

LEVELS = ["B-B", "B-T", "B-LT", "B-LTA"]
SECOND_STAMP = {"page": 1, "rect": [40, 40, 290, 140]}


@dataclass(frozen=True)
class SignedRequest:
    view: dict[str, Any]
    signed: Path


def _roots(demo_root: Path) -> list[asn1_x509.Certificate]:
    return [asn1_x509.Certificate.load(der) for _, _, der in pem.unarmor(demo_root.read_bytes(), multiple=True)]


def _sign_in_batch(client: Client, server: Server, official_index: int, documents: dict[str, tuple[Path, dict]],
                   directory: Path) -> dict[str, SignedRequest]:
    """Submit each document, approve them all with one OTP code, and download the results."""
    request_ids = {}
    for name, (pdf, metadata) in documents.items():
        submitted = client.submit(pdf, signer=client.official(official_index)["credential_id"], **metadata)
        assert submitted.status_code == 201, submitted.text
        request_ids[name] = submitted.json()["id"]

    official = client.official(official_index)
    approved = client.approve(client.login(official_index), list(request_ids.values()),
                              client.otp.next(official["totp_secret"]))
    assert approved.status_code == 201, approved.text

    results = {}
    for name, request_id in request_ids.items():
        final = client.wait_final(request_id)
        assert final["state"] == "signed", str(final) + server.log_tail()
        results[name] = SignedRequest(view=final, signed=client.download(request_id, directory / f"{name}.pdf"))
    return results


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("pades-levels-api") / "giay-xac-nhan.pdf")


@pytest.fixture(scope="module")
def signed(client: Client, server: Server, sample_pdf: Path,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, SignedRequest]:
    documents = {level: (sample_pdf, {"level": level}) for level in LEVELS}
    documents["certified"] = (sample_pdf, {"level": "B-T", "certify": True})
    return _sign_in_batch(client, server, 0, documents, tmp_path_factory.mktemp("pades-levels-api-out"))


@pytest.mark.parametrize("level", LEVELS)
def test_api_level_in_request_view(signed: dict[str, SignedRequest], level: str) -> None:
    view = signed[level].view

    assert view["level"] == level
    assert view["signed_document"]["level"] == level


@pytest.mark.parametrize("level", LEVELS)
def test_api_level_pdfsig_valid(signed: dict[str, SignedRequest], nss_db: Path, level: str) -> None:
    signatures = [found for found in pdfsig_signatures(signed[level].signed, nss_db)
                  if found.signature_type == "ETSI.CAdES.detached"]

    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw


@pytest.mark.parametrize("level", LEVELS)
async def test_api_level_validate_pdf(signed: dict[str, SignedRequest], demo_root: Path, level: str) -> None:
    [report] = await validate_pdf(signed[level].signed, _roots(demo_root))

    assert report.level == level
    assert report.trusted


@pytest.mark.parametrize(("level", "passes"), [("B-T", False), ("B-LT", True), ("B-LTA", True)])
async def test_api_long_term_data_checked_by_pyhanko_ades(signed: dict[str, SignedRequest], demo_root: Path,
                                                          level: str, passes: bool) -> None:
    result = await ades_with_time_result(signed[level].signed, _roots(demo_root))

    assert (result.ades_subindic.status == AdESStatus.PASSED) is passes, result.failure_msg


@pytest.mark.parametrize(("level", "passes"), [("B-LT", False), ("B-LTA", True)])
async def test_api_archival_checked_by_pyhanko_ades_lta(signed: dict[str, SignedRequest], demo_root: Path,
                                                        level: str, passes: bool) -> None:
    result = await ades_lta_result(signed[level].signed, _roots(demo_root))

    assert (result.ades_subindic.status == AdESStatus.PASSED) is passes, result.failure_msg


def test_api_certify_makes_certification(signed: dict[str, SignedRequest]) -> None:
    certified = signed["certified"]

    assert certified.view["placement"]["certify"] is True
    assert inspect_pdf(certified.signed, None).certification_level == 2


def test_api_certify_signed_document_rejected(client: Client, signed: dict[str, SignedRequest]) -> None:
    response = client.submit(signed["B-T"].signed, level="B-T", certify=True, language="en")

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "pdf_certification_not_first"


def test_api_visible_stamp_on_certified_rejected(client: Client, signed: dict[str, SignedRequest]) -> None:
    response = client.submit(signed["certified"].signed, level="B-T")

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "pdf_certified_new_visible_field"


def test_api_invisible_signature_on_certified_accepted(client: Client, signed: dict[str, SignedRequest]) -> None:
    response = client.submit(signed["certified"].signed, level="B-T", placement={"visible": False})

    assert response.status_code == 201, response.text
    assert response.json()["state"] == "pending_approval"


def test_api_certify_for_cades_rejected(client: Client, sample_pdf: Path) -> None:
    response = client.submit(sample_pdf, format="cades", certify=True)

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "field_invalid"


def test_api_unknown_level_rejected(client: Client, sample_pdf: Path) -> None:
    response = client.submit(sample_pdf, level="B-LTV")

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "level_unsupported"


async def test_api_two_officials_sign_one_document(client: Client, server: Server, signed: dict[str, SignedRequest],
                                                   nss_db: Path, demo_root: Path,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("pades-two-officials")
    first = signed["B-LT"].signed
    second = _sign_in_batch(client, server, 1, {"second": (first, {"level": "B-LTA", "placement": SECOND_STAMP})},
                            directory)["second"].signed

    signatures = [found for found in pdfsig_signatures(second, nss_db)
                  if found.signature_type == "ETSI.CAdES.detached"]
    reports = await validate_pdf(second, _roots(demo_root))

    assert len(signatures) == 2
    assert all(found.signature_valid and found.certificate_trusted for found in signatures), signatures
    assert signatures[0].signer_common_name != signatures[1].signer_common_name
    assert all(report.intact and report.trusted and report.modifications_allowed for report in reports)
    assert reports[0].coverage == "entire_revision"
    assert second.read_bytes().startswith(first.read_bytes())
    # The second official's document time-stamp covers the first official's DSS data too.
    assert [report.level for report in reports] == ["B-LTA", "B-LTA"]


async def test_csc_sign_doc_b_lt(client: Client, csc: CscClient, sample_pdf: Path, nss_db: Path,  # noqa: F811
                                 demo_root: Path, tmp_path: Path) -> None:
    official = client.official(1)
    document = sample_pdf.read_bytes()
    sad = csc.sad("v2", official["credential_id"], [hashlib.sha256(document).digest()],
                  client.otp.next(official["totp_secret"]))

    response = csc.call("v2", "signatures/signDoc", {
        "credentialID": official["credential_id"], "SAD": sad,
        "documents": [{"document": base64.b64encode(document).decode(), "signature_format": "P",
                       "conformance_level": "Ades-B-LT", "signAlgo": ECDSA_WITH_SHA256_OID}]})

    assert response.status_code == 200, response.text
    signed = tmp_path / "signed.pdf"
    signed.write_bytes(base64.b64decode(response.json()["DocumentWithSignature"][0]))
    [signature] = pdfsig_signatures(signed, nss_db)
    [report] = await validate_pdf(signed, _roots(demo_root))
    assert signature.signature_valid and signature.certificate_trusted, signature.raw
    assert report.level == "B-LT"
