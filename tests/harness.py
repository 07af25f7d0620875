"""Test harness: a real data directory (SoftHSM token, demo PKI) and a real server on loopback."""

from __future__ import annotations

import json
import os
import signal
import io
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import requests

from tests.postgres import database_url_for_home, use_postgres
from tests.ports import free_port  # noqa: F401 - tests import free_port from here

REPO = Path(__file__).resolve().parent.parent
SIGNSERVER = str(REPO / ".venv" / "bin" / "signserver")
if not Path(SIGNSERVER).exists():
    SIGNSERVER = str(Path(sys.executable).with_name("signserver"))


# `signserver --help` took 14 s at load average 6 on 2 cores, and a login also checks an Argon2 password hash,
# so the OTP code given to `signserver login` must stay valid well beyond that.
CLI_OTP_VALID_SECONDS = 45


def service_env(home: Path, port: int | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("SIGNSERVER_") or name == "SOFTHSM2_CONF":
            del env[name]
    env["SIGNSERVER_HOME"] = str(home)
    env["SOFTHSM2_CONF"] = str(home / "softhsm2.conf")
    if use_postgres():
        env["SIGNSERVER_DATABASE_URL"] = database_url_for_home(home)
    if port is not None:
        env["SIGNSERVER_PORT"] = str(port)
    env.update(extra)
    return env


def init_home(home: Path, port: int | None = None, **extra: str) -> dict[str, Any]:
    """Run ``signserver init`` in ``home`` and return the demo credentials.

    The demo CA's OCSP and CRL URLs in the certificates point at ``port``
    (8080 when None), so a server that should serve them must later listen
    on that same port.
    """
    subprocess.run([SIGNSERVER, "init"], env=service_env(home, port, **extra), check=True, capture_output=True,
                   timeout=180)
    return json.loads((home / "demo-credentials.json").read_text(encoding="utf-8"))


def cli_login(home: Path, person: dict[str, Any], otp: "OtpCodes", port: int | None = None, **extra: str) -> str:
    """Run ``signserver login`` as ``person`` (from the demo credentials) and return the session token."""
    code = otp.next(person["totp_secret"], valid_for=CLI_OTP_VALID_SECONDS)
    result = subprocess.run(
        [SIGNSERVER, "login", "--user", person["username"], "--otp", code],
        env=service_env(home, port, SIGNSERVER_PASSWORD=person["password"], **extra), capture_output=True,
        text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def run_cli(home: Path, *args: str, session: str | None = None, port: int | None = None,
            timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run a ``signserver`` command on ``home``, as the person of ``session`` when given."""
    if session is not None:
        extra["SIGNSERVER_SESSION"] = session
    return subprocess.run([SIGNSERVER, *args], env=service_env(home, port, **extra), capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class Server:
    home: Path
    port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "Server":
        self.log_path = self.home / f"server-{self.port}.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [SIGNSERVER, "serve"], env=service_env(self.home, self.port, **self.extra_env),
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def log_tail(self, size: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-size:].decode(errors="replace")


class OtpCodes:
    """Hands out TOTP codes of steps not yet used in this test run.

    The server accepts each step once per official, and it accepts the current
    step plus one either side. A test run may therefore use up to three fresh
    codes at once and one more every 30 seconds. This waits when all three were used.
    """

    def __init__(self) -> None:
        self.used: dict[str, set[int]] = {}

    def next(self, secret: str, valid_for: float = 5) -> str:
        """Return the code of an unused step that the server still accepts ``valid_for`` seconds from now."""
        totp = pyotp.TOTP(secret)
        used = self.used.setdefault(secret, set())
        while True:
            now = time.time()
            current = int(now) // 30
            for step in (current - 1, current, current + 1):
                # The server accepts the code of step s until step s + 1 ends.
                if step in used or (step + 2) * 30 - now < valid_for:
                    continue
                used.add(step)
                return totp.generate_otp(step)
            time.sleep(30 - time.time() % 30 + 0.2)

    def mark_used_since(self, secret: str, started: float) -> None:
        """Mark as used every step from the one at ``started`` (a time.time() value) to the current one.

        A process that computed its own code between those times may have used any of them.
        """
        self.used.setdefault(secret, set()).update(range(int(started) // 30, int(time.time()) // 30 + 1))


class Client:
    """Small helpers over the native API with requests."""

    def __init__(self, server: Server, credentials: dict[str, Any], otp: OtpCodes) -> None:
        self.url = server.url
        self.credentials = credentials
        self.otp = otp
        self.api_key = credentials["application"]["api_key"]

    def app_headers(self, language: str = "vi") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Accept-Language": language}

    def official(self, index: int = 0) -> dict[str, Any]:
        return self.credentials["officials"][index]

    def submit(self, pdf: Path | bytes, *, signer: str | None = None, key: str | None = None,
               language: str = "vi", filename: str = "document.pdf", **metadata: Any) -> requests.Response:
        body = {
            "idempotency_key": key or f"test-{time.time_ns()}",
            "dossier_code": "000.00.01.H01-261204-0099",
            "title": "Giấy xác nhận thử nghiệm",
            "signer": signer or self.official(0)["credential_id"],
            "reason": "Phê duyệt kết quả",
            "location": "Huyện Mẫu Sơn",
        }
        body.update(metadata)
        content = pdf.read_bytes() if isinstance(pdf, Path) else pdf
        files = {
            "metadata": (None, json.dumps(body, ensure_ascii=False), "application/json"),
            "document": (filename, content, "application/pdf"),
        }
        return requests.post(f"{self.url}/api/v1/sign-requests", files=files, headers=self.app_headers(language),
                             timeout=120)

    def login(self, index: int = 0) -> str:
        official = self.official(index)
        response = requests.post(f"{self.url}/api/v1/sessions", json={
            "username": official["username"], "password": official["password"]}, timeout=30)
        response.raise_for_status()
        return response.json()["token"]

    def approve(self, token: str, request_ids: list[str], otp: str, language: str = "vi") -> requests.Response:
        return requests.post(f"{self.url}/api/v1/approvals", json={"request_ids": request_ids, "otp": otp},
                             headers={"Authorization": f"Bearer {token}", "Accept-Language": language}, timeout=60)

    def get(self, request_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.url}/api/v1/sign-requests/{request_id}", headers=self.app_headers(),
                                timeout=30)
        response.raise_for_status()
        return response.json()

    def wait_final(self, request_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.get(request_id)
            if state["state"] in ("signed", "failed", "rejected", "expired"):
                return state
            time.sleep(0.2)
        raise AssertionError(f"request {request_id} not final after {timeout} s")

    def download(self, request_id: str, output: Path) -> Path:
        response = requests.get(f"{self.url}/api/v1/sign-requests/{request_id}/signed-document",
                                headers=self.app_headers(), timeout=60)
        response.raise_for_status()
        output.write_bytes(response.content)
        return output


def zip_document(entries: dict[str, bytes]) -> bytes:
    """Return a ZIP archive of ``entries`` (name → content), as a dossier of attachments."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()
