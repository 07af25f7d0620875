"""The validation report's PDF part: each signature and document time-stamp of a PDF.

Integrity, coverage and the modifications after signing come from pyHanko's
``async_validate_pdf_signature`` and its difference analysis. The PAdES
baseline levels of ETSI EN 319 142-1 are read as follows:

- B-B: the ETSI.CAdES.detached subfilter and a signing-certificate attribute;
- B-T: also a valid, trusted time-stamp, on the signature or in a later
  document time-stamp;
- B-LT: also a document security store (DSS) whose certificates and
  revocation data validate the signer's and the TSA's chains without
  network access, with revocation data for every certificate below the
  trust anchor;
- B-LTA: also a document time-stamp over a revision whose DSS meets B-LT,
  which itself validates from the latest DSS.

``pades_levels.long_term_level`` makes the B-LT and B-LTA checks.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import DiffResult, ModificationLevel
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.general import CMSExtractionError
from pyhanko.sign.validation import async_validate_pdf_signature, async_validate_pdf_timestamp
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.status import (
    DocumentTimestampStatus,
    PdfSignatureStatus,
    SignatureCoverageLevel,
    TimestampSignatureStatus,
)

from signserver.signing.embedded_validation_data import (
    ValidationData,
    cms_validation_data,
    dss_validation_data,
    offline_context,
    signature_timestamp_tokens,
    timestamp_context,
)
from signserver.signing.errors import PdfInvalid
from signserver.signing.pades_levels import TimestampProof, long_term_level
from signserver.signing.pdf_inspect import PDF_PARSE_ERRORS, open_pdf_reader, pdf_parse_errors
from signserver.signing.report import (
    CoverageInfo,
    DocumentTimestampReport,
    IntegrityInfo,
    ModificationsInfo,
    SignatureReport,
)
from signserver.signing.report_fields import (
    build_signature_report,
    crypto_constraint,
    display_name,
    has_signing_certificate_attribute,
)
from signserver.signing.report_indication import SignatureFacts
from signserver.signing.report_pdf_raw import find_raw_signatures, raw_signature_report
from signserver.signing.report_trust import TrustSetup, check_signer_at
from signserver.signing.validate import SIGNER_KEY_USAGE

__all__ = ["PdfReportParts", "pdf_signature_reports"]

log = structlog.get_logger(__name__)

PADES_SUBFILTER = "/ETSI.CAdES.detached"
PKCS7_SUBFILTER = "/adbe.pkcs7.detached"
DOCUMENT_TIMESTAMP_SUBFILTER = "/ETSI.RFC3161"
_SIGNATURE_SUBFILTERS = (PADES_SUBFILTER, PKCS7_SUBFILTER)

# Trailing bytes after the last %%EOF that are only end-of-line characters
# or spaces, up to this many, are treated as padding rather than data.
_MAX_PADDING_BYTES = 1024
_EOF_MARKER = b"%%EOF"
_TAIL_SEARCH_BYTES = 64 * 1024
_MAX_DETAIL_LENGTH = 300


@dataclass(frozen=True)
class PdfReportParts:
    signatures: list[SignatureReport]
    document_timestamps: list[DocumentTimestampReport]
    # None when the file's structure cannot be read.
    total_revisions: int | None


async def pdf_signature_reports(path: Path, *, password: str | None, trust: TrustSetup) -> PdfReportParts:
    """Validate every signature and document time-stamp of the PDF at ``path``, oldest first.

    A file that pyHanko cannot open, and signatures it cannot read, are
    checked from their byte ranges (``report_pdf_raw``). Raises PdfInvalid
    for a damaged file in which no byte range is found.
    """
    try:
        return await _readable_pdf_reports(Path(path), password, trust)
    except PdfInvalid as exc:
        data = Path(path).read_bytes()
        raw_signatures = find_raw_signatures(data)
        if not raw_signatures:
            raise
        log.info("signature_report.pdf_unreadable", error=exc.params.get("reason"), byte_ranges=len(raw_signatures))
        reports = [await raw_signature_report(signature, data, trust) for signature in raw_signatures]
        return PdfReportParts(_numbered(reports), [], None)


async def _readable_pdf_reports(path: Path, password: str | None, trust: TrustSetup) -> PdfReportParts:
    with path.open("rb") as stream:
        reader = open_pdf_reader(stream, password, require_signing_permission=False)

        with pdf_parse_errors():
            total_revisions = reader.xrefs.total_revisions
            fields = list(enumerate_sig_fields(reader, filled_status=True))
            latest_dss = dss_validation_data(reader)
            trailing_bytes = _unsigned_trailing_bytes(stream, reader)

        embedded_signatures: list[EmbeddedPdfSignature] = []
        unreadable: list[SignatureReport] = []
        for field_name, _value, field_ref in fields:
            embedded, failure = _load_signature(reader, field_name, field_ref)
            if embedded is not None:
                embedded_signatures.append(embedded)
            if failure is not None:
                log.info("signature_report.signature_unreadable", field_name=str(field_name), error=failure.detail)
                unreadable.append(failure)
        embedded_signatures.sort(key=lambda signature: signature.signed_revision)

        timestamps = [s for s in embedded_signatures if s.sig_object_type == "/DocTimeStamp"]
        timestamp_reports, proofs = await _document_timestamps(timestamps, trust, latest_dss, total_revisions)
        known_ranges = {_byte_range(timestamp) for timestamp in timestamps}

        reports = []
        for embedded in embedded_signatures:
            if embedded.sig_object_type == "/DocTimeStamp":
                continue
            report = await _signature_report(
                reader, embedded, trust=trust, latest_dss=latest_dss, total_revisions=total_revisions,
                trailing_bytes=trailing_bytes, proofs=proofs,
            )
            if report is None:
                unreadable.append(_unreadable_report(embedded.field_name, _subfilter(embedded),
                                                     "the signature cannot be evaluated"))
                continue
            known_ranges.add(_byte_range(embedded))
            reports.append(report)

    if unreadable:
        reports += await _unreadable_signatures(path, known_ranges, unreadable, trust)
    return PdfReportParts(_numbered(reports), timestamp_reports, total_revisions)


async def _unreadable_signatures(path: Path, known_ranges: set[tuple[int, ...]], unreadable: list[SignatureReport],
                                 trust: TrustSetup) -> list[SignatureReport]:
    """Check the signatures that pyHanko could not read from their byte ranges, where they can be found.

    Without such a byte range, the FORMAT_FAILURE reports in ``unreadable`` stand.
    """
    data = path.read_bytes()
    raw_signatures = [s for s in find_raw_signatures(data) if s.byte_range not in known_ranges]
    if not raw_signatures:
        return unreadable
    return [await raw_signature_report(signature, data, trust) for signature in raw_signatures]


def _numbered(reports: list[SignatureReport]) -> list[SignatureReport]:
    return [dataclasses.replace(report, id=f"signature-{number}") for number, report in enumerate(reports, start=1)]


def _byte_range(embedded: EmbeddedPdfSignature) -> tuple[int, ...]:
    return tuple(int(value) for value in embedded.byte_range)


def _subfilter(embedded: EmbeddedPdfSignature) -> str | None:
    subfilter = embedded.sig_object.get("/SubFilter")
    return str(subfilter) if subfilter is not None else None


def _load_signature(
    reader: PdfFileReader, field_name: str, field_ref: generic.IndirectObject
) -> tuple[EmbeddedPdfSignature | None, SignatureReport | None]:
    try:
        sig_object = field_ref.get_object()["/V"].get_object()
        subfilter = str(sig_object.get("/SubFilter"))
    except PDF_PARSE_ERRORS as exc:
        return None, _unreadable_report(field_name, None, f"unreadable signature dictionary ({type(exc).__name__})")
    if subfilter not in _SIGNATURE_SUBFILTERS + (DOCUMENT_TIMESTAMP_SUBFILTER,):
        return None, _unreadable_report(field_name, subfilter, f"unsupported subfilter {subfilter}")
    try:
        return EmbeddedPdfSignature(reader, field_ref, field_name), None
    except PDF_PARSE_ERRORS as exc:
        detail = _one_line(f"unreadable signature ({type(exc).__name__}: {exc})")
        return None, _unreadable_report(field_name, subfilter, detail)


async def _document_timestamps(
    timestamps: list[EmbeddedPdfSignature], trust: TrustSetup, latest_dss: ValidationData | None,
    total_revisions: int,
) -> tuple[list[DocumentTimestampReport], list[TimestampProof]]:
    reports = []
    proofs = []
    for embedded in timestamps:
        try:
            status = await _validate_document_timestamp(embedded, trust, latest_dss)
        except (SignatureValidationError, CMSExtractionError, *PDF_PARSE_ERRORS) as exc:
            log.info("signature_report.document_timestamp_unreadable", field_name=str(embedded.field_name),
                     error=_one_line(f"{type(exc).__name__}: {exc}"))
            reports.append(DocumentTimestampReport(str(embedded.field_name), None, None, False, False, False,
                                                   embedded.signed_revision + 1, total_revisions))
            continue

        tsa = display_name(status.signing_cert)
        reports.append(DocumentTimestampReport(
            str(embedded.field_name), status.timestamp, tsa, status.intact, status.valid, status.trusted,
            embedded.signed_revision + 1, total_revisions,
        ))
        if status.intact and status.valid and status.trusted:
            proofs.append(TimestampProof(status.timestamp, status.signing_cert, embedded.signed_revision))
    return reports, proofs


async def _validate_document_timestamp(
    embedded: EmbeddedPdfSignature, trust: TrustSetup, latest_dss: ValidationData | None
) -> DocumentTimestampStatus:
    data = cms_validation_data(embedded.signed_data, embedded.signer_info).merged(latest_dss)
    context = timestamp_context(trust.trust_roots, data, [embedded.signed_data])
    try:
        return await async_validate_pdf_timestamp(embedded, validation_context=context)
    finally:
        await context.aclose()


async def _signature_report(
    reader: PdfFileReader,
    embedded: EmbeddedPdfSignature,
    *,
    trust: TrustSetup,
    latest_dss: ValidationData | None,
    total_revisions: int,
    trailing_bytes: int,
    proofs: list[TimestampProof],
) -> SignatureReport | None:
    """Evaluate one signature, or return None when pyHanko cannot read it."""
    try:
        return await _evaluate_signature(reader, embedded, str(_subfilter(embedded)), trust=trust,
                                         latest_dss=latest_dss, total_revisions=total_revisions,
                                         trailing_bytes=trailing_bytes, proofs=proofs)
    except (SignatureValidationError, CMSExtractionError, *PDF_PARSE_ERRORS) as exc:
        detail = _one_line(f"{type(exc).__name__}: {exc}")
        log.warning("signature_report.signature_unreadable", field_name=str(embedded.field_name), error=detail)
        return None


async def _evaluate_signature(
    reader: PdfFileReader,
    embedded: EmbeddedPdfSignature,
    subfilter: str,
    *,
    trust: TrustSetup,
    latest_dss: ValidationData | None,
    total_revisions: int,
    trailing_bytes: int,
    proofs: list[TimestampProof],
) -> SignatureReport:
    embedded_data = cms_validation_data(embedded.signed_data, embedded.signer_info).merged(latest_dss)
    signer_cert = embedded.signer_cert
    context = offline_context(trust.trust_roots, embedded_data, moment=None, revocation_mode="soft-fail")
    ts_context = timestamp_context(trust.trust_roots, embedded_data, signature_timestamp_tokens(embedded.signer_info))
    try:
        status = await async_validate_pdf_signature(
            embedded, signer_validation_context=context, ts_validation_context=ts_context,
            key_usage_settings=SIGNER_KEY_USAGE,
        )
    finally:
        await context.aclose()
        await ts_context.aclose()

    timestamp = status.timestamp_validity
    later_proofs = [proof for proof in proofs if proof.revision > embedded.signed_revision]
    proof = _proof_of_existence(timestamp, later_proofs, embedded.signed_revision)
    proof_time = proof.time if proof is not None else None

    # A signature that is already broken is not worth a network request.
    chain = await check_signer_at(signer_cert, moment=proof_time, trust=trust, embedded=embedded_data,
                                  allow_fetching=status.intact and status.valid)

    coverage = _coverage(status, embedded, total_revisions, trailing_bytes)
    modifications = _modifications(status, embedded)
    level = await _pades_level(embedded, subfilter, trust, proof=proof)

    facts = SignatureFacts(
        intact=status.intact,
        valid=status.valid,
        crypto_constraint=crypto_constraint(status),
        coverage_partial=coverage.scope == "partial",
        modifications_allowed=modifications.allowed,
        modifications_detail=modifications.detail,
        appended_data=coverage.scope == "revision_with_appended_data",
        proof_of_existence=proof_time,
        chain=chain,
    )

    return build_signature_report(
        facts,
        kind=_signature_kind(reader, embedded),
        format_name=_format_name(subfilter),
        coverage=coverage,
        field_name=str(embedded.field_name),
        subfilter=subfilter.lstrip("/"),
        level=level,
        signer_cert=signer_cert,
        chain=chain,
        signing_time=status.signer_reported_dt,
        timestamp=timestamp,
        integrity=IntegrityInfo(status.intact, status.valid, status.md_algorithm, status.pkcs7_signature_mechanism),
        modifications=modifications,
    )


def _proof_of_existence(
    timestamp: TimestampSignatureStatus | None, later_proofs: list[TimestampProof], signed_revision: int
) -> TimestampProof | None:
    """Return the time-stamp that proves the signature existed: its own, else the first later document one.

    A time-stamp counts only when it is intact, valid and from a trusted TSA.
    """
    if timestamp is not None and timestamp.intact and timestamp.valid and timestamp.trusted:
        return TimestampProof(timestamp.timestamp, timestamp.signing_cert, signed_revision)
    return later_proofs[0] if later_proofs else None


def _coverage(status: PdfSignatureStatus, embedded: EmbeddedPdfSignature, total_revisions: int,
              trailing_bytes: int) -> CoverageInfo:
    signed_revision = embedded.signed_revision + 1
    if status.coverage == SignatureCoverageLevel.ENTIRE_FILE:
        scope = "entire_document"
    elif status.coverage == SignatureCoverageLevel.ENTIRE_REVISION:
        scope = "earlier_revision" if signed_revision < total_revisions else "revision_with_appended_data"
    else:
        scope = "partial"
    return CoverageInfo(scope, signed_revision, total_revisions, trailing_bytes)


def _modifications(status: PdfSignatureStatus, embedded: EmbeddedPdfSignature) -> ModificationsInfo:
    diff = status.diff_result
    level = status.modification_level
    permission = embedded.docmdp_level
    changed_fields = sorted(str(name) for name in diff.changed_form_fields) if isinstance(diff, DiffResult) else []
    allowed = bool(status.docmdp_ok)

    detail = None
    if not allowed:
        if diff is not None and not isinstance(diff, DiffResult):
            detail = _one_line(f"suspicious modification after signing: {diff}")
        elif level == ModificationLevel.OTHER:
            detail = "the document was changed after signing beyond filling in forms, signing and annotating"
        elif permission is not None and level is not None:
            detail = (f"the changes after signing ({level.name.lower()}) exceed the signature's "
                      f"permission ({permission.name.lower()})")
    field_lock = embedded.fieldmdp
    return ModificationsInfo(
        level=level.name.lower() if level is not None else None,
        allowed=allowed,
        permission=permission.name.lower() if permission is not None else None,
        changed_fields=changed_fields,
        locked_fields_action=field_lock.action.name.lower() if field_lock is not None else None,
        locked_fields=[str(name) for name in field_lock.fields or ()] if field_lock is not None else None,
        detail=detail,
    )


async def _pades_level(
    embedded: EmbeddedPdfSignature, subfilter: str, trust: TrustSetup, *, proof: TimestampProof | None
) -> str:
    if subfilter != PADES_SUBFILTER or not has_signing_certificate_attribute(embedded.signer_info):
        return "none"
    if proof is None:
        return "B-B"
    return await long_term_level(embedded, proof, trust.trust_roots)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_MAX_DETAIL_LENGTH]


def _format_name(subfilter: str | None) -> str:
    if subfilter == PADES_SUBFILTER:
        return "PAdES"
    if subfilter == PKCS7_SUBFILTER:
        return "PDF PKCS#7"
    return "PDF"


def _signature_kind(reader: PdfFileReader, embedded: EmbeddedPdfSignature) -> str:
    """Return "certification" if the document's /Perms /DocMDP names this signature, else "approval"."""
    try:
        certification_ref = reader.root["/Perms"].raw_get("/DocMDP")
        signature_ref = embedded.sig_field.raw_get("/V")
    except (KeyError, *PDF_PARSE_ERRORS):
        return "approval"
    if isinstance(certification_ref, generic.IndirectObject) and isinstance(signature_ref, generic.IndirectObject):
        return "certification" if certification_ref.reference == signature_ref.reference else "approval"
    return "approval"


def _unsigned_trailing_bytes(stream: BinaryIO, reader: PdfFileReader) -> int:
    """Count the bytes after the last revision's %%EOF marker that are not end-of-line padding.

    The last revision is the one whose cross-reference section ends furthest
    into the file. It is not always the newest: a linearized file's newest
    section is its first-page one, near the start of the file.
    """
    end_of_xref = max(reader.xrefs.get_xref_container_info(revision).end_location
                      for revision in range(reader.xrefs.total_revisions))
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(end_of_xref)
    tail = stream.read(_TAIL_SEARCH_BYTES)
    marker = tail.find(_EOF_MARKER)
    if marker < 0:
        return 0
    end_of_revision = end_of_xref + marker + len(_EOF_MARKER)
    remaining = size - end_of_revision
    if remaining <= _MAX_PADDING_BYTES:
        stream.seek(end_of_revision)
        if not stream.read(remaining).strip(b"\r\n\t\f\x00 "):
            return 0
    return remaining


def _unreadable_report(field_name: str, subfilter: str | None, detail: str) -> SignatureReport:
    return build_signature_report(
        SignatureFacts(format_error=detail), kind="approval", format_name=_format_name(subfilter),
        coverage=CoverageInfo("partial"), field_name=str(field_name),
        subfilter=subfilter.lstrip("/") if subfilter else None,
    )

