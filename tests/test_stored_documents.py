"""A stored document changed on disk after submission is neither approved nor signed.

The approval binds the official's code to the digest recorded at submission.
These tests change the file under the data directory. The approval is then
rejected without spending the code. A request approved before the change
fails at signing, so the changed bytes are never signed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from signserver.signing.sample import generate_sample_pdf
from tests.conftest import TEST_SERVER_ENV
from tests.harness import Client, OtpCodes, Server, free_port, init_home
from tests.postgres import query

APPENDED = b"\n% changed after submission\n"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    home = tmp_path_factory.mktemp("stored-documents-home")
    port = free_port()
    credentials = init_home(home, port)
    # B-T requests meet a TSA that listens nowhere and are put back once, which leaves time to change the file.
    env = {**TEST_SERVER_ENV, "SIGNSERVER_TSA_URLS": f"http://127.0.0.1:{free_port()}/tsa",
           "SIGNSERVER_SIGNING_ATTEMPTS": "2"}
    server = Server(home, port, env).start()
    try:
        yield Client(server, credentials, OtpCodes()), home
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("stored-documents-pdf") / "sample.pdf", pages=1)


def submit(client: Client, pdf: Path, level: str) -> str:
    response = client.submit(pdf, level=level)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def stored_document(home: Path, request_id: str) -> Path:
    (path,) = query(home, "SELECT document_path FROM sign_requests WHERE id = ?", (request_id,))[0]
    return Path(path)


def audit_actions(home: Path, request_id: str) -> list[str]:
    rows = query(home, "SELECT action FROM audit_log WHERE request_id = ? ORDER BY seq", (request_id,))
    return [action for (action,) in rows]


def test_changed_document_rejected_at_approval(service: tuple[Client, Path], sample_pdf: Path) -> None:
    client, home = service
    changed_id = submit(client, sample_pdf, "B-B")
    intact_id = submit(client, sample_pdf, "B-B")
    with stored_document(home, changed_id).open("ab") as stream:
        stream.write(APPENDED)
    official = client.official(0)
    token = client.login(0)
    code = client.otp.next(official["totp_secret"])

    rejected = client.approve(token, [changed_id, intact_id], code)
    assert rejected.status_code == 409, rejected.text
    assert rejected.json()["code"] == "stored_document_changed"
    assert changed_id in rejected.json()["detail"]
    assert client.get(changed_id)["state"] == "pending_approval"

    # The rejected batch did not spend the code.
    accepted = client.approve(token, [intact_id], code)
    assert accepted.status_code == 201, accepted.text
    assert client.wait_final(intact_id)["state"] == "signed"


def test_document_changed_after_approval_not_signed(service: tuple[Client, Path], sample_pdf: Path) -> None:
    client, home = service
    request_id = submit(client, sample_pdf, "B-T")
    official = client.official(0)
    approved = client.approve(client.login(0), [request_id], client.otp.next(official["totp_secret"]))
    assert approved.status_code == 201, approved.text
    deadline = time.monotonic() + 60
    while "signing_postponed" not in audit_actions(home, request_id):
        assert time.monotonic() < deadline, "the first signing attempt was not put back"
        time.sleep(0.2)
    with stored_document(home, request_id).open("ab") as stream:
        stream.write(APPENDED)

    final = client.wait_final(request_id)
    assert final["state"] == "failed", final
    assert final["state_reason"] == "stored_document_changed", final
    assert "signed" not in audit_actions(home, request_id)
