"""RFC 3161 time-stamps from the service's ``/tsa``, at a fixed concurrency for a fixed duration.

Every response must be HTTP 200 with status granted, the request's nonce and
message imprint (parsed with asn1crypto). A few responses are also checked
with ``openssl ts -verify`` against the demo root and issuing CA.
"""

from __future__ import annotations

import os
import secrets
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from asn1crypto import algos, tsp

from bench.config import RunConfig
from bench.context import RunContext
from bench.figures import Figure, compare
from bench.load import LoadResult, RequestFailed, client_session, closed_loop, run_summary
from bench.memory import ProcessSampler
from bench.service import BenchHome
from bench.verify import openssl_ts_verify

__all__ = ["check_tokens", "measure_tsa", "run_timestamps"]

TIMESTAMP_QUERY = "application/timestamp-query"


def timestamp_request(digest: bytes, nonce: int) -> bytes:
    return tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                            "hashed_message": digest},
        "nonce": nonce,
        "cert_req": True,
    }).dump()


def check_response(der: bytes, digest: bytes, nonce: int) -> None:
    """Raise RequestFailed unless ``der`` grants a token for ``digest`` with ``nonce``."""
    try:
        response = tsp.TimeStampResp.load(der)
        status = response["status"]["status"].native
        if status != "granted":
            raise RequestFailed(f"time-stamp status {status}: {response['status']['status_string'].native}")
        info = response["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
        if info["nonce"].native != nonce:
            raise RequestFailed("time-stamp token carries another nonce")
        if info["message_imprint"]["hashed_message"].native != digest:
            raise RequestFailed("time-stamp token carries another message imprint")
    except (ValueError, KeyError, TypeError) as exc:
        raise RequestFailed(f"unreadable TimeStampResp: {exc}") from None


async def run_timestamps(home: BenchHome, config: RunConfig, seconds: float | None = None,
                         around: AbstractContextManager[object] | None = None) -> LoadResult:
    """Request time-stamps for random digests; each output is (digest, nonce, response DER).

    ``around`` (such as a ProcessSampler) is entered after the warm-up, for the measured requests.
    """
    url = f"{home.url}/tsa"
    async with client_session(config.tsa_concurrency) as session:

        async def send(_index: int) -> tuple[bytes, int, bytes]:
            digest = os.urandom(32)
            nonce = secrets.randbits(63)
            async with session.post(url, data=timestamp_request(digest, nonce),
                                    headers={"Content-Type": TIMESTAMP_QUERY}) as response:
                body = await response.read()
                if response.status != 200:
                    raise RequestFailed(f"HTTP {response.status}: {body[:300]!r}")
            check_response(body, digest, nonce)
            return digest, nonce, body

        warmup = await closed_loop(config.tsa_concurrency, 30, config.tsa_concurrency * 2, send)
        if warmup.errors:
            raise RuntimeError(f"warm-up time-stamps failed: {warmup.first_error}")
        with around or nullcontext():
            return await closed_loop(config.tsa_concurrency, seconds or config.tsa_seconds,
                                     config.tsa_max_requests, send)


def check_tokens(result: LoadResult, home: BenchHome, directory: Path, count: int) -> int:
    """Verify ``count`` responses, spread over the run, with openssl; return how many were verified."""
    ca_file = directory / "tsa-chain.pem"
    ca_file.write_bytes((home.home / "pki" / "issuing-ca.pem").read_bytes() + (home.home / "demo-root.pem").read_bytes())
    indexes = sorted(result.outputs)
    step = max(1, len(indexes) // max(1, count))
    verified = 0
    for index in indexes[::step][:count]:
        digest, _nonce, der = result.outputs[index]
        response_file = directory / f"tsa-response-{index}.tsr"
        response_file.write_bytes(der)
        openssl_ts_verify(response_file, digest.hex(), ca_file)
        verified += 1
    return verified


async def measure_tsa(ctx: RunContext) -> list[Figure]:
    """Time-stamps per second at the configured concurrency, compared with the TSA key's raw rate."""
    config = ctx.config
    sampler = ProcessSampler(ctx.service.pid, config.memory_sample_seconds)
    result = await run_timestamps(ctx.home, config, around=sampler)
    usage = sampler.usage
    assert usage is not None
    extra: dict[str, object] = {**run_summary(result), **usage.as_extra(),
                                "service_cpu_ms_per_request": usage.cpu_ms_per(result.completed)}
    try:
        extra["openssl_verified_tokens"] = check_tokens(result, ctx.home, ctx.work_dir, config.tsa_checked_tokens)
    except RuntimeError as exc:
        extra["errors"] = result.errors + 1
        extra["first_error"] = str(exc)
    figure = Figure(f"tsa.timestamps.c{config.tsa_concurrency}", result.throughput, "tokens/s",
                    f"RFC 3161 time-stamps from /tsa, {config.tsa_concurrency} concurrent clients; "
                    "the issue sets no goal", extra=extra)

    async def rerun(seconds: float) -> None:
        await run_timestamps(ctx.home, config, seconds)

    ctx.reruns[figure.name] = (rerun, config.profile_seconds)
    return [compare(figure, ctx.baselines["tsa_rsa2048"], None)]
