"""The signer's certificate path and revocation status at the signing time, for the validation report.

ETSI EN 319 102-1 (clause 5.5) judges a signing certificate at the
best signature time: the time of a valid signature time-stamp, or the
validation time when there is none. This module builds the certificate path
at that moment with pyhanko-certvalidator and decides the signer
certificate's revocation status. It first uses only the validation data
embedded in the signature or the document (``embedded_validation_data``),
and fetches OCSP responses and CRLs through a ``ValidationContextFactory``
only when that is not enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import structlog
from asn1crypto import x509
from pyhanko_certvalidator import ValidationContext, find_valid_path
from pyhanko_certvalidator.errors import (
    ExpiredError,
    InsufficientRevinfoError,
    InvalidCertificateError,
    NotYetValidError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
    ValidationError,
)
from pyhanko_certvalidator.fetchers import OwnedFetcherBackend
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from pyhanko_certvalidator.fetchers.api import FetchLimits
from pyhanko_certvalidator.path import ValidationPath

from signserver.signing.embedded_validation_data import ValidationData, offline_context
from signserver.signing.validate import SIGNER_KEY_USAGE

__all__ = [
    "ValidationContextFactory",
    "TrustSetup",
    "RevocationStatus",
    "ChainCheck",
    "fetching_context_factory",
    "check_signer_at",
]

log = structlog.get_logger(__name__)

# Bound on the OCSP and CRL requests of one validation context. A path of
# three certificates needs at most two OCSP requests and two CRLs.
DEFAULT_MAX_FETCHES = 16

# Revocation checking modes of pyhanko-certvalidator 0.33: "hard-fail" needs
# revocation data for every certificate that names an OCSP responder or a
# CRL distribution point, and accepts certificates that name neither.
_HARD_FAIL = "hard-fail"
_SOFT_FAIL = "soft-fail"


class ValidationContextFactory(Protocol):
    """Builds a pyHanko ValidationContext that may fetch OCSP responses and CRLs.

    ``revocation_required`` selects hard-fail revocation checking, and
    ``moment`` a point-in-time validation, in which revocation data issued
    after ``moment`` still counts.
    """

    def __call__(
        self,
        trust_roots: Sequence[x509.Certificate],
        *,
        revocation_required: bool,
        moment: datetime | None = None,
        other_certs: Iterable[x509.Certificate] = (),
    ) -> ValidationContext: ...


@dataclass(frozen=True)
class TrustSetup:
    """The configured trust anchors and the source of fetched revocation data."""

    trust_roots: tuple[x509.Certificate, ...]
    context_factory: ValidationContextFactory


@dataclass(frozen=True)
class RevocationStatus:
    """The signer certificate's revocation status at ``checked_at``.

    ``status`` is "good", "revoked", "unknown" (revocation data was needed
    but none could be found or fetched), or "not_applicable" (the certificate
    names no OCSP responder and no CRL distribution point). ``source`` is
    "embedded" or "fetched" for "good" and "revoked".
    """

    status: str
    checked_at: datetime | None
    source: str | None = None
    revoked_at: datetime | None = None
    # CRLReason in asn1crypto's native form, for example "key_compromise".
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class ChainCheck:
    """The signer's certificate path at one moment.

    ``outcome`` is one of "valid", "no_chain", "revoked" (the signer's
    certificate), "ca_revoked", "expired", "not_yet_valid",
    "revocation_unknown", "key_usage" or "invalid".
    """

    outcome: str
    moment: datetime | None
    path: ValidationPath | None
    revocation: RevocationStatus
    detail: str | None = None
    # Certificates from the signer towards the root as far as they were found,
    # for the report when no path to a trust anchor exists.
    partial_chain: tuple[x509.Certificate, ...] = field(default=())


def fetching_context_factory(
    *, timeout_seconds: float, max_fetches: int = DEFAULT_MAX_FETCHES
) -> ValidationContextFactory:
    """Return a factory of contexts that fetch OCSP responses and CRLs over HTTP.

    Each context owns an aiohttp session created on first use in the running
    event loop, which ``ValidationContext.aclose`` closes. Issuer
    certificates (AIA caIssuers URLs) are never fetched, because those URLs
    come from an uploaded file: the path must be built from the document's
    certificates and the trust roots. pyhanko-certvalidator checks revocation
    only on paths that end at a trust root, so OCSP and CRL URLs come from
    certificates that a trusted CA issued.
    """

    def factory(
        trust_roots: Sequence[x509.Certificate],
        *,
        revocation_required: bool,
        moment: datetime | None = None,
        other_certs: Iterable[x509.Certificate] = (),
    ) -> ValidationContext:
        backend = AIOHttpFetcherBackend(
            per_request_timeout=timeout_seconds,
            limits=FetchLimits(max_requests=max_fetches, max_cert_requests=0),
        )
        return ValidationContext(
            trust_roots=list(trust_roots),
            other_certs=list(other_certs),
            moment=moment,
            allow_fetching=True,
            revocation_mode=_HARD_FAIL if revocation_required else _SOFT_FAIL,
            # A response fetched now may describe a moment in the past: its
            # thisUpdate is later, but a revocation time after the moment
            # still reads as good then.
            retroactive_revinfo=moment is not None,
            fetcher_backend=OwnedFetcherBackend(backend),
        )

    return factory


async def check_signer_at(
    signer_cert: x509.Certificate,
    *,
    moment: datetime | None,
    trust: TrustSetup,
    embedded: ValidationData,
    allow_fetching: bool = True,
) -> ChainCheck:
    """Validate the signer's certificate path at ``moment`` (None: now), revocation included.

    The embedded data is tried first, without network access. Revocation
    data is fetched through ``trust.context_factory`` only when the path is
    sound but the embedded data does not establish its revocation status,
    and only with ``allow_fetching``.
    """
    offline = offline_context(trust.trust_roots, embedded, moment=moment, revocation_mode=_HARD_FAIL)
    try:
        first = await _validate_path(signer_cert, offline, moment, source="embedded")
    finally:
        await offline.aclose()
    if first.outcome != "revocation_unknown" or not allow_fetching:
        return first

    fetching = trust.context_factory(
        trust.trust_roots, revocation_required=True, moment=moment, other_certs=embedded.certificates
    )
    try:
        second = await _validate_path(signer_cert, fetching, moment, source="fetched")
    finally:
        await fetching.aclose()
    if second.outcome == "revocation_unknown":
        log.info("signature_report.revocation_unknown", signer=signer_cert.subject.human_friendly,
                 detail=second.detail)
    return second


async def _validate_path(
    signer_cert: x509.Certificate, context: ValidationContext, moment: datetime | None, *, source: str
) -> ChainCheck:
    has_revocation_source = bool(signer_cert.ocsp_urls or signer_cert.crl_distribution_points)
    checked_at = context.moment

    def unknown(detail: str) -> RevocationStatus:
        return RevocationStatus("unknown", checked_at, detail=detail)

    try:
        paths = context.path_builder.async_build_paths_lazy(signer_cert)
        path: ValidationPath = await find_valid_path(signer_cert, paths, validation_context=context)
    except (PathBuildingError, InvalidCertificateError) as exc:
        # find_valid_path reports a self-signed certificate that is not a
        # trust root as InvalidCertificateError.
        return ChainCheck("no_chain", moment, None, unknown("no path to a trust anchor"), _describe(exc),
                          partial_chain=_partial_chain(signer_cert, context))
    except RevokedError as exc:
        revocation = RevocationStatus(
            "revoked" if exc.is_ee_cert else "unknown",
            checked_at,
            source=source if exc.is_ee_cert else None,
            revoked_at=exc.revocation_dt,
            reason=exc.reason.native,
            detail=None if exc.is_ee_cert else _describe(exc),
        )
        return ChainCheck("revoked" if exc.is_ee_cert else "ca_revoked", moment, exc.original_path, revocation,
                          _describe(exc))
    except ExpiredError as exc:
        outcome = "expired" if exc.is_ee_cert else "invalid"
        return ChainCheck(outcome, moment, exc.original_path, unknown("certificate not valid at that time"),
                          _describe(exc))
    except NotYetValidError as exc:
        outcome = "not_yet_valid" if exc.is_ee_cert else "invalid"
        return ChainCheck(outcome, moment, exc.original_path, unknown("certificate not valid at that time"),
                          _describe(exc))
    except InsufficientRevinfoError as exc:
        return ChainCheck("revocation_unknown", moment, exc.original_path, unknown(_describe(exc)), _describe(exc))
    except PathValidationError as exc:
        return ChainCheck("invalid", moment, exc.original_path, unknown(_describe(exc)), _describe(exc))
    except ValidationError as exc:
        return ChainCheck("invalid", moment, None, unknown(_describe(exc)), _describe(exc))

    try:
        SIGNER_KEY_USAGE.validate(signer_cert)
    except InvalidCertificateError as exc:
        return ChainCheck("key_usage", moment, path, unknown("not checked"), _describe(exc))

    if not has_revocation_source:
        revocation = RevocationStatus("not_applicable", checked_at,
                                      detail="the certificate names no OCSP responder or CRL distribution point")
    else:
        revocation = RevocationStatus("good", checked_at, source=source)
    return ChainCheck("valid", moment, path, revocation)


def _partial_chain(signer_cert: x509.Certificate, context: ValidationContext) -> tuple[x509.Certificate, ...]:
    """Follow issuer names through the known certificates, for display only, because no signature is checked."""
    registry = context.certificate_registry
    chain = [signer_cert]
    current = signer_cert
    for _ in range(8):
        if current.self_signed in ("yes", "maybe"):
            break
        issuers = list(registry.retrieve_by_name(current.issuer))
        if not issuers or issuers[0] in chain:
            break
        current = issuers[0]
        chain.append(current)
    return tuple(chain)


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "failure_msg", None) or str(exc)
    return f"{type(exc).__name__}: {text}"[:300]
