"""Durations, counts and sizes of a benchmark run, in one place: the full run and the smoke run.

The full run is sized to take a few minutes on a 2-core machine, including
``signserver init``. The smoke run only shows that every step works: its
figures are too short to mean anything.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RunConfig", "FULL", "SMOKE", "MIB"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class RunConfig:
    name: str
    # Raw PKCS#11 loop: thread counts, seconds measured per run, seconds of warm-up per thread,
    # and the signatures of each thread that are verified with pyca/cryptography.
    raw_threads: tuple[int, ...]
    raw_seconds: float
    raw_warmup_seconds: float
    raw_verified_per_thread: int
    # Run the raw loop while the service starts, to save time. Start-up then takes CPU from the loop,
    # so this is for the smoke run only: the full run measures the limit before the service exists.
    raw_overlaps_service_start: bool
    # CSC signHash with one hash per request: the concurrencies, the seconds of each run, and the
    # most requests a run sends (the SAD is authorized for that many hashes per run).
    one_hash_concurrencies: tuple[int, ...]
    one_hash_seconds: float
    one_hash_max_requests: int
    # Requests sent before each measured run, to open the connections and warm the server.
    warmup_requests: int
    # CSC signHash in batches: hashes per request, concurrent clients, seconds, most requests per run.
    batch_size: int
    batch_concurrency: int
    batch_seconds: float
    batch_max_requests: int
    # Signatures of each CSC run verified with pyca/cryptography, spread over the run.
    verified_signatures: int
    # PAdES B-T: pages of the two documents, and runs of each (service and pyHanko alternate),
    # after one untimed run of each side when pades_warmup is set.
    pades_documents: tuple[tuple[int, int], ...]  # (pages, runs)
    pades_warmup: bool
    # RFC 3161 time-stamps: concurrency, seconds, most requests, and responses checked in detail.
    tsa_concurrency: int
    tsa_seconds: float
    tsa_max_requests: int
    tsa_checked_tokens: int
    # Memory: size of the large PDF, and the sampling period of the resident set size.
    large_pdf_bytes: int
    memory_sample_seconds: float
    # Seconds py-spy records each profiled re-run.
    profile_seconds: float


FULL = RunConfig(
    name="full",
    raw_threads=(1, 2),
    raw_seconds=5.0,
    raw_warmup_seconds=0.5,
    raw_verified_per_thread=5,
    raw_overlaps_service_start=False,
    one_hash_concurrencies=(1, 8, 32),
    one_hash_seconds=5.0,
    one_hash_max_requests=2500,
    warmup_requests=50,
    batch_size=100,
    batch_concurrency=2,
    batch_seconds=5.0,
    batch_max_requests=60,
    verified_signatures=50,
    pades_documents=((1, 7), (100, 5)),
    pades_warmup=True,
    tsa_concurrency=8,
    tsa_seconds=5.0,
    tsa_max_requests=5000,
    tsa_checked_tokens=5,
    large_pdf_bytes=100 * MIB,
    memory_sample_seconds=0.02,
    profile_seconds=6.0,
)

SMOKE = RunConfig(
    name="smoke",
    raw_threads=(1, 2),
    raw_seconds=0.2,
    raw_warmup_seconds=0.05,
    raw_verified_per_thread=2,
    raw_overlaps_service_start=True,
    one_hash_concurrencies=(1, 8, 32),
    one_hash_seconds=0.2,
    # Fewer than the 32 clients of the last run: the service completes about 20 to 40 requests/s, and the
    # smoke run only shows that each run works.
    one_hash_max_requests=8,
    warmup_requests=1,
    batch_size=100,
    batch_concurrency=2,
    batch_seconds=0.2,
    batch_max_requests=2,
    verified_signatures=3,
    pades_documents=((1, 1), (100, 1)),
    pades_warmup=False,
    tsa_concurrency=8,
    tsa_seconds=0.2,
    tsa_max_requests=16,
    tsa_checked_tokens=2,
    large_pdf_bytes=2 * MIB,
    memory_sample_seconds=0.02,
    profile_seconds=2.0,
)
