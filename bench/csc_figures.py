"""The CSC signHash figures of one key: throughput and latency at each concurrency, batches, and memory."""

from __future__ import annotations

from dataclasses import replace

from cryptography import x509

from bench.config import MIB
from bench.context import Rerun, RunContext
from bench.csc import (
    CscClient,
    HashSlices,
    batch_budget,
    one_hash_budget,
    run_batches,
    run_one_hash,
    verify_sample,
)
from bench.figures import Baseline, Figure, compare
from bench.load import LoadResult, client_session, run_summary
from bench.memory import ProcessSampler

__all__ = ["measure_csc_key", "CSC_KEYS"]

# Figure name of each key -> the credential signHash uses.
CSC_KEYS = {
    "rsa2048": "cred-tran-thi-bich-ngoc",
    "ecp256": "cred-nguyen-van-an",
}
ONE_HASH_GOAL = ">= 0.6"
ONE_HASH_GOAL_CONCURRENCY = 8
LATENCY_GOAL = "<= 5"
LATENCY_GOAL_CONCURRENCY = 32
BATCH_GOAL = ">= 0.85"


class _ProfileSad:
    """A SAD for the profile re-runs of one key, authorized on first use with one more TOTP code."""

    def __init__(self, ctx: RunContext, client: CscClient, credential_id: str, secret: str) -> None:
        self.ctx = ctx
        self.client = client
        self.credential_id = credential_id
        self.secret = secret
        self.sad: str | None = None
        self.slices: HashSlices | None = None

    async def get(self) -> tuple[str, HashSlices]:
        if self.sad is None:
            config = self.ctx.config
            # At most two one-hash re-runs (the throughput and the latency figure) and one batch re-run.
            self.slices = HashSlices(2 * (config.one_hash_max_requests + config.warmup_requests)
                                     + batch_budget(config))
            async with client_session(1) as session:
                self.sad = await self.client.authorize(session, self.credential_id, self.slices.hashes,
                                                       self.ctx.totp.next(self.secret))
        assert self.slices is not None
        return self.sad, self.slices


def _checked(result: LoadResult, digests: list[bytes], per_request: int, certificate: x509.Certificate,
             count: int) -> dict[str, object]:
    """Verify a sample of the run's signatures; a bad one counts as an error of the run."""
    try:
        return {"verified_signatures": verify_sample(result, digests, per_request, certificate, count)}
    except RuntimeError as exc:
        result.errors += 1
        result.first_error = result.first_error or str(exc)
        return {"verified_signatures": 0}


async def measure_csc_key(ctx: RunContext, key: str) -> list[Figure]:
    """Run the one-hash and batch signHash runs of one key and return their figures."""
    config = ctx.config
    credential_id = CSC_KEYS[key]
    credential = ctx.home.credential(credential_id)
    certificate = x509.load_der_x509_certificate(credential.certificate_der)
    secret = ctx.home.official_for(credential_id)["totp_secret"]
    baseline = ctx.baselines[key]

    async with client_session(1) as session:
        client = await CscClient.login(ctx.home, session)
        one_hash = HashSlices(one_hash_budget(config))
        one_hash_sad = await client.authorize(session, credential_id, one_hash.hashes, ctx.totp.next(secret))
        batch = HashSlices(batch_budget(config))
        batch_sad = await client.authorize(session, credential_id, batch.hashes, ctx.totp.next(secret))

    figures = []
    for concurrency in config.one_hash_concurrencies:
        sampler = ProcessSampler(ctx.service.pid, config.memory_sample_seconds)
        result, digests = await run_one_hash(client, credential_id, credential.key_type, one_hash_sad, one_hash,
                                             concurrency, config, around=sampler)
        usage = sampler.usage
        assert usage is not None
        checks = _checked(result, digests, 1, certificate, config.verified_signatures)
        name = f"csc.sign_hash.{key}.c{concurrency}"
        figure = Figure(name, result.throughput, "signatures/s",
                        f"CSC signHash, one hash per request, {concurrency} concurrent client(s), {credential_id}",
                        extra={**run_summary(result), **usage.as_extra(), **checks,
                               "service_cpu_ms_per_request": usage.cpu_ms_per(result.completed),
                               "sad_hashes": len(one_hash.hashes)})
        figures.append(compare(figure, baseline, ONE_HASH_GOAL if concurrency == ONE_HASH_GOAL_CONCURRENCY else None))

        if concurrency == LATENCY_GOAL_CONCURRENCY:
            p50, p99 = result.latency_ms(50), result.latency_ms(99)
            latency = Figure(f"{name}.p99_latency", p99, "ms",
                             f"p99 latency of one-hash signHash at concurrency {concurrency}, compared with its p50",
                             extra={"errors": result.errors, "p95_ms": result.latency_ms(95)})
            figures.append(compare(latency, Baseline(f"{name}.p50_latency", p50, "ms") if p50 else None,
                                   LATENCY_GOAL))
            figures.append(Figure(
                f"memory.sign_hash_c{concurrency}.{key}", usage.increase / MIB, "MiB",
                f"peak minus idle resident memory of the service during the c={concurrency} signHash run",
                extra={"idle_mib": usage.idle_rss / MIB, "peak_mib": usage.peak_rss / MIB,
                       "high_water_increase_mib": usage.high_water_increase / MIB,
                       "samples": usage.samples, "service_processes": usage.processes},
            ))

    sampler = ProcessSampler(ctx.service.pid, config.memory_sample_seconds)
    result, digests = await run_batches(client, credential_id, credential.key_type, batch_sad, batch, config,
                                        around=sampler)
    usage = sampler.usage
    assert usage is not None
    checks = _checked(result, digests, config.batch_size, certificate, config.verified_signatures)
    signatures_per_second = result.completed * config.batch_size / result.seconds if result.seconds else 0.0
    figure = Figure(f"csc.sign_hash_batch{config.batch_size}.{key}", signatures_per_second, "signatures/s",
                    f"CSC signHash, {config.batch_size} hashes per request under one SAD, "
                    f"{config.batch_concurrency} concurrent clients, {credential_id}",
                    extra={**run_summary(result), **usage.as_extra(), **checks, "sad_hashes": len(batch.hashes),
                           "requests_per_second": result.throughput,
                           "service_cpu_ms_per_signature": usage.cpu_ms_per(result.completed * config.batch_size)})
    figures.append(compare(figure, baseline, BATCH_GOAL))

    _register_reruns(ctx, key, client, credential_id, credential.key_type, secret)
    return figures


def _register_reruns(ctx: RunContext, key: str, client: CscClient, credential_id: str, key_type: str,
                     secret: str) -> None:
    profile_sad = _ProfileSad(ctx, client, credential_id, secret)
    config = ctx.config

    def one_hash_rerun(concurrency: int) -> Rerun:
        async def rerun(seconds: float) -> None:
            sad, slices = await profile_sad.get()
            await run_one_hash(client, credential_id, key_type, sad, slices, concurrency,
                               replace(config, one_hash_seconds=seconds))
        return rerun

    async def batch_rerun(seconds: float) -> None:
        sad, slices = await profile_sad.get()
        await run_batches(client, credential_id, key_type, sad, slices, replace(config, batch_seconds=seconds))

    name = f"csc.sign_hash.{key}"
    ctx.reruns[f"{name}.c{ONE_HASH_GOAL_CONCURRENCY}"] = (one_hash_rerun(ONE_HASH_GOAL_CONCURRENCY),
                                                           config.profile_seconds)
    ctx.reruns[f"{name}.c{LATENCY_GOAL_CONCURRENCY}.p99_latency"] = (one_hash_rerun(LATENCY_GOAL_CONCURRENCY),
                                                                     config.profile_seconds)
    ctx.reruns[f"csc.sign_hash_batch{config.batch_size}.{key}"] = (batch_rerun, config.profile_seconds)
