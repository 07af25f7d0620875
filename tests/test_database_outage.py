"""PostgreSQL stopped and started under load: 503 database_unavailable meanwhile, then recovery on its own."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from signserver.signing.sample import generate_sample_pdf
from tests.harness import Client, OtpCodes, Server, free_port, init_home
from tests.postgres import PostgresServer, query

SEAL = "cred-seal-ubnd-mau-son"
LOAD_SECONDS_LIMIT = 240


@pytest.fixture(scope="module")
def outage_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, Server, Client, str]]:
    database = PostgresServer(free_port())
    database.start()
    server = None
    try:
        url = database.create_database()
        home = tmp_path_factory.mktemp("db-outage") / "home"
        port = free_port()
        credentials = init_home(home, port, SIGNSERVER_DATABASE_URL=url)
        server = Server(home, port, {"SIGNSERVER_DATABASE_URL": url, "SIGNSERVER_HEARTBEAT_SECONDS": "1",
                                     "SIGNSERVER_INSTANCE_LEASE_SECONDS": "5"}).start()
        yield database, server, Client(server, credentials, OtpCodes()), url
    finally:
        if server is not None:
            server.stop()
        database.remove()


def seal(client: Client, pdf: Path, key: str) -> requests.Response:
    return client.submit(pdf, signer=SEAL, key=key, document_type="BN-TIEPNHAN")


def test_outage_answers_503_and_recovers(outage_setup, tmp_path: Path) -> None:
    database, server, client, url = outage_setup
    pdf = generate_sample_pdf(tmp_path / "in.pdf")
    accepted: list[str] = []
    refused_keys: list[str] = []
    outcomes: Counter[str] = Counter()
    bad: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load(worker: int) -> None:
        number = 0
        deadline = time.monotonic() + LOAD_SECONDS_LIMIT
        while not stop.is_set() and time.monotonic() < deadline:
            number += 1
            key = f"outage-{worker}-{number}"
            try:
                response = seal(client, pdf, key)
            except requests.RequestException as exc:
                with lock:
                    bad.append(f"{key}: {exc!r}")
                continue
            with lock:
                outcomes[str(response.status_code)] += 1
                if response.status_code == 201:
                    accepted.append(response.json()["id"])
                elif response.status_code == 503:
                    body = response.json()
                    if body.get("code") != "database_unavailable" or "Retry-After" not in response.headers:
                        bad.append(f"{key}: {response.status_code} {response.text[:200]}")
                    refused_keys.append(key)
                else:
                    bad.append(f"{key}: {response.status_code} {response.text[:200]}")
            time.sleep(0.05)

    threads = [threading.Thread(target=load, args=(worker,)) for worker in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        database.stop("fast")
        outage_started = time.monotonic()
        readiness = requests.get(f"{server.url}/readyz", timeout=30)
        assert readiness.status_code == 503
        assert readiness.json()["checks"]["database"] is False
        time.sleep(4)
        during = sum(outcomes.values())
        database.start()
        outage_seconds = time.monotonic() - outage_started
        deadline = time.monotonic() + 60
        while requests.get(f"{server.url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "service not ready 60 s after the database came back"
            time.sleep(0.5)
        # Requests keep succeeding after the outage.
        recovered_from = outcomes["201"]
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not bad, bad[:5]
    assert outcomes["503"] > 0, outcomes
    assert outcomes["201"] > recovered_from, outcomes
    assert during > 0
    assert outage_seconds > 3

    # Every accepted request is signed; nothing refused was kept; nothing is stuck.
    for request_id in accepted:
        assert client.wait_final(request_id, timeout=180)["state"] == "signed", request_id
    for key in refused_keys:
        assert query(url, "SELECT id FROM sign_requests WHERE idempotency_key = ?", (key,)) == []
    stuck = query(url, "SELECT id, state FROM sign_requests WHERE state IN ('approved', 'signing')")
    assert stuck == []
    signed = query(url, "SELECT request_id FROM audit_log WHERE action = 'signed'")
    assert sorted(request_id for (request_id,) in signed) == sorted(accepted)
