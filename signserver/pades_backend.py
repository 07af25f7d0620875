"""The implementations of the core's ``PdfChecker`` and ``DocumentSigner`` ports, for PAdES, CAdES and raw signatures."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from datetime import datetime, timezone
from pathlib import Path

from asn1crypto import x509

import hsm
from signserver.core.ports import CheckedPdf, SignedDocument
from signserver.core.raw_signing import sign_digests
from signserver.core.signature_options import RAW_FORMAT, RAW_LEVEL, SignatureOptions, options_of
from signserver.core.stored_documents import check_stored_document
from signserver.hsm_bridge import chain_from_pem, signing_key_for
from signserver.signing.cades import ensure_cades_digest_valid, ensure_cades_valid, sign_cades, sign_cades_digest
from signserver.signing.revocation import RevocationFetcher, revocation_required_for
from signserver.signing.errors import PdfPageOutOfRange, PdfStampOutsidePage, SignatureValidationFailed
from signserver.signing.files import digest_of_file, write_atomically
from signserver.signing.raw import ensure_signer_certificate_trusted, raw_signature_scheme, verify_raw_signature
from signserver.signing.anchor import AnchorPlacement
from signserver.signing.pades import default_stamp_box, page_visible_box, sign_pdf
from signserver.signing.placement import StampBox, resolve_stamp_box, stamp_from_placement
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
    return CheckedPdf(page_count=info.page_count, stamp_page=page, default_stamp_box=default_stamp_box(visible),
                      has_signatures=info.has_signatures, certification_level=info.certification_level)


class PadesChecker:
    """Opens an uploaded PDF the way the signer will, so bad input is refused at submission."""

    async def check(self, path: Path, password: str | None, stamp_page: int | None,
                    stamp_box: tuple[float, float, float, float] | None, *,
                    anchor: AnchorPlacement | None = None, over_field: str | None = None,
                    seal_side: float | None = None) -> CheckedPdf:
        loop = asyncio.get_running_loop()
        checked = await loop.run_in_executor(None, _check_pdf, path, password, stamp_page, stamp_box)
        if anchor is None and over_field is None and seal_side is None:
            return checked

        placed = StampBox(page=checked.stamp_page, box=stamp_box or checked.default_stamp_box)
        found = await loop.run_in_executor(None, functools.partial(
            resolve_stamp_box, path, password, placed, anchor=anchor, anchor_page=stamp_page,
            over_field=over_field, seal_side=seal_side, tolerance=STAMP_BOX_TOLERANCE,
        ))
        return dataclasses.replace(checked, stamp_page=found.page, stamp_box=found.box, anchor_box=found.anchor_box)


class DocumentSigner:
    """Signs PAdES B-T or CAdES B-B/B-T with an HSM key and the service's timestamper, then validates the result."""

    def __init__(self, token: hsm.Hsm, timestamper: object, trust_roots: list[x509.Certificate],
                 revocation: RevocationFetcher | None = None) -> None:
        self.token = token
        self.timestamper = timestamper
        self.trust_roots = trust_roots
        # The process's OCSP/CRL fetcher: self.revocation.validation_context(...) for B-LT and validation.
        self.revocation = revocation if revocation is not None else RevocationFetcher()

    async def check_signer_certificate(self, credential: Credential, *, revocation_required: bool) -> None:
        """Raise the certificate_* or revocation_unavailable error when the credential's certificate may not sign."""
        await self.revocation.check_signer_certificate(
            x509.Certificate.load(credential.certificate_der),
            chain_from_pem(credential.chain_pem),
            self.trust_roots,
            revocation_required=revocation_required,
        )

    async def sign(self, request: SignRequest, credential: Credential, output_path: Path,
                   pdf_password: str | None) -> SignedDocument:
        # The file approved is the one signed: a stored document changed since submission is refused.
        await check_stored_document(request)
        # Before anything reaches the HSM: an expired, revoked or untrusted certificate must not sign.
        await self.check_signer_certificate(
            credential, revocation_required=revocation_required_for(request.signature_level or ""))
        if request.signature_format == RAW_FORMAT:
            return await self._sign_raw(request, credential, output_path)
        if request.signature_format == "cades" and options_of(request).hash_only:
            return await self._sign_cades_digest(request, credential, output_path)
        if request.signature_format == "cades":
            return await self._sign_cades(request, credential, output_path)
        return await self._sign_pades(request, credential, output_path, pdf_password)

    async def _sign_cades(self, request: SignRequest, credential: Credential, output_path: Path) -> SignedDocument:
        packaging = json.loads(request.placement_json or "{}").get("packaging", "detached")
        level = request.signature_level or "B-T"
        context = None
        if revocation_required_for(level):
            context = self.revocation.validation_context(self.trust_roots, revocation_required=True)
        # sign_cades reaches the level or raises level_not_reached, and does not time-stamp a B-B signature.
        result = await sign_cades(
            Path(request.document_path),
            output_path,
            key=signing_key_for(self.token, credential),
            timestamper=self.timestamper,  # type: ignore[arg-type]
            attached=packaging == "attached",
            digest_algorithm=options_of(request).digest_algorithm,
            level=level,
            validation_context=context,
        )
        await ensure_cades_valid(output_path, Path(request.document_path), self.trust_roots, level=result.level)
        return SignedDocument(sha256=result.output_digest_sha256, signing_time=result.signing_time, level=result.level)

    async def _sign_cades_digest(self, request: SignRequest, credential: Credential,
                                 output_path: Path) -> SignedDocument:
        options = options_of(request)
        digest = await _digest_to_sign(request, options)
        timestamper = self.timestamper if request.signature_level == "B-T" else None
        result = await sign_cades_digest(
            digest,
            output_path,
            key=signing_key_for(self.token, credential),
            timestamper=timestamper,  # type: ignore[arg-type]
            digest_algorithm=options.digest_algorithm,
        )
        await ensure_cades_digest_valid(output_path, digest, self.trust_roots, level=result.level)
        return SignedDocument(sha256=result.output_digest_sha256, signing_time=result.signing_time, level=result.level)

    async def _sign_raw(self, request: SignRequest, credential: Credential, output_path: Path) -> SignedDocument:
        """Sign the request's digest, or its document hashed now, and release the bare value once it verifies."""
        options = options_of(request)
        assert options.signature_algorithm is not None
        scheme = raw_signature_scheme(options.signature_algorithm, credential.key_type, options.digest_algorithm)
        digest = await _digest_to_sign(request, options)
        key = signing_key_for(self.token, credential)
        signing_time = datetime.now(timezone.utc).replace(microsecond=0)

        (signature,) = await sign_digests(self.token, credential, scheme, [digest])

        verify_raw_signature(key.certificate, scheme, digest, signature)
        await ensure_signer_certificate_trusted(key, self.trust_roots)
        loop = asyncio.get_running_loop()
        sha256 = await loop.run_in_executor(None, write_atomically, output_path, signature)
        return SignedDocument(sha256=sha256, signing_time=signing_time, level=RAW_LEVEL)

    async def _sign_pades(self, request: SignRequest, credential: Credential, output_path: Path,
                          pdf_password: str | None) -> SignedDocument:
        # NOTE: pyHanko parses and hashes the PDF inside the event loop; a very large file delays
        # other requests while it is signed. The HSM and TSA calls do run in executor threads.
        placement = json.loads(request.placement_json or "{}")
        stamp = stamp_from_placement(placement, Path(request.document_path), signer_name=credential.display_name,
                                     signer_title=credential.signer_title, agency=credential.agency)
        level = request.signature_level or "B-T"
        context = None
        if revocation_required_for(level):
            context = self.revocation.validation_context(self.trust_roots, revocation_required=True)
        # sign_pdf reaches the level or raises (level_not_reached, revocation_unavailable, ...), never a lower one.
        result = await sign_pdf(
            Path(request.document_path),
            output_path,
            key=signing_key_for(self.token, credential),
            timestamper=self.timestamper,  # type: ignore[arg-type]
            reason=request.reason or request.title,
            location=request.location,
            stamp=stamp,
            password=pdf_password,
            digest_algorithm=options_of(request).digest_algorithm,
            level=level,
            validation_context=context,
            certify=bool(placement.get("certify", False)),
        )
        await ensure_signed_pdf_valid(output_path, self.trust_roots, password=pdf_password, level=result.level,
                                      original_path=Path(request.document_path))
        return SignedDocument(sha256=result.output_digest_sha256, signing_time=result.signing_time, level=result.level)


async def _digest_to_sign(request: SignRequest, options: SignatureOptions) -> bytes:
    """Return the stored digest of a hash-only request, or the digest of the stored document."""
    loop = asyncio.get_running_loop()
    if not options.hash_only:
        return await loop.run_in_executor(None, digest_of_file, Path(request.document_path), options.digest_algorithm)
    stored = await loop.run_in_executor(None, Path(request.document_path).read_bytes)
    if stored != options.digest:
        raise SignatureValidationFailed(field_name=None, reason="the stored digest differs from the one approved")
    return stored
