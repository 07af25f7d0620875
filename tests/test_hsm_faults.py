"""HSM fault injection: the SoftHSM token directory is renamed away under load, then put back.

SoftHSM 2.6 reads its token directory at C_Initialize, so the service must
re-initialise the PKCS#11 library once the directory is back. Meanwhile every
request that needs the HSM must get a 503 with a stable code and Retry-After,
and the keep-alive probe must mark /readyz down without any user request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from signserver.i18n import message
from signserver.signing.sample import generate_sample_pdf
from signserver.signing.tsa import TimeStampResp
from tests.csc.conftest import ECDSA_WITH_SHA256_OID, SHA256_OID, SHA256_WITH_RSA_OID, b64
from tests.harness import Client, OtpCodes, Server, free_port, init_home
from tests.verifiers import openssl_ts_verify

# Two workers, because each process has its own PKCS#11 library and sessions and must recover on its own.
WORKERS = 2
PROBE_SECONDS = 1
# hsm.token.MAX_REOPEN_BACKOFF_SECONDS: the longest wait between two attempts to re-initialise.
MAX_REOPEN_BACKOFF_SECONDS = 5.0
# A request that takes longer than this counts as hung.
REQUEST_TIMEOUT_SECONDS = 10.0
# Pause of each load thread between two requests, which bounds the load.
LOAD_PAUSE_SECONDS = 0.1
# Margin for a loaded 2-core machine on every wait below.
SLACK_SECONDS = 3.0

AN_CREDENTIAL = "cred-nguyen-van-an"
NGOC_CREDENTIAL = "cred-tran-thi-bich-ngoc"

# One record of used TOTP steps for the module, since its tests share one data directory.
OTP_CODES = OtpCodes()


@dataclass
class Outcome:
    """One request of a load thread, with its timing on time.monotonic()."""

    digest: bytes
    sent_at: float
    elapsed: float
    response: requests.Response | None
    error: str | None = None

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code


# Sends one request and returns the digest it asked to sign or time-stamp, with the response.
Sender = Callable[[], tuple[bytes, requests.Response]]


@dataclass
class LoadThread:
    """Calls ``send`` while ``running`` is set, at most ``max_requests`` times, with a pause after each call."""

    name: str
    send: Sender
    max_requests: int
    running: threading.Event
    stop: threading.Event
    outcomes: list[Outcome] = field(default_factory=list)
    # Held while a request is in flight, so that pausing can wait for it.
    busy: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set() and len(self.outcomes) < self.max_requests:
            if not self.running.wait(0.05):
                continue
            with self.busy:
                sent_at = time.monotonic()
                try:
                    digest, response = self.send()
                    outcome = Outcome(digest, sent_at, time.monotonic() - sent_at, response)
                except requests.RequestException as exc:
                    outcome = Outcome(b"", sent_at, time.monotonic() - sent_at, None, repr(exc))
                self.outcomes.append(outcome)
            time.sleep(LOAD_PAUSE_SECONDS)

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=REQUEST_TIMEOUT_SECONDS + 5)
        assert not self.thread.is_alive(), f"load thread {self.name} did not stop"

    def successes_after(self, moment: float) -> int:
        return sum(1 for outcome in self.outcomes if outcome.sent_at >= moment and outcome.status == 200)


class Load:
    """A few load threads that can be paused together."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.stop = threading.Event()
        self.threads: list[LoadThread] = []

    def add(self, name: str, send: Sender, max_requests: int) -> LoadThread:
        thread = LoadThread(name, send, max_requests, self.running, self.stop)
        self.threads.append(thread)
        return thread

    def start(self) -> None:
        self.running.set()
        for thread in self.threads:
            thread.start()

    def pause(self) -> None:
        """Stop sending and wait until no request is in flight."""
        self.running.clear()
        for thread in self.threads:
            with thread.busy:
                pass

    def resume(self) -> None:
        self.running.set()

    def finish(self) -> None:
        self.stop.set()
        self.running.set()
        for thread in self.threads:
            thread.join()

    def outcomes(self) -> Iterator[tuple[LoadThread, Outcome]]:
        for thread in self.threads:
            for outcome in thread.outcomes:
                yield thread, outcome


@dataclass(frozen=True)
class FaultHome:
    home: Path
    port: int
    credentials: dict[str, Any]

    @property
    def token_dir(self) -> Path:
        return self.home / "tokens"

    @property
    def moved_token_dir(self) -> Path:
        return self.home / "tokens.away"

    def official(self, credential_id: str) -> dict[str, Any]:
        return next(found for found in self.credentials["officials"] if found["credential_id"] == credential_id)


@pytest.fixture(scope="module")
def fault_home(tmp_path_factory: pytest.TempPathFactory) -> FaultHome:
    """A data directory of its own, because the test renames its token directory away."""
    home = tmp_path_factory.mktemp("hsm-faults")
    port = free_port()
    return FaultHome(home, port, init_home(home, port))


def start_server(fault_home: FaultHome, workers: int) -> Server:
    server = Server(fault_home.home, fault_home.port, extra_env={
        "SIGNSERVER_HSM_PROBE_SECONDS": str(PROBE_SECONDS),
        "SIGNSERVER_WORKERS": str(workers),
        "SIGNSERVER_LOG_FORMAT": "json",
    })
    return server.start()


def token_directory_in_conf(home: Path) -> Path:
    for line in (home / "softhsm2.conf").read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "directories.tokendir":
            return Path(value.strip())
    raise AssertionError(f"no directories.tokendir in {home / 'softhsm2.conf'}")


def readyz(server: Server) -> requests.Response:
    # A new connection each time, so that with several workers each poll may land on another worker.
    return requests.get(f"{server.url}/readyz", timeout=REQUEST_TIMEOUT_SECONDS)


def wait_for_readyz(server: Server, status: int, timeout: float, in_a_row: int = 1) -> float:
    """Poll /readyz until it returns ``status`` ``in_a_row`` times running; return the time of the last poll."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        response = readyz(server)
        if response.status_code == status:
            seen += 1
            if seen >= in_a_row:
                return time.monotonic()
        else:
            seen = 0
        time.sleep(0.1)
    raise AssertionError(f"/readyz did not return {status} {in_a_row} times running within {timeout} s")


def wait_for_log(server: Server, event: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(log_records(server, event)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {event} events in the log within {timeout} s"
        time.sleep(0.1)


def hsm_up_gauge(server: Server) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=REQUEST_TIMEOUT_SECONDS).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("signserver_hsm_up")]
    assert len(values) == 1, text
    return values[0]


def wait_for_gauge(server: Server, value: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hsm_up_gauge(server) == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"signserver_hsm_up did not become {value} within {timeout} s")


def log_records(server: Server, event: str) -> list[dict[str, Any]]:
    assert server.log_path is not None
    records = []
    for line in server.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                records.append(record)
    return records


def tsa_sender(server: Server, language: str) -> Sender:
    def send() -> tuple[bytes, requests.Response]:
        digest = hashlib.sha256(os.urandom(32)).digest()
        query = tsp.TimeStampReq({
            "version": "v1",
            "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
            "cert_req": True,
        }).dump()
        response = requests.post(f"{server.url}/tsa", data=query, timeout=REQUEST_TIMEOUT_SECONDS, headers={
            "Content-Type": "application/timestamp-query", "Accept-Language": language})
        return digest, response

    return send


class CscSigner:
    """CSC v2 signHash calls with one SAD, one digest per call."""

    def __init__(self, server: Server, fault_home: FaultHome, credential_id: str, sign_algorithm: str,
                 language: str, digests: int) -> None:
        self.url = server.url
        self.credential_id = credential_id
        self.sign_algorithm = sign_algorithm
        self.language = language
        self.api_key = fault_home.credentials["application"]["api_key"]
        self.pending = [hashlib.sha256(os.urandom(32)).digest() for _ in range(digests)]
        official = fault_home.official(credential_id)
        response = self.call("credentials/authorize", {
            "credentialID": credential_id, "numSignatures": digests, "hashAlgorithmOID": SHA256_OID,
            "hashes": [b64(digest) for digest in self.pending],
            "authData": [{"id": "OTP", "value": OTP_CODES.next(official["totp_secret"])}],
        })
        assert response.status_code == 200, response.text
        self.sad = response.json()["SAD"]
        response = self.call("credentials/info", {"credentialID": credential_id, "certificates": "single"})
        assert response.status_code == 200, response.text
        self.certificate = x509.load_der_x509_certificate(
            base64.b64decode(response.json()["cert"]["certificates"][0]))
        self._lock = threading.Lock()

    def call(self, method: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.url}/csc/v2/{method}", json=body, timeout=REQUEST_TIMEOUT_SECONDS, headers={
            "Authorization": f"Bearer {self.api_key}", "Accept-Language": self.language})

    def send(self) -> tuple[bytes, requests.Response]:
        # The SAD covers only the digests authorized above, so each call takes the next one of them.
        with self._lock:
            digest = self.pending.pop()
        response = self.call("signatures/signHash", {
            "credentialID": self.credential_id, "SAD": self.sad, "hashes": [b64(digest)],
            "hashAlgorithmOID": SHA256_OID, "signAlgo": self.sign_algorithm})
        return digest, response

    def verify(self, digest: bytes, signature: bytes) -> None:
        public_key = self.certificate.public_key()
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        else:
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def check_csc_unavailable(response: requests.Response, language: str) -> None:
    assert response.headers.get("Retry-After", "").isdigit(), response.headers
    body = response.json()
    assert body["error"] == "temporarily_unavailable", body
    assert body["error_description"] == message("hsm_unavailable", language), body


def check_tsa_unavailable(response: requests.Response, language: str) -> None:
    assert response.headers.get("Retry-After", "").isdigit(), response.headers
    assert response.headers["Content-Type"] == "application/timestamp-reply"
    status = TimeStampResp.load(response.content)["status"].native
    assert status["status"] == "rejection", status
    assert status["fail_info"] == {"system_failure"}, status
    assert status["status_string"] == ["hsm_unavailable", message("hsm_unavailable", language)], status


def check_tsa_granted(response: requests.Response, digest: bytes, chain: Path, work_dir: Path) -> None:
    reply = work_dir / f"{digest.hex()}.tsr"
    reply.write_bytes(response.content)
    verified, output = openssl_ts_verify(reply, chain, digest_hex=digest.hex())
    assert verified, output


def tsa_chain(fault_home: FaultHome, work_dir: Path) -> Path:
    chain = work_dir / "chain.pem"
    chain.write_text((fault_home.home / "pki" / "issuing-ca.pem").read_text()
                     + (fault_home.home / "demo-root.pem").read_text())
    return chain


def max_reopen_attempts(seconds: float) -> int:
    """Return how many reopen attempts one worker may make in an outage of ``seconds``, plus one for timing.

    The first attempt follows the fault by 0.2 s, and each failure doubles
    the wait before the next one, up to MAX_REOPEN_BACKOFF_SECONDS, as
    hsm.token does. Without that back-off, every request would try again.
    """
    attempts, elapsed, wait = 1, 0.2, 0.2
    while True:
        wait = min(wait * 2, MAX_REOPEN_BACKOFF_SECONDS)
        if elapsed + wait > seconds:
            return attempts + 1
        elapsed += wait
        attempts += 1


def test_hsm_outage_under_load_recovers(fault_home: FaultHome, tmp_path: Path) -> None:
    assert token_directory_in_conf(fault_home.home) == fault_home.token_dir.resolve()
    server = start_server(fault_home, workers=WORKERS)
    client = Client(server, fault_home.credentials, OTP_CODES)
    an = fault_home.official(AN_CREDENTIAL)
    load = Load()
    try:
        wait_for_log(server, "signserver.started", WORKERS, timeout=60)
        pending = client.submit(generate_sample_pdf(tmp_path / "in.pdf"), signer=AN_CREDENTIAL)
        assert pending.status_code in (201, 202), pending.text
        request_id = pending.json()["id"]
        an_session = client.login(fault_home.credentials["officials"].index(an))
        ec_signer = CscSigner(server, fault_home, AN_CREDENTIAL, ECDSA_WITH_SHA256_OID, "vi", digests=50)
        rsa_signer = CscSigner(server, fault_home, NGOC_CREDENTIAL, SHA256_WITH_RSA_OID, "en", digests=50)
        ec_load = load.add("csc-ec", ec_signer.send, max_requests=50)
        load.add("csc-rsa", rsa_signer.send, max_requests=50)
        tsa_load = load.add("tsa", tsa_sender(server, "vi"), max_requests=120)

        # Phase 1: the service signs under load.
        load.start()
        started = time.monotonic()
        while min(thread.successes_after(started) for thread in load.threads) < 2:
            assert time.monotonic() - started < 20, "the load got no signatures before the fault"
            time.sleep(0.1)
        load.pause()

        # Phase 2: no request at all, so only the keep-alive probes can notice the missing token.
        fault_home.token_dir.rename(fault_home.moved_token_dir)
        taken_away = time.monotonic()
        wait_for_log(server, "hsm.down", WORKERS, timeout=PROBE_SECONDS + SLACK_SECONDS)
        down_seen = wait_for_readyz(server, 503, timeout=SLACK_SECONDS, in_a_row=2 * WORKERS)
        assert readyz(server).json()["checks"] == {"hsm": False, "database": True, "tsa": True}
        wait_for_gauge(server, 0, timeout=PROBE_SECONDS + SLACK_SECONDS)

        # Phase 3: load and approvals while the HSM is down.
        load.resume()
        for language in ("vi", "en"):
            approval = client.approve(an_session, [request_id], OTP_CODES.next(an["totp_secret"]), language)
            assert approval.status_code == 503, approval.text
            assert approval.headers.get("Retry-After", "").isdigit(), approval.headers
            assert approval.json()["code"] == "hsm_unavailable"
            assert approval.json()["detail"] == message("hsm_unavailable", language)
        time.sleep(1.5)
        load.pause()
        restored = time.monotonic()

        # Phase 4: the directory is back, and every worker recovers with no restart.
        fault_home.moved_token_dir.rename(fault_home.token_dir)
        load.resume()
        wait_for_log(server, "hsm.up", WORKERS, timeout=MAX_REOPEN_BACKOFF_SECONDS + PROBE_SECONDS + SLACK_SECONDS)
        up_seen = wait_for_readyz(server, 200, timeout=SLACK_SECONDS, in_a_row=2 * WORKERS)
        wait_for_gauge(server, 1, timeout=PROBE_SECONDS + SLACK_SECONDS)
        while min(thread.successes_after(up_seen) for thread in load.threads) < 3:
            assert time.monotonic() - up_seen < 20, "the load got no signatures after the recovery"
            time.sleep(0.1)
        # The approvals that failed left the request waiting for its official.
        assert client.get(request_id)["state"] == "pending_approval"
    finally:
        if fault_home.moved_token_dir.exists():
            fault_home.moved_token_dir.rename(fault_home.token_dir)
        load.finish()
        server.stop()

    requests_sent = ", ".join(f"{thread.name}: {len(thread.outcomes)} requests" for thread in load.threads)
    print(f"readyz 503 {down_seen - taken_away:.2f} s after the token went, 200 {up_seen - restored:.2f} s "
          f"after it came back; {requests_sent}")

    hung = [(thread.name, outcome.error, outcome.elapsed) for thread, outcome in load.outcomes()
            if outcome.response is None or outcome.elapsed >= REQUEST_TIMEOUT_SECONDS]
    assert hung == []
    assert {outcome.status for _, outcome in load.outcomes()} <= {200, 503}

    while_down = [(thread, outcome) for thread, outcome in load.outcomes()
                  if down_seen <= outcome.sent_at and outcome.sent_at + outcome.elapsed <= restored]
    for thread in load.threads:
        assert any(found is thread for found, _ in while_down), f"{thread.name} sent nothing while the HSM was down"
    assert [outcome.status for _, outcome in while_down if outcome.status != 503] == []

    for thread, outcome in load.outcomes():
        if outcome.status != 503:
            continue
        assert outcome.response is not None
        if thread is tsa_load:
            check_tsa_unavailable(outcome.response, "vi")
        else:
            check_csc_unavailable(outcome.response, "vi" if thread is ec_load else "en")

    after_recovery = [outcome for _, outcome in load.outcomes() if outcome.sent_at >= up_seen]
    assert [outcome.status for outcome in after_recovery if outcome.status != 200] == []

    chain = tsa_chain(fault_home, tmp_path)
    for thread, outcome in load.outcomes():
        if outcome.status != 200:
            continue
        assert outcome.response is not None
        if thread is tsa_load:
            check_tsa_granted(outcome.response, outcome.digest, chain, tmp_path)
        else:
            signer = ec_signer if thread is ec_load else rsa_signer
            (signature,) = outcome.response.json()["signatures"]
            signer.verify(outcome.digest, base64.b64decode(signature))

    # One transition each way per worker: no flapping while the token was away.
    assert len(log_records(server, "hsm.down")) == WORKERS
    assert len(log_records(server, "hsm.up")) == WORKERS
    failed_reopens = log_records(server, "hsm.session_pool.reopen_failed")
    assert failed_reopens, "no worker tried to reopen its sessions during the outage"
    assert len(failed_reopens) <= WORKERS * max_reopen_attempts(up_seen - taken_away)
    assert max(record["retry_in_seconds"] for record in failed_reopens) <= MAX_REOPEN_BACKOFF_SECONDS
