"""Fixtures shared by the integration tests, and the hooks that let pytest-xdist run them in parallel.

Each test session gets one initialised data directory and one server. Under
pytest-xdist every worker is a session of its own, with its own directory and server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.certomancer_pki import CertomancerPki, start_certomancer_pki
from tests.harness import Client, OtpCodes, Server, cli_login, free_port, init_home
from tests.ports import PORT_CLAIMS_ENV
from tests.verifiers import make_nss_trust_db

# Limits small enough to test quickly; the defaults are 50 MiB, 72 hours and 15 minutes.
TEST_SERVER_ENV = {
    "SIGNSERVER_MAX_BODY_BYTES": str(8 * 1024 * 1024),
    "SIGNSERVER_MIN_REQUEST_TTL_SECONDS": "1",
    "SIGNSERVER_OTP_LOCKOUT_SECONDS": "4",
    # Short enough that a test can wait for a CSC SAD to expire.
    "SIGNSERVER_SAD_TTL_SECONDS": "3",
}


PORT_CLAIMS_KEY = pytest.StashKey[str]()


def distributes_tests(config: pytest.Config) -> bool:
    """Return True in a pytest-xdist controller, the process that hands the tests to worker processes."""
    if hasattr(config, "workerinput"):
        return False
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def pytest_configure(config: pytest.Config) -> None:
    # The workers start after this hook and copy the controller's environment, so they share one directory.
    if distributes_tests(config):
        claims = tempfile.mkdtemp(prefix="signserver-test-ports-")
        config.stash[PORT_CLAIMS_KEY] = claims
        os.environ[PORT_CLAIMS_ENV] = claims


def pytest_unconfigure(config: pytest.Config) -> None:
    claims = config.stash.get(PORT_CLAIMS_KEY, None)
    if claims is not None:
        os.environ.pop(PORT_CLAIMS_ENV, None)
        shutil.rmtree(claims, ignore_errors=True)


def corpus_directory() -> Path:
    return Path(os.environ.get("SIGNSERVER_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus")


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    directory = corpus_directory()
    if not directory.is_dir():
        pytest.skip(f"real-PDF corpus not found at {directory} (set SIGNSERVER_CORPUS); corpus tests not run")
    return directory


@pytest.fixture(scope="session")
def service_port() -> int:
    """The session server's port, chosen before init because the demo CA's URLs in the certificates name it."""
    return free_port()


# The test server's policy leaves out the agency seal, so a seal request shows a policy denial.
TEST_POLICY = """\
description: Test policy — the two demo officials' keys for the demo one-stop application; no seal.
keys:
  - credential: cred-tran-thi-bich-ngoc
    owner: {officials: [off-tran-thi-bich-ngoc]}
    rules:
      - id: test-ngoc
        applications: [app-motcua-demo]
        formats: [pades, cades, raw]
  - credential: cred-nguyen-van-an
    owner: {officials: [off-nguyen-van-an]}
    rules:
      - id: test-an
        applications: [app-motcua-demo]
        formats: [pades, cades, raw]
"""


@pytest.fixture(scope="session")
def test_policies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("policies")
    (directory / "test.yaml").write_text(TEST_POLICY, encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def service_home(tmp_path_factory: pytest.TempPathFactory, service_port: int,
                 test_policies_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The session's data directory; ``signserver init`` stores the test policy as its first version."""
    home = tmp_path_factory.mktemp("signserver-home")
    return home, init_home(home, service_port, SIGNSERVER_POLICIES_DIR=str(test_policies_dir))


@pytest.fixture(scope="session")
def server(service_home: tuple[Path, dict[str, Any]], service_port: int) -> Iterator[Server]:
    home, _credentials = service_home
    running = Server(home, service_port, dict(TEST_SERVER_ENV)).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def credentials(service_home: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return service_home[1]


@pytest.fixture(scope="session")
def otp_codes() -> OtpCodes:
    return OtpCodes()


@pytest.fixture(scope="session")
def auditor_session(service_home: tuple[Path, dict[str, Any]], otp_codes: OtpCodes) -> str:
    """A CLI session of the demo auditor on the session's data directory, for `signserver audit ...`."""
    home, credentials = service_home
    return cli_login(home, credentials["auditors"][0], otp_codes)


@pytest.fixture(scope="session")
def client(server: Server, credentials: dict[str, Any], otp_codes: OtpCodes) -> Client:
    return Client(server, credentials, otp_codes)


@pytest.fixture(scope="session")
def demo_root(service_home: tuple[Path, dict[str, Any]]) -> Path:
    return service_home[0] / "demo-root.pem"


@pytest.fixture(scope="session")
def nss_db(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> Path:
    return make_nss_trust_db(tmp_path_factory.mktemp("nssdb"), demo_root)


@pytest.fixture(scope="session")
def certomancer_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertomancerPki]:
    """A certomancer PKI (tests/certomancer_pki.py) serving OCSP, CRLs and a TSA on loopback, for the session."""
    pki = start_certomancer_pki(tmp_path_factory.mktemp("certomancer"))
    yield pki
    pki.stop()
