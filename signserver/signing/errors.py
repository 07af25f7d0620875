"""Errors raised by the signing formats, each with a stable ``code``.

Document problems are the caller's to fix (``InvalidInput``) or conflict with
the document's own state (``Conflict``). Time-stamping failures are a
dependency being down (``Unavailable``). A missing stamp font is a deployment
fault, so it keeps the base class and becomes an internal error. A signer
certificate that is expired, revoked or untrusted is a ``Conflict`` with the
credential's state, while OCSP and CRL servers that cannot be reached are an
``Unavailable`` dependency.
"""

from __future__ import annotations

from signserver.errors import Conflict, InvalidInput, SignserverError, Unavailable

__all__ = [
    "PdfInvalid",
    "PdfTooComplex",
    "PdfPasswordRequired",
    "PdfPasswordInvalid",
    "PdfEncryptionUnsupported",
    "PdfCertifiedNoChanges",
    "PdfCertifiedNewVisibleField",
    "PdfCertificationNotFirst",
    "PdfSigningNotPermitted",
    "PdfPageOutOfRange",
    "PdfFieldAlreadySigned",
    "PdfStampInvalid",
    "PdfStampOutsidePage",
    "StampFontMissing",
    "StampFontUnsupported",
    "TimestampFailed",
    "CertificateExpired",
    "CertificateNotYetValid",
    "CertificateRevoked",
    "CertificateUntrusted",
    "RevocationUnavailable",
    "PadesLevelNotReached",
    "CadesLevelNotReached",
    "AppearanceImageInvalid",
    "AppearanceImageMissing",
    "AnchorNotFound",
    "PdfFieldNotFound",
    "SignatureValidationFailed",
]


class PdfInvalid(InvalidInput):
    """The file is not a PDF, or is damaged beyond what pyHanko can repair.

    Params: ``reason``, a short technical description of the parse failure.
    """

    code = "pdf_invalid"


class PdfTooComplex(InvalidInput):
    """The PDF exceeds a limit on the work of reading it: cross-reference entries, pages, or page tree nodes or depth.

    Params: ``reason``, which limit was exceeded and by what value.
    """

    code = "pdf_too_complex"


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


class PdfCertificationNotFirst(Conflict):
    """A certification signature was requested on a PDF that is already signed.

    A document contains at most one certification (DocMDP) signature
    (ISO 32000-1 section 12.8.2.2), and pyHanko 0.38 makes it only as the
    first signature of a document. Sign with an approval signature instead.
    """

    code = "pdf_certification_not_first"


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


class CertificateExpired(Conflict):
    """A certificate of the signer's chain is past its notAfter. Params: ``subject``, ``valid_to``."""

    code = "certificate_expired"


class CertificateNotYetValid(Conflict):
    """A certificate of the signer's chain is before its notBefore. Params: ``subject``, ``valid_from``."""

    code = "certificate_not_yet_valid"


class CertificateRevoked(Conflict):
    """OCSP or a CRL reports the signer's certificate, or a CA above it, as revoked.

    Params: ``subject`` (of the signer's certificate), ``revoked_at`` and
    ``reason`` (the RFC 5280 CRLReason name, ``unspecified`` when none was given).
    """

    code = "certificate_revoked"


class CertificateUntrusted(Conflict):
    """The signer's certificate does not chain to a trust anchor. Params: ``subject``, ``reason``."""

    code = "certificate_untrusted"


class RevocationUnavailable(Unavailable):
    """No usable OCSP response or CRL was obtained, and the signature level needs one.

    Params: ``subject``, ``urls`` (the OCSP or CRL URLs that failed, comma-separated) and ``reason``.
    """

    code = "revocation_unavailable"


class PadesLevelNotReached(Unavailable):
    """The signature could not be brought to the requested PAdES level, so it is not released at a lower one.

    The usual cause is validation data (OCSP responses, CRLs, time-stamps)
    that could not be obtained, so a later attempt may succeed.
    Params: ``level`` (the requested level) and ``reason``.
    """

    code = "level_not_reached"


class CadesLevelNotReached(Unavailable):
    """The CAdES signature could not be brought to the requested level, so it is not released at a lower one.

    Usually an OCSP responder, CRL server or TSA could not be reached, so a
    later attempt may succeed. Params: ``level`` (the requested level) and ``reason``.
    """

    code = "level_not_reached"


class SignatureValidationFailed(SignserverError):
    """A freshly signed PDF or CAdES file did not pass validation, so it must not be released.

    Params: ``field_name`` and ``reason``.
    """

    code = "signature_validation_failed"


class AppearanceImageInvalid(InvalidInput):
    """An uploaded signature or seal image is not a PNG the stamp can use.

    Params: ``image`` (``signature_image`` or ``seal_image``) and ``reason``.
    """

    code = "appearance_image_invalid"


class AppearanceImageMissing(InvalidInput):
    """The requested appearance needs an image that the credential's profile does not have.

    Params: ``appearance`` and ``credential_id``.
    """

    code = "appearance_image_missing"


class AnchorNotFound(InvalidInput):
    """The anchor text of a placement does not occur in the PDF as often as requested.

    Params: ``anchor``, ``occurrence`` (1-based, negative counts from the end) and ``found``.
    """

    code = "anchor_not_found"


class PdfFieldNotFound(InvalidInput):
    """The PDF has no signed signature field of that name with a visible box. Params: ``field_name``, ``reason``."""

    code = "pdf_field_not_found"
