"""Revocation checking of signer certificates with OCSP (RFC 6960) and CRLs (RFC 5280 section 5).

One ``RevocationFetcher`` serves the whole service process. It hands out
pyHanko validation contexts whose OCSP, CRL and issuer certificate fetchers
share one HTTP session and one cache (see ``revocation_fetchers``), and it
checks a signer's certificate before anything reaches the HSM.

Why fetchers and not a cache that fills ``ValidationContext(ocsps=..., crls=...)``:
pyHanko finds out which certificates need revocation data only while it
builds and validates a path (the issuing CA, the OCSP responder, the TSA),
and it requests data for exactly those. A fetcher answers those questions as they
come, and it records what each context used, which is what pyHanko embeds in
a PDF's DSS for B-LT. Pre-filling would mean guessing the path in advance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import structlog
from asn1crypto import crl, ocsp, x509
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import (
    ExpiredError,
    InsufficientRevinfoError,
    NotYetValidError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
)
from pyhanko_certvalidator.fetchers.common_utils import enumerate_delivery_point_urls
from pyhanko_certvalidator.util import get_ocsp_urls, get_relevant_crl_dps

from signserver.config import Settings

from .baseline_levels import LONG_TERM_LEVELS
from .errors import (
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRevoked,
    CertificateUntrusted,
    RevocationUnavailable,
)
from .revocation_fetchers import ContextFetchers, FetchFailure, FetchSettings, SharedFetching, utc_now

__all__ = [
    "RevocationFetcher",
    "CertificateCheck",
    "revocation_required_for",
]

log = structlog.get_logger(__name__)

# Passed signer-certificate checks kept at most; the cache starts over when full.
MAX_PASSED_CHECKS = 1024

# asn1crypto's CRLReason names, mapped to the names of RFC 5280 section 5.3.1.
_REASON_NAMES = {
    "unspecified": "unspecified",
    "key_compromise": "keyCompromise",
    "ca_compromise": "cACompromise",
    "affiliation_changed": "affiliationChanged",
    "superseded": "superseded",
    "cessation_of_operation": "cessationOfOperation",
    "certificate_hold": "certificateHold",
    "remove_from_crl": "removeFromCRL",
    "privilege_withdrawn": "privilegeWithdrawn",
    "aa_compromise": "aACompromise",
}


def revocation_required_for(level: str) -> bool:
    """Tell whether a signature of ``level`` (``B-B``, ``B-T``, ``B-LT``, ``B-LTA``) needs revocation data."""
    # B-LT and B-LTA embed revocation data (ETSI EN 319 142-1 section 6.3), so they cannot be reached without it.
    return level.upper() in LONG_TERM_LEVELS


@dataclass(frozen=True)
class CertificateCheck:
    """The outcome of a signer certificate check that did not reject the certificate."""

    subject: str
    # OCSP and CRL URLs that returned no usable response. They were tolerated because
    # revocation data was not required, or because another source returned one.
    unavailable: tuple[FetchFailure, ...] = ()


class RevocationFetcher:
    """Fetches and caches OCSP responses, CRLs and issuer certificates for the whole process.

    ``clock`` only decides when cached responses expire; tests move it forward.
    Call ``close`` on the event loop that used the fetcher, at shut-down.

    Each HTTP request gets ``timeout_seconds`` from connecting to the last
    byte. The requests of one validation context, which include those of one
    signer certificate check, end within ``max_seconds_per_context``, by
    default three timeouts: enough for two responders and a CRL server that
    all run out of time.

    NOTE: the cache and the HTTP session are not thread-safe. Use the fetcher
    from the service's event loop only, not from worker threads that run
    event loops of their own.
    """

    def __init__(
        self,
        *,
        timeout_seconds: float = 5.0,
        max_response_bytes: int = 10 * 1024 * 1024,
        max_age: timedelta = timedelta(seconds=60),
        ocsp_default_age: timedelta = timedelta(minutes=5),
        ocsp_nonce: bool = True,
        max_seconds_per_context: float | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if max_seconds_per_context is None:
            max_seconds_per_context = 3 * timeout_seconds
        self.settings = FetchSettings(
            timeout_seconds=timeout_seconds,
            max_seconds_per_context=max_seconds_per_context,
            max_response_bytes=max_response_bytes,
            max_age=max_age,
            ocsp_default_age=ocsp_default_age,
            ocsp_nonce=ocsp_nonce,
        )
        self._shared = SharedFetching(self.settings, clock)
        # Passed signer checks by certificate, chain, trust roots and revocation requirement, with their expiry.
        self._passed_checks: dict[tuple[object, ...], tuple[CertificateCheck, datetime]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> "RevocationFetcher":
        return cls(
            timeout_seconds=settings.revocation_timeout_seconds,
            max_response_bytes=settings.revocation_max_response_bytes,
            max_age=settings.revocation_cache_max_age,
        )

    async def close(self) -> None:
        await self._shared.close()

    def clear_cache(self) -> None:
        self._shared.clear_cache()
        self._passed_checks.clear()

    def validation_context(
        self,
        trust_roots: Sequence[x509.Certificate],
        *,
        revocation_required: bool,
        moment: datetime | None = None,
        other_certs: Iterable[x509.Certificate] = (),
        ocsps: Iterable[ocsp.OCSPResponse] = (),
        crls: Iterable[crl.CertificateList] = (),
    ) -> ValidationContext:
        """Return a pyHanko validation context that fetches OCSP and CRL data through this fetcher.

        Contract:

        - only ``trust_roots`` are trusted; ``other_certs`` (for example the
          signer's chain) help build paths and are not trusted themselves;
        - with ``revocation_required``, revocation mode is "hard-fail": a
          certificate that names an OCSP responder or a CRL fails validation
          when none of them returns a usable response. Without it, mode is
          "soft-fail": unreachable servers are tolerated, but a revoked status
          that was obtained still fails;
        - ``moment`` is the validation time, now when None. Responses are
          still fetched for a past moment, and a revocation after ``moment``
          does not count against it;
        - revocation data issued after ``moment`` is accepted
          (``retroactive_revinfo``), because a response fetched now always
          postdates a context created a moment earlier, and a B-LT signature
          carries data fetched after its signature time;
        - ``ocsps`` and ``crls`` the caller already has (a signature's DSS or
          revocation values) are used before any network request for the same
          certificate, so an embedded response still validates offline;
        - after validation, ``context.ocsps`` and ``context.crls`` list the
          data this context used, which is what pyHanko embeds for B-LT.

        A context keeps its own record of fetched data, so create one per signature.
        """
        context, _fetchers = self._context(
            trust_roots, revocation_required=revocation_required, moment=moment, other_certs=other_certs,
            ocsps=ocsps, crls=crls,
        )
        return context

    async def check_signer_certificate(
        self,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate],
        trust_roots: Sequence[x509.Certificate],
        *,
        revocation_required: bool,
        now: datetime | None = None,
    ) -> CertificateCheck:
        """Check that ``certificate`` may sign at ``now`` (default: the current time), before the HSM is used.

        The certificate's own validity period is checked first, before any
        network request. pyHanko then builds and validates the path. Errors:

        - CertificateExpired or CertificateNotYetValid, for the certificate or a CA of its chain;
        - CertificateUntrusted, when no path leads to ``trust_roots``;
        - CertificateRevoked, when OCSP or a CRL reports it, whether or not revocation data is required;
        - RevocationUnavailable, when ``revocation_required`` and no OCSP response or CRL was usable,
          naming the URLs that failed.

        When revocation data is not required, servers that cannot be reached
        only produce a warning in the log and in the returned
        ``CertificateCheck.unavailable``.
        """
        moment = now or datetime.now(timezone.utc)
        subject = _subject(certificate)
        _check_validity_period(certificate, moment)
        cache_key = _check_key(certificate, chain, trust_roots, revocation_required)
        if now is None:
            cached = self._passed_checks.get(cache_key)
            if cached is not None and self._shared.clock() < cached[1]:
                return cached[0]

        context, fetchers = self._context(
            trust_roots, revocation_required=revocation_required, moment=now, other_certs=chain,
        )
        validator = CertificateValidator(certificate, intermediate_certs=list(chain), validation_context=context)
        try:
            await validator.async_validate_path()
        except RevokedError as exc:
            log.warning("signer_certificate.revoked", subject=subject, serial=format(certificate.serial_number, "x"),
                        detail=exc.failure_msg)
            raise CertificateRevoked(subject=subject, revoked_at=exc.revocation_dt.isoformat(),
                                     reason=_reason_name(exc.reason)) from None
        except ExpiredError as exc:
            expired = _certificate_outside_validity(exc, moment) or certificate
            raise CertificateExpired(subject=_subject(expired), valid_to=exc.expired_dt.isoformat()) from None
        except NotYetValidError as exc:
            early = _certificate_outside_validity(exc, moment) or certificate
            raise CertificateNotYetValid(subject=_subject(early), valid_from=exc.valid_from.isoformat()) from None
        except InsufficientRevinfoError as exc:
            failures = tuple(fetchers.failures)
            if revocation_required:
                urls = ", ".join(failure.url for failure in failures) or ", ".join(_declared_urls(certificate)) or "-"
                reason = "; ".join(failure.reason for failure in failures) or exc.failure_msg
                log.warning("signer_certificate.revocation_unavailable", subject=subject, urls=urls,
                            reason=reason[:300])
                raise RevocationUnavailable(subject=subject, urls=urls, reason=reason[:300]) from None
            log.warning("signer_certificate.revocation_unknown", subject=subject, detail=exc.failure_msg[:300])
            return CertificateCheck(subject=subject, unavailable=failures)
        except (PathBuildingError, PathValidationError) as exc:
            raise CertificateUntrusted(subject=subject, reason=str(exc)[:300]) from None

        failures = tuple(fetchers.failures)
        if failures:
            log.warning("signer_certificate.revocation_partly_unavailable", subject=subject,
                        urls=[failure.url for failure in failures],
                        reasons=[failure.reason for failure in failures])
        log.info("signer_certificate.checked", subject=subject, serial=format(certificate.serial_number, "x"),
                 revocation_required=revocation_required)
        check = CertificateCheck(subject=subject, unavailable=failures)
        if now is None and not failures:
            self._remember_passed_check(cache_key, check, certificate, context)
        return check

    def _remember_passed_check(self, key: tuple[object, ...], check: CertificateCheck,
                               certificate: x509.Certificate, context: ValidationContext) -> None:
        """Reuse a passed check for as long as the revocation data it used may be reused.

        That is at most the cache's ``max_age``, until the earliest nextUpdate
        of the OCSP responses and CRLs the validation used, and never past
        the certificate's end. Path validation costs milliseconds of CPU per
        signature, and its result can only change by a revocation, which
        that cached data would hide for the same time anyway.
        """
        now = self._shared.clock()
        expiry = now + self.settings.max_age
        if expiry <= now:
            return
        ends = [certificate["tbs_certificate"]["validity"]["not_after"].native]
        for response in context.ocsps:
            for single in response.basic_ocsp_response["tbs_response_data"]["responses"]:
                next_update = single["next_update"].native
                ends.append(next_update if next_update is not None else now + self.settings.ocsp_default_age)
        for certificate_list in context.crls:
            next_update = certificate_list["tbs_cert_list"]["next_update"].native
            if next_update is not None:
                ends.append(next_update)
        if len(self._passed_checks) >= MAX_PASSED_CHECKS:
            self._passed_checks.clear()
        self._passed_checks[key] = (check, min([expiry, *ends]))

    def _context(
        self,
        trust_roots: Sequence[x509.Certificate],
        *,
        revocation_required: bool,
        moment: datetime | None,
        other_certs: Iterable[x509.Certificate] = (),
        ocsps: Iterable[ocsp.OCSPResponse] = (),
        crls: Iterable[crl.CertificateList] = (),
    ) -> tuple[ValidationContext, ContextFetchers]:
        ocsps = list(ocsps)
        fetchers = ContextFetchers(self._shared, preloaded_ocsps=ocsps)
        context = ValidationContext(
            trust_roots=list(trust_roots),
            other_certs=list(other_certs),
            moment=moment,
            allow_fetching=True,
            fetchers=fetchers.as_pyhanko(),
            ocsps=ocsps,
            crls=list(crls),
            revocation_mode="hard-fail" if revocation_required else "soft-fail",
            retroactive_revinfo=True,
        )
        return context, fetchers


def _check_key(certificate: x509.Certificate, chain: Sequence[x509.Certificate],
               trust_roots: Sequence[x509.Certificate], revocation_required: bool) -> tuple[object, ...]:
    return (certificate.sha256, tuple(member.sha256 for member in chain),
            tuple(root.sha256 for root in trust_roots), revocation_required)


def _check_validity_period(certificate: x509.Certificate, moment: datetime) -> None:
    validity = certificate["tbs_certificate"]["validity"]
    not_before = validity["not_before"].native
    not_after = validity["not_after"].native
    if moment > not_after:
        raise CertificateExpired(subject=_subject(certificate), valid_to=not_after.isoformat())
    if moment < not_before:
        raise CertificateNotYetValid(subject=_subject(certificate), valid_from=not_before.isoformat())


def _certificate_outside_validity(error: PathValidationError, moment: datetime) -> x509.Certificate | None:
    """Find the certificate of the failed path whose validity period does not contain ``moment``."""
    for certificate in error.current_path.iter_certs(include_root=True):
        validity = certificate["tbs_certificate"]["validity"]
        if not validity["not_before"].native <= moment <= validity["not_after"].native:
            return certificate
    return None


def _declared_urls(certificate: x509.Certificate) -> list[str]:
    crl_urls = [url for point in get_relevant_crl_dps(certificate, use_deltas=False)
                for url in enumerate_delivery_point_urls(point)]
    return [*get_ocsp_urls(certificate), *crl_urls]


def _subject(certificate: x509.Certificate) -> str:
    """Return the certificate's common name, or its whole subject when it has none."""
    subject = certificate.subject
    common_name = subject.native.get("common_name") if isinstance(subject.native, dict) else None
    if isinstance(common_name, list):
        common_name = common_name[-1]
    return str(common_name) if common_name else subject.human_friendly


def _reason_name(reason: crl.CRLReason | None) -> str:
    native = reason.native if reason is not None else None
    return _REASON_NAMES.get(native or "unspecified", str(native))
