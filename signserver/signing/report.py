"""The signature validation report: one verdict per signature of a PDF or a CMS file, and one overall.

Each signature gets an indication of ETSI EN 319 102-1 (section 5.1.3):
TOTAL-PASSED, INDETERMINATE or TOTAL-FAILED, with a sub-indication such as
HASH_FAILURE or NO_CERTIFICATE_CHAIN_FOUND. The facts behind it come from
pyHanko's validation (integrity, signature value, time-stamps, coverage of
the PDF and the modifications after signing) and from the signer's
certificate path at the best signature time (``report_trust``), and
``report_indication`` applies the rules. The report also gives the baseline
level (B-B, B-T, B-LT, B-LTA) that each signature reaches, and summaries in
Vietnamese and English.

A file without any signature is not an error: its report lists no signature
and its indication is NO_SIGNATURE. Input that is neither a PDF nor a CMS
SignedData, and options that do not fit the file, raise ``InvalidInput``
errors before anything is validated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from asn1crypto import cms, pem, x509

from signserver.errors import InvalidInput, Unavailable
from signserver.signing.report_indication import overall_indication
from signserver.signing.report_trust import TrustSetup, ValidationContextFactory

__all__ = [
    "Bilingual",
    "CertificateInfo",
    "ChainInfo",
    "TimestampInfo",
    "IntegrityInfo",
    "RevocationInfo",
    "CoverageInfo",
    "ModificationsInfo",
    "SignatureReport",
    "DocumentTimestampReport",
    "DocumentInfo",
    "ValidationReport",
    "ValidationDocumentUnrecognized",
    "ValidationContentUnexpected",
    "ValidationDigestInvalid",
    "ValidationTimedOut",
    "SUPPORTED_DIGEST_ALGORITHMS",
    "normalise_digest_algorithm",
    "validate_document",
    "validate_document_in_thread",
]

# Digest algorithms accepted for a detached CMS signature sent with only its digest.
SUPPORTED_DIGEST_ALGORITHMS = {"sha256": 32, "sha384": 48, "sha512": 64, "sha3_256": 32, "sha3_384": 48,
                               "sha3_512": 64}

# How far into the file the PDF header is looked for. Some files have bytes
# before the header, and PDF readers commonly look within the first 1024 bytes.
_PDF_HEADER_WINDOW = 1024
_PEM_CMS_MARKERS = (b"-----BEGIN PKCS7-----", b"-----BEGIN CMS-----", b"-----BEGIN PKCS #7 SIGNED DATA-----")


class ValidationDocumentUnrecognized(InvalidInput):
    """The file is neither a PDF nor a CMS SignedData in DER or PEM. Params: ``reason``."""

    code = "validation_document_unrecognized"


class ValidationContentUnexpected(InvalidInput):
    """Detached content or a digest was sent for a file that carries its own content. Params: ``reason``."""

    code = "validation_content_unexpected"


class ValidationDigestInvalid(InvalidInput):
    """The digest or its algorithm cannot be used. Params: ``reason``."""

    code = "validation_digest_invalid"


class ValidationTimedOut(Unavailable):
    """The validation took longer than allowed. Params: ``seconds``."""

    code = "validation_timed_out"


@dataclass(frozen=True)
class Bilingual:
    """A text for people, Vietnamese first."""

    vi: str
    en: str


@dataclass(frozen=True)
class CertificateInfo:
    common_name: str | None
    # asn1crypto's human_friendly rendering of the distinguished name.
    subject: str
    issuer: str
    # Lower-case hex.
    serial_number: str
    valid_from: datetime
    valid_to: datetime
    sha256: str


@dataclass(frozen=True)
class ChainInfo:
    """The signer's certificate path, signer first, up to the trust anchor when one was reached."""

    certificates: list[CertificateInfo]
    trust_anchor: str | None
    trusted: bool


@dataclass(frozen=True)
class TimestampInfo:
    """A signature time-stamp token (RFC 3161) and its validation."""

    time: datetime
    tsa: str
    tsa_subject: str
    intact: bool
    valid: bool
    trusted: bool


@dataclass(frozen=True)
class IntegrityInfo:
    # None when the signed content was not available (a detached CMS sent alone).
    digest_matches: bool | None
    signature_verifies: bool
    digest_algorithm: str | None
    signature_algorithm: str | None


@dataclass(frozen=True)
class RevocationInfo:
    """The signer certificate's revocation status at ``checked_at`` (see ``report_trust.RevocationStatus``)."""

    status: str
    checked_at: datetime | None
    source: str | None
    revoked_at: datetime | None
    reason: str | None
    detail: str | None


@dataclass(frozen=True)
class CoverageInfo:
    """The part of the document, or the content, that the signature covers.

    ``scope`` is one of these values:

    - "entire_document";
    - "earlier_revision": incremental updates follow the signed revision;
    - "revision_with_appended_data": bytes that are no revision follow the
      newest signed revision;
    - "partial": the byte range leaves part of its own revision out;
    - "unknown": the PDF structure cannot be read;
    - "detached_content" or "attached_content" for CMS.
    """

    scope: str
    # 1-based, for PDF signatures.
    signed_revision: int | None = None
    total_revisions: int | None = None
    unsigned_trailing_bytes: int = 0


@dataclass(frozen=True)
class ModificationsInfo:
    """The changes made to a PDF after the signature, as pyHanko's difference analysis classifies them.

    ``level`` is pyHanko's ModificationLevel in lower case ("none",
    "lta_updates", "form_filling", "annotations", "other"). ``permission``
    is the DocMDP or field-lock permission of this signature ("no_changes",
    "fill_forms", "annotate"), None without one.
    """

    level: str | None
    allowed: bool
    permission: str | None
    changed_fields: list[str]
    # The signature's field lock (FieldMDP, ISO 32000-2 section 12.8.2.4): "all",
    # "include" or "exclude" the fields listed; None without a lock.
    locked_fields_action: str | None = None
    locked_fields: list[str] | None = None
    detail: str | None = None


@dataclass(frozen=True)
class SignatureReport:
    id: str
    field_name: str | None
    # "approval" or "certification" for PDF signatures, "cms" otherwise.
    kind: str
    # "PAdES", "PDF PKCS#7", "CAdES" or "CMS".
    format: str
    subfilter: str | None
    # "B-B", "B-T", "B-LT", "B-LTA", or "none" for a format without ETSI baseline levels.
    level: str
    signer: CertificateInfo | None
    chain: ChainInfo
    # The signing time the signer claims (signingTime or the PDF /M entry), not verified.
    signing_time: datetime | None
    timestamp: TimestampInfo | None
    integrity: IntegrityInfo
    revocation: RevocationInfo
    coverage: CoverageInfo
    modifications: ModificationsInfo | None
    indication: str
    sub_indication: str | None
    # The technical reason behind the sub-indication, in English.
    detail: str | None
    warnings: list[Bilingual]
    summary: Bilingual


@dataclass(frozen=True)
class DocumentTimestampReport:
    """A PDF document time-stamp (ETSI.RFC3161 subfilter), as used by PAdES B-LTA."""

    field_name: str
    time: datetime | None
    tsa: str | None
    intact: bool
    valid: bool
    trusted: bool
    signed_revision: int
    total_revisions: int


@dataclass(frozen=True)
class DocumentInfo:
    # "pdf" or "cms".
    kind: str
    sha256: str
    size: int
    revisions: int | None = None
    # For CMS: "attached", "detached_file", "detached_digest" or "missing".
    content: str | None = None


@dataclass(frozen=True)
class ValidationReport:
    document: DocumentInfo
    validated_at: datetime
    trust_anchors: list[str]
    signatures: list[SignatureReport]
    document_timestamps: list[DocumentTimestampReport]
    indication: str
    counts: dict[str, int]
    summary: Bilingual

    def to_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data, with times in ISO 8601 UTC."""
        return _jsonable(self)


async def validate_document(
    path: Path,
    *,
    trust: TrustSetup,
    content_path: Path | None = None,
    digest: bytes | None = None,
    digest_algorithm: str | None = None,
    password: str | None = None,
) -> ValidationReport:
    """Validate every signature of the PDF or CMS file at ``path`` and return the report.

    A CMS file may be detached: pass the original file as ``content_path``,
    or only its ``digest`` with ``digest_algorithm``. ``password`` opens an
    encrypted PDF. Raises ValidationDocumentUnrecognized, the PDF opening
    errors (PdfInvalid, PdfPasswordRequired, PdfPasswordInvalid,
    PdfEncryptionUnsupported), ValidationContentUnexpected and
    ValidationDigestInvalid.
    """
    from signserver.signing import report_cms, report_pdf, report_text

    path = Path(path)
    validated_at = datetime.now(timezone.utc)
    document_sha256, size, head = _hash_file(path)
    if content_path is not None and digest is not None:
        raise ValidationContentUnexpected(reason="send either the original content or its digest, not both")
    if digest is not None:
        _check_digest(digest, digest_algorithm)

    if _looks_like_pdf(head):
        if content_path is not None or digest is not None:
            raise ValidationContentUnexpected(reason="a PDF signature covers the PDF itself")
        pdf_result = await report_pdf.pdf_signature_reports(path, password=password, trust=trust)
        signatures = pdf_result.signatures
        document_timestamps = pdf_result.document_timestamps
        document = DocumentInfo("pdf", document_sha256, size, revisions=pdf_result.total_revisions)
    else:
        content_info = _load_cms(path, head)
        cms_result = await report_cms.cms_signature_reports(
            content_info, trust=trust, content_path=content_path, digest=digest, digest_algorithm=digest_algorithm
        )
        signatures = cms_result.signatures
        document_timestamps = []
        document = DocumentInfo("cms", document_sha256, size, content=cms_result.content)

    indication, counts = overall_indication(signatures)
    return ValidationReport(
        document=document,
        validated_at=validated_at,
        trust_anchors=[root.subject.human_friendly for root in trust.trust_roots],
        signatures=signatures,
        document_timestamps=document_timestamps,
        indication=indication,
        counts=counts,
        summary=report_text.document_summary(indication, counts),
    )


async def validate_document_in_thread(
    executor: concurrent.futures.Executor,
    path: Path,
    *,
    trust_roots: tuple[x509.Certificate, ...],
    context_factory: ValidationContextFactory,
    timeout_seconds: float,
    **options: Any,
) -> ValidationReport:
    """Run ``validate_document`` on a thread of ``executor``, in an event loop of that thread.

    pyHanko parses, hashes and builds paths in Python, which would hold up
    the caller's event loop for the length of a large document. Raises
    ValidationTimedOut after ``timeout_seconds``.
    """
    trust = TrustSetup(trust_roots, context_factory)

    async def bounded() -> ValidationReport:
        try:
            return await asyncio.wait_for(validate_document(path, trust=trust, **options), timeout=timeout_seconds)
        except asyncio.TimeoutError:
            raise ValidationTimedOut(seconds=timeout_seconds) from None

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, asyncio.run, bounded())


def normalise_digest_algorithm(name: str) -> str:
    """Return hashlib's name for a digest algorithm as people write it: "SHA-256" is "sha256", "SHA3-256" "sha3_256"."""
    compact = name.strip().lower().replace("-", "").replace("_", "")
    if compact.startswith("sha3"):
        return f"sha3_{compact[4:]}"
    return compact


def _looks_like_pdf(head: bytes) -> bool:
    """Tell a PDF from a CMS file by its first bytes.

    A DER CMS object starts with a SEQUENCE tag (0x30) and a PEM one with
    "-----BEGIN", and an attached CMS signature of a PDF contains "%PDF-"
    near its start, so those are never read as a PDF.
    """
    if head.startswith(b"%PDF-"):
        return True
    if head.startswith(b"\x30") or head.lstrip().startswith(b"-----BEGIN"):
        return False
    return b"%PDF-" in head[:_PDF_HEADER_WINDOW]


def _hash_file(path: Path) -> tuple[str, int, bytes]:
    """Return the SHA-256 hex, the size and the first bytes of the file."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            if not head:
                head = chunk[:_PDF_HEADER_WINDOW + 16]
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, head


def _check_digest(digest: bytes, digest_algorithm: str | None) -> None:
    if digest_algorithm not in SUPPORTED_DIGEST_ALGORITHMS:
        raise ValidationDigestInvalid(
            reason=f"digest_algorithm must be one of {', '.join(SUPPORTED_DIGEST_ALGORITHMS)}, got {digest_algorithm!r}"
        )
    expected = SUPPORTED_DIGEST_ALGORITHMS[digest_algorithm]
    if len(digest) != expected:
        raise ValidationDigestInvalid(
            reason=f"a {digest_algorithm} digest has {expected} bytes ({2 * expected} hex digits), got {len(digest)}"
        )


def _load_cms(path: Path, head: bytes) -> cms.ContentInfo:
    """Parse the file as a CMS ContentInfo in DER or PEM, or raise ValidationDocumentUnrecognized."""
    data = path.read_bytes()
    if any(marker in head for marker in _PEM_CMS_MARKERS) or head.lstrip().startswith(b"-----BEGIN"):
        try:
            _type_name, _headers, data = pem.unarmor(data.strip())
        except ValueError as exc:
            raise ValidationDocumentUnrecognized(reason=f"invalid PEM ({exc})") from None
    try:
        content_info = cms.ContentInfo.load(data, strict=True)
        content_type = content_info["content_type"].native
        if content_type != "signed_data":
            raise ValidationDocumentUnrecognized(reason=f"a CMS {content_type}, not a signed_data")
        signed_data = content_info["content"]
        # Parse the parts that validation reads, so that damage shows here.
        signer_count = len(signed_data["signer_infos"])
        _ = signed_data["encap_content_info"]["content_type"].native
    except ValidationDocumentUnrecognized:
        raise
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ValidationDocumentUnrecognized(reason=f"not a PDF, and not DER CMS ({type(exc).__name__})") from None
    if signer_count == 0:
        raise ValidationDocumentUnrecognized(reason="the CMS SignedData has no SignerInfo")
    return content_info


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _jsonable(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, str):
        # pyHanko's PDF strings are str subclasses that hold a reader.
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, Enum):
        return value.name.lower()
    return value

