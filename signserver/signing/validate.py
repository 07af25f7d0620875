"""Validation of PDF signatures against the service's trust roots, with pyHanko.

``ensure_signed_pdf_valid`` is the last step before a signed document is
released: its newest signature must be intact, cryptographically valid,
chained to a trust root and time-stamped (PAdES B-T).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from asn1crypto import x509
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import PdfSignatureStatus
from pyhanko_certvalidator import ValidationContext

from signserver.signing.errors import SignatureValidationFailed
from signserver.signing.pdf_inspect import PDF_PARSE_ERRORS, open_pdf_reader, pdf_parse_errors

__all__ = ["SignatureReport", "validate_pdf", "ensure_signed_pdf_valid", "validation_context"]

log = structlog.get_logger(__name__)

_PADES_SUBFILTER = "/ETSI.CAdES.detached"

# Personal signing certificates carry nonRepudiation (contentCommitment),
# while agency seal certificates may carry only digitalSignature
# (ETSI EN 319 412-2 and 319 412-3), so either one is accepted.
SIGNER_KEY_USAGE = KeyUsageConstraints(key_usage={"non_repudiation", "digital_signature"}, match_all_key_usages=False)


@dataclass(frozen=True)
class SignatureReport:
    """Validation result of one signature."""

    field_name: str
    # Signer certificate subject in asn1crypto's human_friendly form, "" if unreadable.
    signer_subject: str
    intact: bool
    valid: bool
    trusted: bool
    # A signature time-stamp token is present, intact, valid and trusted.
    timestamp_valid: bool
    # SignatureCoverageLevel name in lower case, e.g. "entire_file".
    coverage: str
    # "B-T" or "B-B" for ETSI.CAdES.detached signatures, "none" otherwise.
    level: str
    # The changes made after this signature are allowed by its DocMDP rules.
    modifications_allowed: bool
    timestamp_time: datetime | None
    # The /M entry or signingTime as claimed by the signer, not verified.
    signer_reported_time: datetime | None
    # Why the signature could not be evaluated at all, else None.
    error: str | None = None


def validation_context(trust_roots: list[x509.Certificate]) -> ValidationContext:
    """Return a validation context that trusts only ``trust_roots``."""
    # NOTE: revocation checking is off for now. The demo PKI publishes no OCSP
    # responder or CRL yet, so nothing is fetched and missing revocation
    # information is tolerated ("soft-fail"). A revoked signer certificate
    # therefore still validates.
    return ValidationContext(trust_roots=list(trust_roots), allow_fetching=False, revocation_mode="soft-fail")


async def validate_pdf(
    path: Path, trust_roots: list[x509.Certificate], password: str | None = None, *, last_only: bool = False
) -> list[SignatureReport]:
    """Validate every approval and certification signature in the PDF at ``path``.

    Returns one report per signature, oldest first; with ``last_only``, only the newest one.
    Raises the opening errors of ``inspect_pdf`` (PdfInvalid, password errors).
    A signature that pyHanko cannot evaluate is reported with ``error`` set.
    """
    reports = []
    with Path(path).open("rb") as stream:
        reader = open_pdf_reader(stream, password, require_signing_permission=False)
        with pdf_parse_errors():
            embedded_signatures = reader.embedded_regular_signatures
        if last_only:
            embedded_signatures = embedded_signatures[-1:]

        for embedded_signature in embedded_signatures:
            # A fresh context per signature, so that certificates and paths
            # cached for one signature do not influence the next.
            context = validation_context(trust_roots)
            try:
                status = await async_validate_pdf_signature(
                    embedded_signature,
                    signer_validation_context=context,
                    ts_validation_context=context,
                    key_usage_settings=SIGNER_KEY_USAGE,
                )
            except PDF_PARSE_ERRORS as exc:
                report = _failed_report(embedded_signature, exc)
                log.warning("pdf_signature.evaluation_failed", field_name=report.field_name, error=report.error)
                reports.append(report)
                continue
            reports.append(_report(embedded_signature, status))
    return reports


async def ensure_signed_pdf_valid(
    path: Path, trust_roots: list[x509.Certificate], password: str | None = None
) -> list[SignatureReport]:
    """Validate the PDF's last signature and raise SignatureValidationFailed unless it is sound.

    The last signature must be intact, valid, trusted to one of
    ``trust_roots``, allow the changes made after it, and carry a valid
    signature time-stamp. Earlier signatures, often by other CAs, are not
    evaluated. Returns the report of the last signature.
    """
    reports = await validate_pdf(path, trust_roots, password, last_only=True)
    if not reports:
        raise SignatureValidationFailed(field_name=None, reason="the document contains no signature")

    last = reports[-1]
    checks = (
        (last.error is None, f"the signature cannot be evaluated: {last.error}"),
        (last.intact, "the document digest does not match the signed digest"),
        (last.valid, "the signature value does not verify with the signer's certificate"),
        (last.trusted, "the signer's certificate does not chain to a trusted root"),
        (last.timestamp_valid, "the signature time-stamp is missing, invalid or untrusted"),
        (last.modifications_allowed, "the document was changed in a way the signature does not allow"),
    )
    for passed, reason in checks:
        if not passed:
            raise SignatureValidationFailed(field_name=last.field_name, reason=reason)
    return reports


def _report(embedded_signature: EmbeddedPdfSignature, status: PdfSignatureStatus) -> SignatureReport:
    timestamp = status.timestamp_validity
    timestamp_valid = timestamp is not None and timestamp.intact and timestamp.valid and timestamp.trusted
    modifications_allowed = bool(status.docmdp_ok) or status.modification_level is None
    return SignatureReport(
        field_name=embedded_signature.field_name,
        signer_subject=status.signing_cert.subject.human_friendly,
        intact=status.intact,
        valid=status.valid,
        trusted=status.trusted,
        timestamp_valid=timestamp_valid,
        coverage=status.coverage.name.lower() if status.coverage is not None else "unclear",
        level=_level(embedded_signature, has_timestamp=timestamp is not None),
        modifications_allowed=modifications_allowed,
        timestamp_time=timestamp.timestamp if timestamp is not None else None,
        signer_reported_time=status.signer_reported_dt,
    )


def _failed_report(embedded_signature: EmbeddedPdfSignature, exc: BaseException) -> SignatureReport:
    try:
        signer_subject = embedded_signature.signer_cert.subject.human_friendly
    except PDF_PARSE_ERRORS:
        signer_subject = ""
    return SignatureReport(
        field_name=embedded_signature.field_name,
        signer_subject=signer_subject,
        intact=False,
        valid=False,
        trusted=False,
        timestamp_valid=False,
        coverage="unclear",
        level="none",
        modifications_allowed=False,
        timestamp_time=None,
        signer_reported_time=None,
        error=f"{type(exc).__name__}: {exc}"[:200],
    )


def _level(embedded_signature: EmbeddedPdfSignature, *, has_timestamp: bool) -> str:
    # NOTE: LT and LTA (DSS and document time-stamps) are not detected yet,
    # so such signatures are reported as B-T.
    if embedded_signature.sig_object.get("/SubFilter") != _PADES_SUBFILTER:
        return "none"
    return "B-T" if has_timestamp else "B-B"
