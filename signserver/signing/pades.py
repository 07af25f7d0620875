"""PAdES baseline B-T signatures (ETSI EN 319 142-1) on PDF files, with pyHanko.

The signature is a CMS SignedData (subfilter ETSI.CAdES.detached) with the
signing-certificate-v2 attribute, no signingTime attribute (the time goes in
the signature dictionary's /M, as PAdES requires), the certificate chain,
and a signature time-stamp token as unsigned attribute. It is added as an
incremental update, so earlier signatures stay valid.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import FormFillingError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import SigFieldSpec, SigSeedSubFilter, enumerate_sig_fields
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError

from signserver.signing.errors import (
    PdfCertifiedNewVisibleField,
    PdfFieldAlreadySigned,
    PdfInvalid,
    PdfPageOutOfRange,
    PdfStampInvalid,
    TimestampFailed,
)
from signserver.signing.fonts import nfc, stamp_font_path
from signserver.signing.keys import SigningKey, pyhanko_signer
from signserver.signing.pdf_inspect import open_pdf_reader, pdf_parse_errors, read_pdf_info
from signserver.signing.stamp import StampSpec, stamp_style, stamp_text_params

__all__ = ["PADES_LEVEL", "SIGNATURE_CONTAINER_BYTES", "StampSpec", "PadesResult", "sign_pdf"]

PADES_LEVEL = "B-T"
DIGEST_ALGORITHM = "sha256"

# Space reserved in /Contents for the CMS object, which holds the signer's
# chain and the time-stamp token with the TSA's chain. With RSA-3072 CAs the
# object measures roughly 8-10 KB, so 32 KB leaves room for longer chains
# without the trial signature that pyHanko would otherwise need for sizing.
SIGNATURE_CONTAINER_BYTES = 32 * 1024

_COPY_CHUNK_BYTES = 1024 * 1024
_MAX_FIELD_NAME_LENGTH = 127
# Generous bound for the search of a free default field name.
_MAX_DEFAULT_FIELD_NUMBER = 10_000
# Bound on /Parent hops when looking up an inherited page box.
_MAX_PAGE_TREE_DEPTH = 64


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
    timestamper: TimeStamper,
    reason: str,
    location: str,
    stamp: StampSpec | None,
    password: str | None = None,
    field_name: str | None = None,
    signing_time: datetime | None = None,
) -> PadesResult:
    """Sign the PDF at ``input_path`` as PAdES B-T and write it to ``output_path``.

    The output is written to a temporary file in the output's directory and
    renamed into place once complete, so ``output_path`` is never half written.
    Without ``field_name``, a new field "SignatureN" is created. A named field
    that exists and is empty is signed in place, with its own box.

    Raises the errors of ``inspect_pdf``, PdfPageOutOfRange, PdfStampInvalid,
    PdfFieldAlreadySigned, PdfCertifiedNewVisibleField (a stamp in a new field
    of a certified document), and TimestampFailed when the TSA gives no token.
    """
    signing_time = _check_signing_time(signing_time)
    output_path = Path(output_path)

    with Path(input_path).open("rb") as input_stream:
        reader = open_pdf_reader(input_stream, password)
        info = read_pdf_info(reader)
        if info.page_count == 0:
            raise PdfInvalid(reason="the document has no pages")
        if stamp is not None:
            _check_stamp_placement(reader, stamp, info.page_count)
        field_name, field_exists = _choose_field_name(reader, field_name)
        if info.certification_level is not None and stamp is not None and not field_exists:
            # pyHanko 0.38's default difference policy, stricter than Acrobat,
            # would report the certification signature as broken.
            raise PdfCertifiedNewVisibleField(certification_level=info.certification_level)

        text_params = stamp_text_params(stamp, key.certificate, reason=reason, signing_time=signing_time)
        pdf_signer = PdfSigner(
            PdfSignatureMetadata(
                field_name=field_name,
                md_algorithm=DIGEST_ALGORITHM,
                subfilter=SigSeedSubFilter.PADES,
                reason=text_params["reason"] or None,
                location=nfc(location) or None,
            ),
            pyhanko_signer(key, DIGEST_ALGORITHM),
            timestamper=timestamper,
            stamp_style=stamp_style(stamp_font_path(), text_params),
            new_field_spec=_field_spec(field_name, stamp),
        )

        with _atomic_output(output_path) as output:
            await _sign_into(pdf_signer, reader, output, text_params, signing_time)
            output_digest = _sha256_of(output)

    return PadesResult(
        output_digest_sha256=output_digest,
        signing_time=signing_time,
        field_name=field_name,
        level=PADES_LEVEL,
    )


async def _sign_into(
    pdf_signer: PdfSigner,
    reader: PdfFileReader,
    output: BinaryIO,
    text_params: dict[str, str],
    signing_time: datetime,
) -> None:
    """Run pyHanko's signing steps, with our signing time, into ``output``."""
    with pdf_parse_errors():
        writer = IncrementalPdfFileWriter.from_reader(reader)
        session = pdf_signer.init_signing_session(writer)
        session.system_time = signing_time
        validation_info = await session.perform_presign_validation(writer)
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

    await post_signing_document.post_signature_processing(output)


def _check_signing_time(signing_time: datetime | None) -> datetime:
    if signing_time is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    if signing_time.tzinfo is None or signing_time.utcoffset() is None:
        raise ValueError(f"signing_time must be timezone-aware, got {signing_time.isoformat()}")
    return signing_time


def _check_stamp_placement(reader: PdfFileReader, stamp: StampSpec, page_count: int) -> None:
    """Check that the stamp page exists and that the box lies within its visible area."""
    if stamp.page > page_count:
        raise PdfPageOutOfRange(page=stamp.page, page_count=page_count)

    with pdf_parse_errors():
        page_ref, _ = reader.find_page_for_modification(stamp.page - 1)
        visible_box = _inherited_page_box(page_ref.get_object())
    if visible_box is None:
        # Without /MediaBox, viewers assume a default page size, so any box is kept.
        return

    left, bottom, right, top = visible_box
    x1, y1, x2, y2 = stamp.box
    if x1 < left or y1 < bottom or x2 > right or y2 > top:
        raise PdfStampInvalid(
            reason=f"box {stamp.box} lies outside page {stamp.page}, "
            f"whose visible area is {(left, bottom, right, top)}"
        )


def _inherited_page_box(page: generic.DictionaryObject) -> tuple[float, float, float, float] | None:
    """Return the page's /CropBox, else its /MediaBox, normalised, looking up /Parent nodes."""
    for box_name in ("/CropBox", "/MediaBox"):
        node = page
        for _ in range(_MAX_PAGE_TREE_DEPTH):
            if box_name in node:
                x1, y1, x2, y2 = (float(value) for value in node[box_name])
                return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
            parent = node.get("/Parent")
            if not isinstance(parent, generic.DictionaryObject):
                break
            node = parent
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
        taken = {name for name, _, _ in enumerate_sig_fields(reader)}
        for number in range(len(taken) + 1, _MAX_DEFAULT_FIELD_NUMBER):
            candidate = f"Signature{number}"
            if candidate in taken:
                continue
            try:
                next(enumerate_sig_fields(reader, with_name=candidate), None)
            except FormFillingError:
                # Another kind of form field already has this name.
                continue
            return candidate, False
    raise PdfInvalid(reason=f"no free signature field name up to Signature{_MAX_DEFAULT_FIELD_NUMBER}")


def _field_spec(field_name: str, stamp: StampSpec | None) -> SigFieldSpec:
    if stamp is None:
        return SigFieldSpec(sig_field_name=field_name)
    return SigFieldSpec(sig_field_name=field_name, on_page=stamp.page - 1, box=stamp.box)


class _atomic_output:
    """A temporary file beside ``path`` that replaces ``path`` only if the block succeeds."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._temporary_path: Path | None = None
        self._file: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        descriptor, name = tempfile.mkstemp(dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".tmp")
        self._temporary_path = Path(name)
        self._file = os.fdopen(descriptor, "w+b")
        return self._file

    def __exit__(self, exc_type, exc, traceback) -> None:
        assert self._file is not None and self._temporary_path is not None
        try:
            if exc_type is None:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if exc_type is None:
                os.replace(self._temporary_path, self._path)
        finally:
            self._temporary_path.unlink(missing_ok=True)


def _sha256_of(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    while chunk := stream.read(_COPY_CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()
