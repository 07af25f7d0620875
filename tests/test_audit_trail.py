"""The audit trail of a real run: every step recorded, `signserver audit verify` catches tampering."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from signserver.signing.sample import generate_sample_pdf
from tests.harness import Client, Server, run_cli
from tests.postgres import copy_store, query

DOSSIER = "000.00.01.H01-261204-0777"


@pytest.fixture(scope="module")
def signed_dossier(client: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    workdir = tmp_path_factory.mktemp("audit")
    pdf = generate_sample_pdf(workdir / "in.pdf", dossier_code=DOSSIER)
    request_id = client.submit(pdf, dossier_code=DOSSIER).json()["id"]
    official = client.official(0)
    wrong = client.approve(client.login(0), [request_id], "000000")
    assert wrong.status_code == 403
    approved = client.approve(client.login(0), [request_id], client.otp.next(official["totp_secret"]))
    assert approved.status_code == 201, approved.text
    assert client.wait_final(request_id)["state"] == "signed"
    client.download(request_id, workdir / "out.pdf")
    return request_id


def audit(server: Server, session: str, *args: str, database_url: str | None = None
          ) -> subprocess.CompletedProcess[str]:
    """Run `signserver audit ARGS` as the demo auditor."""
    extra = {"SIGNSERVER_DATABASE_URL": database_url} if database_url else {}
    return run_cli(server.home, "audit", *args, session=session, **extra)


def test_dossier_trail_lists_every_step(server: Server, auditor_session: str, signed_dossier: str) -> None:
    result = audit(server, auditor_session, "list", "--dossier", DOSSIER, "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    actions = [record["action"] for record in records if record["request_id"] == signed_dossier]
    assert actions == ["submitted", "policy_allowed", "approved", "signing_started", "signed", "downloaded"]


def test_signed_record_names_key_and_certificate(server: Server, auditor_session: str, signed_dossier: str) -> None:
    records = json.loads(audit(server, auditor_session, "list", "--request", signed_dossier, "--json").stdout)
    signed = next(record for record in records if record["action"] == "signed")
    assert signed["key_id"]
    assert signed["certificate_serial"]
    assert signed["document_sha256"]
    assert signed["actor_type"] == "system"


def test_otp_failure_recorded_without_code(server: Server, auditor_session: str, signed_dossier: str) -> None:
    result = audit(server, auditor_session, "list", "--json")
    failures = [r for r in json.loads(result.stdout)
                if r["action"] == "otp_failed" and signed_dossier in r["details"].get("request_ids", [])]
    assert len(failures) == 1
    assert "000000" not in json.dumps(failures[0])


def test_audit_verify_passes_on_real_trail(server: Server, auditor_session: str, signed_dossier: str) -> None:
    result = audit(server, auditor_session, "verify")
    assert result.returncode == 0, result.stdout + result.stderr


def _copy_database(server: Server, target: Path) -> str:
    return copy_store(server.home, target)


@pytest.mark.parametrize("tamper", [
    "UPDATE audit_log SET actor_id = 'off-someone-else' WHERE action = 'approved'",
    "DELETE FROM audit_log WHERE action = 'submitted' AND seq = (SELECT MIN(seq) FROM audit_log WHERE action = 'submitted')",
    "UPDATE audit_log SET details_json = '{}' WHERE action = 'signed'",
])
def test_audit_verify_detects_tampering(server: Server, auditor_session: str, signed_dossier: str, tmp_path: Path,
                                       tamper: str) -> None:
    url = _copy_database(server, tmp_path / "copy.db")
    query(url, tamper)
    result = audit(server, auditor_session, "verify", database_url=url)
    assert result.returncode == 1
    assert "Audit trail tampered" in result.stderr


def test_audit_verify_detects_reordering(server: Server, auditor_session: str, signed_dossier: str,
                                        tmp_path: Path) -> None:
    url = _copy_database(server, tmp_path / "copy.db")
    [(low, high)] = query(url, "SELECT MIN(seq), MAX(seq) FROM audit_log")
    query(url, "UPDATE audit_log SET seq = -1 WHERE seq = ?", (low + 1,))
    query(url, "UPDATE audit_log SET seq = ? WHERE seq = ?", (low + 1, high - 1))
    query(url, "UPDATE audit_log SET seq = ? WHERE seq = -1", (high - 1,))
    assert audit(server, auditor_session, "verify", database_url=url).returncode == 1


def test_no_secret_in_server_log(server: Server, credentials: dict, signed_dossier: str) -> None:
    log = (server.log_path or Path("/nonexistent")).read_text(errors="replace")
    secrets = [credentials["application"]["api_key"], credentials["application"]["password"]]
    for official in credentials["officials"]:
        secrets += [official["password"], official["totp_secret"]]
    secrets.append((server.home / "secrets" / "hsm-user-pin").read_text().strip())
    for secret in secrets:
        assert secret not in log


def test_no_secret_in_audit_trail(server: Server, auditor_session: str, credentials: dict,
                                  signed_dossier: str) -> None:
    trail = audit(server, auditor_session, "list", "--json").stdout
    for person in credentials["officials"] + credentials["security_officers"] + credentials["auditors"]:
        assert person["password"] not in trail
        assert person["totp_secret"] not in trail
    assert credentials["application"]["api_key"] not in trail


def test_totp_secret_stored_wrapped(server: Server, credentials: dict) -> None:
    stored = [bytes(row[0]) for row in query(server.home, "SELECT totp_secret_wrapped FROM officials")]
    for official in credentials["officials"]:
        assert all(official["totp_secret"].encode() not in blob for blob in stored)


def test_credentials_file_private(server: Server) -> None:
    assert (server.home / "demo-credentials.json").stat().st_mode & 0o777 == 0o600
