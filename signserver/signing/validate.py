"""Validation of PDF signatures against the service's trust roots, with pyHanko.

``ensure_signed_pdf_valid`` is the last step before a signed document is
released: its newest signature must be intact, cryptographically valid,
chained to a trust root and reach the requested PAdES level, and the
signatures that were sound before it was added must still be sound.

Levels are those of ETSI EN 319 142-1. B-T needs a valid signature
time-stamp. B-LT and B-LTA are read by ``pades_levels.long_term_level``
from the document's DSS alone, at the signature time-stamp's time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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

from signserver.signing.baseline_levels import BASELINE_LEVELS, level_reaches
from signserver.signing.errors import PadesLevelNotReached, SignatureValidationFailed
from signserver.signing.pades_levels import TimestampProof, long_term_level
from signserver.signing.revocation import RevocationFetcher
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
    # B-B, B-T, B-LT or B-LTA (see the module docstring) for
    # ETSI.CAdES.detached signatures, "none" otherwise.
    level: str
    # The changes made after this signature are allowed by its DocMDP rules.
    modifications_allowed: bool
    timestamp_time: datetime | None
    # The /M entry or signingTime as claimed by the signer, not verified.
    signer_reported_time: datetime | None
    # Why the signature could not be evaluated at all, else None.
    error: str | None = None


def validation_context(
    trust_roots: list[x509.Certificate],
    revocation: RevocationFetcher | None = None,
    *,
    revocation_required: bool = False,
    moment: datetime | None = None,
    other_certs: Iterable[x509.Certificate] = (),
) -> ValidationContext:
    """Return a validation context that trusts only ``trust_roots``.

    With ``revocation``, the context fetches OCSP responses and CRLs through
    that fetcher's cache, with the contract of
    ``RevocationFetcher.validation_context``. Without it, nothing is fetched
    and missing revocation data is tolerated ("soft-fail"). A revoked
    certificate is then caught only by revocation data embedded in what is
    validated; signing still refuses a revoked signer before it starts.
    """
    if revocation is not None:
        return revocation.validation_context(
            trust_roots, revocation_required=revocation_required, moment=moment, other_certs=other_certs
        )
    return ValidationContext(trust_roots=list(trust_roots), other_certs=list(other_certs), moment=moment,
                             allow_fetching=False, revocation_mode="soft-fail")


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
            level = await _level(embedded_signature, status, trust_roots)
            reports.append(_report(embedded_signature, status, level))
    return reports


async def ensure_signed_pdf_valid(
    path: Path,
    trust_roots: list[x509.Certificate],
    password: str | None = None,
    *,
    level: str = "B-T",
    original_path: Path | None = None,
) -> list[SignatureReport]:
    """Validate the PDF's last signature and raise unless it is sound and reaches ``level``.

    The last signature must be intact, valid, trusted to one of
    ``trust_roots`` and allow the changes made after it; from B-T on, it must
    carry a valid signature time-stamp. Raises SignatureValidationFailed
    for those, and PadesLevelNotReached when it validates below ``level``.

    With ``original_path``, the document before this signature, every
    earlier signature that was intact and whose DocMDP rules allowed the
    later changes there must still be so here. Earlier signatures are not
    required to be trusted, since other CAs often made them, and ones that
    were already broken do not block the new signature.
    Returns the report of the last signature.
    """
    if level not in BASELINE_LEVELS:
        raise ValueError(f"level must be one of {', '.join(BASELINE_LEVELS)}, got {level!r}")
    reports = await validate_pdf(path, trust_roots, password, last_only=original_path is None)
    if not reports:
        raise SignatureValidationFailed(field_name=None, reason="the document contains no signature")

    last = reports[-1]
    checks = (
        (last.error is None, f"the signature cannot be evaluated: {last.error}"),
        (last.intact, "the document digest does not match the signed digest"),
        (last.valid, "the signature value does not verify with the signer's certificate"),
        (last.trusted, "the signer's certificate does not chain to a trusted root"),
        (last.timestamp_valid or level == "B-B", "the signature time-stamp is missing, invalid or untrusted"),
        (last.modifications_allowed, "the document was changed in a way the signature does not allow"),
    )
    for passed, reason in checks:
        if not passed:
            raise SignatureValidationFailed(field_name=last.field_name, reason=reason)
    if not level_reaches(last.level, level):
        raise PadesLevelNotReached(
            level=level, reason=f"the signature validates as {last.level} only, from the data in the document"
        )

    if original_path is not None:
        before = await validate_pdf(original_path, trust_roots, password)
        _check_earlier_signatures_kept(before, reports[:-1])
    return [last]


def _check_earlier_signatures_kept(before: list[SignatureReport], after: list[SignatureReport]) -> None:
    """Raise SignatureValidationFailed if a signature sound in ``before`` is no longer sound in ``after``."""
    after_by_field = {report.field_name: report for report in after}
    for earlier in before:
        if not (earlier.error is None and earlier.intact and earlier.modifications_allowed):
            continue
        now = after_by_field.get(earlier.field_name)
        if now is None:
            raise SignatureValidationFailed(field_name=earlier.field_name,
                                            reason="an earlier signature is missing from the signed document")
        if not (now.error is None and now.intact and now.modifications_allowed):
            raise SignatureValidationFailed(
                field_name=earlier.field_name,
                reason="the new signature breaks an earlier signature: its digest or its DocMDP rules fail",
            )


def _report(embedded_signature: EmbeddedPdfSignature, status: PdfSignatureStatus, level: str) -> SignatureReport:
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
        level=level,
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


async def _level(
    embedded_signature: EmbeddedPdfSignature, status: PdfSignatureStatus, trust_roots: Sequence[x509.Certificate]
) -> str:
    if embedded_signature.sig_object.get("/SubFilter") != _PADES_SUBFILTER:
        return "none"
    timestamp = status.timestamp_validity
    if timestamp is None:
        return "B-B"
    # A long-term level needs a signature and a signature time-stamp that both verify.
    if not (timestamp.intact and timestamp.valid and timestamp.trusted and status.intact and status.valid):
        return "B-T"
    proof = TimestampProof(timestamp.timestamp, timestamp.signing_cert, embedded_signature.signed_revision)
    return await long_term_level(embedded_signature, proof, trust_roots)
