"""Client threads that keep a steady load on the service while it is killed, and the ledger of what they received.

Connection errors are expected while the service is down or restarting:
each is counted by kind and the same call is tried again. A native seal
request is retried with its own idempotency key, body and document, so the
service must return the request it may already have stored, never a second
one. A CSC signHash call is retried only when the connection was refused,
because a call whose response was lost may already have spent its hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import requests

from tests.harness import OtpCodes

__all__ = ["Ledger", "SealLoad", "CscLoad", "classify_connection_error", "FINAL_STATES"]

SEAL_CREDENTIAL_ID = "cred-seal-ubnd-mau-son"
# The demo policy lets app-motcua-demo seal these document types without a clerk's approval.
UNATTENDED_DOCUMENT_TYPES = ("BN-TIEPNHAN", "BN-KETQUA")
FINAL_STATES = ("signed", "failed", "rejected", "expired")

SHA256_OID = "2.16.840.1.101.3.4.2.1"
SIGN_ALGORITHM_BY_KEY_TYPE = {"RSA": "1.2.840.113549.1.1.11", "EC": "1.2.840.10045.4.3.2"}
# Hashes authorized by one OTP code. The demo policy allows batches of up to 50.
HASHES_PER_SAD = 40
# A SAD expires after 300 s by default, so a new one is authorized well before that.
SAD_MAX_AGE_SECONDS = 240.0

RETRY_PAUSE_SECONDS = 0.3
POLL_SECONDS = 0.2
HTTP_TIMEOUT_SECONDS = 30


def classify_connection_error(exc: requests.RequestException) -> str:
    """Return the kind of a failed HTTP call: connection_refused, connection_reset, timeout or request_error."""
    if isinstance(exc, requests.Timeout):
        return "timeout"
    text = str(exc)
    if "Connection refused" in text:
        return "connection_refused"
    if isinstance(exc, requests.ConnectionError):
        # The service died while the call was open: reset, aborted, or closed without a response.
        return "connection_reset"
    return "request_error"


@dataclass
class Ledger:
    """What the clients sent and received, shared by every load thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    keys_submitted: int = 0
    # Every request id the service returned for each idempotency key.
    request_ids_by_key: dict[str, set[str]] = field(default_factory=dict)
    # Final state and reason of each request, as the client last saw it.
    final_states: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    # SHA-256 of every signed document downloaded, by request id, one entry per download.
    downloads: dict[str, list[str]] = field(default_factory=dict)
    downloaded_files: dict[str, Path] = field(default_factory=dict)
    # Calls that failed without an HTTP response, by kind.
    connection_errors: Counter = field(default_factory=Counter)
    # Unexpected HTTP responses, by "status code", such as 503 while the service starts.
    http_errors: Counter = field(default_factory=Counter)
    # Submissions sent again with the same key after a call that got no response.
    retries_after_error: int = 0
    # Retries that returned 200 and an earlier request, because the first call was stored but its response lost.
    responses_lost_request_stored: int = 0
    # Submissions sent again with the same key after the request reached a final state.
    repeats_after_final: int = 0
    # Keys given up before the service returned any request, for example at the end of the run.
    keys_without_request: int = 0
    # Requests not final when their thread stopped waiting.
    requests_unfinished: set[str] = field(default_factory=set)
    # Findings of the clients that break a promise of the service, as readable sentences.
    anomalies: list[str] = field(default_factory=list)
    csc_authorizations: int = 0
    # (credential id, hash in hex, signature in base64) of every signature a CSC client received.
    csc_signatures: list[tuple[str, str, str]] = field(default_factory=list)
    csc_calls_without_response: int = 0

    def count_connection_error(self, exc: requests.RequestException) -> None:
        with self.lock:
            self.connection_errors[classify_connection_error(exc)] += 1

    def count_http_error(self, response: requests.Response) -> None:
        code = ""
        try:
            body = response.json()
            code = body.get("code") or body.get("error") or ""
        except ValueError:
            pass
        with self.lock:
            self.http_errors[f"{response.status_code} {code}".strip()] += 1

    def note_anomaly(self, text: str) -> None:
        with self.lock:
            self.anomalies.append(text)


class SealLoad(threading.Thread):
    """Client thread that submits native seal requests in small batches, waits for each, and downloads the signed ones.

    It submits until ``stop`` is set, then waits for its outstanding requests until ``give_up_at`` (monotonic seconds).
    """

    def __init__(self, index: int, url: str, api_key: str, document: bytes, ledger: Ledger, output_dir: Path,
                 stop: threading.Event, *, batch_size: int = 3, repeat_probability: float = 0.2,
                 seed: int = 0) -> None:
        super().__init__(name=f"seal-load-{index}", daemon=True)
        self.index = index
        self.url = url
        self.headers = {"Authorization": f"Bearer {api_key}", "Accept-Language": "en"}
        self.document = document
        self.ledger = ledger
        self.output_dir = output_dir
        self.stop = stop
        self.batch_size = batch_size
        self.repeat_probability = repeat_probability
        self.random = random.Random(seed * 1000 + index)
        self.give_up_at = float("inf")
        self.session = requests.Session()
        self._serial = 0

    def run(self) -> None:
        while not self.stop.is_set():
            keys = [self._new_key() for _ in range(self.batch_size)]
            accepted = []
            for key in keys:
                request_id = self._submit_until_accepted(key)
                if request_id is not None:
                    accepted.append((key, request_id))
            for key, request_id in accepted:
                self._follow(key, request_id)

    def _new_key(self) -> str:
        self._serial += 1
        with self.ledger.lock:
            self.ledger.keys_submitted += 1
        return f"crash-{self.index}-{self._serial}-{os.urandom(4).hex()}"

    def _metadata(self, key: str) -> dict[str, Any]:
        """Return the body for ``key``: the same on every retry, or the service would reject the reused key."""
        serial = int(key.split("-")[2])
        return {
            "idempotency_key": key,
            "dossier_code": f"000.00.01.H01-261205-{self.index}{serial:05d}",
            "title": "Phiếu tiếp nhận hồ sơ và hẹn trả kết quả",
            "signer": SEAL_CREDENTIAL_ID,
            "document_type": UNATTENDED_DOCUMENT_TYPES[serial % len(UNATTENDED_DOCUMENT_TYPES)],
            "reason": "Tiếp nhận hồ sơ",
            "location": "Huyện Mẫu Sơn",
        }

    def _post(self, key: str) -> requests.Response:
        files = {
            "metadata": (None, json.dumps(self._metadata(key), ensure_ascii=False), "application/json"),
            "document": ("bien-nhan.pdf", self.document, "application/pdf"),
        }
        return self.session.post(f"{self.url}/api/v1/sign-requests", files=files, headers=self.headers,
                                 timeout=HTTP_TIMEOUT_SECONDS)

    def _submit_until_accepted(self, key: str, *, repeat: bool = False) -> str | None:
        """Submit ``key`` until the service returns a request; return its id, or None when given up.

        ``repeat`` marks a key whose request the client has already received, so 200 is the expected status.
        """
        after_error = False
        while True:
            if self.stop.is_set() and time.monotonic() > self.give_up_at:
                with self.ledger.lock:
                    self.ledger.keys_without_request += 1
                return None
            try:
                response = self._post(key)
            except requests.RequestException as exc:
                self.ledger.count_connection_error(exc)
                after_error = True
                with self.ledger.lock:
                    self.ledger.retries_after_error += 1
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            if response.status_code in (200, 201):
                request_id = response.json()["id"]
                self._record_request_id(key, request_id)
                if response.status_code == 201 and repeat:
                    self.ledger.note_anomaly(f"key {key} submitted again created a new request {request_id}")
                elif response.status_code == 200 and not repeat:
                    if not after_error:
                        self.ledger.note_anomaly(f"first submission of key {key} returned 200 with {request_id}")
                    with self.ledger.lock:
                        self.ledger.responses_lost_request_stored += 1
                return request_id
            self.ledger.count_http_error(response)
            if response.status_code < 500:
                self.ledger.note_anomaly(f"submission of key {key} rejected: {response.status_code} {response.text[:200]}")
                return None
            after_error = True
            time.sleep(RETRY_PAUSE_SECONDS)

    def _record_request_id(self, key: str, request_id: str) -> None:
        with self.ledger.lock:
            known = self.ledger.request_ids_by_key.setdefault(key, set())
            known.add(request_id)
            duplicate = len(known) > 1
        if duplicate:
            self.ledger.note_anomaly(f"key {key} returned several requests: {sorted(known)}")

    def _follow(self, key: str, request_id: str) -> None:
        """Wait for the request's final state, download a signed document, and sometimes submit the key again."""
        final = self._wait_final(request_id)
        if final is None:
            with self.ledger.lock:
                self.ledger.requests_unfinished.add(request_id)
            return
        with self.ledger.lock:
            self.ledger.final_states[request_id] = (final["state"], final.get("state_reason"))
        if final["state"] == "signed":
            self._download(request_id)

        # An interrupted request is always submitted again, as a client that saw it fail would.
        interrupted = final.get("state_reason") == "signing_interrupted"
        if interrupted or self.random.random() < self.repeat_probability:
            self._repeat_after_final(key, request_id, final)

    def _repeat_after_final(self, key: str, request_id: str, final: dict[str, Any]) -> None:
        with self.ledger.lock:
            self.ledger.repeats_after_final += 1
        again = self._submit_until_accepted(key, repeat=True)
        if again is None:
            return
        if again != request_id:
            return  # _record_request_id recorded the second request as an anomaly
        state = self._get_state(request_id)
        if state is not None and state["state"] != final["state"]:
            self.ledger.note_anomaly(f"request {request_id} was {final['state']}, and {state['state']} after "
                                     f"its key was submitted again")
        if final["state"] == "signed":
            self._download(request_id)

    def _get_state(self, request_id: str) -> dict[str, Any] | None:
        """Return the request as the API shows it, trying again through downtime until ``give_up_at``."""
        while True:
            if self.stop.is_set() and time.monotonic() > self.give_up_at:
                return None
            try:
                response = self.session.get(f"{self.url}/api/v1/sign-requests/{request_id}", headers=self.headers,
                                            timeout=HTTP_TIMEOUT_SECONDS)
            except requests.RequestException as exc:
                self.ledger.count_connection_error(exc)
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            if response.status_code == 200:
                return response.json()
            self.ledger.count_http_error(response)
            time.sleep(RETRY_PAUSE_SECONDS)

    def _wait_final(self, request_id: str) -> dict[str, Any] | None:
        while True:
            state = self._get_state(request_id)
            if state is None or state["state"] in FINAL_STATES:
                return state
            time.sleep(POLL_SECONDS)

    def _download(self, request_id: str) -> None:
        while True:
            if self.stop.is_set() and time.monotonic() > self.give_up_at:
                self.ledger.note_anomaly(f"signed document of {request_id} not downloaded before the end")
                return
            try:
                response = self.session.get(f"{self.url}/api/v1/sign-requests/{request_id}/signed-document",
                                            headers=self.headers, timeout=HTTP_TIMEOUT_SECONDS)
            except requests.RequestException as exc:
                self.ledger.count_connection_error(exc)
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            if response.status_code != 200:
                self.ledger.count_http_error(response)
                if response.status_code < 500:
                    self.ledger.note_anomaly(f"signed document of {request_id} not served: "
                                             f"{response.status_code} {response.text[:200]}")
                    return
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            digest = hashlib.sha256(response.content).hexdigest()
            with self.ledger.lock:
                self.ledger.downloads.setdefault(request_id, []).append(digest)
                first = request_id not in self.ledger.downloaded_files
                if first:
                    self.ledger.downloaded_files[request_id] = self.output_dir / f"{request_id}.pdf"
            if first:
                (self.output_dir / f"{request_id}.pdf").write_bytes(response.content)
            return


class FreeOtpCodes(OtpCodes):
    """OTP codes of unused steps, without waiting when the three steps the server accepts are all used."""

    def next_or_none(self, secret: str) -> str | None:
        used = self.used.setdefault(secret, set())
        current = int(time.time()) // 30
        for step in (current - 1, current, current + 1):
            # Step current-1 stops being valid at the next step: it is left out in the last 5 s of the window.
            if step in used or (step == current - 1 and time.time() % 30 > 25):
                continue
            used.add(step)
            return pyotp.TOTP(secret).generate_otp(step)
        return None


@dataclass
class _Sad:
    credential_id: str
    sign_algorithm: str
    sad: str
    hashes: list[bytes]
    issued_at: float


class CscLoad(threading.Thread):
    """Client thread that signs random hashes one at a time with CSC v2 signHash.

    Each SAD is authorized with an OTP code of one of the demo officials, in turn.
    """

    def __init__(self, url: str, application: dict[str, Any], officials: list[dict[str, Any]], ledger: Ledger,
                 stop: threading.Event, *, pause_seconds: float = 0.15) -> None:
        super().__init__(name="csc-load", daemon=True)
        self.url = url
        self.application = application
        self.officials = officials
        self.ledger = ledger
        self.stop = stop
        self.pause_seconds = pause_seconds
        self.otp = FreeOtpCodes()
        self.session = requests.Session()
        self.token: str | None = None
        self.sad: _Sad | None = None
        self._next_official = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._step()
            except requests.RequestException as exc:
                self.ledger.count_connection_error(exc)
                time.sleep(RETRY_PAUSE_SECONDS)
            time.sleep(self.pause_seconds)

    def _step(self) -> None:
        if self.token is None:
            self._login()
        if self.sad is None or not self.sad.hashes or time.monotonic() - self.sad.issued_at > SAD_MAX_AGE_SECONDS:
            self.sad = None
            self._authorize()
            return
        self._sign_one()

    def _call(self, method: str, body: dict[str, Any], **extra: Any) -> requests.Response:
        headers = {"Accept-Language": "en"}
        if "auth" not in extra:
            headers["Authorization"] = f"Bearer {self.token}"
        return self.session.post(f"{self.url}/csc/v2/{method}", json=body, headers=headers,
                                 timeout=HTTP_TIMEOUT_SECONDS, **extra)

    def _login(self) -> None:
        response = self._call("auth/login", {}, auth=(self.application["username"], self.application["password"]))
        if response.status_code != 200:
            self.ledger.count_http_error(response)
            return
        self.token = response.json()["access_token"]

    def _authorize(self) -> None:
        official = self.officials[self._next_official % len(self.officials)]
        self._next_official += 1
        code = self.otp.next_or_none(official["totp_secret"])
        if code is None:
            return
        info = self._call("credentials/info", {"credentialID": official["credential_id"]})
        if info.status_code != 200:
            self._count_rejection(info)
            return
        key_type = info.json()["key"]["algo"]
        hashes = [hashlib.sha256(os.urandom(32)).digest() for _ in range(HASHES_PER_SAD)]
        response = self._call("credentials/authorize", {
            "credentialID": official["credential_id"], "numSignatures": len(hashes),
            "hashes": [base64.b64encode(digest).decode("ascii") for digest in hashes],
            "hashAlgorithmOID": SHA256_OID, "authData": [{"id": "OTP", "value": code}],
        })
        if response.status_code != 200:
            self._count_rejection(response)
            return
        with self.ledger.lock:
            self.ledger.csc_authorizations += 1
        self.sad = _Sad(official["credential_id"], _sign_algorithm(key_type), response.json()["SAD"], hashes,
                        time.monotonic())

    def _sign_one(self) -> None:
        assert self.sad is not None
        digest = self.sad.hashes.pop()
        try:
            response = self._call("signatures/signHash", {
                "credentialID": self.sad.credential_id, "SAD": self.sad.sad,
                "hashes": [base64.b64encode(digest).decode("ascii")], "hashAlgorithmOID": SHA256_OID,
                "signAlgo": self.sad.sign_algorithm,
            })
        except requests.RequestException as exc:
            if classify_connection_error(exc) == "connection_refused":
                # The call never reached the service, so the hash is still unspent.
                self.sad.hashes.append(digest)
            else:
                with self.ledger.lock:
                    self.ledger.csc_calls_without_response += 1
            raise
        if response.status_code != 200:
            self._count_rejection(response)
            self.sad = None
            return
        signature = response.json()["signatures"][0]
        with self.ledger.lock:
            self.ledger.csc_signatures.append((self.sad.credential_id, digest.hex(), signature))

    def _count_rejection(self, response: requests.Response) -> None:
        self.ledger.count_http_error(response)
        if response.status_code == 401:
            self.token = None
        elif response.status_code < 500:
            self.ledger.note_anomaly(f"CSC call rejected: {response.status_code} {response.text[:200]}")


def _sign_algorithm(key_algorithms: list[str]) -> str:
    """Return the signAlgo OID for a credential whose credentials/info lists ``key_algorithms``."""
    for oid in SIGN_ALGORITHM_BY_KEY_TYPE.values():
        if oid in key_algorithms:
            return oid
    raise ValueError(f"credential supports none of {sorted(SIGN_ALGORITHM_BY_KEY_TYPE.values())}: {key_algorithms}")
