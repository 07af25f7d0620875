"""SIGTERM: the service finishes the signatures it started, then exits 0; nothing is left interrupted."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from signserver.signing.sample import generate_sample_pdf
from tests.harness import Client, OtpCodes, Server, free_port, init_home
from tests.postgres import query

SEAL = "cred-seal-ubnd-mau-son"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_started_signatures(tmp_path: Path, workers: str) -> None:
    home = tmp_path / "home"
    port = free_port()
    credentials = init_home(home, port)
    server = Server(home, port, {"SIGNSERVER_WORKERS": workers}).start(timeout=120)
    client = Client(server, credentials, OtpCodes())
    pdf = generate_sample_pdf(tmp_path / "in.pdf")
    submitted = [client.submit(pdf, signer=SEAL, document_type="BN-TIEPNHAN", key=f"stop-{n}").json()["id"]
                 for n in range(4)]
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)

    assert server.process.wait(timeout=90) == 0

    states = dict(query(home, "SELECT id, state FROM sign_requests"))
    assert sorted(states) == sorted(submitted)
    # Each request the service had taken was signed before it exited, or is still waiting to be signed.
    assert set(states.values()) <= {"signed", "approved"}, states
    assert "signing" not in states.values()
    log = server.log_tail(200000)
    assert "signing_interrupted" not in log

    restarted = Server(home, port).start(timeout=120)
    try:
        for request_id in submitted:
            assert Client(restarted, credentials, OtpCodes()).wait_final(request_id)["state"] == "signed"
    finally:
        restarted.stop()
    actions = [action for (action,) in query(home, "SELECT action FROM audit_log WHERE action LIKE 'sign%'")]
    assert actions.count("signed") == len(submitted)
    assert actions.count("signing_failed") == 0
