"""The limit: raw PKCS#11 signatures per second on the service's own token and keys.

Run as ``python -m bench.raw_pkcs11`` in a process of its own, because the
module is initialised here with CKF_OS_LOCKING_OK and must not share a
process with python-pkcs11, which initialises it without. The job comes as
JSON on standard input and the result goes as JSON to standard output.

Each thread opens its own session, finds the key by CKA_ID, signs during a
warm-up, waits for the other threads, then signs in a loop for a fixed
duration. RSA keys sign a SHA-256 DigestInfo with CKM_RSA_PKCS and EC keys a
32-byte digest with CKM_ECDSA, as the service does. The first signatures of
every thread are verified with pyca/cryptography against the certificate.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from bench.config import RunConfig
from bench.figures import Baseline, Figure
from bench.memory import machine_busy_seconds
from bench.pkcs11_ctypes import CKM_ECDSA, CKM_RSA_PKCS, Pkcs11Module
from bench.service import PKCS11_MODULE, TOKEN_LABEL, BenchHome

__all__ = ["RAW_KEYS", "measure_raw", "raw_figures", "verify_signature"]

# Figure name of each measured key -> its credential: the two officials' keys that the CSC figures
# use, and the TSA's key, whose rate is the baseline of the time-stamp figure.
RAW_KEYS = {
    "rsa2048": "cred-tran-thi-bich-ngoc",
    "ecp256": "cred-nguyen-van-an",
    "tsa_rsa2048": "cred-tsa",
}

# DER prefix of a DigestInfo for SHA-256 (RFC 8017, section 9.2, note 1).
SHA256_DIGEST_INFO_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")

# Distinct digests each thread cycles through.
DIGESTS_PER_THREAD = 64


@dataclass
class ThreadResult:
    signatures: int = 0
    verified: int = 0
    error: str | None = None
    samples: list[tuple[bytes, bytes]] = field(default_factory=list)


def _mechanism_and_data(key_type: str, digest: bytes) -> tuple[int, bytes]:
    if key_type == "RSA":
        return CKM_RSA_PKCS, SHA256_DIGEST_INFO_PREFIX + digest
    if key_type == "EC":
        return CKM_ECDSA, digest
    raise ValueError(f"key_type {key_type!r} is not supported; use RSA or EC")


def verify_signature(certificate: x509.Certificate, key_type: str, digest: bytes, signature: bytes) -> None:
    """Raise InvalidSignature unless ``signature`` over the SHA-256 ``digest`` verifies with the certificate's key."""
    public_key = certificate.public_key()
    if key_type == "RSA":
        assert isinstance(public_key, rsa.RSAPublicKey)
        public_key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    # CKM_ECDSA returns r || s, each as long as the curve order.
    half = len(signature) // 2
    der = utils.encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
    public_key.verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def _sign_loop(module: Pkcs11Module, key_id: bytes, key_type: str, warmup_seconds: float, verify_count: int,
               start: threading.Barrier, deadline: list[float], result: ThreadResult) -> None:
    session = module.open_session()
    try:
        key = module.find_private_key(session, key_id)
        digests = [os.urandom(32) for _ in range(DIGESTS_PER_THREAD)]
        prepared = [(digest, *_mechanism_and_data(key_type, digest)) for digest in digests]

        warmup_end = time.monotonic() + warmup_seconds
        position = 0
        while time.monotonic() < warmup_end or position < verify_count:
            digest, mechanism, data = prepared[position % len(prepared)]
            signature = module.sign(session, key, mechanism, data)
            if position < verify_count:
                result.samples.append((digest, signature))
            position += 1

        start.wait()
        end = deadline[0]
        count = 0
        while time.monotonic() < end:
            digest, mechanism, data = prepared[count % len(prepared)]
            signature = module.sign(session, key, mechanism, data)
            if count < verify_count:
                result.samples.append((digest, signature))
            count += 1
        result.signatures = count
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        result.error = f"{type(exc).__name__}: {exc}"
        start.abort()
    finally:
        module.close_session(session)


def measure_key(module: Pkcs11Module, key: dict[str, Any], threads: int, duration: float, warmup: float,
                verify_count: int) -> dict[str, Any]:
    """Sign with ``threads`` threads for ``duration`` seconds and return the rate and the checks made."""
    key_id = bytes.fromhex(key["key_id_hex"])
    certificate = x509.load_der_x509_certificate(base64.b64decode(key["certificate_der_b64"]))
    results = [ThreadResult() for _ in range(threads)]
    deadline = [0.0]
    began = [0.0]

    def set_deadline() -> None:
        # The barrier's action runs once, in the last thread to arrive, before any thread is released.
        began[0] = time.monotonic()
        deadline[0] = began[0] + duration

    start = threading.Barrier(threads, action=set_deadline)
    workers = [
        threading.Thread(target=_sign_loop, name=f"sign-{index}",
                         args=(module, key_id, key["key_type"], warmup, verify_count, start, deadline, result))
        for index, result in enumerate(results)
    ]
    machine_start, own_start, wall_start = machine_busy_seconds(), time.process_time(), time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began[0]

    # Busy time of the machine that was not this process's, over the threads' whole life (warm-up included).
    machine_busy = machine_busy_seconds() - machine_start
    own_busy = time.process_time() - own_start
    other_cores = max(0.0, machine_busy - own_busy) / (time.monotonic() - wall_start)

    errors = [result.error for result in results if result.error]
    if errors:
        raise RuntimeError(f"raw signing with {key['name']} failed: {errors[0]}")
    for result in results:
        for digest, signature in result.samples:
            try:
                verify_signature(certificate, key["key_type"], digest, signature)
            except InvalidSignature:
                raise RuntimeError(f"a raw {key['key_type']} signature of {key['name']} does not verify "
                                   "against the credential's certificate") from None
            result.verified += 1

    signatures = sum(result.signatures for result in results)
    return {
        "key": key["name"],
        "credential_id": key["credential_id"],
        "key_type": key["key_type"],
        "threads": threads,
        "signatures": signatures,
        "seconds": round(elapsed, 4),
        "rate": signatures / elapsed,
        "per_thread": [result.signatures for result in results],
        "verified_signatures": sum(result.verified for result in results),
        "other_cpu_cores": round(other_cores, 3),
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    module = Pkcs11Module(job["module_path"], job["token_label"], job["user_pin"])
    try:
        runs = []
        for key in job["keys"]:
            for threads in job["threads"]:
                runs.append(measure_key(module, key, threads, job["duration_seconds"], job["warmup_seconds"],
                                        job["verify_count"]))
        return {"runs": runs}
    finally:
        module.close()


def measure_raw(home: BenchHome, config: RunConfig) -> list[dict[str, Any]]:
    """Run the raw loop in a subprocess, on the data directory's token, and return its runs."""
    keys = []
    for name, credential_id in RAW_KEYS.items():
        credential = home.credential(credential_id)
        keys.append({
            "name": name,
            "credential_id": credential_id,
            "key_type": credential.key_type,
            "key_id_hex": credential.key_id_hex,
            "certificate_der_b64": base64.b64encode(credential.certificate_der).decode("ascii"),
        })
    job = {
        "module_path": PKCS11_MODULE,
        "token_label": TOKEN_LABEL,
        "user_pin": home.user_pin(),
        "keys": keys,
        "threads": list(config.raw_threads),
        "duration_seconds": config.raw_seconds,
        "warmup_seconds": config.raw_warmup_seconds,
        "verify_count": config.raw_verified_per_thread,
    }
    budget = len(keys) * len(config.raw_threads) * (config.raw_seconds + config.raw_warmup_seconds + 5) + 30
    # The PIN goes through standard input, never the command line, which other users can read.
    completed = subprocess.run([sys.executable, "-m", "bench.raw_pkcs11"], input=json.dumps(job), text=True,
                               capture_output=True, env=home.environment(), timeout=budget)
    if completed.returncode != 0:
        raise RuntimeError(f"raw PKCS#11 loop failed with exit code {completed.returncode}: "
                           f"{completed.stderr[-2000:]}")
    return json.loads(completed.stdout)["runs"]


def raw_figures(runs: list[dict[str, Any]]) -> tuple[list[Figure], dict[str, Baseline]]:
    """Return a figure per run and per key's best thread count, and the best rates as baselines by key name."""
    figures = []
    best: dict[str, dict[str, Any]] = {}
    for run in runs:
        figures.append(Figure(
            name=f"raw_pkcs11.{run['key']}.threads{run['threads']}",
            value=run["rate"],
            unit="signatures/s",
            description=f"C_Sign in a loop on {run['credential_id']} ({run['key_type']}), "
                        f"{run['threads']} thread(s), one session each",
            extra={"signatures": run["signatures"], "seconds": run["seconds"], "per_thread": run["per_thread"],
                   "verified_signatures": run["verified_signatures"], "other_cpu_cores": run["other_cpu_cores"]},
        ))
        if run["key"] not in best or run["rate"] > best[run["key"]]["rate"]:
            best[run["key"]] = run

    baselines = {}
    for key, run in best.items():
        name = f"raw_pkcs11.{key}.best"
        figures.append(Figure(
            name=name,
            value=run["rate"],
            unit="signatures/s",
            description=f"the higher of the 1- and 2-thread raw rates of {run['credential_id']}: "
                        "the baseline of the service figures of that key",
            extra={"threads": run["threads"]},
        ))
        baselines[key] = Baseline(name, run["rate"], "signatures/s")
    return figures, baselines


def main() -> int:
    job = json.load(sys.stdin)
    json.dump(run_job(job), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
