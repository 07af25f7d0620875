"""Signatures of a PDF whose structure cannot be read, checked from their byte ranges alone.

A byte changed inside a signed range may break the cross-reference table,
a dictionary or the signature dictionary itself, and then pyHanko cannot
open the file or the signature. Such a signature is still found by its
/ByteRange array, whose gap contains the hex string /Contents. Its digest
is recomputed over the ranges and checked against the signed attributes
with pyHanko's ``validate_sig_integrity``: a mismatch is HASH_FAILURE, as
for a readable file. When the signed bytes are intact, the
damage lies outside them, and the signature is TOTAL-FAILED with
FORMAT_FAILURE because its coverage and the changes after it cannot be
checked.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import structlog
from asn1crypto import cms, x509
from pyhanko.sign.general import CMSExtractionError, extract_certificate_info
from pyhanko.sign.validation import generic_cms
from pyhanko.sign.validation.errors import SignatureValidationError

from signserver.signing.embedded_validation_data import cms_validation_data
from signserver.signing.report import CoverageInfo, IntegrityInfo, SignatureReport
from signserver.signing.report_fields import build_signature_report, has_signing_certificate_attribute
from signserver.signing.report_indication import SignatureFacts
from signserver.signing.report_trust import ChainCheck, TrustSetup, check_signer_at

__all__ = ["RawSignature", "find_raw_signatures", "raw_signature_report"]

log = structlog.get_logger(__name__)

_BYTE_RANGE = re.compile(rb"/ByteRange\s*\[\s*(\d{1,12})\s+(\d{1,12})\s+(\d{1,12})\s+(\d{1,12})\s*\]")
# Bound on the signatures looked for in one damaged file.
MAX_RAW_SIGNATURES = 64
_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, SignatureValidationError,
                 CMSExtractionError)


@dataclass(frozen=True)
class RawSignature:
    """A /ByteRange found in the file, and what could be read from the gap it leaves."""

    byte_range: tuple[int, int, int, int]
    signed_data: cms.SignedData | None
    # The reason the CMS object in the gap cannot be used, else None.
    error: str | None


def find_raw_signatures(data: bytes) -> list[RawSignature]:
    """Return the distinct byte ranges of ``data`` that frame a hex string, in file order."""
    found: dict[tuple[int, int, int, int], RawSignature] = {}
    for match in _BYTE_RANGE.finditer(data):
        start, first_length, second_start, second_length = (int(group) for group in match.groups())
        byte_range = (start, first_length, second_start, second_length)
        if byte_range in found:
            continue
        if start != 0 or not first_length < second_start <= len(data) - second_length:
            continue
        gap = data[first_length:second_start]
        if not (gap.startswith(b"<") and gap.endswith(b">")):
            continue
        found[byte_range] = _read_gap(byte_range, gap)
        if len(found) >= MAX_RAW_SIGNATURES:
            break
    return list(found.values())


async def raw_signature_report(signature: RawSignature, data: bytes, trust: TrustSetup) -> SignatureReport:
    """Check the digest and signature value of ``signature`` over its byte ranges of ``data``."""
    if signature.signed_data is None:
        return _report(SignatureFacts(format_error=signature.error), None, None, None)

    signed_data = signature.signed_data
    try:
        signer_info = signed_data["signer_infos"][0]
        signer_cert = extract_certificate_info(signed_data).signer_cert
        digest_algorithm = signer_info["digest_algorithm"]["algorithm"].native
        start, first_length, second_start, second_length = signature.byte_range
        hasher = hashlib.new(digest_algorithm)
        hasher.update(data[start:start + first_length])
        hasher.update(data[second_start:second_start + second_length])
        intact, valid = generic_cms.validate_sig_integrity(
            signer_info, signer_cert, expected_content_type="data", actual_digest=hasher.digest()
        )
    except _PARSE_ERRORS as exc:
        detail = " ".join(f"unreadable CMS object ({type(exc).__name__}: {exc})".split())[:300]
        return _report(SignatureFacts(format_error=detail), None, None, None)

    chain = await check_signer_at(signer_cert, moment=None, trust=trust,
                                  embedded=cms_validation_data(signed_data, signer_info), allow_fetching=False)
    damage = "the PDF structure is damaged outside the signed bytes, so the coverage cannot be checked"
    facts = SignatureFacts(intact=intact, valid=valid, format_error=damage if intact and valid else None,
                           chain=chain)
    integrity = IntegrityInfo(intact, valid, digest_algorithm, signer_info["signature_algorithm"].signature_algo)
    return _report(facts, signer_cert, chain, integrity, pades=has_signing_certificate_attribute(signer_info))


def _read_gap(byte_range: tuple[int, int, int, int], gap: bytes) -> RawSignature:
    hex_digits = re.sub(rb"\s", b"", gap[1:-1])
    try:
        # /Contents is padded with zeros after the DER object, which asn1crypto ignores when not strict.
        content_info = cms.ContentInfo.load(bytes.fromhex(hex_digits.decode("ascii")))
        if content_info["content_type"].native != "signed_data":
            return RawSignature(byte_range, None, "the /Contents of the signature is not a CMS SignedData")
        signed_data = content_info["content"]
        _ = len(signed_data["signer_infos"])
    except (ValueError, UnicodeDecodeError, TypeError, KeyError) as exc:
        return RawSignature(byte_range, None, f"unreadable /Contents ({type(exc).__name__})")
    return RawSignature(byte_range, signed_data, None)


def _report(facts: SignatureFacts, signer_cert: x509.Certificate | None, chain: ChainCheck | None,
            integrity: IntegrityInfo | None, *, pades: bool = False) -> SignatureReport:
    report = build_signature_report(facts, kind="approval", format_name="PAdES" if pades else "PDF",
                                    coverage=CoverageInfo("unknown"), signer_cert=signer_cert, chain=chain,
                                    integrity=integrity)
    log.info("signature_report.raw_signature_checked", indication=report.indication,
             sub_indication=report.sub_indication)
    return report

