"""The validation report's CMS part: each SignerInfo of a CMS SignedData (RFC 5652), CAdES or plain.

The signed content is the encapsulated content of an attached signature,
the original file sent with a detached one, or only its digest. Without
any of them, the signature value and the chain are still checked, and the
signature is INDETERMINATE with SIGNED_DATA_NOT_FOUND (ETSI EN 319 102-1).
The CAdES level comes from ``cades_levels.cades_level``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from asn1crypto import cms, x509
from pyhanko.sign.general import CMSExtractionError, extract_certificate_info
from pyhanko.sign.validation import generic_cms
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.status import StandardCMSSignatureStatus

from signserver.signing.cades_levels import cades_level
from signserver.signing.embedded_validation_data import (
    ValidationData,
    cms_validation_data,
    offline_context,
    signature_timestamp_tokens,
    timestamp_context,
)
from signserver.signing.files import digest_of_file
from signserver.signing.report import (
    CoverageInfo,
    IntegrityInfo,
    SignatureReport,
    ValidationContentUnexpected,
    ValidationDigestInvalid,
    ValidationDocumentUnrecognized,
)
from signserver.signing.report_fields import (
    build_signature_report,
    crypto_constraint,
    has_signing_certificate_attribute,
)
from signserver.signing.report_indication import SignatureFacts
from signserver.signing.report_trust import TrustSetup, check_signer_at
from signserver.signing.validate import SIGNER_KEY_USAGE

__all__ = ["CmsReportParts", "cms_signature_reports"]

log = structlog.get_logger(__name__)

# Exceptions that a damaged or hostile SignedData makes asn1crypto and pyHanko raise while it is read.
_CMS_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, SignatureValidationError,
                     CMSExtractionError)


@dataclass(frozen=True)
class CmsReportParts:
    signatures: list[SignatureReport]
    # "attached", "detached_file", "detached_digest" or "missing".
    content: str


async def cms_signature_reports(
    content_info: cms.ContentInfo,
    *,
    trust: TrustSetup,
    content_path: Path | None,
    digest: bytes | None,
    digest_algorithm: str | None,
) -> CmsReportParts:
    """Validate each SignerInfo of the SignedData in ``content_info``.

    Raises ValidationContentUnexpected when content or a digest is sent for
    an attached signature, and ValidationDigestInvalid when the digest's
    algorithm is not the one a signer used.
    """
    signed_data: cms.SignedData = content_info["content"]
    try:
        embedded_content = signed_data["encap_content_info"]["content"].native
    except _CMS_PARSE_ERRORS as exc:
        raise ValidationDocumentUnrecognized(reason=f"unreadable encapsulated content ({type(exc).__name__})") from None
    attached = embedded_content is not None
    if attached and (content_path is not None or digest is not None):
        raise ValidationContentUnexpected(reason="the CMS signature embeds its content")

    if attached:
        content_mode = "attached"
    elif content_path is not None:
        content_mode = "detached_file"
    elif digest is not None:
        content_mode = "detached_digest"
    else:
        content_mode = "missing"
    digests = _ContentDigests(content_mode, embedded_content, content_path, digest, digest_algorithm)

    reports = []
    for signer_index in range(len(signed_data["signer_infos"])):
        report = await _signer_report(signed_data, signer_index, digests, trust)
        reports.append(dataclasses.replace(report, id=f"signature-{signer_index + 1}"))
    return CmsReportParts(reports, content_mode)


class _ContentDigests:
    """Digests of the signed content by algorithm, computed once each."""

    def __init__(self, mode: str, attached: bytes | None, content_path: Path | None, digest: bytes | None,
                 digest_algorithm: str | None) -> None:
        self.mode = mode
        self._attached = attached
        self._content_path = content_path
        self._content: bytes | None = None
        self._cache: dict[str, bytes] = {}
        if digest is not None and digest_algorithm is not None:
            self._cache[digest_algorithm] = digest

    def content_bytes(self) -> bytes | None:
        """Return the signed content itself when it is at hand (attached, or the original file)."""
        if self.mode == "attached":
            return self._attached
        if self.mode == "detached_file" and self._content_path is not None:
            if self._content is None:
                self._content = self._content_path.read_bytes()
            return self._content
        return None

    def get(self, algorithm: str) -> bytes | None:
        if algorithm in self._cache:
            return self._cache[algorithm]
        if self.mode == "attached" and self._attached is not None:
            value = hashlib.new(algorithm, self._attached).digest()
        elif self.mode == "detached_file" and self._content_path is not None:
            value = digest_of_file(self._content_path, algorithm)
        else:
            return None
        self._cache[algorithm] = value
        return value


async def _signer_report(
    signed_data: cms.SignedData, signer_index: int, digests: _ContentDigests, trust: TrustSetup
) -> SignatureReport:
    """Evaluate one SignerInfo; one that cannot be parsed gets a FORMAT_FAILURE report."""
    try:
        return await _evaluate_signer(signed_data, signer_index, digests, trust)
    except _CMS_PARSE_ERRORS as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        log.warning("signature_report.cms_unreadable", signer_index=signer_index, error=detail)
        return _failed_report(SignatureFacts(format_error=detail), None)


async def _evaluate_signer(
    signed_data: cms.SignedData, signer_index: int, digests: _ContentDigests, trust: TrustSetup
) -> SignatureReport:
    signer_info = signed_data["signer_infos"][signer_index]
    single = _with_one_signer(signed_data, signer_info)
    try:
        signer_cert = extract_certificate_info(single).signer_cert
    except CMSExtractionError:
        return _failed_report(SignatureFacts(signer_certificate_found=False), None)

    digest_algorithm = signer_info["digest_algorithm"]["algorithm"].native
    if digests.mode == "detached_digest" and digests.get(digest_algorithm) is None:
        raise ValidationDigestInvalid(reason=f"the signature uses {digest_algorithm}; send a {digest_algorithm} digest")

    content_digest = digests.get(digest_algorithm)
    if digests.mode == "missing":
        # Check the signature value and the chain anyway: against the signed
        # message-digest attribute, the content is trivially "intact".
        content_digest = _message_digest_attribute(signer_info)

    embedded = cms_validation_data(single, signer_info)
    status = await _validate_signer(single, signer_info, digests, content_digest, embedded, trust)

    timestamp = status.timestamp_validity
    timestamp_ok = timestamp is not None and timestamp.intact and timestamp.valid and timestamp.trusted
    proof_time = timestamp.timestamp if timestamp_ok else None
    intact = None if digests.mode == "missing" else status.intact
    chain = await check_signer_at(signer_cert, moment=proof_time, trust=trust, embedded=embedded,
                                  allow_fetching=bool(status.intact and status.valid))

    has_signing_certificate = has_signing_certificate_attribute(signer_info)
    level = _cades_level(signed_data, signer_index, digests, timestamp_ok)
    facts = SignatureFacts(intact=intact, valid=status.valid, proof_of_existence=proof_time, chain=chain,
                           crypto_constraint=crypto_constraint(status))

    return build_signature_report(
        facts,
        kind="cms",
        format_name="CAdES" if has_signing_certificate else "CMS",
        coverage=CoverageInfo("attached_content" if digests.mode == "attached" else "detached_content"),
        level=level,
        signer_cert=signer_cert,
        chain=chain,
        signing_time=status.signer_reported_dt,
        timestamp=timestamp,
        integrity=IntegrityInfo(intact, status.valid, status.md_algorithm, status.pkcs7_signature_mechanism),
    )


async def _validate_signer(
    single: cms.SignedData,
    signer_info: cms.SignerInfo,
    digests: _ContentDigests,
    content_digest: bytes | None,
    embedded: ValidationData,
    trust: TrustSetup,
) -> StandardCMSSignatureStatus:
    """Validate one signer as pyHanko's ``async_validate_detached_cms`` does, with a known content digest."""
    context = offline_context(trust.trust_roots, embedded, moment=None, revocation_mode="soft-fail")
    ts_context = timestamp_context(trust.trust_roots, embedded, signature_timestamp_tokens(signer_info))
    try:
        status_kwargs = await generic_cms.collect_timing_info(
            signer_info, ts_validation_context=ts_context, raw_digest=_digest_callback(digests)
        )
        # An attached signature is hashed by pyHanko from its eContent.
        raw_digest = None if digests.mode == "attached" else content_digest
        status_kwargs = await generic_cms.cms_basic_validation(
            single, raw_digest=raw_digest, validation_context=context, status_kwargs=status_kwargs,
            key_usage_settings=SIGNER_KEY_USAGE,
        )
    finally:
        await context.aclose()
        await ts_context.aclose()
    return StandardCMSSignatureStatus(**status_kwargs)


def _digest_callback(digests: _ContentDigests) -> Callable[[str], bytes]:
    def digest_for(algorithm: str) -> bytes:
        value = digests.get(algorithm)
        if value is None:
            # A content time-stamp over another digest than the one sent.
            raise SignatureValidationError(f"no {algorithm} digest of the content is available")
        return value

    return digest_for


def _cades_level(signed_data: cms.SignedData, signer_index: int, digests: _ContentDigests, timestamp_ok: bool) -> str:
    """Return the CAdES level that ``cades_level`` reads from the attributes, capped by what validated.

    ``cades_level`` checks that each level's attributes are present and
    consistent, but not whether the TSA is trusted: a signature whose
    time-stamp did not validate reaches B-B at most.
    """
    level = cades_level(signed_data, signer_index=signer_index, content=digests.content_bytes())
    if level in ("B-T", "B-LT", "B-LTA") and not timestamp_ok:
        return "B-B"
    return level


def _with_one_signer(signed_data: cms.SignedData, signer_info: cms.SignerInfo) -> cms.SignedData:
    """Return a copy of ``signed_data`` with only ``signer_info``, because pyHanko validates one signer at a time."""
    if len(signed_data["signer_infos"]) == 1:
        return signed_data
    copy = cms.SignedData.load(signed_data.dump())
    copy["signer_infos"] = cms.SignerInfos([signer_info])
    return copy


def _message_digest_attribute(signer_info: cms.SignerInfo) -> bytes | None:
    for attribute in signer_info["signed_attrs"] or ():
        if attribute["type"].native == "message_digest":
            return attribute["values"][0].native
    return None


def _failed_report(facts: SignatureFacts, signer_cert: x509.Certificate | None) -> SignatureReport:
    return build_signature_report(facts, kind="cms", format_name="CMS", coverage=CoverageInfo("detached_content"),
                                  signer_cert=signer_cert)
