"""The implementations of the core's ``PdfChecker`` and ``DocumentSigner`` ports, for PAdES and CAdES."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from asn1crypto import x509

import hsm
from signserver.core.ports import CheckedPdf, SignedDocument
from signserver.hsm_bridge import signing_key_for
from signserver.signing.cades import ensure_cades_valid, sign_cades
from signserver.signing.errors import PdfPageOutOfRange, PdfStampOutsidePage
from signserver.signing.pades import StampSpec, default_stamp_box, page_visible_box, sign_pdf
from signserver.signing.pdf_inspect import open_pdf_reader, read_pdf_info
from signserver.signing.validate import ensure_signed_pdf_valid
from signserver.store.records import Credential, SignRequest

__all__ = ["PadesChecker", "DocumentSigner"]


# Points a stamp may stick out of the page's visible box, for rounding in clients' layouts.
STAMP_BOX_TOLERANCE = 1.0


def _check_pdf(path: Path, password: str | None, stamp_page: int | None,
               stamp_box: tuple[float, float, float, float] | None) -> CheckedPdf:
    with path.open("rb") as stream:
        reader = open_pdf_reader(stream, password)
        info = read_pdf_info(reader)
        page = stamp_page if stamp_page is not None else info.page_count
        if page > info.page_count:
            raise PdfPageOutOfRange(page=page, page_count=info.page_count)
        visible = page_visible_box(reader, page)
    if stamp_box is not None and visible is not None:
        left, bottom, right, top = visible
        x1, y1, x2, y2 = stamp_box
        t = STAMP_BOX_TOLERANCE
        if x1 < left - t or y1 < bottom - t or x2 > right + t or y2 > top + t:
            raise PdfStampOutsidePage(page=page, rect=list(stamp_box), page_box=[round(v, 2) for v in visible])
    return CheckedPdf(page_count=info.page_count, stamp_page=page, default_stamp_box=default_stamp_box(visible))


class PadesChecker:
    """Opens an uploaded PDF the way the signer will, so bad input is refused at submission."""

    async def check(self, path: Path, password: str | None, stamp_page: int | None,
                    stamp_box: tuple[float, float, float, float] | None) -> CheckedPdf:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, _check_pdf, path, password, stamp_page, stamp_box)


class DocumentSigner:
    """Signs PAdES B-T or CAdES B-B/B-T with an HSM key and the service's timestamper, then validates the result."""

    def __init__(self, token: hsm.Hsm, timestamper: object, trust_roots: list[x509.Certificate]) -> None:
        self.token = token
        self.timestamper = timestamper
        self.trust_roots = trust_roots

    async def sign(self, request: SignRequest, credential: Credential, output_path: Path,
                   pdf_password: str | None) -> SignedDocument:
        if request.signature_format == "cades":
            return await self._sign_cades(request, credential, output_path)
        return await self._sign_pades(request, credential, output_path, pdf_password)

    async def _sign_cades(self, request: SignRequest, credential: Credential, output_path: Path) -> SignedDocument:
        packaging = json.loads(request.placement_json or "{}").get("packaging", "detached")
        timestamper = self.timestamper if request.signature_level == "B-T" else None
        result = await sign_cades(
            Path(request.document_path),
            output_path,
            key=signing_key_for(self.token, credential),
            timestamper=timestamper,  # type: ignore[arg-type]
            attached=packaging == "attached",
        )
        await ensure_cades_valid(output_path, Path(request.document_path), self.trust_roots, level=result.level)
        return SignedDocument(sha256=result.output_digest_sha256, signing_time=result.signing_time, level=result.level)

    async def _sign_pades(self, request: SignRequest, credential: Credential, output_path: Path,
                          pdf_password: str | None) -> SignedDocument:
        # NOTE: pyHanko parses and hashes the PDF inside the event loop; a very large file delays
        # other requests while it is signed. The HSM and TSA calls do run in executor threads.
        placement = json.loads(request.placement_json or "{}")
        stamp = None
        if placement.get("visible", True):
            stamp = StampSpec(
                page=int(placement["page"]),
                box=tuple(float(v) for v in placement["rect"]),  # type: ignore[arg-type]
                signer_name=credential.display_name,
                signer_title=credential.signer_title,
                agency=credential.agency,
            )
        result = await sign_pdf(
            Path(request.document_path),
            output_path,
            key=signing_key_for(self.token, credential),
            timestamper=self.timestamper,  # type: ignore[arg-type]
            reason=request.reason or request.title,
            location=request.location,
            stamp=stamp,
            password=pdf_password,
        )
        await ensure_signed_pdf_valid(output_path, self.trust_roots, password=pdf_password)
        return SignedDocument(sha256=result.output_digest_sha256, signing_time=result.signing_time, level=result.level)
