"""The key lifecycle through the command line, with a real server signing over HTTP on loopback.

A security officer signs in once (``signserver login``) and runs
``keys generate``, ``keys csr``, ``demo-ca issue`` and ``keys import`` in a
data directory of its own. A second officer approves the key policy that
lets the demo application use the new credential. The official approves a
raw signature with a TOTP code, and OpenSSL verifies it against the imported
certificate. Then the credential is disabled (a sign request is rejected),
enabled again, and rotated to a new key. The audit trail is read straight
from the SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.harness import REPO, SIGNSERVER, Client, OtpCodes, Server, free_port, init_home, service_env
from tests.postgres import query_dicts

# The module's fixture runs about 20 `signserver` commands, each a new interpreter: on a loaded 2-core machine
# that took more than the suite's 300 s per test.
pytestmark = pytest.mark.timeout(900)

CREDENTIAL_ID = "cred-tran-thi-bich-ngoc-2"
OWNER = "off-tran-thi-bich-ngoc"
SUBJECT_ARGUMENTS = ["--cn", "Trần Thị Bích Ngọc", "--o", "Ủy ban nhân dân huyện Mẫu Sơn",
                     "--ou", "Văn phòng HĐND và UBND", "--l", "Huyện Mẫu Sơn", "--st", "Tỉnh Thử Nghiệm",
                     "--title", "Chuyên viên", "--uid", "CCCD:001186000001"]
EXPECTED_SUBJECT_LINE = ("subject=C=VN,ST=Tỉnh Thử Nghiệm,L=Huyện Mẫu Sơn,O=Ủy ban nhân dân huyện Mẫu Sơn,"
                         "OU=Văn phòng HĐND và UBND,title=Chuyên viên,CN=Trần Thị Bích Ngọc,UID=CCCD:001186000001")
DOCUMENT = "<HoSo><MaHoSo>000.00.01.H01-261205-0007</MaHoSo></HoSo>".encode()

# The new credential's entry, added to the shipped policy so that the demo application may use it.
POLICY_ENTRY = f"""
  - credential: {CREDENTIAL_ID}
    description: Chữ ký số cá nhân của bà Trần Thị Bích Ngọc (khóa thứ hai, sinh bằng lệnh signserver keys)
    owner: {{officials: [{OWNER}]}}
    rules:
      - id: motcua-mau-son-hang
        applications: [app-motcua-demo]
        formats: [raw]
"""


@dataclass
class Lifecycle:
    """The data directory, its server, and what each step of the flow returned."""

    home: Path
    port: int
    credentials: dict[str, Any]
    server: Server
    client: Client
    files: Path
    sessions: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def run(self, step: str, *arguments: str, officer: str | None = "first",
            expect: int = 0) -> subprocess.CompletedProcess[str]:
        """Run ``signserver ARGUMENTS`` as an officer's session and record the result under ``step``."""
        extra = {"SIGNSERVER_LOG_FORMAT": "json"}
        if officer is not None:
            extra["SIGNSERVER_SESSION"] = self.sessions[officer]
        completed = subprocess.run([SIGNSERVER, *arguments], env=service_env(self.home, self.port, **extra),
                                   capture_output=True, text=True, timeout=120)
        self.outputs[step] = completed
        assert completed.returncode == expect, \
            f"{step}: exit {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
        return completed

    def json(self, step: str, *arguments: str) -> Any:
        return json.loads(self.run(step, *arguments, "--json").stdout)

    def audit(self) -> list[dict[str, Any]]:
        return query_dicts(self.home, "SELECT * FROM audit_log ORDER BY seq")


def log_in(lifecycle: Lifecycle, name: str, officer: dict[str, Any], otp: OtpCodes) -> None:
    env = service_env(lifecycle.home, lifecycle.port, SIGNSERVER_PASSWORD=officer["password"],
                      SIGNSERVER_LOG_FORMAT="json")
    completed = subprocess.run([SIGNSERVER, "login", "--user", officer["username"], "--otp",
                                otp.next(officer["totp_secret"])], env=env, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    lifecycle.sessions[name] = completed.stdout.strip().splitlines()[-1]


def submit_raw(lifecycle: Lifecycle, signer: str) -> requests.Response:
    body = {
        "idempotency_key": f"key-lifecycle-{time.time_ns()}",
        "dossier_code": "000.00.01.H01-261205-0007",
        "title": "Tờ khai thử nghiệm khóa mới",
        "signer": signer,
        "format": "raw",
        "signature_algorithm": "ecdsa",
        "digest": hashlib.sha256(DOCUMENT).hexdigest(),
    }
    files = {"metadata": (None, json.dumps(body, ensure_ascii=False), "application/json")}
    return requests.post(f"{lifecycle.client.url}/api/v1/sign-requests", files=files,
                         headers=lifecycle.client.app_headers("en"), timeout=60)


def sign_raw(lifecycle: Lifecycle, name: str) -> Path:
    """Submit a raw ECDSA request for the credential, approve it as its owner, and download the signature."""
    submitted = submit_raw(lifecycle, CREDENTIAL_ID)
    assert submitted.status_code == 201, submitted.text
    request_id = submitted.json()["id"]
    client = lifecycle.client
    owner = client.official(0)
    approved = client.approve(client.login(0), [request_id], client.otp.next(owner["totp_secret"]))
    assert approved.status_code == 201, approved.text
    final = client.wait_final(request_id)
    assert final["state"] == "signed", f"{final} {lifecycle.server.log_tail()}"
    return client.download(request_id, lifecycle.files / f"{name}.sig")


def issue_certificate(lifecycle: Lifecycle, step: str, csr: Path) -> tuple[Path, Path]:
    certificate = lifecycle.files / f"{step}.pem"
    chain = lifecycle.files / f"{step}-chain.pem"
    lifecycle.run(step, "demo-ca", "issue", "--csr", str(csr), "--out", str(certificate), "--chain-out", str(chain))
    return certificate, chain


def apply_policy(lifecycle: Lifecycle) -> None:
    """Request the policy with the new credential as the first officer, and approve it as the second."""
    directory = lifecycle.files / "policy"
    directory.mkdir()
    shutil.copy(REPO / "policies" / "default.yaml", directory / "default.yaml")
    with (directory / "default.yaml").open("a", encoding="utf-8") as policy:
        policy.write(POLICY_ENTRY)
    requested = lifecycle.run("policy-apply", "policy", "apply", str(directory))
    change_id = re.search(r"chg_[0-9a-f]+", requested.stdout)
    assert change_id is not None, requested.stdout
    lifecycle.run("policy-approve", "changes", "approve", change_id.group(0), officer="second")


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    """Run the whole flow once; the tests below check what each step left behind."""
    port = free_port()
    home = tmp_path_factory.mktemp("key-lifecycle-home")
    credentials = init_home(home, port)
    server = Server(home, port).start()
    otp = OtpCodes()
    flow = Lifecycle(home=home, port=port, credentials=credentials, server=server,
                     client=Client(server, credentials, otp), files=tmp_path_factory.mktemp("key-lifecycle-files"))
    try:
        log_in(flow, "first", credentials["security_officers"][0], otp)
        log_in(flow, "second", credentials["security_officers"][1], otp)
        _run_flow(flow)
        yield flow
    finally:
        server.stop()


def _run_flow(flow: Lifecycle) -> None:
    key = flow.json("generate", "keys", "generate", "--type", "EC", "--size", "256")
    flow.values["key"] = key
    csr = flow.files / "request.csr"
    flow.run("csr", "keys", "csr", key["id"], *SUBJECT_ARGUMENTS, "--out", str(csr))
    certificate, chain = issue_certificate(flow, "issue", csr)
    flow.values["certificate"] = certificate

    other_key = flow.json("generate-other", "keys", "generate", "--type", "EC", "--size", "256")
    flow.values["other_key"] = other_key
    flow.run("import-other-key", "keys", "import", other_key["id"], "--certificate", str(certificate),
             "--chain", str(chain), "--credential-id", "cred-wrong-key", "--kind", "personal", "--owner", OWNER,
             "--display-name", "Trần Thị Bích Ngọc", expect=1)

    flow.values["credential"] = flow.json(
        "import", "keys", "import", key["id"], "--certificate", str(certificate), "--chain", str(chain),
        "--credential-id", CREDENTIAL_ID, "--kind", "personal", "--owner", OWNER, "--display-name", "Trần Thị Bích Ngọc",
        "--signer-title", "Chuyên viên")
    apply_policy(flow)
    flow.values["signature"] = sign_raw(flow, "first")

    flow.run("disable", "keys", "disable", CREDENTIAL_ID)
    flow.values["rejected"] = submit_raw(flow, CREDENTIAL_ID)
    flow.run("enable", "keys", "enable", CREDENTIAL_ID)
    flow.values["accepted"] = submit_raw(flow, CREDENTIAL_ID)

    rotation_csr = flow.files / "rotation.csr"
    flow.values["new_key"] = flow.json("rotate", "keys", "rotate", CREDENTIAL_ID, "--out", str(rotation_csr))
    flow.values["rotation_csr"] = rotation_csr
    new_certificate, new_chain = issue_certificate(flow, "issue-rotation", rotation_csr)
    flow.values["new_certificate"] = new_certificate
    flow.values["rotated"] = flow.json("import-rotation", "keys", "import", flow.values["new_key"]["id"],
                                       "--certificate", str(new_certificate), "--chain", str(new_chain),
                                       "--rotate", CREDENTIAL_ID)
    flow.values["rotated_signature"] = sign_raw(flow, "rotated")
    flow.values["listing"] = flow.json("list", "keys", "list")


def openssl_subject(path: Path, kind: str) -> str:
    printed = subprocess.run(["openssl", kind, "-in", str(path), "-noout", "-subject", "-nameopt",
                              "utf8,sep_comma_plus"], capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    return printed.stdout.strip()


def verify_raw_signature(certificate: Path, signature: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    public_key = directory / f"{signature.stem}-public.pem"
    loaded = x509.load_pem_x509_certificate(certificate.read_bytes())
    public_key.write_bytes(loaded.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    original = directory / "original.xml"
    original.write_bytes(DOCUMENT)
    return subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(public_key), "-signature", str(signature),
                           str(original)], capture_output=True, text=True)


def listed(lifecycle: Lifecycle, key_id: str) -> dict[str, Any]:
    return next(item for item in lifecycle.values["listing"] if item["id"] == key_id)


def test_csr_verifies_with_openssl(lifecycle: Lifecycle) -> None:
    verified = subprocess.run(["openssl", "req", "-in", str(lifecycle.files / "request.csr"), "-verify", "-noout"],
                              capture_output=True, text=True)

    assert verified.returncode == 0, verified.stderr


def test_csr_shows_vietnamese_subject(lifecycle: Lifecycle) -> None:
    assert openssl_subject(lifecycle.files / "request.csr", "req") == EXPECTED_SUBJECT_LINE


def test_issued_certificate_keeps_subject(lifecycle: Lifecycle) -> None:
    subject = openssl_subject(lifecycle.values["certificate"], "x509")

    assert subject == EXPECTED_SUBJECT_LINE


def test_issued_certificate_chains_to_demo_root(lifecycle: Lifecycle) -> None:
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(lifecycle.home / "demo-root.pem"), "-untrusted",
                               str(lifecycle.files / "issue-chain.pem"), str(lifecycle.values["certificate"])],
                              capture_output=True, text=True)

    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_other_key_certificate_rejected(lifecycle: Lifecycle) -> None:
    rejected = lifecycle.outputs["import-other-key"]

    assert "được cấp cho một khóa khác" in rejected.stderr
    assert "was issued for another key" in rejected.stderr
    assert listed(lifecycle, lifecycle.values["other_key"]["id"])["state"] == "generated"


def test_imported_credential_fields(lifecycle: Lifecycle) -> None:
    credential = lifecycle.values["credential"]

    assert credential["id"] == CREDENTIAL_ID
    assert credential["status"] == "active"
    assert credential["owner_official_id"] == OWNER
    assert credential["key_id"] == lifecycle.values["key"]["key_id"]


def test_new_credential_signs(lifecycle: Lifecycle) -> None:
    verified = verify_raw_signature(lifecycle.values["certificate"], lifecycle.values["signature"], lifecycle.files)

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verified OK" in verified.stdout


def test_disabled_credential_rejected(lifecycle: Lifecycle) -> None:
    rejected = lifecycle.values["rejected"]

    assert rejected.status_code == 403, rejected.text
    assert rejected.json()["code"] == "key_disabled"


def test_enabled_credential_accepted(lifecycle: Lifecycle) -> None:
    accepted = lifecycle.values["accepted"]

    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["state"] == "pending_approval"


def test_rotation_csr_keeps_subject(lifecycle: Lifecycle) -> None:
    assert openssl_subject(lifecycle.values["rotation_csr"], "req") == EXPECTED_SUBJECT_LINE


def test_rotation_retires_previous_key(lifecycle: Lifecycle) -> None:
    previous = listed(lifecycle, lifecycle.values["key"]["id"])
    certificate = x509.load_pem_x509_certificate(lifecycle.values["certificate"].read_bytes())

    assert previous["state"] == "retired"
    assert previous["credential_id"] == CREDENTIAL_ID
    assert previous["certificate_serial"] == format(certificate.serial_number, "x")


def test_rotation_activates_new_key(lifecycle: Lifecycle) -> None:
    new_key = listed(lifecycle, lifecycle.values["new_key"]["id"])

    assert new_key["state"] == "active"
    assert lifecycle.values["rotated"]["key_id"] == new_key["key_id"]


def test_rotated_credential_signs_with_new_key(lifecycle: Lifecycle) -> None:
    verified = verify_raw_signature(lifecycle.values["new_certificate"], lifecycle.values["rotated_signature"],
                                    lifecycle.files)
    old_key_check = verify_raw_signature(lifecycle.values["certificate"], lifecycle.values["rotated_signature"],
                                         lifecycle.files)

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert old_key_check.returncode != 0


LIFECYCLE_ACTIONS = ("key_generated", "csr_created", "certificate_imported", "credential_disabled",
                     "credential_enabled", "key_rotated")


def test_each_step_audited_with_officer(lifecycle: Lifecycle) -> None:
    officer_id = lifecycle.credentials["security_officers"][0]["id"]
    key_ids = {lifecycle.values["key"]["key_id"], lifecycle.values["new_key"]["key_id"]}
    records = [row for row in lifecycle.audit() if row["key_id_hex"] in key_ids and row["action"] in LIFECYCLE_ACTIONS]

    assert sorted({row["action"] for row in records}) == sorted(LIFECYCLE_ACTIONS)
    for row in records:
        assert (row["actor_type"], row["actor_id"]) == ("security_officer", officer_id), dict(row)


def test_demo_ca_issue_audited(lifecycle: Lifecycle) -> None:
    certificate = x509.load_pem_x509_certificate(lifecycle.values["certificate"].read_bytes())
    serial = format(certificate.serial_number, "x")

    issued = [row for row in lifecycle.audit() if row["action"] == "demo_certificate_issued"
              and row["cert_serial_hex"] == serial]

    assert len(issued) == 1
    assert json.loads(issued[0]["details_json"])["kind"] == "personal"


def test_demo_ca_needs_security_officer(lifecycle: Lifecycle) -> None:
    rejected = lifecycle.run("issue-unsigned", "demo-ca", "issue", "--csr", str(lifecycle.files / "request.csr"),
                            "--out", str(lifecycle.files / "anyone.pem"), officer=None, expect=2)

    assert "Thiếu Tên đăng nhập" in rejected.stderr
    assert not (lifecycle.files / "anyone.pem").exists()


def test_demo_ca_rejects_seal_without_tax_code(lifecycle: Lifecycle) -> None:
    rejected = lifecycle.run("issue-seal", "demo-ca", "issue", "--csr", str(lifecycle.files / "request.csr"),
                            "--out", str(lifecycle.files / "seal.pem"), "--kind", "seal", expect=1)

    assert "MST:" in rejected.stderr
    assert not (lifecycle.files / "seal.pem").exists()


def test_signature_is_der_ecdsa(lifecycle: Lifecycle) -> None:
    parsed = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", str(lifecycle.values["signature"])],
                            capture_output=True, text=True)

    assert parsed.returncode == 0, parsed.stderr
    assert parsed.stdout.count("INTEGER") == 2
