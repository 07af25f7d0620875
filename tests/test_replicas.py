"""Two replicas on one PostgreSQL database: what must happen once happens once.

Both replicas serve the same data directory (SoftHSM token, PKI, documents)
as two nodes (SIGNSERVER_NODE_NAME), on their own ports, against a
PostgreSQL server the tests start. Each race sends the same thing to both
replicas at the same moment, released by a barrier.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from asn1crypto import algos, tsp

from signserver.signing.sample import generate_sample_pdf
from tests.csc.conftest import CscClient, random_hashes
from tests.harness import Client, OtpCodes, Server, cli_login, free_port, init_home, run_cli
from tests.postgres import database_url_for_home, query

SEAL = "cred-seal-ubnd-mau-son"


def at_once(*calls: Callable[[], requests.Response]) -> list[requests.Response]:
    """Run ``calls`` on threads released together; return their responses in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], requests.Response]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for result in results:
        assert isinstance(result, requests.Response), result
    return results


class Replicas:
    def __init__(self, home: Path, credentials: dict[str, Any], servers: list[Server], database_url: str) -> None:
        self.home = home
        self.credentials = credentials
        self.servers = servers
        self.database_url = database_url
        self.otp = OtpCodes()
        self.clients = [Client(server, credentials, self.otp) for server in servers]

    def audit_actions(self, request_id: str) -> list[str]:
        rows = query(self.database_url, "SELECT action FROM audit_log WHERE request_id = ? ORDER BY seq",
                     (request_id,))
        return [action for (action,) in rows]

    def csc(self, index: int) -> CscClient:
        application = self.credentials["application"]
        response = requests.post(f"{self.servers[index].url}/csc/v2/auth/login", json={},
                                 auth=(application["username"], application["password"]), timeout=30)
        response.raise_for_status()
        return CscClient(self.servers[index].url, response.json()["access_token"])


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    home = tmp_path_factory.mktemp("replicas") / "home"
    database_url = database_url_for_home(home)
    ports = [free_port(), free_port()]
    credentials = init_home(home, ports[0], SIGNSERVER_DATABASE_URL=database_url)
    servers = []
    try:
        for name, port in zip(("replica-a", "replica-b"), ports):
            # A short lease, so that each replica also takes up approved requests the other holds.
            servers.append(Server(home, port, {"SIGNSERVER_DATABASE_URL": database_url,
                                               "SIGNSERVER_NODE_NAME": name,
                                               "SIGNSERVER_HEARTBEAT_SECONDS": "1",
                                               "SIGNSERVER_INSTANCE_LEASE_SECONDS": "3"}).start())
        yield Replicas(home, credentials, servers, database_url)
    finally:
        for server in servers:
            server.stop()


def test_replicas_share_one_postgresql_database(replicas: Replicas) -> None:
    assert replicas.database_url.startswith("postgresql+asyncpg://")
    nodes = {node for (node,) in query(replicas.database_url, "SELECT node FROM service_instances")}
    assert nodes == {"replica-a", "replica-b"}


def test_same_otp_code_accepted_by_one_replica(replicas: Replicas, tmp_path: Path) -> None:
    first, second = replicas.clients
    official = first.official(0)
    tokens = [first.login(0), second.login(0)]
    outcomes = []
    for round_number in range(3):
        ids = [client.submit(generate_sample_pdf(tmp_path / f"in-{round_number}-{n}.pdf")).json()["id"]
               for n, client in enumerate(replicas.clients)]
        code = replicas.otp.next(official["totp_secret"])
        responses = at_once(lambda: first.approve(tokens[0], [ids[0]], code),
                            lambda: second.approve(tokens[1], [ids[1]], code))
        statuses = sorted(response.status_code for response in responses)
        refused = [response for response in responses if response.status_code != 201]
        outcomes.append(statuses)
        assert statuses[0] == 201, [response.text for response in responses]
        assert len(refused) == 1, [response.text for response in responses]
        assert refused[0].json()["code"] == "otp_replayed", refused[0].text
        states = [first.get(request_id)["state"] for request_id in ids]
        assert states.count("pending_approval") == 1, states
    assert len(outcomes) == 3


def test_concurrent_approvals_sign_once(replicas: Replicas, tmp_path: Path) -> None:
    first, second = replicas.clients
    official = first.official(1)
    tokens = [first.login(1), second.login(1)]
    for round_number in range(2):
        submitted = first.submit(generate_sample_pdf(tmp_path / f"once-{round_number}.pdf"),
                                 signer=official["credential_id"]).json()
        # Two different valid codes of the same official: both pass the OTP check, one approval wins.
        codes = [replicas.otp.next(official["totp_secret"]), replicas.otp.next(official["totp_secret"])]
        responses = at_once(lambda: first.approve(tokens[0], [submitted["id"]], codes[0]),
                            lambda: second.approve(tokens[1], [submitted["id"]], codes[1]))
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201, 409], [response.text for response in responses]
        assert first.wait_final(submitted["id"])["state"] == "signed"
        # Both replicas take up approved requests left waiting; the claim lets only one sign.
        actions = replicas.audit_actions(submitted["id"])
        assert actions.count("approved") == 1, actions
        assert actions.count("signing_started") == 1, actions
        assert actions.count("signed") == 1, actions


def test_same_sad_spent_on_one_replica(replicas: Replicas) -> None:
    cscs = [replicas.csc(0), replicas.csc(1)]
    official = replicas.clients[0].official(0)
    credential = official["credential_id"]
    hashes = random_hashes(6)
    sad = cscs[0].sad("v2", credential, hashes, replicas.otp.next(official["totp_secret"]))
    algorithm = "1.2.840.113549.1.1.11"
    signed_hashes = []
    for digest in hashes[:5]:
        responses = at_once(lambda: cscs[0].sign_hash("v2", credential, sad, [digest], algorithm),
                            lambda: cscs[1].sign_hash("v2", credential, sad, [digest], algorithm))
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200, 400], [response.text for response in responses]
        signed_hashes.append(digest.hex())
    trail = query(replicas.database_url, "SELECT details_json FROM audit_log WHERE action = 'csc_hashes_signed'")
    recorded = [digest for (details,) in trail for digest in json.loads(details).get("hashes", [])]
    assert sorted(recorded) == sorted(signed_hashes)


def _time_stamp_query() -> bytes:
    imprint = tsp.MessageImprint({"hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                                  "hashed_message": hashlib.sha256(secrets.token_bytes(16)).digest()})
    return tsp.TimeStampReq({"version": 1, "message_imprint": imprint,
                             "nonce": int.from_bytes(secrets.token_bytes(8), "big"), "cert_req": False}).dump()


def test_tsa_serials_unique_across_replicas(replicas: Replicas) -> None:
    serials: list[int] = []
    lock = threading.Lock()

    def stamp(url: str, count: int) -> None:
        with requests.Session() as session:
            for _ in range(count):
                response = session.post(f"{url}/tsa", data=_time_stamp_query(),
                                        headers={"Content-Type": "application/timestamp-query"}, timeout=30)
                assert response.status_code == 200, response.text
                token = tsp.TimeStampResp.load(response.content)["time_stamp_token"]
                info = token["content"]["encap_content_info"]["content"].parsed
                with lock:
                    serials.append(info["serial_number"].native)

    threads = [threading.Thread(target=stamp, args=(server.url, 40)) for server in replicas.servers for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(serials) == 240
    assert len(set(serials)) == 240


def test_audit_chain_verifies_after_races(replicas: Replicas) -> None:
    rows = query(replicas.database_url, "SELECT seq FROM audit_log ORDER BY seq")
    sequence = [seq for (seq,) in rows]
    assert sequence == list(range(sequence[0], sequence[0] + len(sequence)))
    auditor = replicas.credentials["auditors"][0]
    session = cli_login(replicas.home, auditor, replicas.otp, replicas.servers[0].port,
                        SIGNSERVER_DATABASE_URL=replicas.database_url)
    result = run_cli(replicas.home, "audit", "verify", session=session, port=replicas.servers[0].port,
                     SIGNSERVER_DATABASE_URL=replicas.database_url, SIGNSERVER_NODE_NAME="replica-a")
    assert result.returncode == 0, result.stderr
