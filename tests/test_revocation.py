"""Revocation end to end: the demo CA's OCSP and CRL services, and signers rejected before the HSM is used.

The demo CA's responses are checked with OpenSSL (`openssl ocsp`, `openssl crl`,
`openssl verify -crl_check_all`). Revoking and expiring certificates happens
on a server with its own data directory, never on the shared session server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import subprocess
import urllib.parse
from pathlib import Path
from datetime import datetime
from typing import Any, Iterator

import pytest
import requests
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from signserver import demo_pki
from signserver.signing.sample import generate_sample_pdf
from tests.harness import Client, OtpCodes, Server, cli_login, free_port, init_home, run_cli

REVOKED_CREDENTIAL = "cred-nguyen-van-an"
EXPIRED_CREDENTIAL = "cred-tran-thi-bich-ngoc"


def openssl(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=check, timeout=60)


def fetch(url: str, path: Path) -> Path:
    response = requests.get(url, timeout=30)
    response.raise_for_status()
    path.write_bytes(response.content)
    return path


def openssl_ocsp(server: Server, home: Path, certificate: Path) -> subprocess.CompletedProcess[str]:
    pki = home / "pki"
    return openssl("ocsp", "-issuer", str(pki / "issuing-ca.pem"), "-cert", str(certificate),
                   "-url", f"{server.url}/demo-ca/ocsp", "-CAfile", str(pki / "root.pem"),
                   "-verify_other", str(pki / "issuing-ca.pem"))


def openssl_verify_with_crls(home: Path, certificate: Path, crls: list[Path]) -> subprocess.CompletedProcess[str]:
    pki = home / "pki"
    crl_args = [argument for crl in crls for argument in ("-CRLfile", str(crl))]
    return openssl("verify", "-crl_check_all", *crl_args, "-CAfile", str(pki / "root.pem"),
                   "-untrusted", str(pki / "issuing-ca.pem"), str(certificate))


def der_crl_to_pem(der: Path) -> Path:
    pem_path = der.with_suffix(".pem")
    openssl("crl", "-inform", "DER", "-in", str(der), "-out", str(pem_path), check=True)
    return pem_path


def hsm_signature_count(server: Server) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("signserver_hsm_signatures_total{"))


# The shared session server: the services respond, and nothing is revoked.

@pytest.fixture(scope="module")
def session_home(service_home: tuple[Path, dict[str, Any]]) -> Path:
    return service_home[0]


def test_certificates_name_session_server_urls(server: Server, session_home: Path) -> None:
    result = openssl("x509", "-in", str(session_home / "pki" / f"{EXPIRED_CREDENTIAL}.pem"), "-noout",
                     "-ext", "authorityInfoAccess,crlDistributionPoints", check=True)

    assert f"OCSP - URI:{server.url}/demo-ca/ocsp" in result.stdout
    assert f"CA Issuers - URI:{server.url}/demo-ca/certs/issuing.cer" in result.stdout
    assert f"URI:{server.url}/demo-ca/crl/issuing.crl" in result.stdout


@pytest.mark.parametrize("ca_name, issuer_file", [("issuing", "issuing-ca.pem"), ("root", "root.pem")])
def test_demo_ca_crl_verifies(server: Server, session_home: Path, tmp_path: Path, ca_name: str,
                              issuer_file: str) -> None:
    response = requests.get(f"{server.url}/demo-ca/crl/{ca_name}.crl", timeout=30)
    crl = tmp_path / f"{ca_name}.crl"
    crl.write_bytes(response.content)

    verified = openssl("crl", "-inform", "DER", "-in", str(crl), "-noout", "-CAfile",
                       str(session_home / "pki" / issuer_file))
    dates = openssl("crl", "-inform", "DER", "-in", str(crl), "-noout", "-lastupdate", "-nextupdate", check=True)
    text = openssl("crl", "-inform", "DER", "-in", str(crl), "-noout", "-text", check=True)

    assert response.headers["Content-Type"] == "application/pkix-crl"
    assert "verify OK" in verified.stderr, verified.stderr
    assert "No Revoked Certificates" in text.stdout
    assert "X509v3 CRL Number" in text.stdout
    last_update = re.search(r"lastUpdate=(.+)", dates.stdout).group(1)
    next_update = re.search(r"nextUpdate=(.+)", dates.stdout).group(1)
    assert _openssl_time(next_update) - _openssl_time(last_update) == 86400


def _openssl_time(value: str) -> int:
    return int(datetime.strptime(value.strip(), "%b %d %H:%M:%S %Y GMT").timestamp())


def test_demo_ca_ocsp_good(server: Server, session_home: Path) -> None:
    result = openssl_ocsp(server, session_home, session_home / "pki" / f"{EXPIRED_CREDENTIAL}.pem")

    assert "Response verify OK" in result.stderr + result.stdout, result.stderr
    assert f"{EXPIRED_CREDENTIAL}.pem: good" in result.stdout
    assert "Next Update:" in result.stdout


def test_demo_ca_ocsp_get_form(server: Server, session_home: Path, tmp_path: Path) -> None:
    pki = session_home / "pki"
    request_path = tmp_path / "request.der"
    openssl("ocsp", "-issuer", str(pki / "issuing-ca.pem"), "-cert", str(pki / "cred-tsa.pem"), "-no_nonce",
            "-reqout", str(request_path), check=True)
    encoded = urllib.parse.quote(base64.b64encode(request_path.read_bytes()).decode(), safe="")

    response = requests.get(f"{server.url}/demo-ca/ocsp/{encoded}", timeout=30)
    (tmp_path / "response.der").write_bytes(response.content)
    result = openssl("ocsp", "-respin", str(tmp_path / "response.der"), "-issuer", str(pki / "issuing-ca.pem"),
                     "-cert", str(pki / "cred-tsa.pem"), "-CAfile", str(pki / "root.pem"),
                     "-verify_other", str(pki / "issuing-ca.pem"))

    assert response.headers["Content-Type"] == "application/ocsp-response"
    assert "Response verify OK" in result.stderr + result.stdout, result.stderr
    assert "cred-tsa.pem: good" in result.stdout


def test_demo_ca_ocsp_unknown_serial(server: Server, session_home: Path, tmp_path: Path) -> None:
    pki = session_home / "pki"
    issuing = demo_pki.load_certificate(pki / "issuing-ca.pem")
    serial = secrets.randbits(120)
    name_hash = hashlib.sha1(issuing.subject.public_bytes()).digest()
    key_hash = hashes.Hash(hashes.SHA1())
    key_hash.update(_subject_public_key_bits(issuing))
    request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash.finalize(), serial, hashes.SHA1()).build()

    response = requests.post(f"{server.url}/demo-ca/ocsp", data=request.public_bytes(serialization.Encoding.DER),
                             headers={"Content-Type": "application/ocsp-request"}, timeout=30)
    (tmp_path / "response.der").write_bytes(response.content)
    result = openssl("ocsp", "-respin", str(tmp_path / "response.der"), "-issuer", str(pki / "issuing-ca.pem"),
                     "-serial", f"0x{serial:x}", "-CAfile", str(pki / "root.pem"),
                     "-verify_other", str(pki / "issuing-ca.pem"))

    assert "Response verify OK" in result.stderr + result.stdout, result.stderr
    assert f"0x{serial:x}: unknown" in result.stdout


def _subject_public_key_bits(certificate: x509.Certificate) -> bytes:
    parsed = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    return parsed.public_key["public_key"].contents[1:]


def test_demo_ca_ocsp_refuses_other_issuer(server: Server, session_home: Path) -> None:
    pki = session_home / "pki"
    result = openssl("ocsp", "-issuer", str(pki / "root.pem"), "-cert", str(pki / "issuing-ca.pem"),
                     "-url", f"{server.url}/demo-ca/ocsp", "-CAfile", str(pki / "root.pem"))

    assert "unauthorized" in (result.stdout + result.stderr).lower()


def test_demo_ca_serves_certificates(server: Server, session_home: Path) -> None:
    root = requests.get(f"{server.url}/demo-ca/certs/root.cer", timeout=30)
    issuing = requests.get(f"{server.url}/demo-ca/certs/issuing.cer", timeout=30)
    missing = requests.get(f"{server.url}/demo-ca/certs/other.cer", timeout=30)

    expected_root = demo_pki.load_certificate(session_home / "demo-root.pem")
    expected_issuing = demo_pki.load_certificate(session_home / "pki" / "issuing-ca.pem")
    assert root.headers["Content-Type"] == "application/pkix-cert"
    assert root.content == expected_root.public_bytes(serialization.Encoding.DER)
    assert issuing.content == expected_issuing.public_bytes(serialization.Encoding.DER)
    assert missing.status_code == 404


def test_end_entity_passes_openssl_crl_check(server: Server, session_home: Path, tmp_path: Path) -> None:
    crls = [der_crl_to_pem(fetch(f"{server.url}/demo-ca/crl/{name}.crl", tmp_path / f"{name}.crl"))
            for name in ("issuing", "root")]

    result = openssl_verify_with_crls(session_home, session_home / "pki" / f"{REVOKED_CREDENTIAL}.pem", crls)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


# A server with its own data directory, where certificates are revoked and expired.

@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory, test_policies_dir: Path
               ) -> Iterator[tuple[Server, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("revocation-home")
    port = free_port()
    credentials = init_home(home, port, SIGNSERVER_POLICIES_DIR=str(test_policies_dir))
    # No reuse of OCSP responses, so a revocation made between submission and signing is seen at signing.
    server = Server(home, port, {"SIGNSERVER_REVOCATION_CACHE_MAX_SECONDS": "0"}).start()
    yield server, credentials
    server.stop()


_OFFICER_SESSIONS: dict[Path, str] = {}


def demo_ca_command(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `signserver demo-ca ARGS` as the data directory's first demo security officer."""
    if server.home not in _OFFICER_SESSIONS:
        credentials = json.loads((server.home / "demo-credentials.json").read_text(encoding="utf-8"))
        _OFFICER_SESSIONS[server.home] = cli_login(server.home, credentials["security_officers"][0], OtpCodes())
    return run_cli(server.home, "demo-ca", *args, session=_OFFICER_SESSIONS[server.home], timeout=60)


def audit_actions(server: Server, credentials: dict[str, Any], request_id: str) -> list[dict[str, Any]]:
    """The request's audit records, read with `signserver audit list` as the demo auditor."""
    session = cli_login(server.home, credentials["auditors"][0], OtpCodes())
    result = run_cli(server.home, "audit", "list", "--request", request_id, "--json", session=session)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def sign_as(client: Client, official_index: int, pdf: Path) -> dict[str, Any]:
    submitted = client.submit(pdf, signer=client.official(official_index)["credential_id"])
    assert submitted.status_code == 201, submitted.text
    request_id = submitted.json()["id"]
    otp = client.otp.next(client.official(official_index)["totp_secret"])
    approved = client.approve(client.login(official_index), [request_id], otp)
    assert approved.status_code == 201, approved.text
    return client.wait_final(request_id)


@pytest.fixture(scope="module")
def own_client(own_server: tuple[Server, dict[str, Any]]) -> Client:
    server, credentials = own_server
    return Client(server, credentials, OtpCodes())


def test_revoked_credential_refused_before_hsm(own_server, own_client: Client, tmp_path: Path) -> None:
    server, credentials = own_server
    pdf = generate_sample_pdf(tmp_path / "in.pdf")
    baseline = sign_as(own_client, 0, pdf)
    signatures_before = hsm_signature_count(server)
    # Submitted before the revocation, so only the check at signing can catch it.
    submitted = own_client.submit(pdf, signer=own_client.official(1)["credential_id"])

    revoked = demo_ca_command(server, "revoke", REVOKED_CREDENTIAL, "--reason", "keyCompromise")
    official = own_client.official(1)
    approved = own_client.approve(own_client.login(1), [submitted.json()["id"]],
                                  own_client.otp.next(official["totp_secret"]))
    rejected = own_client.wait_final(submitted.json()["id"])
    signatures_after = hsm_signature_count(server)
    records = audit_actions(server, credentials, rejected["id"])
    submitted_after = own_client.submit(pdf, signer=official["credential_id"], language="en")

    assert baseline["state"] == "signed"
    assert signatures_before > 0
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"Đã thu hồi chứng thư số của {REVOKED_CREDENTIAL}")
    assert rejected["state"] == "failed"
    assert rejected["state_reason"] == "certificate_revoked"
    assert signatures_after == signatures_before
    assert [record["action"] for record in records][-1] == "signing_failed"
    assert records[-1]["details"]["reason"] == "certificate_revoked"
    assert records[-1]["details"]["params"]["reason"] == "keyCompromise"
    assert records[-1]["details"]["params"]["revoked_at"]
    assert "signed" not in [record["action"] for record in records]
    assert submitted.status_code == 201, submitted.text
    assert approved.status_code == 201, approved.text
    # A request made after the revocation is rejected at submission, before any approval.
    assert submitted_after.status_code == 409, submitted_after.text
    assert submitted_after.json()["code"] == "certificate_revoked"
    assert "revoked" in submitted_after.json()["detail"]


def test_revoked_certificate_shown_by_openssl(own_server, tmp_path: Path) -> None:
    server, _credentials = own_server
    demo_ca_command(server, "revoke", REVOKED_CREDENTIAL, "--reason", "keyCompromise")
    certificate = server.home / "pki" / f"{REVOKED_CREDENTIAL}.pem"
    crls = [der_crl_to_pem(fetch(f"{server.url}/demo-ca/crl/{name}.crl", tmp_path / f"{name}.crl"))
            for name in ("issuing", "root")]

    verified = openssl_verify_with_crls(server.home, certificate, crls)
    status = openssl_ocsp(server, server.home, certificate)
    crl_text = openssl("crl", "-in", str(crls[0]), "-noout", "-text", check=True).stdout

    assert verified.returncode != 0
    assert "certificate revoked" in verified.stdout + verified.stderr
    assert "Response verify OK" in status.stderr + status.stdout, status.stderr
    assert f"{REVOKED_CREDENTIAL}.pem: revoked" in status.stdout
    assert "Reason: keyCompromise" in status.stdout
    assert "Key Compromise" in crl_text


def test_revoke_twice_keeps_first_entry(own_server) -> None:
    server, _credentials = own_server
    demo_ca_command(server, "revoke", REVOKED_CREDENTIAL)

    again = demo_ca_command(server, "revoke", REVOKED_CREDENTIAL, "--reason", "superseded")

    assert again.returncode == 0, again.stderr
    assert "đã bị thu hồi từ trước" in again.stdout
    assert "was already revoked" in again.stdout


def test_csc_sign_hash_rejects_revoked(own_server, own_client: Client) -> None:
    server, credentials = own_server
    demo_ca_command(server, "revoke", REVOKED_CREDENTIAL)
    application = credentials["application"]
    login = requests.post(f"{server.url}/csc/v1/auth/login", json={},
                          auth=(application["username"], application["password"]), timeout=30)
    token = login.json()["access_token"]
    digest = hashlib.sha256(secrets.token_bytes(32)).digest()
    headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
    authorized = requests.post(f"{server.url}/csc/v1/credentials/authorize", headers=headers, timeout=30, json={
        "credentialID": REVOKED_CREDENTIAL, "numSignatures": 1, "hash": [base64.b64encode(digest).decode()],
        "OTP": own_client.otp.next(own_client.official(1)["totp_secret"])})
    signatures_before = hsm_signature_count(server)

    signed = requests.post(f"{server.url}/csc/v1/signatures/signHash", headers=headers, timeout=30, json={
        "credentialID": REVOKED_CREDENTIAL, "SAD": authorized.json()["SAD"],
        "hash": [base64.b64encode(digest).decode()], "signAlgo": "1.2.840.10045.4.3.2"})

    assert authorized.status_code == 200, authorized.text
    assert signed.status_code == 400, signed.text
    assert signed.json()["error"] == "invalid_request"
    assert "was revoked" in signed.json()["error_description"]
    assert hsm_signature_count(server) == signatures_before


def test_expired_certificate_refused_before_hsm(own_server, own_client: Client, tmp_path: Path) -> None:
    server, _credentials = own_server
    reissued = demo_ca_command(server, "reissue", EXPIRED_CREDENTIAL, "--not-after", "2020-01-01")
    signatures_before = hsm_signature_count(server)

    rejected = own_client.submit(generate_sample_pdf(tmp_path / "in.pdf"),
                                signer=own_client.official(0)["credential_id"])
    certificate_text = openssl("x509", "-in", str(server.home / "pki" / f"{EXPIRED_CREDENTIAL}.pem"), "-noout",
                               "-enddate", check=True).stdout

    assert reissued.returncode == 0, reissued.stderr
    assert "notAfter=Jan  1 00:00:00 2020 GMT" in certificate_text
    # Rejected at submission, so the official never approves a request that cannot be signed.
    assert rejected.status_code == 409, rejected.text
    assert rejected.json()["code"] == "certificate_expired"
    assert "đã hết hạn lúc 2020-01-01" in rejected.json()["detail"]
    assert hsm_signature_count(server) == signatures_before


# A server whose certificates name an OCSP responder and CRLs on a port where nothing listens.

@pytest.fixture(scope="module")
def unreachable_ca_server(tmp_path_factory: pytest.TempPathFactory, test_policies_dir: Path
                          ) -> Iterator[tuple[Server, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("unreachable-ca-home")
    port = free_port()
    credentials = init_home(home, port, SIGNSERVER_DEMO_CA_URL=f"http://127.0.0.1:{free_port()}/demo-ca",
                            SIGNSERVER_POLICIES_DIR=str(test_policies_dir))
    server = Server(home, port).start()
    yield server, credentials
    server.stop()


def test_csc_sign_doc_b_lt_keeps_sad(unreachable_ca_server, tmp_path: Path) -> None:
    server, credentials = unreachable_ca_server
    client = Client(server, credentials, OtpCodes())
    official = client.official(0)
    application = credentials["application"]
    login = requests.post(f"{server.url}/csc/v1/auth/login", json={},
                          auth=(application["username"], application["password"]), timeout=30)
    headers = {"Authorization": f"Bearer {login.json()['access_token']}", "Accept-Language": "en"}
    document = generate_sample_pdf(tmp_path / "in.pdf").read_bytes()
    authorized = requests.post(f"{server.url}/csc/v2/credentials/authorize", headers=headers, timeout=30, json={
        "credentialID": official["credential_id"], "numSignatures": 1,
        "hashes": [base64.b64encode(hashlib.sha256(document).digest()).decode()],
        "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1",
        "authData": [{"id": "OTP", "value": client.otp.next(official["totp_secret"])}]})
    sad = authorized.json()["SAD"]
    signatures_before = hsm_signature_count(server)

    def sign_doc(level: str) -> requests.Response:
        return requests.post(f"{server.url}/csc/v2/signatures/signDoc", headers=headers, timeout=120, json={
            "credentialID": official["credential_id"], "SAD": sad,
            "documents": [{"document": base64.b64encode(document).decode(), "signature_format": "P",
                           "conformance_level": level, "signAlgo": "1.2.840.113549.1.1.11"}]})

    long_term = sign_doc("Ades-B-LT")
    signatures_after_rejection = hsm_signature_count(server)
    # The rejection came before the SAD was spent, so the same SAD still signs at a level without revocation data.
    time_stamped = sign_doc("Ades-B-T")

    assert authorized.status_code == 200, authorized.text
    assert long_term.status_code == 503, long_term.text
    assert long_term.json()["error"] == "temporarily_unavailable"
    assert signatures_after_rejection == signatures_before
    assert time_stamped.status_code == 200, time_stamped.text
