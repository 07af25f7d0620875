"""pyHanko's own CSC client signs a PDF through /csc/v1/ and /csc/v2/, unchanged.

pyHanko's CSCSigner calls signatures/signHash. The authorization manager
below calls credentials/authorize with the official's TOTP code, and the
timestamper calls signatures/timestamp, so the signature is PAdES B-T. The
result is checked by pdfsig (NSS trusting only the demo root) and by pyHanko
validation.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asn1crypto import algos, cms
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.signers.csc_signer import (
    CSCAuthorizationInfo,
    CSCAuthorizationManager,
    CSCCredentialInfo,
    CSCServiceSessionInfo,
    CSCSigner,
    fetch_certs_in_csc_credential,
)
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError

from signserver.signing.sample import generate_sample_pdf
from tests.csc.conftest import CscClient
from tests.harness import Client
from tests.verifiers import pdfsig_signatures, pyhanko_validate


class TotpAuthorization(CSCAuthorizationManager):
    """Obtains a SAD for exactly the hashes pyHanko is about to sign, with a fresh TOTP code."""

    def __init__(self, session_info: CSCServiceSessionInfo, credential_info: CSCCredentialInfo,
                 http: aiohttp.ClientSession, next_otp: Callable[[], str]) -> None:
        super().__init__(session_info, credential_info)
        self.http = http
        self.next_otp = next_otp

    async def authorize_signature(self, hash_b64s: list[str]) -> CSCAuthorizationInfo:
        body = self.format_csc_auth_request(otp=self.next_otp(), hash_b64s=hash_b64s)
        url = self.csc_session_info.endpoint_url("credentials/authorize")
        async with self.http.post(url, json=body, headers=self.auth_headers, raise_for_status=True) as response:
            return self.parse_csc_auth_response(await response.json())


class CscTimeStamper(TimeStamper):
    """A pyHanko timestamper that calls the CSC API's signatures/timestamp method."""

    def __init__(self, session_info: CSCServiceSessionInfo, http: aiohttp.ClientSession) -> None:
        super().__init__(include_nonce=True)
        self.session_info = session_info
        self.http = http

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        nonce = secrets.randbits(64)
        body = {"hash": base64.b64encode(message_digest).decode(),
                "hashAlgo": algos.DigestAlgorithmId(md_algorithm).dotted, "nonce": format(nonce, "x")}
        url = self.session_info.endpoint_url("signatures/timestamp")
        async with self.http.post(url, json=body, headers=self.session_info.auth_headers,
                                  raise_for_status=True) as response:
            token = cms.ContentInfo.load(base64.b64decode((await response.json())["timestamp"]))
        tst_info = token["content"]["encap_content_info"]["content"].parsed
        if tst_info["nonce"].native != nonce:
            raise TimestampRequestError("the token does not carry the request's nonce")
        return token


async def sign_with_pyhanko(url: str, token: str, version: str, credential_id: str, next_otp: Callable[[], str],
                            source: Path, output: Path) -> None:
    async with aiohttp.ClientSession() as http:
        session_info = CSCServiceSessionInfo(url, credential_id, oauth_token=token, api_ver=version)
        credential_info = await fetch_certs_in_csc_credential(http, session_info)
        signer = CSCSigner(http, TotpAuthorization(session_info, credential_info, http, next_otp))
        metadata = PdfSignatureMetadata(field_name="Signature1", subfilter=SigSeedSubFilter.PADES,
                                        md_algorithm="sha256", reason="Phê duyệt qua CSC API")
        pdf_signer = PdfSigner(metadata, signer=signer, timestamper=CscTimeStamper(session_info, http))
        with source.open("rb") as stream, output.open("wb") as out:
            await pdf_signer.async_sign_pdf(IncrementalPdfFileWriter(stream), output=out)


CASES = [("v1", 0), ("v1", 1), ("v2", 0), ("v2", 1)]
CASE_IDS = ["v1-rsa", "v1-ec", "v2-rsa", "v2-ec"]


@pytest.fixture(scope="module")
def signed_pdfs(client: Client, csc: CscClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    workdir = tmp_path_factory.mktemp("csc-pyhanko")
    source = generate_sample_pdf(workdir / "in.pdf")
    outputs = {}
    for (version, official_index), case in zip(CASES, CASE_IDS):
        official: dict[str, Any] = client.official(official_index)
        output = workdir / f"{case}.pdf"

        def next_otp(secret: str = official["totp_secret"]) -> str:
            return client.otp.next(secret)

        asyncio.run(sign_with_pyhanko(client.url, csc.token, version, official["credential_id"], next_otp,
                                      source, output))
        outputs[case] = output
    return outputs


@pytest.mark.parametrize("case", CASE_IDS)
def test_pyhanko_pdf_valid_in_pdfsig(case: str, signed_pdfs: dict[str, Path], nss_db: Path) -> None:
    signatures = pdfsig_signatures(signed_pdfs[case], nss_db)
    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw


@pytest.mark.parametrize("case", CASE_IDS)
def test_pyhanko_pdf_valid_in_pyhanko(case: str, signed_pdfs: dict[str, Path], demo_root: Path) -> None:
    results = pyhanko_validate(signed_pdfs[case], demo_root)
    assert len(results) == 1
    assert results[0]["intact"]
    assert results[0]["valid"]
    assert results[0]["trusted"]
    assert results[0]["timestamp_valid"]


@pytest.mark.parametrize(("case", "signer_name"), [("v1-rsa", "Trần Thị Bích Ngọc"), ("v2-ec", "Nguyễn Văn An")])
def test_pyhanko_pdf_signed_by_official(case: str, signer_name: str, signed_pdfs: dict[str, Path],
                                        nss_db: Path) -> None:
    assert pdfsig_signatures(signed_pdfs[case], nss_db)[0].signer_common_name == signer_name
