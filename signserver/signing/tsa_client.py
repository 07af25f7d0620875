"""An RFC 3161 client for external time-stamp authorities, tried in order.

Each TSA gets a request with a fresh nonce. A TSA that cannot be reached,
times out, responds with another content type, rejects the request, or sends
a token with a wrong nonce or message imprint is logged and the next one is
tried. When none responds, signing fails with ``tsa_failed``: a signature is
never released without its timestamp.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
import structlog
from asn1crypto import cms
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError

from signserver.http_streams import read_at_most
from signserver.signing.tsa import TimeStampResp, checked_token

__all__ = ["FailoverTimeStamper", "TSA_QUERY_CONTENT_TYPE", "TSA_REPLY_CONTENT_TYPE"]

log = structlog.get_logger(__name__)

TSA_QUERY_CONTENT_TYPE = "application/timestamp-query"
TSA_REPLY_CONTENT_TYPE = "application/timestamp-reply"
MAX_REPLY_BYTES = 1024 * 1024


class FailoverTimeStamper(TimeStamper):
    def __init__(self, urls: Sequence[str], *, timeout_seconds: float = 10.0) -> None:
        if not urls:
            raise ValueError("FailoverTimeStamper needs at least one TSA URL")
        super().__init__(include_nonce=True)
        self.urls = tuple(urls)
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def _fetch(self, session: aiohttp.ClientSession, url: str, query: bytes) -> TimeStampResp:
        headers = {"Content-Type": TSA_QUERY_CONTENT_TYPE, "Accept": TSA_REPLY_CONTENT_TYPE}
        async with session.post(url, data=query, headers=headers) as response:
            if response.status != 200:
                raise TimestampRequestError(f"HTTP status {response.status}")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type != TSA_REPLY_CONTENT_TYPE:
                raise TimestampRequestError(f"content type {content_type!r}, expected {TSA_REPLY_CONTENT_TYPE}")
            body = await read_at_most(response.content, MAX_REPLY_BYTES)
        if len(body) > MAX_REPLY_BYTES:
            raise TimestampRequestError(f"reply larger than {MAX_REPLY_BYTES} bytes")
        try:
            return TimeStampResp.load(body, strict=True)
        except ValueError as exc:
            raise TimestampRequestError(f"reply is not a DER TimeStampResp: {exc}") from exc

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        """Return the first token that a TSA of ``urls`` grants for this imprint, trying them in order.

        Each TSA gets at most ``timeout_seconds`` for the whole exchange, so
        a failed call takes at most ``len(urls) * timeout_seconds``. Raises
        TimestampRequestError naming every URL and why it failed.

        NOTE: the token's signature and the TSA's certificate are not checked
        here, so a token that fails them is not replaced by the next TSA's.
        The validation before release rejects the signed file instead.
        """
        failures = []
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            for url in self.urls:
                nonce, request = self.request_cms(message_digest, md_algorithm)
                try:
                    response = await self._fetch(session, url, request.dump())
                    return checked_token(response, nonce, message_digest, md_algorithm)
                except (TimestampRequestError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    reason = self._failure_reason(exc)
                    log.warning("tsa.request_failed", url=url, reason=reason)
                    failures.append(f"{url}: {reason}")
        raise TimestampRequestError("no TSA returned a usable token: " + "; ".join(failures))

    def _failure_reason(self, exc: Exception) -> str:
        """Describe ``exc`` in a few words, because the error of a signing failure keeps only 200 characters."""
        if isinstance(exc, TimeoutError):
            # asyncio.TimeoutError is TimeoutError since Python 3.11, and aiohttp raises it without a message.
            return f"no complete response within {self.timeout.total:g} s"
        if isinstance(exc, aiohttp.ClientConnectorError):
            return f"connection failed: {exc.os_error.strerror or type(exc.os_error).__name__}"
        if isinstance(exc, TimestampRequestError):
            return str(exc)[:200]
        return f"{type(exc).__name__}: {exc}"[:200]
