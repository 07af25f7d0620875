"""The indications of ETSI EN 319 102-1 (section 5.1.3) for the validation report.

``indicate`` turns the facts established about one signature into TOTAL-PASSED,
INDETERMINATE or TOTAL-FAILED with a sub-indication, and
``overall_indication`` combines the signatures of a document.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from signserver.signing.report_trust import ChainCheck

__all__ = [
    "TOTAL_PASSED",
    "INDETERMINATE",
    "TOTAL_FAILED",
    "NO_SIGNATURE",
    "SignatureFacts",
    "indicate",
    "overall_indication",
]

TOTAL_PASSED = "TOTAL-PASSED"
INDETERMINATE = "INDETERMINATE"
TOTAL_FAILED = "TOTAL-FAILED"
NO_SIGNATURE = "NO_SIGNATURE"


class _Indicated(Protocol):
    indication: str


@dataclass(frozen=True)
class SignatureFacts:
    """The facts about one signature that ``indicate`` turns into an indication."""

    format_error: str | None = None
    signer_certificate_found: bool = True
    # None when the signed content was not available.
    intact: bool | None = True
    valid: bool = True
    # An AdES sub-indication from pyHanko's algorithm policy, such as CRYPTO_CONSTRAINTS_FAILURE.
    crypto_constraint: str | None = None
    coverage_partial: bool = False
    modifications_allowed: bool = True
    modifications_detail: str | None = None
    appended_data: bool = False
    # The time of a valid time-stamp that proves the signature existed then.
    proof_of_existence: datetime | None = None
    chain: ChainCheck | None = None


def indicate(facts: SignatureFacts) -> tuple[str, str | None, str | None]:
    """Return (indication, sub-indication, detail) of ETSI EN 319 102-1 for one signature.

    Failures that no further data can repair come first (format, digest,
    signature value, forbidden modifications), then the certificate path at
    the best signature time, then this service's own constraints.
    """
    if facts.format_error is not None:
        return TOTAL_FAILED, "FORMAT_FAILURE", facts.format_error
    if not facts.signer_certificate_found:
        return INDETERMINATE, "NO_SIGNING_CERTIFICATE_FOUND", "the signer's certificate is not in the signature"
    if facts.intact is False:
        return TOTAL_FAILED, "HASH_FAILURE", "the digest of the signed content does not match the signed digest"
    if not facts.valid:
        return TOTAL_FAILED, "SIG_CRYPTO_FAILURE", "the signature value does not verify with the signer's public key"
    if facts.coverage_partial:
        return TOTAL_FAILED, "FORMAT_FAILURE", "the byte range does not cover the signature's whole revision"
    if not facts.modifications_allowed:
        return TOTAL_FAILED, "FORMAT_FAILURE", facts.modifications_detail or "modifications after signing not allowed"
    if facts.crypto_constraint is not None:
        return INDETERMINATE, facts.crypto_constraint, "an algorithm of the signature is no longer accepted"
    if facts.intact is None:
        return INDETERMINATE, "SIGNED_DATA_NOT_FOUND", "the detached content (or its digest) was not provided"

    chain_result = _indicate_chain(facts.chain, facts.proof_of_existence)
    if chain_result is not None:
        return chain_result
    if facts.appended_data:
        return INDETERMINATE, "SIG_CONSTRAINTS_FAILURE", "unsigned bytes follow the newest signed revision"
    return TOTAL_PASSED, None, None


def _indicate_chain(
    chain: ChainCheck | None, proof_of_existence: datetime | None
) -> tuple[str, str, str | None] | None:
    """Return the indication that the certificate path at the best signature time calls for, or None if it is sound."""
    if chain is None:
        return INDETERMINATE, "CERTIFICATE_CHAIN_GENERAL_FAILURE", "the certificate path was not checked"
    detail = chain.detail
    outcome = chain.outcome
    if outcome == "valid":
        return None
    if outcome == "no_chain":
        return INDETERMINATE, "NO_CERTIFICATE_CHAIN_FOUND", detail

    if outcome == "revoked":
        # With a time-stamp, the moment of the check is the time-stamp's, so
        # a revocation found then happened before the signature existed.
        if proof_of_existence is not None:
            return TOTAL_FAILED, "REVOKED", detail
        return INDETERMINATE, "REVOKED_NO_POE", detail
    if outcome == "ca_revoked":
        return INDETERMINATE, "REVOKED_CA_NO_POE", detail

    if outcome == "expired":
        # A time-stamp after the expiry proves that the signature was made with
        # an expired certificate. Without one, the signing time is unknown.
        if proof_of_existence is not None:
            return INDETERMINATE, "EXPIRED", detail
        return INDETERMINATE, "OUT_OF_BOUNDS_NO_POE", detail
    if outcome == "not_yet_valid":
        if proof_of_existence is not None:
            return TOTAL_FAILED, "NOT_YET_VALID", detail
        return INDETERMINATE, "NOT_YET_VALID", detail

    if outcome == "revocation_unknown":
        return INDETERMINATE, "TRY_LATER", detail
    if outcome == "key_usage":
        return INDETERMINATE, "CHAIN_CONSTRAINTS_FAILURE", detail
    return INDETERMINATE, "CERTIFICATE_CHAIN_GENERAL_FAILURE", detail


def overall_indication(signatures: list[_Indicated]) -> tuple[str, dict[str, int]]:
    counts = {
        "total": len(signatures),
        "passed": sum(1 for s in signatures if s.indication == TOTAL_PASSED),
        "indeterminate": sum(1 for s in signatures if s.indication == INDETERMINATE),
        "failed": sum(1 for s in signatures if s.indication == TOTAL_FAILED),
    }
    if not signatures:
        return NO_SIGNATURE, counts
    if counts["failed"]:
        return TOTAL_FAILED, counts
    if counts["indeterminate"]:
        return INDETERMINATE, counts
    return TOTAL_PASSED, counts
