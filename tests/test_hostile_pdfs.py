"""Hostile and damaged PDF files against a real service: each is rejected or signed, in bounded time and memory.

Every file of ``tests/hostile_pdfs.py`` is sent as a seal request that the
demo policy signs without approval, and then to ``POST /api/v1/validations``.
Each response must be a 4xx problem whose code has Vietnamese and English
messages, or, for a seal request, a signed PDF with a valid signature for
pdfsig that qpdf finds no worse than the file sent.
After each file the service must still run and return 200 on /healthz, and the
peak resident memory of its processes must stay within a bound above idle.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from signserver.config import PROJECT_ROOT
from tests.harness import Client, OtpCodes, Server, free_port, init_home
from tests.hostile_pdfs import HOSTILE_BUILDERS, valid_pdf, write_hostile_set
from tests.verifiers import make_nss_trust_db, pdfsig_signatures, qpdf_check

QPDF_SECONDS = 60

SEAL_CREDENTIAL = "cred-seal-ubnd-mau-son"
# The demo policy seals this document type at once, without a clerk's approval.
UNATTENDED_DOCUMENT_TYPE = "BN-TIEPNHAN"
SECONDS_PER_FILE = 20.0
# Peak resident memory of the service's processes allowed above their idle size.
MEMORY_BOUND_BYTES = 1024 * 1024 * 1024
SERVER_ENV = {"SIGNSERVER_MAX_BODY_BYTES": str(50 * 1024 * 1024)}

# Files that a careful reader repairs or reads past, so they must be signed, not rejected.
MUST_SIGN = {"mixed-line-endings", "lying-length"}
# Files whose seal request must be rejected with this code, because a limit or a rule of the service applies.
SEAL_REJECTED_WITH = {
    "many-objects": "pdf_too_complex",
    "many-pages": "pdf_too_complex",
    "page-count-lies": "pdf_too_complex",
    "xref-stream-millions": "pdf_too_complex",
    "huge-page-count": "pdf_too_complex",
    "deep-page-tree": "pdf_too_complex",
    "encrypted-unknown-password": "pdf_password_required",
    "empty": "pdf_invalid",
    "not-a-pdf": "pdf_invalid",
    "bomb-object-stream": "pdf_invalid",
    "bomb-xref-stream": "pdf_invalid",
}


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_hostile_set(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def seal_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Client, Path]]:
    """A service with the demo policy, whose seal rule for receipts needs no approval, and an NSS trust store."""
    home = tmp_path_factory.mktemp("hostile-home")
    port = free_port()
    credentials = init_home(home, port)
    server = Server(home, port, dict(SERVER_ENV)).start()
    try:
        nss_db = make_nss_trust_db(tmp_path_factory.mktemp("hostile-nss"), home / "demo-root.pem")
        yield server, Client(server, credentials, OtpCodes()), nss_db
    finally:
        server.stop()


@pytest.fixture(scope="module")
def idle_memory(seal_service: tuple[Server, Client, Path]) -> dict[int, int]:
    """The resident size in bytes of each service process, after one warm-up seal of a valid file."""
    server, client, _ = seal_service
    response = _submit_seal(client, valid_pdf(), "warm-up.pdf")
    assert response.status_code == 201, response.text
    assert client.wait_final(response.json()["id"], timeout=60)["state"] == "signed"
    return {pid: _status_bytes(pid, "VmRSS") for pid in _process_tree(_server_pid(server))}


@pytest.fixture(scope="module")
def problem_codes() -> dict[str, dict[str, str]]:
    catalog = PROJECT_ROOT / "signserver" / "i18n" / "messages.json"
    return json.loads(catalog.read_text(encoding="utf-8"))


def _server_pid(server: Server) -> int:
    assert server.process is not None
    return server.process.pid


def _process_tree(root: int) -> list[int]:
    """Return ``root`` and its descendants, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces, so the fields are read after the last ')'.
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    tree = [root]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def _status_bytes(pid: int, field: str) -> int:
    """Return a ``kB`` field of /proc/PID/status (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not found in /proc/{pid}/status")


def _submit_seal(client: Client, content: bytes, filename: str) -> requests.Response:
    metadata = {
        "idempotency_key": f"hostile-{time.time_ns()}",
        "dossier_code": "000.00.01.H01-261204-0099",
        "title": "Phiếu tiếp nhận hồ sơ và hẹn trả kết quả",
        "signer": SEAL_CREDENTIAL,
        "document_type": UNATTENDED_DOCUMENT_TYPE,
    }
    files = {
        "metadata": (None, json.dumps(metadata, ensure_ascii=False), "application/json"),
        "document": (filename, content, "application/pdf"),
    }
    return requests.post(f"{client.url}/api/v1/sign-requests", files=files, headers=client.app_headers(),
                         timeout=SECONDS_PER_FILE)


def _validate(client: Client, content: bytes) -> requests.Response:
    files = {"file": ("file", content, "application/octet-stream")}
    return requests.post(f"{client.url}/api/v1/validations", files=files, headers=client.app_headers("en"),
                         timeout=SECONDS_PER_FILE)


def _wait_final(client: Client, request_id: str, deadline: float) -> dict[str, Any]:
    while time.monotonic() < deadline:
        state = client.get(request_id)
        if state["state"] in ("signed", "failed", "rejected", "expired"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"request {request_id} not final within {SECONDS_PER_FILE} s of its submission")


def _assert_problem(response: requests.Response, problem_codes: dict[str, dict[str, str]]) -> str:
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    body = response.json()
    assert body["code"] in problem_codes, body
    assert problem_codes[body["code"]].get("vi"), body["code"]
    assert problem_codes[body["code"]].get("en"), body["code"]
    assert body["detail"], body
    return body["code"]


def _assert_service_healthy(server: Server, idle_memory: dict[int, int]) -> None:
    assert server.process is not None
    assert server.process.poll() is None, server.log_tail()
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    for pid, idle in idle_memory.items():
        assert Path(f"/proc/{pid}").exists(), f"service process {pid} ended: {server.log_tail()}"
        peak = _status_bytes(pid, "VmHWM")
        assert peak - idle < MEMORY_BOUND_BYTES, f"process {pid}: peak {peak} bytes, idle {idle} bytes"


def _qpdf_exit_code(pdf: Path, option: str) -> int:
    return subprocess.run(["qpdf", option, str(pdf)], capture_output=True, timeout=QPDF_SECONDS).returncode


def _assert_qpdf_no_worse(source: Path, signed: Path, name: str) -> None:
    """Assert that qpdf reads ``signed`` with no more trouble than ``source`` (exit 0 ok, 3 warnings, 2 errors)."""
    # qpdf --check decodes every stream, which takes minutes for the bombs'
    # gigabytes, so for them qpdf only reads the structure and the page tree.
    option = "--show-npages" if name.startswith("bomb-") else "--check"
    source_code = _qpdf_exit_code(source, option)
    signed_code = _qpdf_exit_code(signed, option)
    assert signed_code in (0, source_code), f"qpdf {option}: {signed_code} for the signed file, {source_code} before"


def test_valid_control_signed(seal_service: tuple[Server, Client, Path], idle_memory: dict[int, int],
                              tmp_path: Path) -> None:
    server, client, nss_db = seal_service
    submitted = _submit_seal(client, valid_pdf(), "valid.pdf")
    assert submitted.status_code == 201, submitted.text

    final = _wait_final(client, submitted.json()["id"], time.monotonic() + SECONDS_PER_FILE)
    assert final["state"] == "signed", final
    signed = client.download(final["id"], tmp_path / "signed.pdf")
    assert pdfsig_signatures(signed, nss_db)[0].signature_valid
    assert qpdf_check(signed)[0]
    _assert_service_healthy(server, idle_memory)


@pytest.mark.parametrize("name", list(HOSTILE_BUILDERS))
def test_hostile_pdf_rejected_or_signed(name: str, hostile_files: dict[str, Path],
                                        seal_service: tuple[Server, Client, Path], idle_memory: dict[int, int],
                                        problem_codes: dict[str, dict[str, str]], tmp_path: Path) -> None:
    server, client, nss_db = seal_service
    content = hostile_files[name].read_bytes()

    started = time.monotonic()
    submitted = _submit_seal(client, content, f"{name}.pdf")
    signed = None
    if submitted.status_code == 201:
        final = _wait_final(client, submitted.json()["id"], started + SECONDS_PER_FILE)
        assert final["state"] == "signed", final
        signed = client.download(final["id"], tmp_path / "signed.pdf")
    else:
        assert name not in MUST_SIGN, submitted.text
        code = _assert_problem(submitted, problem_codes)
        assert code == SEAL_REJECTED_WITH.get(name, code)
    assert time.monotonic() - started < SECONDS_PER_FILE
    _assert_service_healthy(server, idle_memory)

    if signed is not None:
        signatures = pdfsig_signatures(signed, nss_db)
        assert len(signatures) == 1
        assert signatures[0].signature_valid, signatures[0].raw
        _assert_qpdf_no_worse(hostile_files[name], signed, name)

    started = time.monotonic()
    validated = _validate(client, content)
    if validated.status_code != 200:
        _assert_problem(validated, problem_codes)
    assert time.monotonic() - started < SECONDS_PER_FILE
    _assert_service_healthy(server, idle_memory)
