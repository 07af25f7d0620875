"""Soak run: concurrent clients against ``signserver serve`` with two worker processes, then checks of the outputs, store and audit trail.

``python -m tests.reliability.soak --seconds N --concurrency 32 --report reports/soak.json [--store sqlite|postgresql]``

The run initialises a fresh data directory with tests/harness.py and starts
the service on a loopback port. Each client then loops over a mix of real use
until the duration ends. The mix is CSC v2 signHash in batches of 5 hashes,
native seal requests that the policy signs without approval (submitted,
polled to ``signed`` and downloaded), RFC 3161 time-stamps from ``/tsa``, and
GET status calls. Every non-2xx response, connection error or wrong content
counts as an error. A thread samples the resident memory of the supervisor
and its workers. After the load, sampled outputs are verified with tools that
share no code with the service (pyca/cryptography, pdfsig, openssl ts). The
store is then checked for lost or duplicated requests and for requests left
in ``approved`` or ``signing``, and ``signserver audit verify`` must pass.

The report is JSON. The exit code is 0 only when every promise held.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
from asn1crypto import tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from bench.load import percentile
from bench.memory import cpu_seconds, machine_busy_seconds, rss_bytes
from bench.service import service_processes
from signserver.signing.sample import generate_sample_pdf
from tests.harness import Server, free_port, init_home, run_cli
from tests.postgres import TEST_STORE, query, shared_server
from tests.verifiers import make_nss_trust_db, openssl_ts_verify, pdfsig_signatures

__all__ = ["SoakOptions", "run_soak", "main"]

WORKERS = 2
SEAL_CREDENTIAL = "cred-seal-ubnd-mau-son"
# Document types that the seal key's rule signs without a clerk's approval.
UNATTENDED_DOCUMENT_TYPES = ("BN-TIEPNHAN", "BN-KETQUA")
SHA256_OID = "2.16.840.1.101.3.4.2.1"
SIGN_ALGORITHMS = {"RSA": "1.2.840.113549.1.1.11", "EC": "1.2.840.10045.4.3.2"}

# A SAD covers max_batch hashes (50 in the policy below), which the clients spend in signHash calls of 5.
HASHES_PER_SAD = 50
HASHES_PER_SIGN_HASH = 5
# The service's SADs live 300 s by default, so the batches of an older SAD are dropped before it expires.
SAD_USE_SECONDS = 240
TOTP_STEP_SECONDS = 30
# A code of the previous step is not used in the last seconds of the current one, because the
# service's window moves on before the request reaches it.
TOTP_EDGE_SECONDS = 25

# Shares of the operations that a client picks. A CSC pick falls back to a status call when no SAD
# batch is left and no OTP step is free, because each official's step authorizes one SAD only.
OPERATION_WEIGHTS = {"csc": 25, "seal": 30, "tsa": 25, "status": 20}
# About what a one-stop application uses, so that polls do not crowd out the other kinds of request.
SEAL_POLL_SECONDS = 1.0
SEAL_TIMEOUT_SECONDS = 180
REQUEST_TIMEOUT_SECONDS = 120
# Requests still in approved or signing after the load get this long to finish before they count as stuck.
DRAIN_SECONDS = 60

# The first 20% of the run is warm-up: caches, connection pools and malloc arenas fill then.
WARMUP_SHARE = 0.2
# Allowed growth of the summed RSS of the supervisor and its workers, from the mean of the first
# quarter of the samples after the warm-up to the mean of the last quarter. Measured with this
# script on a 2-core VM at load average 4 to 8, the three processes take about 390 MiB idle and
# 440 to 505 MiB under load. Most of that rise comes in the first two minutes of load, and later
# samples swing by up to 30 MiB. Averaging a quarter of the samples keeps most of that swing out
# of the comparison. 30 MiB is about 6% of the size under load. In a 10-minute soak the centres of
# the two quarters are 6 minutes apart, so the bound allows a trend of at most about 5 MiB a minute.
MEMORY_GROWTH_BOUND_BYTES = 30 * 1024 * 1024

# Outputs kept for the external verifiers, chosen uniformly over the run (reservoir sampling).
PDF_SAMPLE_SIZE = 8
TSA_SAMPLE_SIZE = 8
ERROR_SAMPLES = 20

SERVER_ENV = {"SIGNSERVER_WORKERS": str(WORKERS), "SIGNSERVER_LOG_FORMAT": "json"}
WORKERS_READY_SECONDS = 180
SERVER_STOP_SECONDS = 90

# The demo policy's keys and rules without quotas, because the demo's daily quotas (500 signatures of
# a personal key) would stop a long soak with policy denials. max_batch keeps the demo's 50.
SOAK_POLICY = """\
description: Soak — khóa của UBND huyện Mẫu Sơn, không giới hạn hạn mức (dữ liệu thử nghiệm)
keys:
  - credential: cred-tran-thi-bich-ngoc
    owner: {officials: [off-tran-thi-bich-ngoc]}
    max_batch: 50
    rules:
      - id: soak-ngoc
        applications: [app-motcua-demo]
        formats: [pades, cades, raw]
  - credential: cred-nguyen-van-an
    owner: {officials: [off-nguyen-van-an]}
    max_batch: 50
    rules:
      - id: soak-an
        applications: [app-motcua-demo]
        formats: [pades, cades, raw]
  - credential: cred-seal-ubnd-mau-son
    owner: {agency: "Ủy ban nhân dân huyện Mẫu Sơn"}
    max_batch: 50
    rules:
      - id: soak-seal-receipts-unattended
        applications: [app-motcua-demo]
        document_types: [BN-TIEPNHAN, BN-KETQUA]
        formats: [pades]
        approval: none
"""


class OperationFailed(Exception):
    """A response with a wrong status or wrong content."""


@dataclass
class SoakOptions:
    seconds: float
    concurrency: int
    report: Path
    store: str = TEST_STORE
    keep: bool = False
    seed: int | None = None


@dataclass
class Samples:
    """A uniform sample of at most ``size`` items over a stream of unknown length (reservoir sampling)."""

    size: int
    rng: random.Random
    items: list[Any] = field(default_factory=list)
    seen: int = 0

    def offer(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self.rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item


@dataclass
class Tally:
    """Requests, errors and latencies by kind, and what the final checks need to know about each item."""

    requests: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    # Seal requests that the service accepted (idempotency key to request id) and those downloaded signed.
    accepted_seals: dict[str, str] = field(default_factory=dict)
    signed_seals: set[str] = field(default_factory=set)
    tsa_serials: Counter = field(default_factory=Counter)
    signatures_verified: int = 0

    def record(self, kind: str, seconds: float) -> None:
        self.requests[kind] += 1
        self.latencies.setdefault(kind, []).append(seconds)

    def fail(self, kind: str, error: BaseException | str) -> None:
        self.requests[kind] += 1
        self.flag(kind, error)

    def flag(self, kind: str, error: BaseException | str) -> None:
        """Count an error of a request already recorded, such as a 200 response with wrong content."""
        self.errors[kind] += 1
        if len(self.error_samples) < ERROR_SAMPLES:
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.error_samples.append(f"{kind}: {text}"[:500])


class FreshOtpSteps:
    """TOTP codes of steps not used yet in this run, without waiting, so None when all usable steps are used.

    The service accepts the current step and one either side, each once per official.
    """

    def __init__(self) -> None:
        self.used: dict[str, set[int]] = {}

    def take(self, secret: str) -> str | None:
        used = self.used.setdefault(secret, set())
        now = time.time()
        current = int(now) // TOTP_STEP_SECONDS
        for step in (current - 1, current, current + 1):
            if step in used or (step == current - 1 and now % TOTP_STEP_SECONDS > TOTP_EDGE_SECONDS):
                continue
            used.add(step)
            return pyotp.TOTP(secret).generate_otp(step)
        return None


@dataclass
class SadBatches:
    """One personal key's current SAD and the batches of its hashes not signed yet."""

    credential_id: str
    totp_secret: str
    sign_algorithm: str
    certificate: x509.Certificate
    sad: str | None = None
    authorized_at: float = 0.0
    batches: list[list[bytes]] = field(default_factory=list)
    authorizing: bool = False


@dataclass
class Soak:
    """The shared state of one run's clients: the service, its credentials and the tally."""

    url: str
    api_key: str
    csc_token: str
    session: aiohttp.ClientSession
    document: bytes
    pools: list[SadBatches]
    tally: Tally
    pdf_samples: Samples
    tsa_samples: Samples
    key_prefix: str
    deadline: float
    otp: FreshOtpSteps = field(default_factory=FreshOtpSteps)

    def app_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Accept-Language": "en"}

    def csc_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.csc_token}", "Accept-Language": "en"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def timed_json(soak: Soak, kind: str, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
    """Send one request that expects a 2xx JSON response, record it under ``kind`` and return the body.

    Returns None after an error, which is counted.
    """
    began = time.monotonic()
    try:
        async with soak.session.request(method, f"{soak.url}{path}", **kwargs) as response:
            text = await response.text()
            if not 200 <= response.status < 300:
                raise OperationFailed(f"HTTP {response.status} on {method} {path}: {text[:300]}")
            body = json.loads(text) if text else {}
    except (OperationFailed, aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        soak.tally.fail(kind, exc)
        return None
    soak.tally.record(kind, time.monotonic() - began)
    return body


# ---------------------------------------------------------------- operations


async def sign_hash_batch(soak: Soak, rng: random.Random) -> bool:
    """Sign one batch of a SAD's hashes with CSC v2 and verify every signature.

    Returns False when no batch is ready and no new SAD could be authorized, so the client does something else.
    """
    pool = rng.choice(soak.pools)
    if time.monotonic() - pool.authorized_at > SAD_USE_SECONDS:
        pool.batches.clear()
    if not pool.batches and not await authorize_sad(soak, pool):
        return False
    if not pool.batches:
        return True  # the authorization failed and was counted
    batch = pool.batches.pop()
    body = {"credentialID": pool.credential_id, "SAD": pool.sad, "hashes": [b64(h) for h in batch],
            "hashAlgorithmOID": SHA256_OID, "signAlgo": pool.sign_algorithm}
    answer = await timed_json(soak, "csc_sign_hash", "POST", "/csc/v2/signatures/signHash", json=body,
                              headers=soak.csc_headers())
    if answer is None:
        return True
    signatures = [base64.b64decode(value) for value in answer.get("signatures") or []]
    if len(signatures) != len(batch):
        soak.tally.flag("csc_sign_hash", f"{len(signatures)} signatures returned for {len(batch)} hashes")
        return True
    for digest, signature in zip(batch, signatures):
        if not verify_signature(pool.certificate, digest, signature):
            soak.tally.flag("csc_sign_hash", f"invalid signature of {digest.hex()} by {pool.credential_id}")
            return True
        soak.tally.signatures_verified += 1
    return True


async def authorize_sad(soak: Soak, pool: SadBatches) -> bool:
    """Authorize a new SAD for HASHES_PER_SAD random hashes.

    Returns False when another client is authorizing one for this key or when no TOTP step is free.
    """
    if pool.authorizing:
        return False
    code = soak.otp.take(pool.totp_secret)
    if code is None:
        return False
    pool.authorizing = True
    try:
        digests = [hashlib.sha256(os.urandom(32)).digest() for _ in range(HASHES_PER_SAD)]
        body = {"credentialID": pool.credential_id, "numSignatures": len(digests),
                "hashes": [b64(h) for h in digests], "hashAlgorithmOID": SHA256_OID,
                "authData": [{"id": "OTP", "value": code}]}
        answer = await timed_json(soak, "csc_authorize", "POST", "/csc/v2/credentials/authorize", json=body,
                                  headers=soak.csc_headers())
        if answer is None:
            return True
        pool.sad = answer["SAD"]
        pool.authorized_at = time.monotonic()
        pool.batches = [digests[i:i + HASHES_PER_SIGN_HASH] for i in range(0, len(digests), HASHES_PER_SIGN_HASH)]
        return True
    finally:
        pool.authorizing = False


def verify_signature(certificate: x509.Certificate, digest: bytes, signature: bytes) -> bool:
    public_key = certificate.public_key()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        else:
            return False
    except InvalidSignature:
        return False
    return True


async def seal_receipt(soak: Soak, client_index: int, number: int, rng: random.Random) -> None:
    """Submit a receipt that the seal rule signs without approval, poll it to ``signed`` and download it."""
    began = time.monotonic()
    key = f"{soak.key_prefix}-{client_index}-{number}"
    metadata = {
        "idempotency_key": key,
        "dossier_code": "000.00.01.H01-261204-0099",
        "title": "Phiếu tiếp nhận hồ sơ và hẹn trả kết quả",
        "signer": SEAL_CREDENTIAL,
        "document_type": rng.choice(UNATTENDED_DOCUMENT_TYPES),
    }
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps(metadata, ensure_ascii=False), content_type="application/json")
    form.add_field("document", soak.document, filename="phieu-tiep-nhan.pdf", content_type="application/pdf")
    submitted = await timed_json(soak, "seal_submit", "POST", "/api/v1/sign-requests", data=form,
                                 headers=soak.app_headers())
    if submitted is None:
        return
    request_id = submitted["id"]
    soak.tally.accepted_seals[key] = request_id

    state = submitted
    while state["state"] not in ("signed", "failed", "rejected", "expired"):
        if time.monotonic() - began > SEAL_TIMEOUT_SECONDS:
            soak.tally.fail("seal_completed", f"request {request_id} still {state['state']} "
                                              f"after {SEAL_TIMEOUT_SECONDS} s")
            return
        await asyncio.sleep(SEAL_POLL_SECONDS)
        polled = await timed_json(soak, "seal_poll", "GET", f"/api/v1/sign-requests/{request_id}",
                                  headers=soak.app_headers())
        if polled is None:
            return
        state = polled
    if state["state"] != "signed":
        soak.tally.fail("seal_completed", f"request {request_id} ended {state['state']}: {state.get('state_reason')}")
        return

    content = await download_signed(soak, request_id, state["signed_document"]["sha256"])
    if content is None:
        return
    soak.tally.record("seal_completed", time.monotonic() - began)
    soak.tally.signed_seals.add(request_id)
    soak.pdf_samples.offer((request_id, content))


async def download_signed(soak: Soak, request_id: str, expected_sha256: str) -> bytes | None:
    """Download a signed PDF and check it against the SHA-256 that the service stored, or return None after an error."""
    began = time.monotonic()
    try:
        async with soak.session.get(f"{soak.url}/api/v1/sign-requests/{request_id}/signed-document",
                                    headers=soak.app_headers()) as response:
            content = await response.read()
            if response.status != 200:
                raise OperationFailed(f"HTTP {response.status} on the signed document of {request_id}: "
                                      f"{content[:300].decode(errors='replace')}")
    except (OperationFailed, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        soak.tally.fail("seal_download", exc)
        return None
    if hashlib.sha256(content).hexdigest() != expected_sha256:
        soak.tally.fail("seal_download", f"signed document of {request_id} does not match its SHA-256")
        return None
    soak.tally.record("seal_download", time.monotonic() - began)
    return content


async def time_stamp(soak: Soak) -> None:
    """Get an RFC 3161 time-stamp for a random digest and check its status, imprint, nonce and serial number."""
    digest = hashlib.sha256(os.urandom(32)).digest()
    nonce = int.from_bytes(os.urandom(8), "big")
    query_der = tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
        "nonce": nonce,
        "cert_req": True,
    }).dump()
    began = time.monotonic()
    try:
        async with soak.session.post(f"{soak.url}/tsa", data=query_der,
                                     headers={"Content-Type": "application/timestamp-query"}) as response:
            reply = await response.read()
            if response.status != 200:
                raise OperationFailed(f"HTTP {response.status} from /tsa")
        serial = check_time_stamp_reply(reply, digest, nonce)
    # asn1crypto raises ValueError, TypeError or KeyError on a reply that is not a TimeStampResp.
    except (OperationFailed, aiohttp.ClientError, asyncio.TimeoutError, ValueError, TypeError, KeyError) as exc:
        soak.tally.fail("tsa", exc)
        return
    soak.tally.record("tsa", time.monotonic() - began)
    soak.tally.tsa_serials[serial] += 1
    soak.tsa_samples.offer((digest.hex(), reply))


def check_time_stamp_reply(reply: bytes, digest: bytes, nonce: int) -> int:
    """Return the token's serial number, or raise OperationFailed when the reply does not match the query."""
    response = tsp.TimeStampResp.load(reply)
    status = response["status"]["status"].native
    if status not in ("granted", "granted_with_mods"):
        raise OperationFailed(f"time-stamp status {status}")
    content = response["time_stamp_token"]["content"]["encap_content_info"]["content"]
    info = tsp.TSTInfo.load(content.contents)
    if info["message_imprint"]["hashed_message"].native != digest:
        raise OperationFailed("time-stamp token covers another digest")
    if info["nonce"].native != nonce:
        raise OperationFailed(f"time-stamp nonce {info['nonce'].native} differs from the query's {nonce}")
    return info["serial_number"].native


async def status_call(soak: Soak, rng: random.Random) -> None:
    """GET a sign request of this run, the credential list, /healthz or /readyz."""
    choices = ["healthz", "readyz", "credentials"]
    if soak.tally.signed_seals:
        choices.append("sign_request")
    kind = rng.choice(choices)
    if kind == "sign_request":
        request_id = rng.choice(tuple(soak.tally.signed_seals))
        answer = await timed_json(soak, "status_sign_request", "GET", f"/api/v1/sign-requests/{request_id}",
                                  headers=soak.app_headers())
        if answer is not None and answer.get("state") != "signed":
            soak.tally.flag("status_sign_request", f"{request_id} is {answer.get('state')} after it was "
                                                   f"downloaded signed")
    elif kind == "credentials":
        await timed_json(soak, "status_credentials", "GET", "/api/v1/credentials", headers=soak.app_headers())
    else:
        await timed_json(soak, f"status_{kind}", "GET", f"/{kind}")


async def client_loop(soak: Soak, client_index: int, seed: int) -> None:
    """Pick operations by OPERATION_WEIGHTS and run them back to back until the deadline."""
    rng = random.Random(seed)
    kinds = list(OPERATION_WEIGHTS)
    weights = list(OPERATION_WEIGHTS.values())
    number = 0
    while time.monotonic() < soak.deadline:
        kind = rng.choices(kinds, weights)[0]
        if kind == "csc" and await sign_hash_batch(soak, rng):
            continue
        if kind == "seal":
            number += 1
            await seal_receipt(soak, client_index, number, rng)
        elif kind == "tsa":
            await time_stamp(soak)
        else:
            await status_call(soak, rng)


# ---------------------------------------------------------------- memory


class MemorySampler:
    """Samples the summed RSS of the service's processes every ``period`` seconds in a thread."""

    def __init__(self, root_pid: int, period: float) -> None:
        self.root_pid = root_pid
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self.process_sets: set[tuple[int, ...]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rss-sampler", daemon=True)

    def start(self) -> None:
        self._started = time.monotonic()
        self._pids = service_processes(self.root_pid)
        self.cpu_start = cpu_seconds(self._pids)
        self.machine_start = machine_busy_seconds()
        self._thread.start()

    def _run(self) -> None:
        while True:
            pids = service_processes(self.root_pid)
            self.process_sets.add(tuple(sorted(pids)))
            self.samples.append((time.monotonic() - self._started, rss_bytes(pids)))
            if self._stop.wait(self.period):
                return

    def stop(self) -> dict[str, Any]:
        """Stop sampling and return the CPU use of the service and of the machine over the sampled time."""
        self._stop.set()
        self._thread.join()
        seconds = time.monotonic() - self._started
        pids = service_processes(self.root_pid)
        cpu_end = cpu_seconds(pids)
        service_cpu = sum(cpu_end[pid] - self.cpu_start[pid] for pid in cpu_end if pid in self.cpu_start)
        return {
            "seconds": round(seconds, 1),
            "service_cpu_cores": round(service_cpu / seconds, 2),
            "machine_busy_cores": round((machine_busy_seconds() - self.machine_start) / seconds, 2),
        }


def memory_summary(samples: list[tuple[float, int]], load_seconds: float, process_sets: set[tuple[int, ...]],
                   ) -> dict[str, Any]:
    """Compare the mean RSS of the first and last quarter of the samples taken after the warm-up."""
    warmup = load_seconds * WARMUP_SHARE
    measured = [(moment, rss) for moment, rss in samples if moment >= warmup]
    quarter = max(1, len(measured) // 4)
    first = measured[:quarter]
    last = measured[-quarter:]
    first_mean = sum(rss for _, rss in first) / len(first) if first else 0.0
    last_mean = sum(rss for _, rss in last) / len(last) if last else 0.0
    growth = last_mean - first_mean
    summary = {
        "samples": [[round(moment, 1), rss] for moment, rss in samples],
        "warmup_seconds": round(warmup, 1),
        "measured_samples": len(measured),
        "first_quarter_mean_bytes": round(first_mean),
        "last_quarter_mean_bytes": round(last_mean),
        "growth_bytes": round(growth),
        "growth_ratio": round(growth / first_mean, 4) if first_mean else None,
        "slope_bytes_per_minute": round(least_squares_slope(measured) * 60) if len(measured) > 1 else None,
        "peak_bytes": max((rss for _, rss in samples), default=0),
        "bound_bytes": MEMORY_GROWTH_BOUND_BYTES,
        "service_processes": len(next(iter(process_sets))) if process_sets else 0,
        # More than one set means that a worker exited and was started again, which resets its memory.
        "process_sets_seen": len(process_sets),
    }
    summary["flat"] = bool(len(measured) >= 2 and growth < MEMORY_GROWTH_BOUND_BYTES and len(process_sets) == 1)
    return summary


def least_squares_slope(points: list[tuple[float, int]]) -> float:
    count = len(points)
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


# ---------------------------------------------------------------- run


@dataclass
class Service:
    """The run's data directory, its store, its demo credentials and the running server."""

    home: Path
    store_url: str
    credentials: dict[str, Any]
    server: Server

    def cli(self, *args: str, **extra: str):
        return run_cli(self.home, *args, port=self.server.port, SIGNSERVER_DATABASE_URL=self.store_url, **extra)


def start_service(run_dir: Path, store: str) -> Service:
    """Initialise a data directory with the soak policy and start ``signserver serve`` with its workers."""
    home = run_dir / "home"
    home.mkdir()
    policies = run_dir / "policies"
    policies.mkdir()
    (policies / "soak.yaml").write_text(SOAK_POLICY, encoding="utf-8")
    if store == "postgresql":
        store_url = shared_server().create_database("soak")
    else:
        store_url = f"sqlite+aiosqlite:///{home / 'signserver.db'}"
    port = free_port()
    credentials = init_home(home, port, SIGNSERVER_POLICIES_DIR=str(policies), SIGNSERVER_DATABASE_URL=store_url)
    server = Server(home, port, {**SERVER_ENV, "SIGNSERVER_DATABASE_URL": store_url})
    try:
        server.start(timeout=WORKERS_READY_SECONDS)
        wait_for_workers(server)
    except RuntimeError:
        # Server.start raises on a timeout without stopping the process it started.
        server.stop(timeout=SERVER_STOP_SECONDS)
        raise
    return Service(home, store_url, credentials, server)


def wait_for_workers(server: Server) -> None:
    """Wait until the supervisor logged each worker as ready, because /readyz returns 200 once the first one serves."""
    # NOTE: this reads the supervisor's "workers.ready" log event (signserver/workers.py), so renaming it breaks the wait.
    deadline = time.monotonic() + WORKERS_READY_SECONDS
    while time.monotonic() < deadline:
        log = server.log_path.read_bytes() if server.log_path and server.log_path.exists() else b""
        if log.count(b'"workers.ready"') >= WORKERS:
            return
        if server.process is None or server.process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"{WORKERS} workers not ready within {WORKERS_READY_SECONDS} s: {server.log_tail()}")


@dataclass
class LoadOutcome:
    tally: Tally
    pdf_samples: Samples
    tsa_samples: Samples
    # The idempotency keys of this run's seal requests start with this prefix.
    key_prefix: str
    memory: dict[str, Any]
    cpu: dict[str, Any]


async def run_load(service: Service, options: SoakOptions, run_dir: Path, rng: random.Random) -> LoadOutcome:
    """Run the clients for ``options.seconds`` while sampling the service's memory."""
    application = service.credentials["application"]
    document = generate_sample_pdf(run_dir / "receipt.pdf").read_bytes()
    connector = aiohttp.TCPConnector(limit=options.concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # HTTP Basic (RFC 7617) by hand: aiohttp 3.14 deprecates BasicAuth, and pyproject allows aiohttp 3.9.
        basic = b64(f"{application['username']}:{application['password']}".encode("utf-8"))
        auth = {"Authorization": f"Basic {basic}"}
        async with session.post(f"{service.server.url}/csc/v2/auth/login", json={}, headers=auth) as response:
            if response.status != 200:
                raise RuntimeError(f"CSC auth/login failed with HTTP {response.status}: {await response.text()}")
            csc_token = (await response.json())["access_token"]
        pools = [await sad_batches(session, service.server.url, csc_token, official)
                 for official in service.credentials["officials"]]

        tally = Tally()
        soak = Soak(service.server.url, application["api_key"], csc_token, session, document, pools, tally,
                    Samples(PDF_SAMPLE_SIZE, rng), Samples(TSA_SAMPLE_SIZE, rng), f"soak-{uuid.uuid4().hex[:12]}",
                    deadline=time.monotonic() + options.seconds)
        assert service.server.process is not None
        sampler = MemorySampler(service.server.process.pid, sample_period(options.seconds))
        sampler.start()
        try:
            await asyncio.gather(*(client_loop(soak, index, rng.randrange(2 ** 32))
                                   for index in range(options.concurrency)))
        finally:
            cpu = sampler.stop()
    memory = memory_summary(sampler.samples, options.seconds, sampler.process_sets)
    return LoadOutcome(tally, soak.pdf_samples, soak.tsa_samples, soak.key_prefix, memory, cpu)


async def sad_batches(session: aiohttp.ClientSession, url: str, csc_token: str,
                      official: dict[str, Any]) -> SadBatches:
    """Read an official's certificate with CSC credentials/info, for the SAD batches of their key."""
    body = {"credentialID": official["credential_id"], "certificates": "single"}
    async with session.post(f"{url}/csc/v2/credentials/info", json=body,
                            headers={"Authorization": f"Bearer {csc_token}"}) as response:
        if response.status != 200:
            raise RuntimeError(f"CSC credentials/info of {official['credential_id']} failed with HTTP "
                               f"{response.status}: {await response.text()}")
        info = await response.json()
    certificate = x509.load_der_x509_certificate(base64.b64decode(info["cert"]["certificates"][0]))
    key_type = "RSA" if isinstance(certificate.public_key(), rsa.RSAPublicKey) else "EC"
    return SadBatches(official["credential_id"], official["totp_secret"], SIGN_ALGORITHMS[key_type], certificate)


def sample_period(seconds: float) -> float:
    """Seconds between two RSS samples: about 60 samples per run, between 0.5 s and 5 s apart."""
    return min(5.0, max(0.5, seconds / 60))


# ---------------------------------------------------------------- checks after the load


def verify_samples(service: Service, pdf_samples: Samples, tsa_samples: Samples, work_dir: Path) -> dict[str, Any]:
    """Verify the sampled signed PDFs with pdfsig and the sampled time-stamp replies with openssl ts."""
    demo_root = service.home / "demo-root.pem"
    nss_db = make_nss_trust_db(work_dir / "nss", demo_root)
    failures = []
    for request_id, content in pdf_samples.items:
        pdf = work_dir / f"{request_id}.pdf"
        pdf.write_bytes(content)
        signatures = pdfsig_signatures(pdf, nss_db)
        if len(signatures) != 1 or not signatures[0].signature_valid or not signatures[0].certificate_trusted:
            failures.append(f"pdfsig on {request_id}: {[s.raw for s in signatures]}"[:500])

    chain = work_dir / "tsa-chain.pem"
    chain.write_text((service.home / "pki" / "issuing-ca.pem").read_text() + demo_root.read_text())
    for number, (digest_hex, reply) in enumerate(tsa_samples.items):
        path = work_dir / f"reply-{number}.tsr"
        path.write_bytes(reply)
        verified, output = openssl_ts_verify(path, chain, digest_hex=digest_hex)
        if not verified:
            failures.append(f"openssl ts -verify on reply {number}: {output}"[:500])
    return {"pdfsig_checked": len(pdf_samples.items), "openssl_ts_checked": len(tsa_samples.items),
            "failures": failures}


def check_items(service: Service, tally: Tally, key_prefix: str) -> dict[str, Any]:
    """Compare the store with what the clients saw: every accepted seal request stored once, signed once.

    A signed request also needs its signed PDF on disk with the SHA-256 that the store names.
    """
    rows = query(service.store_url, "SELECT idempotency_key, id, state, signed_path, signed_sha256 "
                                    "FROM sign_requests WHERE idempotency_key LIKE ?", (f"{key_prefix}-%",))
    rows_by_key: dict[str, list[tuple[str, str]]] = {}
    missing_files = []
    for key, request_id, state, signed_path, signed_sha256 in rows:
        rows_by_key.setdefault(key, []).append((request_id, state))
        if state == "signed" and not signed_file_matches(signed_path, signed_sha256):
            missing_files.append(request_id)
    signed_twice = query(service.store_url, "SELECT request_id, COUNT(*) FROM audit_log WHERE action = 'signed' "
                                            "AND request_id IS NOT NULL GROUP BY request_id HAVING COUNT(*) > 1")

    lost = [key for key, request_id in tally.accepted_seals.items()
            if [row[0] for row in rows_by_key.get(key, [])] != [request_id]]
    not_signed = [f"{key}: {states}" for key, states in rows_by_key.items()
                  if [state for _, state in states] != ["signed"]]
    duplicated = [key for key, found in rows_by_key.items() if len(found) > 1]
    # Stored by the service although the client saw an error: counted among the errors, listed here.
    unacknowledged = sorted(set(rows_by_key) - set(tally.accepted_seals))
    tsa_duplicates = [serial for serial, count in tally.tsa_serials.items() if count > 1]
    return {
        "seal_requests_accepted": len(tally.accepted_seals),
        "seal_requests_downloaded_signed": len(tally.signed_seals),
        "seal_requests_stored": len(rows),
        "lost": lost[:50],
        "lost_count": len(lost),
        "signed_without_matching_file": missing_files[:50],
        "not_signed": not_signed[:50],
        "duplicated": duplicated[:50],
        "signed_more_than_once": [row[0] for row in signed_twice][:50],
        "unacknowledged": unacknowledged[:50],
        "tsa_tokens": sum(tally.tsa_serials.values()),
        "tsa_duplicate_serials": tsa_duplicates[:50],
        "csc_signatures_verified": tally.signatures_verified,
    }


def signed_file_matches(path: str | None, expected_sha256: str | None) -> bool:
    if not path or not expected_sha256 or not Path(path).is_file():
        return False
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() == expected_sha256


def wait_until_drained(service: Service) -> dict[str, int]:
    """Wait up to DRAIN_SECONDS for no request in approved or signing, and return the counts left by state."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while True:
        left = dict(query(service.store_url, "SELECT state, COUNT(*) FROM sign_requests "
                                             "WHERE state IN ('approved', 'signing') GROUP BY state"))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1)


def verify_audit_trail(service: Service) -> dict[str, Any]:
    """Run ``signserver audit verify`` as the demo auditor."""
    auditor = service.credentials["auditors"][0]
    # The run uses no auditor code before this one, so the current step is still unused.
    login = service.cli("login", "--user", auditor["username"], "--otp", pyotp.TOTP(auditor["totp_secret"]).now(),
                        SIGNSERVER_PASSWORD=auditor["password"])
    if login.returncode != 0:
        return {"passed": False, "output": f"signserver login failed: {login.stderr.strip()}"[:2000]}
    result = service.cli("audit", "verify", SIGNSERVER_SESSION=login.stdout.strip(), timeout=600)
    return {"passed": result.returncode == 0, "output": (result.stdout + result.stderr).strip()[-2000:]}


def latency_summary(tally: Tally) -> dict[str, dict[str, float]]:
    """Return the p50, p95, p99 and maximum latency in milliseconds of each kind's successful requests."""
    summary = {}
    for kind, values in sorted(tally.latencies.items()):
        summary[kind] = {}
        for name, rank in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99), ("max_ms", 100)):
            summary[kind][name] = round(percentile(values, rank) * 1000, 1)
    return summary


def run_soak(options: SoakOptions) -> dict[str, Any]:
    """Run one soak, write its report to ``options.report`` and return the report."""
    rng = random.Random(options.seed)
    run_dir = Path(tempfile.mkdtemp(prefix="signserver-soak-"))
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": options.seconds, "concurrency": options.concurrency, "store": options.store,
        "workers": WORKERS, "run_directory": str(run_dir),
        "machine": {"cores": os.cpu_count(), "load_average_at_start": list(os.getloadavg())},
    }
    began = time.monotonic()
    service = start_service(run_dir, options.store)
    # Wall-clock seconds of each phase, to show where the time of a short run goes.
    report["phase_seconds"] = {"init_and_start": round(time.monotonic() - began, 1)}
    try:
        outcome = asyncio.run(run_load(service, options, run_dir, rng))
        tally = outcome.tally
        checks_began = time.monotonic()

        report["machine"]["load_average_at_end"] = list(os.getloadavg())
        report["machine"]["busy_cores_during_load"] = outcome.cpu["machine_busy_cores"]
        report["machine"]["service_cpu_cores_during_load"] = outcome.cpu["service_cpu_cores"]
        report["load_seconds"] = outcome.cpu["seconds"]
        report["requests"] = dict(sorted(tally.requests.items()))
        report["requests_total"] = sum(tally.requests.values())
        report["errors"] = dict(sorted(tally.errors.items()))
        report["errors_total"] = sum(tally.errors.values())
        report["error_samples"] = tally.error_samples
        report["latency"] = latency_summary(tally)
        report["memory"] = outcome.memory

        report["left_in_approved_or_signing"] = wait_until_drained(service)
        report["items"] = check_items(service, tally, outcome.key_prefix)
        work_dir = run_dir / "verified"
        work_dir.mkdir()
        report["verified_samples"] = verify_samples(service, outcome.pdf_samples, outcome.tsa_samples, work_dir)
        report["audit_verify"] = verify_audit_trail(service)
        report["phase_seconds"]["checks"] = round(time.monotonic() - checks_began, 1)
    finally:
        stop_began = time.monotonic()
        exit_code = service.server.stop(timeout=SERVER_STOP_SECONDS)
        report["phase_seconds"]["stop"] = round(time.monotonic() - stop_began, 1)

    report["server_exit_code"] = exit_code
    report["promises"] = promises(report)
    report["passed"] = all(report["promises"].values())
    options.report.parent.mkdir(parents=True, exist_ok=True)
    options.report.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if report["passed"] and not options.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


def promises(report: dict[str, Any]) -> dict[str, bool]:
    items = report["items"]
    samples = report["verified_samples"]
    return {
        "zero_errors": report["errors_total"] == 0 and report["requests_total"] > 0,
        "memory_flat": report["memory"]["flat"],
        "nothing_lost_or_duplicated": not (items["lost_count"] or items["not_signed"] or items["duplicated"]
                                           or items["signed_without_matching_file"]
                                           or items["signed_more_than_once"] or items["tsa_duplicate_serials"]),
        "every_kind_ran": all(report["requests"].get(kind, 0) > 0 for kind in ("csc_sign_hash", "seal_completed", "tsa"))
                          and any(kind.startswith("status_") for kind in report["requests"]),
        "samples_verified": not samples["failures"] and samples["pdfsig_checked"] > 0
                            and samples["openssl_ts_checked"] > 0 and items["csc_signatures_verified"] > 0,
        "nothing_left_in_approved_or_signing": not report["left_in_approved_or_signing"],
        "audit_verified": report["audit_verify"]["passed"],
        "server_stopped_cleanly": report["server_exit_code"] == 0,
    }


# ---------------------------------------------------------------- command line


def parse_arguments(argv: list[str] | None) -> SoakOptions:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.soak",
        description="Chạy thử tải kéo dài trên một thư mục dữ liệu mới; ghi báo cáo JSON. "
                    "(Soak signserver with concurrent clients on a fresh data directory; writes a JSON report.)",
    )
    parser.add_argument("--seconds", type=float, default=600, help="duration of the load in seconds (default 600)")
    parser.add_argument("--concurrency", type=int, default=32, help="number of concurrent clients (default 32)")
    parser.add_argument("--report", type=Path, default=Path("reports/soak.json"),
                        help="path of the JSON report (default reports/soak.json)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default=TEST_STORE,
                        help=f"store of the data directory (default {TEST_STORE}, from SIGNSERVER_TEST_STORE)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's data directory after a passing run (a failing run always keeps it)")
    parser.add_argument("--seed", type=int, help="seed of the clients' random choices (default: random)")
    arguments = parser.parse_args(argv)
    if arguments.seconds <= 0 or arguments.concurrency < 1:
        parser.error("--seconds must be positive and --concurrency at least 1")
    return SoakOptions(arguments.seconds, arguments.concurrency, arguments.report, arguments.store, arguments.keep,
                       arguments.seed)


def main(argv: list[str] | None = None) -> int:
    options = parse_arguments(argv)
    report = run_soak(options)
    memory = report["memory"]
    growth_mib = memory["growth_bytes"] / 1024 / 1024
    broken = [name for name, held in report["promises"].items() if not held]
    print(f"Đã ghi {options.report}: {report['requests_total']} yêu cầu, {report['errors_total']} lỗi; "
          f"bộ nhớ tăng {growth_mib:.1f} MiB (giới hạn {MEMORY_GROWTH_BOUND_BYTES // 2 ** 20} MiB); "
          f"tải máy {report['machine']['load_average_at_end'][0]:.1f}.\n"
          f"  (Wrote {options.report}: {report['requests_total']} requests, {report['errors_total']} errors; "
          f"memory growth {growth_mib:.1f} MiB (bound {MEMORY_GROWTH_BOUND_BYTES // 2 ** 20} MiB); "
          f"load average {report['machine']['load_average_at_end'][0]:.1f}.)")
    if broken:
        print(f"Không đạt / failed: {', '.join(broken)}; thư mục dữ liệu / data directory: {report['run_directory']}")
        return 1
    print("Đạt mọi yêu cầu. (Every promise held.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
