"""A pending request survives a restart and can still be approved; an interrupted one is never signed twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from signserver.signing.sample import generate_sample_pdf
from tests.harness import Client, OtpCodes, Server, free_port, init_home
from tests.postgres import query


@pytest.fixture(scope="module")
def own_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("restart-home")
    return home, init_home(home)


def test_pending_request_survives_restart(own_home: tuple[Path, dict], tmp_path: Path) -> None:
    home, credentials = own_home
    first = Server(home, free_port()).start()
    try:
        client = Client(first, credentials, OtpCodes())
        request_id = client.submit(generate_sample_pdf(tmp_path / "in.pdf")).json()["id"]
    finally:
        assert first.stop() == 0

    second = Server(home, free_port()).start()
    try:
        client = Client(second, credentials, OtpCodes())
        assert client.get(request_id)["state"] == "pending_approval"
        official = credentials["officials"][0]
        approved = client.approve(client.login(0), [request_id], client.otp.next(official["totp_secret"]))
        assert approved.status_code == 201, approved.text
        assert client.wait_final(request_id)["state"] == "signed"
    finally:
        second.stop()


def test_interrupted_signing_failed_at_startup(own_home: tuple[Path, dict], tmp_path: Path) -> None:
    home, credentials = own_home
    server = Server(home, free_port()).start()
    client = Client(server, credentials, OtpCodes())
    request_id = client.submit(generate_sample_pdf(tmp_path / "in.pdf")).json()["id"]
    server.stop()

    # What a crash between claiming and finishing leaves behind.
    query(home, "UPDATE sign_requests SET state = 'signing' WHERE id = ?", (request_id,))

    restarted = Server(home, free_port()).start()
    try:
        state = Client(restarted, credentials, OtpCodes()).get(request_id)
        assert state["state"] == "failed"
        assert state["state_reason"] == "signing_interrupted"
    finally:
        restarted.stop()
