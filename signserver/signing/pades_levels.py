"""PAdES baseline levels of ETSI EN 319 142-1: what each one needs, and a check of signed output.

B-B is the CMS signature alone. B-T adds a signature time-stamp. B-LT adds a
document security store (DSS, ISO 32000-2 section 12.8.4.3) in a later
incremental update, holding the certificates and the OCSP responses or CRLs
that validate the signer's and the TSA's certificates. B-LTA adds a document
time-stamp over that DSS.

pyHanko fills the DSS from the validation paths and the revocation data it
collects before signing. ``relevant_validation_info`` narrows that data to
those paths, and ``check_level_reached`` reads the signed file back and
raises unless it contains what its level needs.

``long_term_level`` reads whether a time-stamped signature in any PDF
reaches B-LT or B-LTA, validating from the DSS alone. Both the release check
(``validate``) and the validation report (``report_pdf``) use it. pyHanko
0.38 no longer has the ``validate_pdf_ltv_signature`` of its earlier
versions, so it follows that function's approach with pyhanko-certvalidator.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.general import find_cms_attribute_iter
from pyhanko.sign.signers.pdf_signer import PreSignValidationStatus
from pyhanko.sign.validation import async_validate_pdf_timestamp
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko_certvalidator import find_valid_path
from pyhanko_certvalidator.errors import (
    InsufficientRevinfoError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
    ValidationError,
)

from signserver.errors import SignserverError
from signserver.signing.baseline_levels import LONG_TERM_LEVELS
from signserver.signing.embedded_validation_data import (
    ValidationData,
    cms_validation_data,
    dss_validation_data,
    ocsp_response_certificates,
    offline_context,
    read_dss,
)
from signserver.signing.errors import CertificateRevoked, PadesLevelNotReached, RevocationUnavailable
from signserver.signing.pdf_inspect import PDF_PARSE_ERRORS

__all__ = [
    "TimestampProof",
    "relevant_validation_info",
    "check_level_reached",
    "presign_validation_error",
    "long_term_level",
]

log = structlog.get_logger(__name__)

# Bound on the document time-stamps examined for B-LTA, per signature.
_MAX_DOCUMENT_TIMESTAMPS = 100


@dataclass(frozen=True)
class TimestampProof:
    """A valid, trusted time-stamp that proves a signature existed.

    It is the signature's own time-stamp or a later document time-stamp.
    ``revision`` is the 0-based revision that contains it.
    """

    time: datetime
    tsa_certificate: x509.Certificate
    revision: int


def relevant_validation_info(info: PreSignValidationStatus) -> PreSignValidationStatus:
    """Keep only the OCSP responses and CRLs about certificates of ``info``'s validation paths.

    pyHanko embeds every response the validation context has cached, and a
    context that caches across documents would put other signers'
    certificate status into this document's DSS.
    """
    certificates = [cert for path in info.validation_paths for cert in path.iter_certs(include_root=True)]
    ocsps = [response for response in info.ocsps_to_embed if _ocsp_covers_any(response, certificates)]
    # A delegated OCSP responder's certificate travels in its responses and
    # may need a CRL of its own.
    responders = [cert for response in ocsps for cert in ocsp_response_certificates(response)]
    issuers = [cert.issuer for cert in certificates + responders]
    crls = [crl for crl in info.crls_to_embed if crl["tbs_cert_list"]["issuer"] in issuers]
    return dataclasses.replace(info, ocsps_to_embed=ocsps, crls_to_embed=crls)


def check_level_reached(
    reader: PdfFileReader, field_name: str, level: str, info: PreSignValidationStatus | None
) -> None:
    """Raise PadesLevelNotReached unless the signature in ``field_name`` has what ``level`` needs.

    ``reader`` reads the signed file. ``info`` contains the validation paths
    collected before signing, and is required for B-LT and B-LTA. Every
    certificate of those paths except the trust anchors must be in the DSS,
    each with an OCSP response or a CRL from its issuer.
    This checks presence only; ``ensure_signed_pdf_valid`` validates the data.
    """
    signature = next((found for found in reader.embedded_regular_signatures if found.field_name == field_name), None)
    if signature is None:
        raise PadesLevelNotReached(level=level, reason=f"the signature field {field_name!r} is not in the output")
    if level == "B-B":
        return
    unsigned_attributes = signature.signer_info["unsigned_attrs"]
    if next(find_cms_attribute_iter(unsigned_attributes, "signature_time_stamp_token"), None) is None:
        raise PadesLevelNotReached(level=level, reason="the signature has no signature time-stamp")
    if level not in LONG_TERM_LEVELS:
        return

    if info is None:
        raise PadesLevelNotReached(level=level, reason="no validation data was collected before signing")
    store = dss_validation_data(reader)
    if store is None:
        raise PadesLevelNotReached(level=level, reason="the document has no DSS")
    _check_store_covers(store, level, info)

    if level == "B-LTA" and not _has_timestamp_over_store(reader, signature.signed_revision):
        raise PadesLevelNotReached(level=level, reason="no document time-stamp covers the DSS after the signature")


def presign_validation_error(exc: Exception, signer_certificate: x509.Certificate, level: str) -> SignserverError:
    """Return the service error for a certificate that pyHanko could not validate before signing."""
    certificate = signer_certificate
    if isinstance(exc, PathValidationError) and isinstance(exc.current_path.leaf, x509.Certificate):
        certificate = exc.current_path.leaf
    subject = certificate.subject.human_friendly
    message = str(getattr(exc, "failure_msg", None) or exc)[:300]

    if isinstance(exc, RevokedError):
        reason = exc.reason.native if exc.reason is not None else None
        return CertificateRevoked(subject=subject, revoked_at=exc.revocation_dt.isoformat(),
                                  reason=reason or "unspecified")
    if isinstance(exc, InsufficientRevinfoError):
        urls = list(certificate.ocsp_urls) + [point.url for point in certificate.crl_distribution_points if point.url]
        return RevocationUnavailable(subject=subject, urls=", ".join(urls) or "-", reason=message)
    return PadesLevelNotReached(level=level, reason=f"the certificate of {subject} could not be validated: {message}")


async def long_term_level(
    signature: EmbeddedPdfSignature, proof: TimestampProof, trust_roots: Sequence[x509.Certificate]
) -> str:
    """Return B-LTA, B-LT or B-T for a PAdES signature that ``proof`` shows existed.

    B-LT needs the document's latest DSS, with the certificates of the
    signature's CMS object and time-stamp tokens, to validate the signer's
    and the proof's TSA certificate paths at ``proof.time``, with revocation
    data for every certificate below the trust root. B-LTA also needs a
    document time-stamp after the signature, over a revision whose DSS does
    the same, that itself validates at its own time from the latest DSS.
    Nothing is fetched. The signature's integrity is not checked here.
    """
    reader = signature.reader
    certificates = [signature.signer_cert, proof.tsa_certificate]
    try:
        latest_dss = dss_validation_data(reader)
        signature_certificates = ValidationData(
            certificates=cms_validation_data(signature.signed_data, signature.signer_info).certificates
        )
    except PDF_PARSE_ERRORS as exc:
        _log_check_failed(signature, exc)
        return "B-T"
    if latest_dss is None or not await _paths_validate(
        certificates, trust_roots, latest_dss.merged(signature_certificates), proof.time
    ):
        return "B-T"

    later_timestamps = [timestamp for timestamp in reader.embedded_timestamp_signatures
                        if timestamp.signed_revision > signature.signed_revision]
    for document_timestamp in later_timestamps[:_MAX_DOCUMENT_TIMESTAMPS]:
        try:
            covered_dss = dss_validation_data(reader, document_timestamp.signed_revision)
        except PDF_PARSE_ERRORS as exc:
            _log_check_failed(document_timestamp, exc)
            continue
        if covered_dss is None or not await _paths_validate(
            certificates, trust_roots, covered_dss.merged(signature_certificates), proof.time
        ):
            continue
        if await _document_timestamp_validates(document_timestamp, latest_dss, trust_roots):
            return "B-LTA"
    return "B-LT"


def _check_store_covers(store: ValidationData, level: str, info: PreSignValidationStatus) -> None:
    stored_certificates = {certificate.issuer_serial for certificate in store.certificates}
    crl_issuers = [crl["tbs_cert_list"]["issuer"] for crl in store.crls]

    for path in [info.signer_path, *(info.ts_validation_paths or ())]:
        for certificate in path.iter_certs(include_root=False):
            subject = certificate.subject.human_friendly
            if certificate.issuer_serial not in stored_certificates:
                raise PadesLevelNotReached(level=level, reason=f"the DSS lacks the certificate of {subject}")
            has_ocsp = any(_ocsp_covers_any(response, [certificate]) for response in store.ocsps)
            if not has_ocsp and certificate.issuer not in crl_issuers:
                raise PadesLevelNotReached(level=level, reason=f"the DSS has no OCSP response or CRL for {subject}")


def _has_timestamp_over_store(reader: PdfFileReader, signed_revision: int) -> bool:
    """Return whether a document time-stamp after ``signed_revision`` covers a revision that has a DSS."""
    return any(read_dss(reader, timestamp.signed_revision) is not None
               for timestamp in reader.embedded_timestamp_signatures if timestamp.signed_revision > signed_revision)


def _ocsp_covers_any(response: asn1_ocsp.OCSPResponse, certificates: Iterable[x509.Certificate]) -> bool:
    """Return whether a successful OCSP response has a SingleResponse about one of ``certificates``."""
    if response["response_status"].native != "successful":
        return False
    basic = response["response_bytes"]["response"].parsed
    certificates = list(certificates)
    for single in basic["tbs_response_data"]["responses"]:
        cert_id = single["cert_id"]
        hash_name = cert_id["hash_algorithm"]["algorithm"].native
        for certificate in certificates:
            if cert_id["serial_number"].native != certificate.serial_number:
                continue
            if cert_id["issuer_name_hash"].native == hashlib.new(hash_name, certificate.issuer.dump()).digest():
                return True
    return False


async def _paths_validate(
    certificates: Iterable[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    data: ValidationData,
    moment: datetime,
) -> bool:
    """Return whether ``data`` alone validates each certificate's path at ``moment``, with revocation data."""
    for certificate in certificates:
        context = offline_context(trust_roots, data, moment=moment, revocation_mode="require")
        try:
            paths = context.path_builder.async_build_paths_lazy(certificate)
            await find_valid_path(certificate, paths, validation_context=context)
        except (ValidationError, PathBuildingError) as exc:
            log.debug("pades_level.long_term_data_incomplete", certificate=certificate.subject.human_friendly,
                      error=str(exc)[:200])
            return False
        except PDF_PARSE_ERRORS as exc:
            # Malformed revocation data is parsed only when it is used.
            log.warning("pades_level.long_term_check_failed", certificate=certificate.subject.human_friendly,
                        error=f"{type(exc).__name__}: {exc}"[:200])
            return False
        finally:
            await context.aclose()
    return True


async def _document_timestamp_validates(
    document_timestamp: EmbeddedPdfSignature, data: ValidationData, trust_roots: Sequence[x509.Certificate]
) -> bool:
    """Return whether a document time-stamp validates, at its own time, with the revocation data of ``data`` alone."""
    try:
        token_info = document_timestamp.signed_data["encap_content_info"]["content"].parsed
        moment = token_info["gen_time"].native
        context = offline_context(trust_roots, data, moment=moment, revocation_mode="require")
        try:
            status = await async_validate_pdf_timestamp(document_timestamp, validation_context=context, skip_diff=True)
        finally:
            await context.aclose()
    except PDF_PARSE_ERRORS as exc:
        _log_check_failed(document_timestamp, exc)
        return False
    return status.intact and status.valid and status.trusted


def _log_check_failed(signature: EmbeddedPdfSignature, exc: BaseException) -> None:
    log.warning("pades_level.long_term_check_failed", field_name=signature.field_name,
                error=f"{type(exc).__name__}: {exc}"[:200])
