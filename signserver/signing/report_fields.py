"""Parts of the validation report built from pyHanko and asn1crypto objects."""

from __future__ import annotations

from datetime import datetime

from asn1crypto import cms, x509
from pyhanko.sign.validation.status import SignatureStatus, TimestampSignatureStatus

from signserver.signing import report_text
from signserver.signing.report import (
    CertificateInfo,
    ChainInfo,
    CoverageInfo,
    IntegrityInfo,
    ModificationsInfo,
    RevocationInfo,
    SignatureReport,
    TimestampInfo,
)
from signserver.signing.report_indication import SignatureFacts, indicate
from signserver.signing.report_trust import ChainCheck

__all__ = [
    "build_signature_report",
    "certificate_info",
    "chain_info",
    "crypto_constraint",
    "display_name",
    "has_signing_certificate_attribute",
    "revocation_info",
    "timestamp_info",
]


def certificate_info(certificate: x509.Certificate) -> CertificateInfo:
    validity = certificate["tbs_certificate"]["validity"]
    common_names = [value for name, value in certificate.subject.native.items() if name == "common_name"]
    common_name = common_names[0] if common_names else None
    if isinstance(common_name, list):
        common_name = common_name[0]
    return CertificateInfo(
        common_name=common_name,
        subject=certificate.subject.human_friendly,
        issuer=certificate.issuer.human_friendly,
        serial_number=format(certificate.serial_number, "x"),
        valid_from=validity["not_before"].native,
        valid_to=validity["not_after"].native,
        sha256=certificate.sha256.hex(),
    )


def display_name(certificate: x509.Certificate) -> str:
    """Return the certificate's common name, or its whole subject when it has none."""
    for name, value in certificate.subject.native.items():
        if name == "common_name":
            return value[0] if isinstance(value, list) else value
    return certificate.subject.human_friendly


def timestamp_info(timestamp: TimestampSignatureStatus | None) -> TimestampInfo | None:
    if timestamp is None:
        return None
    return TimestampInfo(
        time=timestamp.timestamp,
        tsa=display_name(timestamp.signing_cert),
        tsa_subject=timestamp.signing_cert.subject.human_friendly,
        intact=timestamp.intact,
        valid=timestamp.valid,
        trusted=timestamp.trusted,
    )


def revocation_info(chain: ChainCheck) -> RevocationInfo:
    revocation = chain.revocation
    return RevocationInfo(revocation.status, revocation.checked_at, revocation.source, revocation.revoked_at,
                          revocation.reason, revocation.detail)


def crypto_constraint(status: SignatureStatus) -> str | None:
    """Return pyHanko's CRYPTO_CONSTRAINTS_FAILURE sub-indication (a disallowed algorithm), if it gave one."""
    indication = status.trust_problem_indic
    if indication is not None and indication.standard_name.startswith("CRYPTO_CONSTRAINTS_FAILURE"):
        return indication.standard_name
    return None


def has_signing_certificate_attribute(signer_info: cms.SignerInfo) -> bool:
    """Tell whether the signed attributes name the signer's certificate (ESS, RFC 5035), as CAdES requires."""
    names = {attribute["type"].native for attribute in signer_info["signed_attrs"] or ()}
    return bool(names & {"signing_certificate_v2", "signing_certificate"})


def chain_info(chain: ChainCheck | None, signer: x509.Certificate | None) -> ChainInfo:
    if chain is not None and chain.path is not None:
        certificates = list(chain.path.iter_certs(include_root=True))
        certificates.reverse()
        anchor = chain.path.trust_anchor.authority
        anchor_name = anchor.name.human_friendly
        # The path to the anchor is valid, revocation aside, which the report gives separately.
        trusted = chain.outcome in ("valid", "revoked", "revocation_unknown")
        return ChainInfo([certificate_info(c) for c in certificates], anchor_name, trusted)
    partial = list(chain.partial_chain) if chain is not None else []
    if not partial and signer is not None:
        partial = [signer]
    return ChainInfo([certificate_info(c) for c in partial], None, False)


def build_signature_report(
    facts: SignatureFacts,
    *,
    kind: str,
    format_name: str,
    coverage: CoverageInfo,
    field_name: str | None = None,
    subfilter: str | None = None,
    level: str = "none",
    signer_cert: x509.Certificate | None = None,
    chain: ChainCheck | None = None,
    signing_time: datetime | None = None,
    timestamp: TimestampSignatureStatus | None = None,
    integrity: IntegrityInfo | None = None,
    modifications: ModificationsInfo | None = None,
) -> SignatureReport:
    """Build a signature's report, with the indication that ``facts`` call for, its warnings and its summary.

    The parts left out stay empty, as in the report of a signature whose
    evaluation stopped early. Without ``chain``, the revocation status is
    "unknown" and "not checked".
    """
    indication, sub_indication, detail = indicate(facts)
    if chain is not None:
        revocation = revocation_info(chain)
    else:
        revocation = RevocationInfo("unknown", None, None, None, None, "not checked")
    report = SignatureReport(
        id="",
        field_name=field_name,
        kind=kind,
        format=format_name,
        subfilter=subfilter,
        level=level,
        signer=certificate_info(signer_cert) if signer_cert is not None else None,
        chain=chain_info(chain, signer_cert),
        signing_time=signing_time,
        timestamp=timestamp_info(timestamp),
        integrity=integrity or IntegrityInfo(None, False, None, None),
        revocation=revocation,
        coverage=coverage,
        modifications=modifications,
        indication=indication,
        sub_indication=sub_indication,
        detail=detail,
        warnings=report_text.signature_warnings(timestamp, coverage),
        summary=report_text.EMPTY,
    )
    return report_text.with_summary(report)
