"""Cached HTTP fetching of OCSP responses, CRLs and issuer certificates for pyhanko-certvalidator.

``SharedFetching`` lives as long as the service process. It owns one aiohttp
session and a cache of fetched responses, keyed by the request. For OCSP the
key is the CertID (RFC 6960 section 4.1.1). For a CRL (RFC 5280 section
4.2.1.13) or a caIssuers certificate (section 4.2.2.1) it is the URL. An
entry is reused until the response's nextUpdate, bounded by a maximum age. OCSP
requests are POSTed as RFC 6960 appendix A.1 describes.

``ContextFetchers`` adapts it to pyhanko-certvalidator's fetcher interfaces
for one validation context. It remembers which responses that context used,
because pyHanko embeds exactly those in a PDF's DSS, and which URLs failed,
so that an error can name them.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar

import aiohttp
import structlog
from asn1crypto import cms, crl, ocsp, pem, x509
from prometheus_client import Counter
from pyhanko_certvalidator.authority import Authority
from pyhanko_certvalidator.errors import CRLFetchError, OCSPFetchError, OCSPValidationError
from pyhanko_certvalidator.fetchers import CertificateFetcher, CRLFetcher, Fetchers, OCSPFetcher
from pyhanko_certvalidator.fetchers.common_utils import (
    enumerate_delivery_point_urls,
    format_ocsp_request,
    gather_aia_issuer_urls,
    get_certid,
    process_ocsp_response_data,
    unpack_cert_content,
)
from pyhanko_certvalidator.util import get_ocsp_urls, get_relevant_crl_dps, issuer_serial

from .revocation_ocsp import ocsp_response_problem

__all__ = ["FetchSettings", "FetchFailure", "SharedFetching", "ContextFetchers", "REVOCATION_FETCHES"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

REVOCATION_FETCHES = Counter(
    "signserver_revocation_fetches_total",
    "HTTP requests for OCSP responses, CRLs and issuer certificates, by kind and result (ok, failed).",
    ["kind", "result"],
)

USER_AGENT = "signserver-revocation/1"
# The CertID hash. Every OCSP responder must accept SHA-1 here (RFC 5019 section 2.1.1).
CERTID_HASH_ALGORITHM = "sha1"
MAX_REDIRECTS = 3
CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class FetchSettings:
    """Limits of the HTTP requests and of the cache."""

    timeout_seconds: float = 5.0
    max_response_bytes: int = 10 * 1024 * 1024
    # Maximum time a response is reused, even when its nextUpdate is later. Zero turns reuse off.
    max_age: timedelta = timedelta(seconds=60)
    # How long an OCSP response without nextUpdate is reused.
    ocsp_default_age: timedelta = timedelta(minutes=5)
    ocsp_nonce: bool = True
    # Maximum network requests of one validation context. Responses served from the cache do not
    # count. It bounds the traffic that certificates in an uploaded document can cause.
    max_requests_per_context: int = 32
    # Maximum time of the network requests of one validation context, from its first request. Each
    # request gets at most ``timeout_seconds`` of it, so a certificate that names many slow servers
    # delays a signature by this long, not by ``max_requests_per_context`` timeouts.
    max_seconds_per_context: float = 15.0
    max_cache_entries: int = 4096

    def __post_init__(self) -> None:
        if self.timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {self.timeout_seconds}")
        if self.max_seconds_per_context <= 0:
            raise ValueError(f"max_seconds_per_context must be positive, got {self.max_seconds_per_context}")
        if self.max_response_bytes <= 0:
            raise ValueError(f"max_response_bytes must be positive, got {self.max_response_bytes}")
        if self.max_age < timedelta(0):
            raise ValueError(f"max_age must be zero or positive, got {self.max_age}")
        if self.ocsp_default_age <= timedelta(0):
            raise ValueError(f"ocsp_default_age must be positive, got {self.ocsp_default_age}")


@dataclass(frozen=True)
class FetchFailure:
    """One URL that returned no usable response, and why."""

    url: str
    reason: str


class FetchFailed(Exception):
    """Every URL tried for one object failed."""

    def __init__(self, failures: Sequence[FetchFailure]) -> None:
        self.failures = list(failures)
        super().__init__("; ".join(f"{failure.url}: {failure.reason}" for failure in self.failures))


class SharedFetching:
    """The process-wide HTTP session and response cache."""

    def __init__(self, settings: FetchSettings, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.clock = clock
        self._http = _HttpClient(settings)
        self._cache: _ResponseCache[Any] = _ResponseCache(clock, settings.max_cache_entries)

    async def close(self) -> None:
        await self._http.close()

    def clear_cache(self) -> None:
        self._cache.clear()

    async def ocsp_response(
        self, cert: x509.Certificate, authority: Authority, charge: Callable[[], float],
        record: Callable[[FetchFailed], None],
    ) -> ocsp.OCSPResponse:
        """Return the OCSP response for ``cert``, from the cache or from its responders in turn.

        A responder that cannot be reached, or whose response is unusable
        (see ``ocsp_response_problem``), is skipped for the next one, and
        ``record`` receives the URLs skipped before one succeeded. Raises
        FetchFailed when the certificate names no http(s) responder or none
        returned a usable response.
        """
        urls = get_ocsp_urls(cert)
        if not urls:
            raise FetchFailed([FetchFailure("-", "the certificate names no http or https OCSP responder")])
        cert_id = get_certid(cert, authority, certid_hash_algo=CERTID_HASH_ALGORITHM)

        async def download() -> tuple[ocsp.OCSPResponse, datetime]:
            failures = []
            for url in urls:
                request = format_ocsp_request(
                    cert, authority, certid_hash_algo=CERTID_HASH_ALGORITHM, request_nonces=self.settings.ocsp_nonce
                )
                try:
                    timeout = charge()
                    body, _content_type = await self._http.fetch(
                        "ocsp", url, timeout, data=request.dump(),
                        headers={"Content-Type": "application/ocsp-request", "Accept": "application/ocsp-response"},
                    )
                    response = process_ocsp_response_data(body, ocsp_request=request, ocsp_url=url)
                    # Staleness is judged by the wall clock, because ``self.clock`` may run ahead in tests.
                    problem = ocsp_response_problem(response, cert_id, authority, utc_now())
                    if problem is not None:
                        raise OCSPValidationError(problem)
                    expires_at = self._ocsp_expiry(response)
                except FetchFailed as exc:
                    failures.extend(exc.failures)
                    continue
                except (OCSPFetchError, OCSPValidationError, ValueError, KeyError, TypeError) as exc:
                    failures.append(FetchFailure(url, str(exc)[:200] or type(exc).__name__))
                    log.warning("revocation.ocsp_response_unusable", url=url, error=str(exc)[:200])
                    continue
                if failures:
                    record(FetchFailed(failures))
                return response, expires_at
            raise FetchFailed(failures)

        return await self._cache.get_or_fetch(("ocsp", cert_id.dump()), download)  # type: ignore[no-any-return]

    async def crl(self, url: str, charge: Callable[[], float]) -> crl.CertificateList:
        """Return the CRL at ``url``, DER or PEM, from the cache or downloaded."""

        async def download() -> tuple[crl.CertificateList, datetime]:
            timeout = charge()
            body, _content_type = await self._http.fetch("crl", url, timeout,
                                                         headers={"Accept": "application/pkix-crl"})
            try:
                if pem.detect(body):
                    _type, _headers, body = pem.unarmor(body)
                certificate_list = crl.CertificateList.load(body)
                next_update = certificate_list["tbs_cert_list"]["next_update"].native
            except ValueError as exc:
                raise FetchFailed([FetchFailure(url, f"not a DER or PEM CRL: {exc}"[:200])]) from None
            return certificate_list, self._expiry(next_update, default_age=self.settings.max_age)

        return await self._cache.get_or_fetch(("crl", url), download)  # type: ignore[no-any-return]

    async def certificates(self, url: str, charge: Callable[[], float]) -> list[x509.Certificate]:
        """Return the certificates served at a caIssuers ``url`` (DER, PEM or a certs-only PKCS#7)."""

        async def download() -> tuple[list[x509.Certificate], datetime]:
            timeout = charge()
            body, content_type = await self._http.fetch("cert", url, timeout,
                                                        headers={"Accept": "application/pkix-cert"})
            try:
                certificates = list(unpack_cert_content(body, content_type, url, permit_pem=True))
            except ValueError as exc:
                raise FetchFailed([FetchFailure(url, f"no certificate in the response: {exc}"[:200])]) from None
            return certificates, self.clock() + self.settings.max_age

        return await self._cache.get_or_fetch(("cert", url), download)  # type: ignore[no-any-return]

    def _ocsp_expiry(self, response: ocsp.OCSPResponse) -> datetime:
        single_responses = response.basic_ocsp_response["tbs_response_data"]["responses"]
        next_updates = [single["next_update"].native for single in single_responses]
        next_update = min(next_updates) if next_updates and None not in next_updates else None
        return self._expiry(next_update, default_age=self.settings.ocsp_default_age)

    def _expiry(self, next_update: datetime | None, *, default_age: timedelta) -> datetime:
        now = self.clock()
        latest = now + min(default_age, self.settings.max_age)
        if next_update is None:
            return latest
        return min(next_update, now + self.settings.max_age)


class ContextFetchers:
    """The fetchers of one validation context over ``SharedFetching``.

    ``preloaded_ocsps`` are responses the caller already has, for example
    from a signature's revocation values. The OCSP fetcher returns a matching
    one instead of asking the responder, because pyHanko consults the fetcher
    before the context's own responses and would otherwise fail offline.
    """

    def __init__(self, shared: SharedFetching, preloaded_ocsps: Iterable[ocsp.OCSPResponse] = ()) -> None:
        self.shared = shared
        self.preloaded_ocsps = list(preloaded_ocsps)
        self.failures: list[FetchFailure] = []
        self.requests_made = 0
        # time.monotonic() by which this context's requests must end, set by its first request.
        self._deadline: float | None = None

    def as_pyhanko(self) -> Fetchers:
        return Fetchers(
            ocsp_fetcher=_OcspFetcher(self),
            crl_fetcher=_CrlFetcher(self),
            cert_fetcher=_CertificateFetcher(self),
        )

    def charge(self) -> float:
        """Count one network request and return its timeout in seconds.

        Raises FetchFailed once the context has made ``max_requests_per_context``
        requests, or spent ``max_seconds_per_context`` since its first one.
        """
        settings = self.shared.settings
        limit = settings.max_requests_per_context
        if self.requests_made >= limit:
            raise FetchFailed([FetchFailure("-", f"more than {limit} OCSP, CRL or certificate requests for one check")])
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + settings.max_seconds_per_context
        remaining = self._deadline - now
        if remaining <= 0:
            raise FetchFailed([FetchFailure("-", f"the OCSP, CRL and certificate requests for one check took more "
                                                 f"than {settings.max_seconds_per_context:g} s")])
        self.requests_made += 1
        return min(settings.timeout_seconds, remaining)

    def record(self, failed: FetchFailed) -> None:
        for failure in failed.failures:
            if failure not in self.failures:
                self.failures.append(failure)


class _OcspFetcher(OCSPFetcher):
    def __init__(self, context: ContextFetchers) -> None:
        self.context = context
        self.results: dict[Any, ocsp.OCSPResponse | OCSPFetchError] = {}

    async def fetch(self, cert: x509.Certificate | cms.AttributeCertificateV2,
                    authority: Authority) -> ocsp.OCSPResponse:
        tag = (issuer_serial(cert), authority.hashable)
        if tag not in self.results:
            try:
                self.results[tag] = await self.context.shared.ocsp_response(cert, authority, self.context.charge,
                                                                             self.context.record)
            except FetchFailed as exc:
                self.context.record(exc)
                self.results[tag] = OCSPFetchError(f"no usable OCSP response: {exc}")
        result = self.results[tag]
        if isinstance(result, OCSPFetchError):
            raise result
        return result

    def fetched_responses(self) -> Iterable[ocsp.OCSPResponse]:
        return [result for result in self.results.values() if not isinstance(result, OCSPFetchError)]

    def fetched_responses_for_cert(self, cert: x509.Certificate) -> Iterable[ocsp.OCSPResponse]:
        target = issuer_serial(cert)
        fetched = [result for (subject, _authority), result in self.results.items()
                   if subject == target and not isinstance(result, OCSPFetchError)]
        preloaded = [response for response in self.context.preloaded_ocsps if _ocsp_response_covers(response, cert)]
        return fetched + preloaded


class _CrlFetcher(CRLFetcher):
    def __init__(self, context: ContextFetchers) -> None:
        self.context = context
        self.by_certificate: dict[bytes, list[crl.CertificateList]] = {}
        self.errors: dict[bytes, CRLFetchError] = {}
        self.fetched: dict[str, crl.CertificateList] = {}

    async def fetch(self, cert: x509.Certificate | cms.AttributeCertificateV2, *,
                    use_deltas: bool | None = None) -> Iterable[crl.CertificateList]:
        key = issuer_serial(cert)
        if key in self.by_certificate:
            return self.by_certificate[key]
        if key in self.errors:
            raise self.errors[key]

        urls = [url for point in get_relevant_crl_dps(cert, use_deltas=bool(use_deltas))
                for url in enumerate_delivery_point_urls(point)]
        results = []
        failures = []
        for url in urls:
            try:
                certificate_list = await self.context.shared.crl(url, self.context.charge)
            except FetchFailed as exc:
                failures.extend(exc.failures)
                continue
            self.fetched[url] = certificate_list
            results.append(certificate_list)
        if failures:
            self.context.record(FetchFailed(failures))
        if urls and not results:
            self.errors[key] = CRLFetchError(f"no CRL could be fetched: {FetchFailed(failures)}")
            raise self.errors[key]
        self.by_certificate[key] = results
        return results

    def fetched_crls(self) -> Iterable[crl.CertificateList]:
        return list(self.fetched.values())

    def fetched_crls_for_cert(self, cert: x509.Certificate | cms.AttributeCertificateV2) -> Iterable[crl.CertificateList]:
        # KeyError when this context has not fetched for ``cert`` yet, as the interface requires.
        return self.by_certificate[issuer_serial(cert)]


class _CertificateFetcher(CertificateFetcher):
    def __init__(self, context: ContextFetchers) -> None:
        self.context = context
        self.fetched: dict[bytes, x509.Certificate] = {}

    async def _from_urls(self, urls: Iterable[str]) -> AsyncGenerator[x509.Certificate, None]:
        for url in urls:
            try:
                certificates = await self.context.shared.certificates(url, self.context.charge)
            except FetchFailed as exc:
                self.context.record(exc)
                log.warning("revocation.issuer_certificate_unavailable", url=url, error=str(exc)[:200])
                continue
            for certificate in certificates:
                self.fetched[certificate.sha256] = certificate
                yield certificate

    def fetch_cert_issuers(self, cert: x509.Certificate | cms.AttributeCertificateV2
                           ) -> AsyncGenerator[x509.Certificate, None]:
        return self._from_urls(list(gather_aia_issuer_urls(cert)))

    def fetch_crl_issuers(self, certificate_list: crl.CertificateList) -> AsyncGenerator[x509.Certificate, None]:
        urls = [url for url in certificate_list.issuer_cert_urls if url.lower().startswith(("http://", "https://"))]
        return self._from_urls(urls)

    def fetched_certs(self) -> Iterable[x509.Certificate]:
        return list(self.fetched.values())


def _ocsp_response_covers(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """Tell whether ``response`` has a single response for ``cert``'s serial number and issuer name."""
    try:
        single_responses = response.basic_ocsp_response["tbs_response_data"]["responses"]
    except (ValueError, KeyError, TypeError):
        return False
    for single in single_responses:
        cert_id = single["cert_id"]
        algorithm = cert_id["hash_algorithm"]["algorithm"].native
        if algorithm not in hashlib.algorithms_available:
            continue
        issuer_name_hash = hashlib.new(algorithm, cert.issuer.dump()).digest()
        if cert_id["serial_number"].native == cert.serial_number and cert_id["issuer_name_hash"].native == issuer_name_hash:
            return True
    return False


class _HttpClient:
    """GET and POST over aiohttp with a timeout per request, a response size limit and http(s) URLs only."""

    def __init__(self, settings: FetchSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        # A session belongs to the event loop that created it.
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
            self._loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    async def fetch(self, kind: str, url: str, timeout: float, *, data: bytes | None = None,
                    headers: dict[str, str]) -> tuple[bytes, str | None]:
        """POST ``data`` to ``url``, or GET ``url`` when ``data`` is None, and return the body and its content type.

        ``timeout`` bounds the whole exchange in seconds, from connecting to the last byte of the body.
        """
        try:
            body, content_type = await self._fetch(url, timeout, data=data, headers=headers)
        except FetchFailed as exc:
            REVOCATION_FETCHES.labels(kind=kind, result="failed").inc()
            log.warning("revocation.fetch_failed", kind=kind, url=url, error=str(exc)[:300])
            raise
        REVOCATION_FETCHES.labels(kind=kind, result="ok").inc()
        log.info("revocation.fetched", kind=kind, url=url, size=len(body))
        return body, content_type

    async def _fetch(self, url: str, timeout: float, *, data: bytes | None,
                     headers: dict[str, str]) -> tuple[bytes, str | None]:
        if not url.lower().startswith(("http://", "https://")):
            raise FetchFailed([FetchFailure(url, "only http and https URLs are fetched")])
        limit = self.settings.max_response_bytes
        method = "GET" if data is None else "POST"
        try:
            async with self._get_session().request(
                method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout),
                max_redirects=MAX_REDIRECTS,
            ) as response:
                if response.status != 200:
                    raise FetchFailed([FetchFailure(url, f"HTTP status {response.status}")])
                if response.content_length is not None and response.content_length > limit:
                    raise FetchFailed([FetchFailure(url, f"response of {response.content_length} bytes is larger "
                                                         f"than the limit of {limit} bytes")])
                body = bytearray()
                async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                    body.extend(chunk)
                    if len(body) > limit:
                        raise FetchFailed([FetchFailure(url, f"response is larger than the limit of {limit} bytes")])
                return bytes(body), response.headers.get("Content-Type")
        except asyncio.TimeoutError:
            raise FetchFailed([FetchFailure(url, f"no complete response within {timeout:.3g} s")]) from None
        except aiohttp.ClientError as exc:
            raise FetchFailed([FetchFailure(url, f"{type(exc).__name__}: {exc}"[:200])]) from None


class _ResponseCache(Generic[T]):
    """Values by key until their expiry time; concurrent requests for one key share a single download."""

    def __init__(self, clock: Callable[[], datetime], max_entries: int) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._entries: dict[Any, tuple[T, datetime]] = {}
        self._downloads: dict[Any, asyncio.Future[T]] = {}

    def clear(self) -> None:
        self._entries.clear()

    async def get_or_fetch(self, key: Any, download: Callable[[], Awaitable[tuple[T, datetime]]]) -> T:
        entry = self._entries.get(key)
        if entry is not None and entry[1] > self.clock():
            return entry[0]

        running = self._downloads.get(key)
        if running is not None and not running.cancelled():
            return await asyncio.shield(running)

        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._downloads[key] = future
        try:
            value, expires_at = await download()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Waiters re-raise it. Without a waiter, asyncio would warn that it was never retrieved.
            future.exception()
            raise
        finally:
            self._downloads.pop(key, None)
        future.set_result(value)
        self._store(key, value, expires_at)
        return value

    def _store(self, key: Any, value: T, expires_at: datetime) -> None:
        now = self.clock()
        if expires_at <= now:
            return
        self._entries[key] = (value, expires_at)
        if len(self._entries) > self.max_entries:
            for stale_key in [k for k, (_v, expiry) in self._entries.items() if expiry <= now]:
                del self._entries[stale_key]
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
