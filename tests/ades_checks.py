"""PAdES level checks with pyHanko's AdES validation (ETSI EN 319 102-1), for tests.

These use pyHanko's implementation of the standard's validation processes
and share no code with ``signserver.signing.validate``. Nothing is fetched:
only the data in the file counts, and revocation data is required for every
certificate below the trust root.

- ``ades_with_time_result``: the process for signatures with time and with
  long-term validation material (section 5.5), given the DSS's certificates,
  OCSP responses and CRLs. It passes for B-LT and B-LTA while the embedded
  responses are current, and fails for B-T.
- ``ades_lta_result``: the process for signatures providing long-term
  availability and integrity (section 5.6.3). It passes with an evidence
  record time for B-LTA, whose document time-stamps prove when the
  validation data existed, and fails for B-LT.
"""

from __future__ import annotations

from pathlib import Path

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import DocumentSecurityStore
from pyhanko.sign.validation.ades import (
    AdESLTAValidationResult,
    AdESWithTimeValidationResult,
    ades_lta_validation,
    ades_with_time_validation,
)
from pyhanko.sign.validation.errors import NoDSSFoundError
from pyhanko.sign.validation.policy_decl import (
    LocalKnowledge,
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.policy_decl import REQUIRE_REVINFO, CertRevTrustPolicy
from pyhanko_certvalidator.registry import SimpleTrustManager
from pyhanko_certvalidator.revinfo.archival import CRLContainer, OCSPContainer

__all__ = ["ades_with_time_result", "ades_lta_result", "dss_contents"]


def dss_contents(
    pdf: Path, password: str | None = None
) -> tuple[list[asn1_x509.Certificate], list[asn1_ocsp.OCSPResponse], list[asn1_crl.CertificateList]]:
    """Return the certificates, OCSP responses and CRLs of the PDF's DSS, all empty without a DSS."""
    with pdf.open("rb") as stream:
        reader = _reader(stream, password)
        try:
            store = DocumentSecurityStore.read_dss(reader)
        except NoDSSFoundError:
            return [], [], []
        certificates = list(store.load_certs())
        ocsps = [asn1_ocsp.OCSPResponse.load(reference.get_object().data) for reference in store.ocsps]
        crls = [asn1_crl.CertificateList.load(reference.get_object().data) for reference in store.crls]
    return certificates, ocsps, crls


async def ades_with_time_result(
    pdf: Path, roots: list[asn1_x509.Certificate], *, signature_index: int = -1, password: str | None = None
) -> AdESWithTimeValidationResult:
    """Validate one signature (the last by default) at the current time from the DSS's data alone."""
    certificates, ocsps, crls = dss_contents(pdf, password)
    knowledge = LocalKnowledge(
        known_ocsps=[container for response in ocsps for container in OCSPContainer.load_multi(response)],
        known_crls=[CRLContainer(crl) for crl in crls],
        known_certs=certificates,
    )
    with pdf.open("rb") as stream:
        signature = _reader(stream, password).embedded_regular_signatures[signature_index]
        return await ades_with_time_validation(signature.signed_data, _spec(roots, knowledge),
                                               raw_digest=signature.compute_digest())


async def ades_lta_result(
    pdf: Path, roots: list[asn1_x509.Certificate], *, signature_index: int = -1, password: str | None = None
) -> AdESLTAValidationResult:
    """Validate one signature (the last by default) with its document time-stamps; pyHanko reads the DSS itself."""
    with pdf.open("rb") as stream:
        signature = _reader(stream, password).embedded_regular_signatures[signature_index]
        return await ades_lta_validation(signature, PdfSignatureValidationSpec(_spec(roots, LocalKnowledge())))


def _spec(roots: list[asn1_x509.Certificate], knowledge: LocalKnowledge) -> SignatureValidationSpec:
    return SignatureValidationSpec(
        cert_validation_policy=CertValidationPolicySpec(
            trust_manager=SimpleTrustManager.build(trust_roots=roots),
            revinfo_policy=CertRevTrustPolicy(REQUIRE_REVINFO),
        ),
        revinfo_gathering_policy=RevocationInfoGatheringSpec(
            online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY
        ),
        local_knowledge=knowledge,
    )


def _reader(stream, password: str | None) -> PdfFileReader:
    reader = PdfFileReader(stream, strict=False)
    if reader.encrypted:
        if password is None:
            raise ValueError("the PDF is encrypted, so its password is required")
        reader.decrypt(password.encode("utf-8"))
    return reader
