"""Operations routes: the built-in RFC 3161 TSA at /tsa (checked with OpenSSL) and /metrics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tests.harness import Server


def test_openssl_query_verifies_against_demo_root(server: Server, demo_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("Hồ sơ 000.00.01.H01-261204-0001\n", encoding="utf-8")
    query = tmp_path / "query.tsq"
    subprocess.run(["openssl", "ts", "-query", "-data", str(data), "-sha256", "-cert", "-out", str(query)],
                   check=True, capture_output=True)

    response = requests.post(f"{server.url}/tsa", data=query.read_bytes(),
                             headers={"Content-Type": "application/timestamp-query"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/timestamp-reply"
    reply = tmp_path / "reply.tsr"
    reply.write_bytes(response.content)

    chain = tmp_path / "chain.pem"
    chain.write_text((server.home / "pki" / "issuing-ca.pem").read_text() + demo_root.read_text())
    verified = subprocess.run(["openssl", "ts", "-verify", "-data", str(data), "-in", str(reply),
                               "-CAfile", str(chain)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verification: OK" in verified.stdout


def test_wrong_content_type_refused(server: Server) -> None:
    response = requests.post(f"{server.url}/tsa", data=b"x", headers={"Content-Type": "text/plain"}, timeout=10)
    assert response.status_code == 415


def _pending_count(server: Server) -> float:
    for line in requests.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith('signserver_sign_request_events_total{state="pending_approval"}'):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_submissions(server: Server, client, tmp_path: Path) -> None:
    from signserver.signing.sample import generate_sample_pdf

    before = _pending_count(server)
    assert client.submit(generate_sample_pdf(tmp_path / "in.pdf")).status_code == 201
    assert _pending_count(server) == before + 1


def test_openssl_sha1_query_gets_bad_alg(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("x")
    query = tmp_path / "query.tsq"
    subprocess.run(["openssl", "ts", "-query", "-data", str(data), "-sha1", "-out", str(query)],
                   check=True, capture_output=True)
    response = requests.post(f"{server.url}/tsa", data=query.read_bytes(),
                             headers={"Content-Type": "application/timestamp-query"}, timeout=30)
    reply = tmp_path / "reply.tsr"
    reply.write_bytes(response.content)
    text = subprocess.run(["openssl", "ts", "-reply", "-in", str(reply), "-text"],
                          capture_output=True, text=True).stdout
    assert "Status: Rejected" in text
    assert "unrecognized or unsupported algorithm identifier" in text


def test_pyhanko_http_timestamper_works(server: Server, demo_root: Path, tmp_path: Path) -> None:
    import asyncio
    import hashlib

    from asn1crypto import tsp
    from pyhanko.sign.timestamps import HTTPTimeStamper

    digest = hashlib.sha256(b"H\xe1\xbb\x93 s\xc6\xa1").digest()
    stamper = HTTPTimeStamper(f"{server.url}/tsa")
    first = asyncio.run(stamper.async_timestamp(digest, "sha256"))
    second = asyncio.run(stamper.async_timestamp(digest, "sha256"))

    first_info = tsp.TSTInfo.load(first["content"]["encap_content_info"]["content"].contents)
    second_info = tsp.TSTInfo.load(second["content"]["encap_content_info"]["content"].contents)
    assert first_info["message_imprint"]["hashed_message"].native == digest
    assert second_info["serial_number"].native > first_info["serial_number"].native

    token = tmp_path / "token.der"
    token.write_bytes(first.dump())
    chain = tmp_path / "chain.pem"
    chain.write_text((server.home / "pki" / "issuing-ca.pem").read_text() + demo_root.read_text())
    verified = subprocess.run(["openssl", "ts", "-verify", "-digest", digest.hex(), "-in", str(token), "-token_in",
                               "-CAfile", str(chain)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
