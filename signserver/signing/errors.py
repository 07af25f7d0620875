"""Errors raised by the signing formats, each with a stable ``code``.

Document problems are the caller's to fix (``InvalidInput``) or conflict with
the document's own state (``Conflict``). Time-stamping failures are a
dependency being down (``Unavailable``). A missing stamp font is a deployment
fault, so it keeps the base class and becomes an internal error.
"""

from __future__ import annotations

from signserver.errors import Conflict, InvalidInput, SignserverError, Unavailable

__all__ = [
    "PdfInvalid",
    "PdfPasswordRequired",
    "PdfPasswordInvalid",
    "PdfEncryptionUnsupported",
    "PdfCertifiedNoChanges",
    "PdfCertifiedNewVisibleField",
    "PdfSigningNotPermitted",
    "PdfPageOutOfRange",
    "PdfFieldAlreadySigned",
    "PdfStampInvalid",
    "PdfStampOutsidePage",
    "StampFontMissing",
    "StampFontUnsupported",
    "TimestampFailed",
    "SignatureValidationFailed",
]


class PdfInvalid(InvalidInput):
    """The file is not a PDF, or is damaged beyond what pyHanko can repair.

    Params: ``reason``, a short technical description of the parse failure.
    """

    code = "pdf_invalid"


class PdfPasswordRequired(InvalidInput):
    """The PDF is encrypted and cannot be opened without a password."""

    code = "pdf_password_required"


class PdfPasswordInvalid(InvalidInput):
    """The password given opens neither as user nor as owner password."""

    code = "pdf_password_invalid"


class PdfEncryptionUnsupported(InvalidInput):
    """The PDF uses a security handler other than the standard password one.

    Params: ``handler``, the ``/Filter`` of the encryption dictionary.
    """

    code = "pdf_encryption_unsupported"


class PdfCertifiedNoChanges(Conflict):
    """The PDF carries a certification signature whose DocMDP P value is 1."""

    code = "pdf_certified_no_changes"


class PdfCertifiedNewVisibleField(Conflict):
    """A visible signature in a new field was requested on a certified PDF.

    A certification signature allows new signature fields only if they are
    invisible. Sign without a stamp, or into an existing empty signature
    field. Params: ``certification_level``, the DocMDP P value.
    """

    code = "pdf_certified_new_visible_field"


class PdfSigningNotPermitted(Conflict):
    """The PDF, opened with its user password, does not permit filling in form fields.

    Signing it needs the owner password.
    """

    code = "pdf_signing_not_permitted"


class PdfPageOutOfRange(InvalidInput):
    """The stamp page does not exist. Params: ``page``, ``page_count``."""

    code = "pdf_page_out_of_range"


class PdfFieldAlreadySigned(Conflict):
    """The named signature field already contains a signature. Params: ``field_name``."""

    code = "pdf_field_already_signed"


class PdfStampInvalid(InvalidInput):
    """The stamp box or field name cannot be used on this document. Params: ``reason``."""

    code = "pdf_stamp_invalid"


class PdfStampOutsidePage(InvalidInput):
    """The requested stamp box leaves the page's visible area. Params: ``page``, ``rect``, ``page_box``."""

    code = "pdf_stamp_outside_page"


class StampFontMissing(SignserverError):
    """The configured stamp font file does not exist. Params: ``path``, ``env_var``."""

    code = "stamp_font_missing"


class StampFontUnsupported(SignserverError):
    """The configured stamp font cannot be rendered correctly. Params: ``path``, ``reason``."""

    code = "stamp_font_unsupported"


class TimestampFailed(Unavailable):
    """The time-stamping authority gave no usable token. Params: ``reason``."""

    code = "tsa_failed"


class SignatureValidationFailed(SignserverError):
    """A freshly signed PDF or CAdES file did not pass validation, so it must not be released.

    Params: ``field_name`` and ``reason``.
    """

    code = "signature_validation_failed"
