"""CSC ``signatures/signHash`` over HTTP: one hash per request at several concurrencies, and batches.

An official's TOTP step can authorize one SAD only (the service rejects a
replayed step), so each key gets one SAD for all its one-hash runs and one
for its batches. Each run spends its own slice of the SAD's hashes, one
signHash call per hash or per batch. Every response must be 200 with one
signature per hash, and a sample of the signatures is verified with
pyca/cryptography against the credential's certificate.
"""

from __future__ import annotations

import base64
import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
import aiohttp
import pyotp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from bench.config import RunConfig
from bench.load import LoadResult, RequestFailed, client_session, closed_loop
from bench.service import BenchHome

__all__ = ["CscClient", "HashSlices", "TotpCodes", "SIGN_ALGORITHMS", "batch_budget", "one_hash_budget",
           "run_batches", "run_one_hash", "verify_sample"]

SHA256_OID = "2.16.840.1.101.3.4.2.1"
# The signature algorithm that signHash is asked for, by key type (CSC API 1.0.4.0, section 11.9).
SIGN_ALGORITHMS = {
    "RSA": "1.2.840.113549.1.1.11",  # sha256WithRSAEncryption
    "EC": "1.2.840.10045.4.3.2",  # ecdsa-with-SHA256
}
TOTP_STEP_SECONDS = 30
# A code of the step before the current one is not used in the last seconds of the current step,
# because the service's window moves on before the request reaches it.
TOTP_EDGE_SECONDS = 25


class TotpCodes:
    """Hands out TOTP codes of steps not used yet in this run, waiting for a new step when needed.

    The service accepts the current step and one either side, each step
    once per official, so three codes are available at once and one more
    every 30 seconds.
    """

    def __init__(self) -> None:
        self.used: dict[str, set[int]] = {}

    def next(self, secret: str) -> str:
        totp = pyotp.TOTP(secret)
        used = self.used.setdefault(secret, set())
        while True:
            now = time.time()
            current = int(now) // TOTP_STEP_SECONDS
            for step in (current - 1, current, current + 1):
                if step in used or (step == current - 1 and now % TOTP_STEP_SECONDS > TOTP_EDGE_SECONDS):
                    continue
                used.add(step)
                return totp.generate_otp(step)
            time.sleep(TOTP_STEP_SECONDS - now % TOTP_STEP_SECONDS + 0.2)


class HashSlices:
    """Random distinct SHA-256-sized hashes of one SAD, handed out in consecutive slices to the runs."""

    def __init__(self, count: int) -> None:
        self.hashes = [os.urandom(32) for _ in range(count)]
        self.position = 0

    def take(self, count: int) -> list[bytes]:
        if self.position + count > len(self.hashes):
            raise ValueError(f"{count} hashes requested but only {len(self.hashes) - self.position} of the SAD's "
                             f"{len(self.hashes)} are left")
        taken = self.hashes[self.position:self.position + count]
        self.position += count
        return taken


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class CscClient:
    """An application's CSC API calls (v1 field names), with a bearer access token from auth/login."""

    url: str
    token: str = ""

    @classmethod
    async def login(cls, home: BenchHome, session: aiohttp.ClientSession) -> "CscClient":
        application = home.demo_credentials["application"]
        auth = aiohttp.BasicAuth(application["username"], application["password"])
        async with session.post(f"{home.url}/csc/v1/auth/login", json={}, auth=auth) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"CSC auth/login failed with HTTP {response.status}: {body}")
        return cls(home.url, body["access_token"])

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept-Language": "en"}

    async def authorize(self, session: aiohttp.ClientSession, credential_id: str, hashes: list[bytes],
                        otp: str) -> str:
        body = {"credentialID": credential_id, "numSignatures": len(hashes), "hash": [b64(h) for h in hashes],
                "OTP": otp}
        async with session.post(f"{self.url}/csc/v1/credentials/authorize", json=body,
                                headers=self.headers()) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"CSC credentials/authorize of {len(hashes)} hashes for {credential_id} failed "
                                   f"with HTTP {response.status}: {answer}")
        return answer["SAD"]

    async def sign_hash(self, session: aiohttp.ClientSession, credential_id: str, sad: str, hashes: list[bytes],
                        sign_algorithm: str) -> list[bytes]:
        """Return one signature per hash; raise RequestFailed on any other response."""
        body = {"credentialID": credential_id, "SAD": sad, "hash": [b64(h) for h in hashes],
                "hashAlgo": SHA256_OID, "signAlgo": sign_algorithm}
        async with session.post(f"{self.url}/csc/v1/signatures/signHash", json=body,
                                headers=self.headers()) as response:
            if response.status != 200:
                raise RequestFailed(f"HTTP {response.status}: {(await response.text())[:300]}")
            answer = await response.json()
        signatures = answer.get("signatures") or []
        if len(signatures) != len(hashes):
            raise RequestFailed(f"{len(signatures)} signatures returned for {len(hashes)} hashes")
        return [base64.b64decode(signature) for signature in signatures]


async def _run(client: CscClient, credential_id: str, key_type: str, sad: str, slices: HashSlices,
               per_request: int, concurrency: int, seconds: float, max_requests: int, warmup_requests: int,
               around: AbstractContextManager[object] | None) -> tuple[LoadResult, list[bytes]]:
    sign_algorithm = SIGN_ALGORITHMS[key_type]
    async with client_session(concurrency) as session:
        warmup = slices.take(warmup_requests * per_request)
        warmup_batches = [warmup[i:i + per_request] for i in range(0, len(warmup), per_request)]

        async def send_warmup(index: int) -> None:
            await client.sign_hash(session, credential_id, sad, warmup_batches[index], sign_algorithm)

        warmed = await closed_loop(concurrency, seconds * 4 + 30, len(warmup_batches), send_warmup)
        if warmed.errors:
            raise RuntimeError(f"warm-up signHash on {credential_id} failed: {warmed.first_error}")

        hashes = slices.take(max_requests * per_request)

        async def send(index: int) -> list[bytes]:
            return await client.sign_hash(session, credential_id, sad,
                                          hashes[index * per_request:(index + 1) * per_request], sign_algorithm)

        # The sampler, when given, covers the measured requests only, not the warm-up.
        with around or nullcontext():
            result = await closed_loop(concurrency, seconds, max_requests, send)
    return result, hashes


async def run_one_hash(client: CscClient, credential_id: str, key_type: str, sad: str, slices: HashSlices,
                       concurrency: int, config: RunConfig,
                       around: AbstractContextManager[object] | None = None) -> tuple[LoadResult, list[bytes]]:
    """Send one hash per signHash request from ``concurrency`` clients, for the configured duration or count.

    ``around`` (such as a ProcessSampler) is entered after the warm-up, for the measured requests.
    """
    return await _run(client, credential_id, key_type, sad, slices, 1, concurrency, config.one_hash_seconds,
                      config.one_hash_max_requests, config.warmup_requests, around)


async def run_batches(client: CscClient, credential_id: str, key_type: str, sad: str, slices: HashSlices,
                      config: RunConfig,
                      around: AbstractContextManager[object] | None = None) -> tuple[LoadResult, list[bytes]]:
    """Send ``config.batch_size`` hashes per signHash request from ``config.batch_concurrency`` clients."""
    return await _run(client, credential_id, key_type, sad, slices, config.batch_size, config.batch_concurrency,
                      config.batch_seconds, config.batch_max_requests, config.batch_concurrency, around)


def one_hash_budget(config: RunConfig) -> int:
    """Hashes that the SAD of one key's one-hash runs must cover, warm-ups included."""
    return len(config.one_hash_concurrencies) * (config.one_hash_max_requests + config.warmup_requests)


def batch_budget(config: RunConfig) -> int:
    """Hashes that the SAD of one key's batch run must cover, warm-up included."""
    return (config.batch_max_requests + config.batch_concurrency) * config.batch_size


def verify_sample(result: LoadResult, digests: list[bytes], per_request: int, certificate: x509.Certificate,
                  count: int) -> int:
    """Verify about ``count`` signatures spread over the run; return how many, or raise RuntimeError."""
    indexes = sorted(result.outputs)
    if not indexes:
        return 0
    step = max(1, len(indexes) // max(1, count))
    public_key = certificate.public_key()
    verified = 0
    for index in indexes[::step]:
        for position, signature in enumerate(result.outputs[index]):
            digest = digests[index * per_request + position]
            try:
                if isinstance(public_key, rsa.RSAPublicKey):
                    public_key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
                else:
                    assert isinstance(public_key, ec.EllipticCurvePublicKey)
                    public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            except InvalidSignature:
                raise RuntimeError(f"signHash returned a signature that does not verify, request {index}, "
                                   f"hash {digest.hex()}") from None
            verified += 1
            if position >= 1:
                break  # two signatures of each sampled batch are enough
    return verified
