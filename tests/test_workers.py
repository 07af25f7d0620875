"""Several worker processes on one port (SIGNSERVER_WORKERS): signing, metrics, restarts and stopping."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.asymmetric import ec, utils

from tests.csc.conftest import ECDSA_WITH_SHA256_OID, CscClient, random_hashes
from tests.harness import OtpCodes, Server, free_port, init_home, run_cli
from tests.postgres import TEST_STORE

EC_CREDENTIAL = "cred-nguyen-van-an"
# One record of used TOTP steps for the module, since its tests share one server.
OTP_CODES = OtpCodes()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces; the parent id follows the state.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def hsm_signatures_counted(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("signserver_hsm_signatures_total{"))


def workers_in_log(server: Server, event: str) -> set[int]:
    assert server.log_path is not None
    seen = set()
    for line in server.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event and "worker" in record:
                seen.add(record["worker"])
    return seen


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("workers")
    port = free_port()
    credentials = init_home(home, port)
    server = Server(home, port, extra_env={"SIGNSERVER_WORKERS": "2", "SIGNSERVER_LOG_FORMAT": "json"}).start()
    try:
        wait_until(lambda: len(workers_in_log(server, "signserver.started")) == 2, 60, "both workers to serve")
        yield server, credentials
    finally:
        server.stop()


def ec_official(credentials: dict[str, Any]) -> dict[str, Any]:
    return next(official for official in credentials["officials"] if official["credential_id"] == EC_CREDENTIAL)


def certificate_of(client: CscClient) -> x509.Certificate:
    response = client.call("v1", "credentials/info", {"credentialID": EC_CREDENTIAL, "certificates": "single"})
    assert response.status_code == 200, response.text
    import base64

    return x509.load_der_x509_certificate(base64.b64decode(response.json()["cert"]["certificates"][0]))


def test_two_workers_sum_metrics(two_workers: Any) -> None:
    server, credentials = two_workers
    assert server.process is not None
    workers = children_of(server.process.pid)
    assert len(workers) == 2, workers

    client = CscClient(server.url, credentials["application"]["api_key"])
    official = ec_official(credentials)
    hashes = random_hashes(40)
    sad = client.sad("v1", EC_CREDENTIAL, hashes, OTP_CODES.next(official["totp_secret"]))
    public_key = certificate_of(client).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    before = hsm_signatures_counted(server.url)

    for digest in hashes:
        # A new connection for each request, so the kernel hands them to both workers.
        response = client.sign_hash("v1", EC_CREDENTIAL, sad, [digest], ECDSA_WITH_SHA256_OID)
        assert response.status_code == 200, response.text
        import base64

        (signature,) = response.json()["signatures"]
        public_key.verify(base64.b64decode(signature), digest, ec.ECDSA(utils.Prehashed(SHA256())))

    assert workers_in_log(server, "csc.hashes_signed") == {0, 1}
    # Each scrape lands on either worker and must show the sum over both.
    for _ in range(6):
        assert hsm_signatures_counted(server.url) - before == len(hashes)


def test_two_kept_alive_connections_go_to_both_workers(two_workers: Any) -> None:
    """A client pool of two persistent connections, opened one after the other, is served by both workers."""
    server, credentials = two_workers
    official = ec_official(credentials)
    client = CscClient(server.url, credentials["application"]["api_key"])
    hashes = random_hashes(8)
    sad = client.sad("v1", EC_CREDENTIAL, hashes, OTP_CODES.next(official["totp_secret"]))
    assert server.log_path is not None
    already = len(server.log_path.read_text(encoding="utf-8").splitlines())

    sessions = [requests.Session(), requests.Session()]
    for session in sessions:
        # Open the connection now, before any request on the other one.
        assert session.get(f"{server.url}/healthz", timeout=10).status_code == 200
    import base64

    for number, digest in enumerate(hashes):
        response = sessions[number % 2].post(
            f"{server.url}/csc/v1/signatures/signHash", timeout=60,
            headers={"Authorization": f"Bearer {credentials['application']['api_key']}"},
            json={"credentialID": EC_CREDENTIAL, "SAD": sad, "hash": [base64.b64encode(digest).decode()],
                  "signAlgo": ECDSA_WITH_SHA256_OID})
        assert response.status_code == 200, response.text
    for session in sessions:
        session.close()

    new_lines = server.log_path.read_text(encoding="utf-8").splitlines()[already:]
    workers = {json.loads(line)["worker"] for line in new_lines
               if line.startswith("{") and '"csc.hashes_signed"' in line}
    assert workers == {0, 1}


def test_killed_worker_restarted(two_workers: Any) -> None:
    server, credentials = two_workers
    assert server.process is not None
    before = children_of(server.process.pid)
    os.kill(before[-1], signal.SIGKILL)

    after = wait_until(lambda: (found := children_of(server.process.pid)) and len(found) == 2
                       and before[-1] not in found and found, 60, "a new worker")
    assert before[0] in after
    wait_until(lambda: sum(1 for line in server.log_tail(200000).splitlines() if '"signserver.started"' in line) >= 3,
               60, "the new worker to start serving")
    for _ in range(10):
        assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    port = free_port()
    init_home(tmp_path, port)
    server = Server(tmp_path, port, extra_env={"SIGNSERVER_WORKERS": "2", "SIGNSERVER_LOG_FORMAT": "json"}).start()
    assert server.process is not None
    wait_until(lambda: len(workers_in_log(server, "signserver.started")) == 2, 60, "both workers to serve")
    workers = children_of(server.process.pid)
    assert len(workers) == 2
    assert server.stop(signal.SIGTERM, timeout=90) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} still runs"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/healthz", timeout=5)


def test_port_in_use_refused(tmp_path: Path) -> None:
    port = free_port()
    init_home(tmp_path, port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = run_cli(tmp_path, "serve", port=port, timeout=60, SIGNSERVER_WORKERS="2")
    assert result.returncode == 1
    assert f"Không mở được cổng 127.0.0.1:{port}" in result.stderr
    assert "Set another SIGNSERVER_PORT" in result.stderr


def test_second_service_on_one_data_directory_refused(two_workers: Any) -> None:
    """A second serve on the same data directory, even on another port, stops before touching the database."""
    server, _credentials = two_workers
    assert server.log_path is not None
    before = server.log_path.read_text(encoding="utf-8")
    for workers in ("1", "2"):
        result = run_cli(server.home, "serve", port=free_port(), timeout=60, SIGNSERVER_WORKERS=workers)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"PID {server.process.pid}" in result.stderr  # type: ignore[union-attr]
        if TEST_STORE == "sqlite":
            assert "đang dùng thư mục dữ liệu" in result.stderr
            assert "Stop it, or set another SIGNSERVER_HOME" in result.stderr
        else:
            # On PostgreSQL replicas may share the directory; the lock is per node name.
            assert "đang chạy với tên nút" in result.stderr
            assert "give this replica another SIGNSERVER_NODE_NAME" in result.stderr
        assert "signserver.started" not in result.stdout + result.stderr
    # The running service kept its metrics and still serves.
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
    assert "signserver_hsm_signatures_total" in requests.get(f"{server.url}/metrics", timeout=10).text
    assert server.log_path.read_text(encoding="utf-8").startswith(before)


def test_worker_count_not_a_number_refused(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", timeout=60, SIGNSERVER_WORKERS="hai")
    assert result.returncode == 1
    assert "SIGNSERVER_WORKERS='hai' không phải số nguyên" in result.stderr
    assert "is not a whole number" in result.stderr
