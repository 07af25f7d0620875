"""Validation data embedded in a signature or a PDF: certificates, OCSP responses and CRLs.

A CMS signature carries certificates in its SignedData and in its
time-stamp tokens. It may carry revocation data in the SignedData itself
(as CAdES B-LT of ETSI EN 319 122-1 does), in Adobe's
adbe-revocationInfoArchival signed attribute, or in the certificate-values
and revocation-values unsigned attributes of RFC 5126. A PDF may keep all
of them in its document security store (DSS) of ISO 32000-2.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from asn1crypto import cms, core, crl, ocsp, x509
from pyhanko.pdf_utils.decode_limits import DecodePurpose
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import DocumentSecurityStore
from pyhanko.sign.validation.errors import NoDSSFoundError

__all__ = ["ValidationData", "signature_timestamp_tokens", "cms_validation_data", "dss_validation_data"]

log = structlog.get_logger(__name__)

# Unsigned attributes of RFC 5126 section 6.3, which asn1crypto
# does not know by name.
_CERTIFICATE_VALUES_OID = "1.2.840.113549.1.9.16.2.23"
_REVOCATION_VALUES_OID = "1.2.840.113549.1.9.16.2.24"


@dataclass(frozen=True)
class ValidationData:
    """Certificates, OCSP responses and CRLs found in a signature or a document."""

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


def cms_validation_data(signed_data: cms.SignedData, signer_info: cms.SignerInfo) -> ValidationData:
    """Collect the certificates and revocation data that a CMS signature carries.

    These are the SignedData certificates and revocation information (CRLs,
    and OCSP responses as RFC 5940 other revocation information), the
    certificates of its signature time-stamp tokens, Adobe's
    adbe-revocationInfoArchival signed attribute, and the certificate-values
    and revocation-values unsigned attributes. An attribute that cannot be
    parsed is left out.
    """
    certificates = _certificates_of(signed_data)
    ocsps: list[ocsp.OCSPResponse] = []
    crls: list[crl.CertificateList] = []

    for choice in signed_data["crls"] or ():
        if choice.name == "crl":
            crls.append(choice.chosen)
        elif choice.chosen["other_rev_info_format"].native == "ocsp_response":
            ocsps.append(choice.chosen["other_rev_info"])

    for token in signature_timestamp_tokens(signer_info):
        certificates += _certificates_of(token)

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


def _certificates_of(signed_data: cms.SignedData) -> list[x509.Certificate]:
    return [choice.chosen for choice in signed_data["certificates"] or () if choice.name == "certificate"]


def dss_validation_data(reader: PdfFileReader, revision: int | None = None) -> ValidationData | None:
    """Read the document security store (DSS), as of ``revision`` (0-based) if given.

    Returns None when the document, or that revision, has no DSS.
    """
    handler = reader if revision is None else reader.get_historical_resolver(revision)
    try:
        dss = DocumentSecurityStore.read_dss(handler)
    except NoDSSFoundError:
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
