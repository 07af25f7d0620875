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
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.general import find_cms_attribute_iter
from pyhanko.sign.signers.pdf_signer import PreSignValidationStatus
from pyhanko.sign.validation import DocumentSecurityStore
from pyhanko.sign.validation.errors import NoDSSFoundError
from pyhanko_certvalidator.errors import InsufficientRevinfoError, PathValidationError, RevokedError

from signserver.errors import SignserverError
from signserver.signing.errors import CertificateRevoked, PadesLevelNotReached, RevocationUnavailable

__all__ = [
    "PADES_LEVELS",
    "LONG_TERM_LEVELS",
    "level_reaches",
    "relevant_validation_info",
    "check_level_reached",
    "presign_validation_error",
]

# From lowest to highest; each level includes everything the previous one needs.
PADES_LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")
# The levels that embed validation data in the DSS.
LONG_TERM_LEVELS = ("B-LT", "B-LTA")


def level_reaches(reached: str, requested: str) -> bool:
    """Return whether level ``reached`` includes level ``requested`` ("none" reaches nothing)."""
    if reached not in PADES_LEVELS:
        return False
    return PADES_LEVELS.index(reached) >= PADES_LEVELS.index(requested)


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
    responders = [cert for response in ocsps for cert in _ocsp_certificates(response)]
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
    try:
        store = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        raise PadesLevelNotReached(level=level, reason="the document has no DSS") from None
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


def _check_store_covers(store: DocumentSecurityStore, level: str, info: PreSignValidationStatus) -> None:
    stored_certificates = set(store.certs)
    ocsps = [asn1_ocsp.OCSPResponse.load(reference.get_object().data) for reference in store.ocsps]
    crl_issuers = [asn1_crl.CertificateList.load(reference.get_object().data)["tbs_cert_list"]["issuer"]
                   for reference in store.crls]

    for path in [info.signer_path, *(info.ts_validation_paths or ())]:
        for certificate in path.iter_certs(include_root=False):
            subject = certificate.subject.human_friendly
            if certificate.issuer_serial not in stored_certificates:
                raise PadesLevelNotReached(level=level, reason=f"the DSS lacks the certificate of {subject}")
            has_ocsp = any(_ocsp_covers_any(response, [certificate]) for response in ocsps)
            if not has_ocsp and certificate.issuer not in crl_issuers:
                raise PadesLevelNotReached(level=level, reason=f"the DSS has no OCSP response or CRL for {subject}")


def _has_timestamp_over_store(reader: PdfFileReader, signed_revision: int) -> bool:
    """Return whether a document time-stamp after ``signed_revision`` covers a revision that has a DSS."""
    for timestamp in reader.embedded_timestamp_signatures:
        if timestamp.signed_revision <= signed_revision:
            continue
        try:
            DocumentSecurityStore.read_dss(reader.get_historical_resolver(timestamp.signed_revision))
        except NoDSSFoundError:
            continue
        return True
    return False


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


def _ocsp_certificates(response: asn1_ocsp.OCSPResponse) -> list[x509.Certificate]:
    if response["response_status"].native != "successful":
        return []
    return list(response["response_bytes"]["response"].parsed["certs"] or ())
