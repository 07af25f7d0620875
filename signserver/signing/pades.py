"""PAdES baseline signatures (ETSI EN 319 142-1), levels B-B to B-LTA, on PDF files, with pyHanko.

The signature is a CMS SignedData (subfilter ETSI.CAdES.detached) with the
signing-certificate-v2 attribute, no signingTime attribute (the time goes in
the signature dictionary's /M, as PAdES requires) and the certificate chain.
From B-T on it carries a signature time-stamp token as unsigned attribute.
B-LT adds a DSS with the validation data of the signer's and the TSA's
certificates, and B-LTA a document time-stamp over it (see ``pades_levels``).
Each signature is an approval signature unless a certification is requested.
It is added as an incremental update, so earlier signatures stay valid.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import structlog
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import FormFillingError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import MDPPerm, SigFieldSpec, SigSeedSubFilter, enumerate_sig_fields
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.signers.pdf_signer import PdfPostSignatureDocument, PdfSigningSession, PreSignValidationStatus
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError

from signserver.signing.appearance import appearance_style
from signserver.signing.baseline_levels import BASELINE_LEVELS, LONG_TERM_LEVELS
from signserver.signing.errors import (
    PadesLevelNotReached,
    PdfCertificationNotFirst,
    PdfCertifiedNewVisibleField,
    PdfFieldAlreadySigned,
    PdfInvalid,
    PdfPageOutOfRange,
    PdfStampInvalid,
    TimestampFailed,
)
from signserver.signing.files import atomic_output
from signserver.signing.fonts import nfc, stamp_font_path
from signserver.signing.keys import SigningKey, pyhanko_signer
from signserver.signing.pades_levels import (
    check_level_reached,
    presign_validation_error,
    relevant_validation_info,
)
from signserver.signing.pdf_inspect import (
    MAX_PAGE_TREE_DEPTH,
    PDF_PARSE_ERRORS,
    open_pdf_reader,
    pdf_parse_errors,
    read_pdf_info,
)
from signserver.signing.stamp import StampSpec, stamp_text_params

__all__ = [
    "DEFAULT_LEVEL",
    "SIGNATURE_CONTAINER_BYTES",
    "StampSpec",
    "PadesResult",
    "sign_pdf",
    "page_visible_box",
    "default_stamp_box",
]

log = structlog.get_logger(__name__)

DEFAULT_LEVEL = "B-T"
DIGEST_ALGORITHM = "sha256"

# Space reserved in /Contents for the CMS object, which contains the signer's
# chain and the time-stamp token with the TSA's chain. With the demo PKI
# (RSA-3072 CAs, RSA-2048 or P-256 signer and TSA) the object measures about
# 9 KB, so 32 KB leaves room for longer chains and larger keys without the
# trial signature that pyHanko would otherwise need for sizing. B-LT and
# B-LTA need no more room here: pyHanko puts their certificates, OCSP
# responses and CRLs in the DSS of a later revision, and sizes the document
# time-stamp's own container.
SIGNATURE_CONTAINER_BYTES = 32 * 1024

_COPY_CHUNK_BYTES = 1024 * 1024
_MAX_FIELD_NAME_LENGTH = 127
# Generous bound for the search of a free default field name.
_MAX_DEFAULT_FIELD_NUMBER = 10_000


@dataclass(frozen=True)
class PadesResult:
    """Outcome of ``sign_pdf``."""

    # Lower-case hex SHA-256 of the whole signed file.
    output_digest_sha256: str
    signing_time: datetime
    field_name: str
    level: str


async def sign_pdf(
    input_path: Path,
    output_path: Path,
    *,
    key: SigningKey,
    timestamper: TimeStamper | None,
    reason: str,
    location: str,
    stamp: StampSpec | None,
    password: str | None = None,
    field_name: str | None = None,
    signing_time: datetime | None = None,
    digest_algorithm: str = DIGEST_ALGORITHM,
    level: str = DEFAULT_LEVEL,
    validation_context: ValidationContext | None = None,
    certify: bool = False,
) -> PadesResult:
    """Sign the PDF at ``input_path`` as PAdES ``level`` and write it to ``output_path``.

    The output is written to a temporary file in the output's directory and
    renamed into place once complete, so ``output_path`` is never half written.
    Without ``field_name``, a new field "SignatureN" is created. A named field
    that exists and is empty is signed in place, with its own box.
    ``digest_algorithm`` (sha256, sha384 or sha512) hashes the document and
    the signed attributes.

    ``level`` is one of ``BASELINE_LEVELS``. B-B ignores ``timestamper``, which
    the other levels need. B-LT and B-LTA also need ``validation_context``,
    which fetches the OCSP responses and CRLs of the signer's and the TSA's
    certificates and should require revocation data. The output either
    contains everything ``level`` needs or is not written: ``result.level``
    is always ``level``. ``certify`` makes a certification signature with
    DocMDP P=2 (form filling and signing allowed), else it is an approval
    signature.

    Raises, before the key is used, the errors of ``inspect_pdf``
    (PdfCertifiedNoChanges for P=1), PdfPageOutOfRange, PdfStampInvalid
    (field name or text), PdfFieldAlreadySigned, PdfCertifiedNewVisibleField
    (a stamp in a new field of a certified document) and
    PdfCertificationNotFirst (``certify`` on a signed document). Raises
    TimestampFailed when the TSA gives no token, and RevocationUnavailable,
    CertificateRevoked or PadesLevelNotReached when ``level`` cannot be reached.
    """
    signing_time = _check_signing_time(signing_time)
    _check_level_arguments(level, timestamper, validation_context)
    output_path = Path(output_path)
    long_term = level in LONG_TERM_LEVELS

    with Path(input_path).open("rb") as input_stream:
        reader = open_pdf_reader(input_stream, password)
        info = read_pdf_info(reader)
        if stamp is not None:
            _check_stamp_placement(reader, stamp, info.page_count)
        field_name, field_exists = _choose_field_name(reader, field_name)
        if info.certification_level is not None and stamp is not None and not field_exists:
            # pyHanko 0.38's default difference policy, stricter than Acrobat,
            # would report the certification signature as broken.
            raise PdfCertifiedNewVisibleField(certification_level=info.certification_level)
        if certify and info.has_signatures:
            raise PdfCertificationNotFirst()

        text_params = stamp_text_params(stamp, key.certificate, reason=reason, signing_time=signing_time)
        pdf_signer = PdfSigner(
            PdfSignatureMetadata(
                field_name=field_name,
                md_algorithm=digest_algorithm,
                subfilter=SigSeedSubFilter.PADES,
                reason=text_params["reason"] or None,
                location=nfc(location) or None,
                certify=certify,
                docmdp_permissions=MDPPerm.FILL_FORMS,
                embed_validation_info=long_term,
                use_pades_lta=level == "B-LTA",
                validation_context=validation_context if long_term else None,
                # pyHanko requires non_repudiation by default, which agency
                # seal certificates may lack. ensure_signed_pdf_valid checks
                # the key usage after signing.
                signer_key_usage=set(),
            ),
            pyhanko_signer(key, digest_algorithm),
            timestamper=timestamper if level != "B-B" else None,
            stamp_style=appearance_style(stamp, stamp_font_path(), text_params),
            new_field_spec=_field_spec(field_name, stamp),
        )

        with atomic_output(output_path) as output:
            validation_info = await _sign_into(pdf_signer, reader, output, text_params, signing_time, level)
            with pdf_parse_errors():
                signed_reader = open_pdf_reader(output, password, require_signing_permission=False)
                check_level_reached(signed_reader, field_name, level, validation_info)
            output_digest = _sha256_of(output)

    log.info("pdf_signature.created", field_name=field_name, level=level, certify=certify)
    return PadesResult(
        output_digest_sha256=output_digest,
        signing_time=signing_time,
        field_name=field_name,
        level=level,
    )


def _check_level_arguments(
    level: str, timestamper: TimeStamper | None, validation_context: ValidationContext | None
) -> None:
    if level not in BASELINE_LEVELS:
        raise ValueError(f"level must be one of {', '.join(BASELINE_LEVELS)}, got {level!r}")
    if level != "B-B" and timestamper is None:
        raise ValueError(f"level {level} needs a timestamper")
    if level in LONG_TERM_LEVELS and validation_context is None:
        raise ValueError(f"level {level} needs a validation_context that fetches revocation data")


async def _sign_into(
    pdf_signer: PdfSigner,
    reader: PdfFileReader,
    output: BinaryIO,
    text_params: dict[str, str],
    signing_time: datetime,
    level: str,
) -> PreSignValidationStatus | None:
    """Run pyHanko's signing steps, with our signing time, into ``output``.

    Returns the validation data collected before signing (None below B-LT).
    """
    with pdf_parse_errors():
        writer = IncrementalPdfFileWriter.from_reader(reader)
        session = pdf_signer.init_signing_session(writer)
        session.system_time = signing_time
    validation_info = await _presign_validation(session, writer, pdf_signer, level)
    with pdf_parse_errors():
        tbs_document = session.prepare_tbs_document(
            validation_info=validation_info,
            bytes_reserved=SIGNATURE_CONTAINER_BYTES,
            appearance_text_params=text_params,
        )
        prepared_digest, _ = tbs_document.digest_tbs_document(output=output)

    try:
        post_signing_document = await tbs_document.perform_signature(
            document_digest=prepared_digest.document_digest,
            pdf_cms_signed_attrs=PdfCMSSignedAttributes(signing_time=signing_time),
        )
    except (TimestampRequestError, asyncio.TimeoutError) as exc:
        # pyHanko's TSA clients (0.38) wrap transport errors and rejections
        # in TimestampRequestError, and InProcessTimeStamper does the same.
        raise TimestampFailed(reason=f"{type(exc).__name__}: {exc}"[:200]) from exc

    if validation_info is not None:
        # Without the context, pyHanko fills the DSS from validation_info
        # alone, which relevant_validation_info has narrowed.
        post_signing_document = PdfPostSignatureDocument(
            post_signing_document.sig_contents,
            post_sign_instr=post_signing_document.post_sign_instructions,
            validation_context=None,
        )
    try:
        await post_signing_document.post_signature_processing(output)
    except (TimestampRequestError, asyncio.TimeoutError) as exc:
        # The document time-stamp of B-LTA.
        raise TimestampFailed(reason=f"{type(exc).__name__}: {exc}"[:200]) from exc
    return validation_info


async def _presign_validation(
    session: PdfSigningSession, writer: IncrementalPdfFileWriter, pdf_signer: PdfSigner, level: str
) -> PreSignValidationStatus | None:
    """Validate the signer's and the TSA's certificates and collect their revocation data, for B-LT and up."""
    if level not in LONG_TERM_LEVELS:
        return None
    try:
        validation_info = await session.perform_presign_validation(writer)
    except SigningError as exc:
        # pyHanko wraps the certvalidator error of the signer's certificate.
        cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        raise presign_validation_error(cause, pdf_signer.signer.signing_cert, level) from exc
    except (PathBuildingError, PathValidationError) as exc:
        # The TSA's certificate, validated through a dummy time-stamp.
        raise presign_validation_error(exc, pdf_signer.signer.signing_cert, level) from exc
    except (TimestampRequestError, asyncio.TimeoutError) as exc:
        raise TimestampFailed(reason=f"{type(exc).__name__}: {exc}"[:200]) from exc
    if validation_info is None:
        raise PadesLevelNotReached(level=level, reason="no validation data was collected before signing")
    return relevant_validation_info(validation_info)


def _check_signing_time(signing_time: datetime | None) -> datetime:
    if signing_time is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    if signing_time.tzinfo is None or signing_time.utcoffset() is None:
        raise ValueError(f"signing_time must be timezone-aware, got {signing_time.isoformat()}")
    return signing_time


def _check_stamp_placement(reader: PdfFileReader, stamp: StampSpec, page_count: int) -> None:
    """Check that the stamp page exists, and log a warning if the box leaves its visible area.

    A box outside the page is kept as given, because the signature stays
    valid and the caller chose the position.
    """
    if stamp.page > page_count:
        raise PdfPageOutOfRange(page=stamp.page, page_count=page_count)

    with pdf_parse_errors():
        page_ref, _ = reader.find_page_for_modification(stamp.page - 1)
    try:
        visible_box = _inherited_page_box(page_ref.get_object())
    except PDF_PARSE_ERRORS:
        # A damaged page box only costs the warning. pyHanko does not need it.
        visible_box = None
    if visible_box is None:
        return

    left, bottom, right, top = visible_box
    x1, y1, x2, y2 = stamp.box
    if x1 < left or y1 < bottom or x2 > right or y2 > top:
        log.warning("pdf_stamp.outside_page", page=stamp.page, box=stamp.box, visible_box=visible_box)


def page_visible_box(reader: PdfFileReader, page: int) -> tuple[float, float, float, float] | None:
    """Return the visible box (CropBox, else MediaBox) of the 1-based ``page``, or None if it has none."""
    with pdf_parse_errors():
        page_ref, _ = reader.find_page_for_modification(page - 1)
    try:
        return _inherited_page_box(page_ref.get_object())
    except PDF_PARSE_ERRORS:
        return None


def default_stamp_box(visible_box: tuple[float, float, float, float] | None) -> tuple[float, float, float, float]:
    """Return a stamp box in the bottom-right corner of a page, inside its visible box.

    The box is 250 x 100 points where the page allows, smaller on small pages,
    with a margin of 5 % of the page's width and height.
    """
    left, bottom, right, top = visible_box or (0.0, 0.0, 595.0, 842.0)  # A4 when the page names no box
    width, height = right - left, top - bottom
    box_width = min(250.0, width * 0.9)
    box_height = min(100.0, height * 0.4)
    x2 = right - width * 0.05
    y1 = bottom + height * 0.05
    return (round(x2 - box_width, 2), round(y1, 2), round(x2, 2), round(y1 + box_height, 2))


def _inherited_page_box(page: generic.DictionaryObject) -> tuple[float, float, float, float] | None:
    """Return the page's /CropBox, else its /MediaBox, normalised, looking up /Parent nodes."""
    for box_name in ("/CropBox", "/MediaBox"):
        node = page
        # read_pdf_info rejects deeper /Kids trees, so only a /Parent chain that
        # disagrees with /Kids, such as a cycle, reaches this bound.
        for _ in range(MAX_PAGE_TREE_DEPTH):
            if box_name in node:
                x1, y1, x2, y2 = (float(value) for value in node[box_name])
                return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
            try:
                node = node["/Parent"]
            except KeyError:
                break
            if not isinstance(node, generic.DictionaryObject):
                break
    return None


def _choose_field_name(reader: PdfFileReader, requested: str | None) -> tuple[str, bool]:
    """Return the signature field to fill and whether it exists already.

    A requested name must not belong to a signed field or to another kind of
    form field. Without one, the first free "SignatureN" is chosen.
    """
    if requested is not None:
        requested = nfc(requested)
        if not requested or "." in requested or len(requested) > _MAX_FIELD_NAME_LENGTH:
            raise PdfStampInvalid(
                reason=f"field_name must be 1 to {_MAX_FIELD_NAME_LENGTH} characters without '.', "
                f"got {requested!r}"
            )
        with pdf_parse_errors():
            try:
                matches = list(enumerate_sig_fields(reader, with_name=requested))
            except FormFillingError as exc:
                raise PdfStampInvalid(reason=f"field {requested!r} exists but is not a signature field") from exc
        if any(value for _, value, _ in matches):
            raise PdfFieldAlreadySigned(field_name=requested)
        return requested, bool(matches)

    with pdf_parse_errors():
        existing_names = {name for name, _, _ in enumerate_sig_fields(reader)}
        for number in range(len(existing_names) + 1, _MAX_DEFAULT_FIELD_NUMBER):
            candidate = f"Signature{number}"
            if candidate in existing_names:
                continue
            try:
                next(enumerate_sig_fields(reader, with_name=candidate), None)
            except FormFillingError:
                # Another kind of form field already has this name.
                continue
            return candidate, False
    raise PdfInvalid(reason=f"no free signature field name up to Signature{_MAX_DEFAULT_FIELD_NUMBER}")


def _field_spec(field_name: str, stamp: StampSpec | None) -> SigFieldSpec:
    # NOTE: the page's /Rotate is not compensated. On a rotated page the stamp
    # is drawn in unrotated user space, so viewers show it rotated as well.
    if stamp is None:
        return SigFieldSpec(sig_field_name=field_name)
    return SigFieldSpec(sig_field_name=field_name, on_page=stamp.page - 1, box=stamp.box)


def _sha256_of(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    while chunk := stream.read(_COPY_CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()
