"""Signing with external TSAs: failover in order, and a clear failure on a wrong nonce or no response.

A first server on the module's own data directory serves /tsa; a second server
on the same directory (so both trust the same demo root) is configured to use
external TSA URLs: dead ones, a fake that responds with HTTP 500, a fake that
never responds, a fake that sends bytes that are no TimeStampResp, and a fake
that alters the nonce before forwarding to the real /tsa.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from asn1crypto import tsp

from signserver.signing.sample import generate_sample_pdf
from tests.harness import Client, OtpCodes, Server, free_port, init_home
from tests.postgres import copy_store, use_postgres
from tests.verifiers import pyhanko_validate


class FakeTsa:
    """A loopback HTTP server that responds 500, never responds, sends garbage, or changes the nonce.

    ``mode`` is ``error``, ``hang`` (until ``close``), ``garbage``, or
    ``wrong_nonce`` (forward to ``upstream`` with the nonce changed).
    """

    def __init__(self, mode: str, upstream: str | None = None) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests += 1
                if fake.mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                if fake.mode == "hang":
                    fake.closing.wait(60)
                    return
                if fake.mode == "garbage":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/timestamp-reply")
                    self.send_header("Content-Length", "64")
                    self.end_headers()
                    self.wfile.write(secrets.token_bytes(64))
                    return
                request = tsp.TimeStampReq.load(body)
                request["nonce"] = request["nonce"].native + 1
                forwarded = urllib.request.Request(
                    fake.upstream, data=request.dump(), headers={"Content-Type": "application/timestamp-query"}
                )
                with urllib.request.urlopen(forwarded, timeout=10) as reply:
                    data = reply.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        self.mode = mode
        self.upstream = upstream
        self.requests = 0
        self.closing = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tsa"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def tsa_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict, Server]]:
    home = tmp_path_factory.mktemp("tsa-home")
    credentials = init_home(home)
    # The external TSA is a second service with a copy of the same data directory (same PKI and TSA key):
    # one data directory serves one service at a time.
    provider_home = tmp_path_factory.mktemp("tsa-provider") / "home"
    shutil.copytree(home, provider_home)
    conf = provider_home / "softhsm2.conf"
    conf.write_text(conf.read_text(encoding="utf-8").replace(str(home / "tokens"), str(provider_home / "tokens")),
                    encoding="utf-8")
    # With PostgreSQL the store is outside the directory, so the copy gets a copy of the database too.
    store = {"SIGNSERVER_DATABASE_URL": copy_store(home, provider_home / "signserver.db")} if use_postgres() else {}
    provider = Server(provider_home, free_port(), store).start()
    yield home, credentials, provider
    provider.stop()


@pytest.fixture(scope="module")
def otp() -> OtpCodes:
    return OtpCodes()


def sign_with(home: Path, credentials: dict, urls: list[str], otp: OtpCodes, workdir: Path,
              attempts: int = 1) -> tuple[dict, Server]:
    server = Server(home, free_port(), {"SIGNSERVER_TSA_URLS": ",".join(urls),
                                        "SIGNSERVER_TSA_TIMEOUT_SECONDS": "3",
                                        "SIGNSERVER_SIGNING_ATTEMPTS": str(attempts)}).start()
    try:
        client = Client(server, credentials, otp)
        request_id = client.submit(generate_sample_pdf(workdir / "in.pdf")).json()["id"]
        official = credentials["officials"][0]
        approved = client.approve(client.login(0), [request_id], otp.next(official["totp_secret"]))
        assert approved.status_code == 201, approved.text
        final = client.wait_final(request_id)
        if final["state"] == "signed":
            client.download(request_id, workdir / "out.pdf")
        return final, server
    finally:
        server.stop()


def test_failover_to_next_tsa(tsa_home, otp, tmp_path: Path) -> None:
    home, credentials, provider = tsa_home
    broken = FakeTsa("error")
    try:
        final, server = sign_with(home, credentials, ["http://127.0.0.1:9/tsa", broken.url, f"{provider.url}/tsa"],
                                  otp, tmp_path)
    finally:
        broken.close()
    assert final["state"] == "signed", final
    assert broken.requests == 1
    assert server.log_tail(20000).count("tsa.request_failed") == 2
    assert pyhanko_validate(tmp_path / "out.pdf", home / "demo-root.pem")[0]["timestamp_valid"]


def test_wrong_nonce_fails_request(tsa_home, otp, tmp_path: Path) -> None:
    home, credentials, provider = tsa_home
    tampering = FakeTsa("wrong_nonce", upstream=f"{provider.url}/tsa")
    try:
        final, server = sign_with(home, credentials, [tampering.url], otp, tmp_path)
    finally:
        tampering.close()
    assert final["state"] == "failed"
    assert final["state_reason"] == "tsa_failed"
    assert tampering.requests == 1
    assert "nonce" in server.log_tail(20000)


def test_no_tsa_answering_fails_request(tsa_home, otp, tmp_path: Path) -> None:
    home, credentials, _provider = tsa_home
    hanging = FakeTsa("hang")
    garbage = FakeTsa("garbage")
    try:
        final, server = sign_with(home, credentials, ["http://127.0.0.1:9/tsa", hanging.url, garbage.url], otp,
                                  tmp_path, attempts=2)
    finally:
        hanging.close()
        garbage.close()
    log = server.log_tail(40000)
    assert final["state"] == "failed"
    assert final["state_reason"] == "tsa_failed"
    assert not (tmp_path / "out.pdf").exists()
    # The first outage put the request back in line; the second try failed it.
    assert log.count("sign_request.signing_postponed") == 1
    assert hanging.requests == 2
    assert garbage.requests == 2
    assert log.count("tsa.request_failed") == 6
    assert "no complete response within 3 s" in log
