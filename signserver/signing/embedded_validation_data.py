"""Validation data embedded in a signature or a PDF: certificates, OCSP responses and CRLs.

A CMS signature carries certificates in its SignedData and in its
time-stamp tokens. It may carry revocation data in the SignedData itself
(as CAdES B-LT of ETSI EN 319 122-1 does), in Adobe's
adbe-revocationInfoArchival signed attribute, or in the certificate-values
and revocation-values unsigned attributes of RFC 5126. A PDF may keep all
of them in its document security store (DSS) of ISO 32000-2.

``offline_context`` builds a validation context from such data alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from asn1crypto import cms, core, crl, ocsp, x509
from pyhanko.pdf_utils.decode_limits import DecodePurpose
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import DocumentSecurityStore
from pyhanko.sign.validation.errors import NoDSSFoundError
from pyhanko_certvalidator import ValidationContext

__all__ = [
    "ValidationData",
    "signature_timestamp_tokens",
    "signed_data_certificates",
    "signed_data_validation_data",
    "ocsp_response_certificates",
    "cms_validation_data",
    "read_dss",
    "dss_validation_data",
    "offline_context",
]

log = structlog.get_logger(__name__)

# Unsigned attributes of RFC 5126 section 6.3, which asn1crypto
# does not know by name.
_CERTIFICATE_VALUES_OID = "1.2.840.113549.1.9.16.2.23"
_REVOCATION_VALUES_OID = "1.2.840.113549.1.9.16.2.24"


@dataclass(frozen=True)
class ValidationData:
    """Certificates, OCSP responses and CRLs that a signature or a document carries, or that are collected to embed."""

    certificates: tuple[x509.Certificate, ...] = ()
    ocsps: tuple[ocsp.OCSPResponse, ...] = ()
    crls: tuple[crl.CertificateList, ...] = ()

    def merged(self, other: ValidationData | None) -> ValidationData:
        if other is None:
            return self
        return ValidationData(
            certificates=self.certificates + other.certificates,
            ocsps=self.ocsps + other.ocsps,
            crls=self.crls + other.crls,
        )


class _CrlValues(core.SequenceOf):
    _child_spec = crl.CertificateList


class _BasicOcspValues(core.SequenceOf):
    _child_spec = ocsp.BasicOCSPResponse


class _RevocationValues(core.Sequence):
    """RevocationValues (RFC 5126 section 6.3.4), read with explicit tags."""

    _fields = [
        ("crl_vals", _CrlValues, {"explicit": 0, "optional": True}),
        ("ocsp_vals", _BasicOcspValues, {"explicit": 1, "optional": True}),
        ("other_rev_vals", core.Any, {"explicit": 2, "optional": True}),
    ]


class _CertificateValues(core.SequenceOf):
    _child_spec = x509.Certificate


def signature_timestamp_tokens(signer_info: cms.SignerInfo) -> list[cms.SignedData]:
    """Return the SignedData of each signature time-stamp token in the unsigned attributes."""
    tokens = []
    for attribute in signer_info["unsigned_attrs"] or ():
        if attribute["type"].native != "signature_time_stamp_token":
            continue
        for value in attribute["values"]:
            tokens.append(value["content"])
    return tokens


def timestamp_time(token: cms.SignedData) -> datetime | None:
    """Return the genTime of an RFC 3161 time-stamp token's TSTInfo, or None when it cannot be read."""
    try:
        return token["encap_content_info"]["content"].parsed["gen_time"].native
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def timestamp_context(
    trust_roots: Sequence[x509.Certificate], data: ValidationData, tokens: Sequence[cms.SignedData]
) -> ValidationContext:
    """Return an offline context that validates time-stamp ``tokens`` at the time they give.

    The TSA's certificate path is checked as it was when the token was made,
    with the revocation data collected afterwards (usually at signing). Checked
    now, the embedded OCSP responses would be stale minutes after signing, and
    a B-LT signature would lose its proof of existence once the responders are
    unreachable. Without a readable time, the context validates at the current time.
    """
    times = [moment for moment in (timestamp_time(token) for token in tokens) if moment is not None]
    return offline_context(trust_roots, data, moment=min(times) if times else None, revocation_mode="soft-fail")


def cms_validation_data(signed_data: cms.SignedData, signer_info: cms.SignerInfo) -> ValidationData:
    """Collect the certificates and revocation data that a CMS signature carries.

    These are the SignedData certificates and revocation information (CRLs,
    and OCSP responses as RFC 5940 other revocation information), the
    certificates of its signature time-stamp tokens, Adobe's
    adbe-revocationInfoArchival signed attribute, and the certificate-values
    and revocation-values unsigned attributes. An attribute that cannot be
    parsed is left out.
    """
    in_signed_data = signed_data_validation_data(signed_data)
    certificates = list(in_signed_data.certificates)
    ocsps = list(in_signed_data.ocsps)
    crls = list(in_signed_data.crls)

    for token in signature_timestamp_tokens(signer_info):
        certificates += signed_data_certificates(token)

    for attribute in signer_info["signed_attrs"] or ():
        if attribute["type"].native != "adobe_revocation_info_archival":
            continue
        for archival in attribute["values"]:
            crls += list(archival["crl"] or ())
            ocsps += list(archival["ocsp"] or ())

    for attribute in signer_info["unsigned_attrs"] or ():
        oid = attribute["type"].dotted
        try:
            if oid == _CERTIFICATE_VALUES_OID:
                for value in attribute["values"]:
                    certificates += list(_CertificateValues.load(value.dump()))
            elif oid == _REVOCATION_VALUES_OID:
                for value in attribute["values"]:
                    revocation_values = _RevocationValues.load(value.dump())
                    crls += list(revocation_values["crl_vals"] or ())
                    ocsps += [_wrap_basic_ocsp(basic) for basic in revocation_values["ocsp_vals"] or ()]
        except ValueError as exc:
            log.info("signature_report.validation_data_unreadable", attribute=oid, error=str(exc)[:200])

    return ValidationData(tuple(certificates), tuple(ocsps), tuple(crls))


def signed_data_certificates(signed_data: cms.SignedData) -> list[x509.Certificate]:
    """Return the X.509 certificates of SignedData.certificates, leaving out the other certificate formats."""
    return [choice.chosen for choice in signed_data["certificates"] or () if choice.name == "certificate"]


def signed_data_validation_data(signed_data: cms.SignedData) -> ValidationData:
    """Return the X.509 certificates and the revocation data of the SignedData itself.

    SignedData.crls contains CRLs and, as RFC 5940 other revocation information,
    OCSP responses. Revocation information of other formats is left out.
    """
    ocsps = []
    crls = []
    for choice in signed_data["crls"] or ():
        if choice.name == "crl":
            crls.append(choice.chosen)
        elif choice.chosen["other_rev_info_format"].native == "ocsp_response":
            ocsps.append(choice.chosen["other_rev_info"])
    return ValidationData(tuple(signed_data_certificates(signed_data)), tuple(ocsps), tuple(crls))


def ocsp_response_certificates(response: ocsp.OCSPResponse) -> list[x509.Certificate]:
    """Return the certificates that a successful OCSP response carries, none for an unsuccessful one."""
    if response["response_status"].native != "successful":
        return []
    return list(response["response_bytes"]["response"].parsed["certs"] or ())


def read_dss(reader: PdfFileReader, revision: int | None = None) -> DocumentSecurityStore | None:
    """Read the document security store (DSS), as of ``revision`` (0-based) if given, or None if there is none."""
    handler = reader if revision is None else reader.get_historical_resolver(revision)
    try:
        return DocumentSecurityStore.read_dss(handler)
    except NoDSSFoundError:
        return None


def dss_validation_data(reader: PdfFileReader, revision: int | None = None) -> ValidationData | None:
    """Read the certificates, OCSP responses and CRLs of the DSS, as of ``revision`` (0-based) if given.

    Returns None when the document, or that revision, has no DSS.
    """
    dss = read_dss(reader, revision)
    if dss is None:
        return None
    ocsps = tuple(
        ocsp.OCSPResponse.load(reference.get_object().read_data(DecodePurpose.OCSP_RESPONSE))
        for reference in dss.ocsps
    )
    crls = tuple(
        crl.CertificateList.load(reference.get_object().read_data(DecodePurpose.CRL)) for reference in dss.crls
    )
    return ValidationData(certificates=tuple(dss.load_certs()), ocsps=ocsps, crls=crls)


def _wrap_basic_ocsp(basic: ocsp.BasicOCSPResponse) -> ocsp.OCSPResponse:
    return ocsp.OCSPResponse({
        "response_status": "successful",
        "response_bytes": {"response_type": "basic_ocsp_response", "response": basic},
    })


def offline_context(
    trust_roots: Sequence[x509.Certificate],
    data: ValidationData,
    *,
    moment: datetime | None,
    revocation_mode: str,
) -> ValidationContext:
    """Return a context that uses only ``data`` and never fetches.

    ``revocation_mode`` is one of pyhanko-certvalidator's: "soft-fail",
    "hard-fail" (revocation data for every certificate that names an OCSP
    responder or a CRL distribution point) or "require" (revocation data for
    every certificate below the trust root). Revocation data issued after
    ``moment`` counts, because embedded data is usually collected after the
    time it proves.
    """
    return ValidationContext(
        trust_roots=list(trust_roots),
        other_certs=list(data.certificates),
        ocsps=list(data.ocsps),
        crls=list(data.crls),
        moment=moment,
        allow_fetching=False,
        revocation_mode=revocation_mode,
        retroactive_revinfo=True,
    )
