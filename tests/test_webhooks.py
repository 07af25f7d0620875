"""Webhooks from a real `signserver serve` to a receiver on loopback: signatures, retries, restarts.

The service signs PAdES B-B requests; B-T requests fail, because the only
TSA it is given listens nowhere. So one server shows every event: approved,
rejected, signed, failed and expired. The receiver checks nothing itself:
the tests verify each delivery with the standardwebhooks library, an
implementation independent of the service's.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from signserver.signing.sample import generate_sample_pdf
from tests.conftest import TEST_POLICY, TEST_SERVER_ENV
from tests.harness import Client, OtpCodes, Server, free_port, init_home
from tests.postgres import query

# Short delays, so that the retries of a test take seconds: 1 s, then 2 s between attempts.
WEBHOOK_ENV = {
    "SIGNSERVER_WEBHOOK_RETRY_SECONDS": "1",
    "SIGNSERVER_WEBHOOK_MAX_DELAY_SECONDS": "2",
    "SIGNSERVER_WEBHOOK_TIMEOUT_SECONDS": "2",
    "SIGNSERVER_WEBHOOK_POLL_SECONDS": "1",
    "SIGNSERVER_EXPIRY_SWEEP_SECONDS": "1",
    # A request that meets an unreachable TSA fails at once instead of being put back in line.
    "SIGNSERVER_SIGNING_ATTEMPTS": "1",
}
DELIVERY_TIMEOUT_SECONDS = 40

# The test policy, and receipts sealed without a human approval: such a request is stored already approved.
WEBHOOK_POLICY = TEST_POLICY + """\
  - credential: cred-seal-ubnd-mau-son
    owner: {agency: "Ủy ban nhân dân huyện Mẫu Sơn"}
    rules:
      - id: test-seal-receipts
        applications: [app-motcua-demo]
        document_types: [BN-TIEPNHAN]
        formats: [pades]
        approval: none
"""


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that records every POST.

    It responds 500 while ``failing`` is set, and to the first
    ``failures_per_event`` posts of each event; otherwise 200.
    """

    failures_per_event: int = 0
    failing: bool = False
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/signserver"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver.lock:
                    earlier = sum(1 for d in receiver.deliveries if d.headers.get("webhook-id") == headers.get(
                        "webhook-id"))
                    fail = receiver.failing or earlier < receiver.failures_per_event
                    status = 500 if fail else 200
                    receiver.deliveries.append(Delivery(headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def accepted(self, request_ids: set[str]) -> list[Delivery]:
        """Return the deliveries of the given requests that got a 200 response, in arrival order."""
        with self.lock:
            return [d for d in self.deliveries if d.status == 200 and d.payload["data"]["request_id"] in request_ids]

    def posts_of(self, event_id: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.event_id == event_id]

    def posts_of_request(self, request_id: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.payload["data"]["request_id"] == request_id]


@dataclass
class WebhookService:
    home: Path
    credentials: dict[str, Any]
    receiver: Receiver
    server: Server
    client: Client
    secret: str

    def restart(self, sig: int) -> None:
        self.server.stop(sig)
        # The same port: the demo CA's OCSP and CRL URLs in the certificates name it.
        self.server = Server(self.home, self.server.port, self.server.extra_env).start()
        self.client = Client(self.server, self.credentials, self.client.otp)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DELIVERY_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def officer_token(server: Server, credentials: dict[str, Any], otp: OtpCodes) -> str:
    officer = credentials["security_officers"][0]
    response = requests.post(f"{server.url}/api/v1/sessions", json={
        "username": officer["username"], "password": officer["password"],
        "otp": otp.next(officer["totp_secret"])}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookService]:
    policies = tmp_path_factory.mktemp("webhook-policies")
    (policies / "test.yaml").write_text(WEBHOOK_POLICY, encoding="utf-8")
    home = tmp_path_factory.mktemp("webhook-home")
    port = free_port()
    credentials = init_home(home, port, SIGNSERVER_POLICIES_DIR=str(policies))
    receiver = Receiver().start()
    env = {**TEST_SERVER_ENV, **WEBHOOK_ENV, "SIGNSERVER_TSA_URLS": f"http://127.0.0.1:{free_port()}/tsa"}
    server = Server(home, port, env).start()
    otp = OtpCodes()
    service = None
    try:
        token = officer_token(server, credentials, otp)
        application_id = credentials["application"]["id"]
        registered = requests.put(f"{server.url}/api/v1/admin/applications/{application_id}/webhook",
                                  json={"webhook_url": receiver.url},
                                  headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert registered.status_code == 200, registered.text
        service = WebhookService(home, credentials, receiver, server, Client(server, credentials, otp),
                                 registered.json()["webhook_secret"])
        yield service
    finally:
        # A test that restarted the service left its latest server in service.server.
        (service.server if service is not None else server).stop()
        receiver.stop()


def submit(client: Client, pdf: Path, **metadata: Any) -> str:
    response = client.submit(pdf, **metadata)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def approve(client: Client, request_ids: list[str]) -> None:
    official = client.official(0)
    response = client.approve(client.login(0), request_ids, client.otp.next(official["totp_secret"]))
    assert response.status_code == 201, response.text


def reject(client: Client, request_id: str) -> None:
    response = requests.post(f"{client.url}/api/v1/sign-requests/{request_id}/rejection",
                             json={"reason": "Hồ sơ thiếu chữ ký của người nộp"},
                             headers={"Authorization": f"Bearer {client.login(0)}"}, timeout=30)
    assert response.status_code == 200, response.text


def event_types(deliveries: list[Delivery], request_id: str) -> list[str]:
    return [d.payload["type"] for d in deliveries if d.payload["data"]["request_id"] == request_id]


def test_every_event_delivered_once_and_verified(service: WebhookService, tmp_path: Path) -> None:
    client, receiver = service.client, service.receiver
    pdf = generate_sample_pdf(tmp_path / "in.pdf")
    signed_id = submit(client, pdf, level="B-B")
    failed_id = submit(client, pdf, level="B-T")
    rejected_id = submit(client, pdf, level="B-B")
    expired_id = submit(client, pdf, level="B-B", expires_in_seconds=1)
    sealed_id = submit(client, pdf, level="B-B", signer=service.credentials["seal"]["credential_id"],
                       document_type="BN-TIEPNHAN")
    approve(client, [signed_id, failed_id])
    reject(client, rejected_id)
    request_ids = {signed_id, failed_id, rejected_id, expired_id, sealed_id}
    wait_for(lambda: len(receiver.accepted(request_ids)) >= 8, "eight events accepted")
    time.sleep(2)  # room for a duplicate to arrive
    accepted = receiver.accepted(request_ids)
    verifier = Webhook(service.secret)
    signed_state = client.get(signed_id)

    assert sorted(Counter(d.event_id for d in accepted).values()) == [1] * 8
    assert event_types(accepted, signed_id) == ["sign_request.approved", "sign_request.signed"]
    assert event_types(accepted, failed_id) == ["sign_request.approved", "sign_request.failed"]
    assert event_types(accepted, rejected_id) == ["sign_request.rejected"]
    assert event_types(accepted, expired_id) == ["sign_request.expired"]
    assert event_types(accepted, sealed_id) == ["sign_request.approved", "sign_request.signed"]
    for delivery in accepted:
        assert verifier.verify(delivery.body, delivery.headers)["data"]["state"] == delivery.payload["type"][13:]
    signed = next(d for d in accepted
                  if d.payload["type"] == "sign_request.signed" and d.payload["data"]["request_id"] == signed_id)
    assert signed.payload["data"]["signed_sha256"] == signed_state["signed_document"]["sha256"]
    assert signed.payload["data"]["links"]["signed_document"] == f"/api/v1/sign-requests/{signed_id}/signed-document"
    failed = next(d for d in accepted if d.payload["type"] == "sign_request.failed")
    assert failed.payload["data"]["state_reason"] == "tsa_failed"
    rejected = next(d for d in accepted if d.payload["type"] == "sign_request.rejected")
    assert rejected.payload["data"]["rejection_reason"] == "Hồ sơ thiếu chữ ký của người nộp"
    sealed = next(d for d in accepted if d.payload["data"]["request_id"] == sealed_id)
    assert sealed.payload["data"]["decided_by"] == "policy:test-seal-receipts"
    assert b"%PDF" not in b"".join(d.body for d in accepted)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(signed.body.replace(b"signed", b"failed"), signed.headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(signed.body, {**signed.headers, "webhook-timestamp": str(int(time.time()) - 3600)})


def test_failed_posts_retried_then_delivered_once(service: WebhookService, tmp_path: Path) -> None:
    client, receiver = service.client, service.receiver
    receiver.failures_per_event = 2
    try:
        request_id = submit(client, generate_sample_pdf(tmp_path / "in.pdf"), level="B-B")
        reject(client, request_id)
        wait_for(lambda: len(receiver.accepted({request_id})) >= 1, "the rejection accepted after two 500s")
        time.sleep(2)
    finally:
        receiver.failures_per_event = 0
    event_id = receiver.accepted({request_id})[0].event_id
    attempts = query(service.home, "SELECT attempt, status_code, error, instance FROM webhook_attempts "
                     "WHERE event_id = ? ORDER BY attempt", (event_id,))
    delivered = query(service.home, "SELECT delivered_at, attempts FROM webhook_events WHERE id = ?", (event_id,))

    assert [d.status for d in receiver.posts_of(event_id)] == [500, 500, 200]
    assert [(number, status) for number, status, _error, _instance in attempts] == [(1, 500), (2, 500), (3, 200)]
    assert [error for _number, _status, error, _instance in attempts] == ["HTTP 500", "HTTP 500", None]
    assert all(instance for *_rest, instance in attempts)
    assert delivered[0][0] is not None
    assert delivered[0][1] == 3


def test_webhook_registration_api(service: WebhookService) -> None:
    token = officer_token(service.server, service.credentials, service.client.otp)
    headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
    other = service.credentials["other_agency"]["application"]["id"]
    url = f"{service.server.url}/api/v1/admin/applications/{other}/webhook"

    not_http = requests.put(url, json={"webhook_url": "ftp://127.0.0.1/hook"}, headers=headers, timeout=30)
    with_password = requests.put(url, json={"webhook_url": "https://user:pw@127.0.0.1/hook"}, headers=headers,
                                 timeout=30)
    unknown = requests.put(f"{service.server.url}/api/v1/admin/applications/app-none/webhook",
                           json={"webhook_url": "https://127.0.0.1/hook"}, headers=headers, timeout=30)
    as_application = requests.put(url, json={"webhook_url": "https://127.0.0.1/hook"},
                                  headers=service.client.app_headers(), timeout=30)
    first = requests.put(url, json={"webhook_url": "https://127.0.0.1/first"}, headers=headers, timeout=30)
    second = requests.put(url, json={"webhook_url": "https://127.0.0.1/second"}, headers=headers, timeout=30)
    listed = requests.get(f"{service.server.url}/api/v1/admin/applications", headers=headers, timeout=30)
    removed = requests.delete(url, headers=headers, timeout=30)
    audit = query(service.home, "SELECT action, details_json FROM audit_log WHERE action LIKE 'application_webhook%' "
                  "ORDER BY seq")

    assert not_http.status_code == 400
    assert not_http.json()["code"] == "field_invalid"
    assert with_password.status_code == 400
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "application_not_found"
    assert as_application.status_code in (401, 403)
    assert first.status_code == 200, first.text
    assert first.headers["Cache-Control"] == "no-store"
    assert second.json()["webhook_secret"].startswith("whsec_")
    assert second.json()["webhook_secret"] != first.json()["webhook_secret"]
    assert {item["id"]: item["webhook_url"] for item in listed.json()["items"]}[other] == "https://127.0.0.1/second"
    assert "webhook_secret" not in listed.text
    assert removed.status_code == 200
    assert removed.json()["webhook_url"] is None
    assert [action for action, _details in audit][-3:] == ["application_webhook_set", "application_webhook_set",
                                                           "application_webhook_removed"]
    assert "whsec_" not in "".join(details for _action, details in audit)
    assert second.json()["webhook_secret"][6:] not in "".join(details for _action, details in audit)


def test_restarts_lose_no_event(service: WebhookService, tmp_path: Path) -> None:
    receiver = service.receiver
    pdf = generate_sample_pdf(tmp_path / "in.pdf")
    receiver.failing = True
    try:
        before_stop = submit(service.client, pdf, level="B-B")
        reject(service.client, before_stop)
        wait_for(lambda: len(receiver.posts_of_request(before_stop)) >= 1, "a failed post before SIGTERM")
        service.restart(signal.SIGTERM)

        between = submit(service.client, pdf, level="B-B")
        approve(service.client, [between])
        assert service.client.wait_final(between)["state"] == "signed"
        service.restart(signal.SIGKILL)
        receiver.failing = False

        request_ids = {before_stop, between}
        wait_for(lambda: len(receiver.accepted(request_ids)) >= 3, "three events accepted after the restarts")
        time.sleep(2)
    finally:
        receiver.failing = False
    accepted = receiver.accepted(request_ids)
    with receiver.lock:
        accepted_in_module = Counter(d.event_id for d in receiver.deliveries if d.status == 200)

    assert sorted(Counter(d.event_id for d in accepted).values()) == [1, 1, 1]
    assert event_types(accepted, before_stop) == ["sign_request.rejected"]
    assert event_types(accepted, between) == ["sign_request.approved", "sign_request.signed"]
    # Over the whole module, long enough for a lapsed claim (9 s here) to have caused a second post.
    assert max(accepted_in_module.values()) == 1
