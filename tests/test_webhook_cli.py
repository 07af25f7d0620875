"""`signserver apps add --webhook-url` and `signserver webhooks`: set a webhook, list the outbox, re-queue.

The service runs with one attempt per event, so an event the receiver
refuses is abandoned at once and the operator's re-queue can be tested.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from signserver.signing.sample import generate_sample_pdf
from tests.conftest import TEST_POLICY, TEST_SERVER_ENV
from tests.harness import Client, OtpCodes, Server, cli_login, free_port, init_home, run_cli
from tests.postgres import query
from tests.test_webhooks import Receiver, reject, submit, wait_for

CLI_ENV = {
    "SIGNSERVER_WEBHOOK_MAX_ATTEMPTS": "1",
    "SIGNSERVER_WEBHOOK_RETRY_SECONDS": "1",
    "SIGNSERVER_WEBHOOK_TIMEOUT_SECONDS": "2",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any], Receiver]]:
    policies = tmp_path_factory.mktemp("webhook-cli-policies")
    (policies / "test.yaml").write_text(TEST_POLICY, encoding="utf-8")
    home = tmp_path_factory.mktemp("webhook-cli-home")
    port = free_port()
    credentials = init_home(home, port, SIGNSERVER_POLICIES_DIR=str(policies))
    receiver = Receiver(failing=True).start()
    server = Server(home, port, {**TEST_SERVER_ENV, **CLI_ENV}).start()
    try:
        yield server, credentials, receiver
    finally:
        server.stop()
        receiver.stop()


def test_operator_sets_webhook_and_requeues_abandoned_event(setup: tuple[Server, dict[str, Any], Receiver],
                                                            tmp_path: Path, otp_codes: OtpCodes) -> None:
    server, credentials, receiver = setup
    otp = otp_codes
    session = cli_login(server.home, credentials["security_officers"][0], otp)
    application_id = credentials["application"]["id"]

    added = run_cli(server.home, "apps", "add", "--id", "app-webhook-cli", "--name", "Một cửa thử",
                    "--agency", "UBND huyện Mẫu Sơn", "--webhook-url", "https://127.0.0.1:8443/hooks", "--json",
                    session=session)
    set_result = run_cli(server.home, "webhooks", "set", application_id, "--url", receiver.url, session=session)
    secret = set_result.stdout.split("webhook_secret: ")[-1].strip()

    client = Client(server, credentials, otp)
    request_id = submit(client, generate_sample_pdf(tmp_path / "in.pdf"), level="B-B")
    reject(client, request_id)
    abandoned_query = "SELECT id FROM webhook_events WHERE request_id = ? AND abandoned_at IS NOT NULL"
    wait_for(lambda: bool(query(server.home, abandoned_query, (request_id,))), "the event abandoned")
    event_id = query(server.home, abandoned_query, (request_id,))[0][0]
    listed = run_cli(server.home, "webhooks", "events", "--status", "abandoned", "--request", request_id,
                     session=session)

    receiver.failing = False
    requeued = run_cli(server.home, "webhooks", "requeue", event_id, session=session)
    wait_for(lambda: len(receiver.accepted({request_id})) == 1, "the re-queued event accepted")
    delivery = receiver.accepted({request_id})[0]
    requeued_again = run_cli(server.home, "webhooks", "requeue", event_id, session=session)
    delivered = run_cli(server.home, "webhooks", "events", "--status", "delivered", "--request", request_id,
                        "--json", session=session)
    audit = query(server.home, "SELECT action FROM audit_log WHERE action IN "
                  "('application_enrolled', 'application_webhook_set', 'webhook_event_requeued') ORDER BY seq")
    audit_text = " ".join(row[0] for row in query(server.home, "SELECT details_json FROM audit_log"))

    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["webhook_url"] == "https://127.0.0.1:8443/hooks"
    assert json.loads(added.stdout)["webhook_secret"].startswith("whsec_")
    assert set_result.returncode == 0, set_result.stderr
    assert set_result.stdout.startswith(f"Đã đặt webhook của hệ thống {application_id}")
    assert secret.startswith("whsec_")
    assert listed.returncode == 0, listed.stderr
    assert event_id in listed.stdout
    assert "đã bỏ gửi / abandoned" in listed.stdout
    assert "HTTP 500" in listed.stdout
    assert requeued.returncode == 0, requeued.stderr
    assert requeued.stdout.startswith(f"Đã xếp lại sự kiện {event_id}")
    assert Webhook(secret).verify(delivery.body, delivery.headers)["type"] == "sign_request.rejected"
    assert delivery.event_id == event_id
    assert requeued_again.returncode == 2
    assert requeued_again.stderr.startswith(f"Sự kiện webhook {event_id} chưa bị bỏ gửi")
    assert [attempt["status_code"] for attempt in json.loads(delivered.stdout)[0]["attempts"]] == [500, 200]
    assert audit[-3:] == [("application_enrolled",), ("application_webhook_set",), ("webhook_event_requeued",)]
    assert secret[6:] not in audit_text
    assert json.loads(added.stdout)["webhook_secret"][6:] not in audit_text


def test_requeue_without_url_refused(setup: tuple[Server, dict[str, Any], Receiver], tmp_path: Path,
                                     otp_codes: OtpCodes) -> None:
    server, credentials, receiver = setup
    # The session's code source, so that this login does not reuse the previous test's TOTP step.
    otp = otp_codes
    session = cli_login(server.home, credentials["security_officers"][0], otp)
    application_id = credentials["application"]["id"]
    set_result = run_cli(server.home, "webhooks", "set", application_id, "--url", receiver.url, session=session)
    receiver.failing = True
    try:
        request_id = submit(Client(server, credentials, otp), generate_sample_pdf(tmp_path / "in.pdf"), level="B-B")
        reject(Client(server, credentials, otp), request_id)
        abandoned_query = "SELECT id FROM webhook_events WHERE request_id = ? AND abandoned_at IS NOT NULL"
        wait_for(lambda: bool(query(server.home, abandoned_query, (request_id,))), "the event abandoned")
    finally:
        receiver.failing = False
    event_id = query(server.home, abandoned_query, (request_id,))[0][0]
    removed = run_cli(server.home, "webhooks", "remove", application_id, session=session)
    requeued = run_cli(server.home, "webhooks", "requeue", event_id, session=session)
    still_abandoned = query(server.home, abandoned_query, (request_id,))
    unknown_application = run_cli(server.home, "webhooks", "events", "--app", "app-khong-co", session=session)

    assert set_result.returncode == 0, set_result.stderr
    assert removed.returncode == 0, removed.stderr
    assert requeued.returncode == 2
    assert requeued.stderr.startswith(f"Hệ thống một cửa {application_id} không còn địa chỉ webhook")
    assert "signserver webhooks set" in requeued.stderr
    assert still_abandoned == [(event_id,)]
    assert unknown_application.returncode == 2
    assert unknown_application.stderr.startswith("Không tìm thấy hệ thống một cửa app-khong-co")
