"""The key policy over HTTP: agency isolation, quotas at the exact count, a disabled key, unattended seals, and
four-eyes policy changes, on a server with its own data directory and policy.

The policy below gives the demo application (agency A: Ủy ban nhân dân huyện
Mẫu Sơn) its two officials' keys and its seal, and the Sở Tư pháp's
application (agency B) its own seal, not yet valid. A change applied by two
security officers opens B's seal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pyotp
import pytest
import requests

from signserver.signing.sample import generate_sample_pdf
from tests.conftest import TEST_SERVER_ENV
from tests.harness import Client, OtpCodes, Server, cli_login, free_port, init_home, run_cli
from tests.verifiers import make_nss_trust_db, pdfsig_signatures

A_POLICY = """\
description: Chính sách thử nghiệm — khóa của UBND huyện Mẫu Sơn và con dấu của Sở Tư pháp.
keys:
  - credential: cred-tran-thi-bich-ngoc
    owner: {officials: [off-tran-thi-bich-ngoc]}
    quota: {per_application: {daily: 2}}
    rules:
      - id: motcua-ngoc
        applications: [app-motcua-demo]
        formats: [pades, raw]
        levels: [B-B, B-T, none]
  - credential: cred-nguyen-van-an
    owner: {officials: [off-nguyen-van-an]}
    max_batch: 10
    quota: {lifetime: 3}
    rules:
      - id: motcua-an-raw
        applications: [app-motcua-demo]
        formats: [raw]
  - credential: cred-seal-ubnd-mau-son
    owner: {agency: "Ủy ban nhân dân huyện Mẫu Sơn"}
    rules:
      - id: seal-receipts-unattended
        applications: [app-motcua-demo]
        document_types: [BN-TIEPNHAN]
        formats: [pades]
        approval: none
"""

B_SEAL_CLOSED = """\
  - credential: cred-seal-so-tu-phap
    owner: {agency: "Sở Tư pháp tỉnh Thử Nghiệm"}
    valid_from: 2099-01-01T00:00:00+07:00
    rules:
      - id: sotuphap-results-unattended
        applications: [app-motcua-so-tu-phap]
        document_types: [BN-KETQUA]
        approval: none
"""

B_SEAL_OPEN = B_SEAL_CLOSED.replace("    valid_from: 2099-01-01T00:00:00+07:00\n", "")

UNKNOWN_SIGNER = "cred-khong-ton-tai"
B_SEAL = "cred-seal-so-tu-phap"


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("policy-home")
    policies = tmp_path_factory.mktemp("policy-files")
    (policies / "province.yaml").write_text(A_POLICY + B_SEAL_CLOSED, encoding="utf-8")
    port = free_port()
    credentials = init_home(home, port, SIGNSERVER_POLICIES_DIR=str(policies))
    server = Server(home, port, dict(TEST_SERVER_ENV)).start()
    yield server, credentials
    server.stop()


@pytest.fixture(scope="module")
def codes() -> OtpCodes:
    return OtpCodes()


@pytest.fixture(scope="module")
def app_a(policy_server: tuple[Server, dict[str, Any]], codes: OtpCodes) -> Client:
    server, credentials = policy_server
    return Client(server, credentials, codes)


@pytest.fixture(scope="module")
def app_b(policy_server: tuple[Server, dict[str, Any]], codes: OtpCodes) -> Client:
    server, credentials = policy_server
    client = Client(server, credentials, codes)
    client.api_key = credentials["other_agency"]["application"]["api_key"]
    return client


@pytest.fixture(scope="module")
def trust_db(policy_server: tuple[Server, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    server, _credentials = policy_server
    return make_nss_trust_db(tmp_path_factory.mktemp("policy-nss"), server.home / "demo-root.pem")


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("policy-pdf") / "phieu.pdf")


def _person_login(server: Server, person: dict[str, Any], otp: str | None) -> requests.Response:
    body = {"username": person["username"], "password": person["password"]}
    if otp is not None:
        body["otp"] = otp
    return requests.post(f"{server.url}/api/v1/sessions", json=body, timeout=30)


@pytest.fixture(scope="module")
def sessions(policy_server: tuple[Server, dict[str, Any]], codes: OtpCodes) -> dict[str, str]:
    """API session tokens of one person of each role."""
    server, credentials = policy_server
    people = {
        "officer": credentials["security_officers"][0],
        "auditor": credentials["auditors"][0],
    }
    tokens = {}
    for name, person in people.items():
        response = _person_login(server, person, codes.next(person["totp_secret"]))
        assert response.status_code == 201, response.text
        tokens[name] = response.json()["token"]
    official = credentials["officials"][0]
    tokens["official"] = _person_login(server, official, None).json()["token"]
    tokens["application"] = credentials["application"]["api_key"]
    return tokens


def _digest_request(client: Client, signer: str, **metadata: Any) -> requests.Response:
    body = {"idempotency_key": f"policy-{time.time_ns()}", "dossier_code": "000.00.01.H01-261205-0042",
            "title": "Tờ khai thử nghiệm", "signer": signer, "format": "raw", "signature_algorithm": "ecdsa",
            "digest": hashlib.sha256(str(time.time_ns()).encode()).hexdigest()}
    body.update(metadata)
    files = {"metadata": (None, json.dumps(body, ensure_ascii=False), "application/json")}
    return requests.post(f"{client.url}/api/v1/sign-requests", files=files, headers=client.app_headers("en"),
                         timeout=60)


# Roles


@pytest.mark.parametrize(("method", "path", "principal", "status", "code"), [
    ("GET", "/api/v1/admin/keys", "application", 401, "session_invalid"),
    ("GET", "/api/v1/admin/keys", "official", 403, "role_required"),
    ("POST", "/api/v1/admin/keys", "auditor", 403, "role_required"),
    ("GET", "/api/v1/admin/changes", "auditor", 403, "role_required"),
    ("POST", "/api/v1/admin/credentials/cred-tran-thi-bich-ngoc/disable", "official", 403, "role_required"),
    ("GET", "/api/v1/audit", "officer", 403, "role_required"),
    ("GET", "/api/v1/audit", "official", 403, "role_required"),
    ("GET", "/api/v1/audit", "application", 401, "session_invalid"),
    ("GET", "/api/v1/inbox", "officer", 403, "role_required"),
    ("GET", "/api/v1/inbox", "auditor", 403, "role_required"),
    ("GET", "/api/v1/sign-requests", "officer", 401, "unauthenticated"),
    ("GET", "/api/v1/credentials", "official", 401, "unauthenticated"),
])
def test_route_rejects_other_roles(policy_server: tuple[Server, dict[str, Any]], sessions: dict[str, str],
                                    method: str, path: str, principal: str, status: int, code: str) -> None:
    server, _credentials = policy_server
    response = requests.request(method, f"{server.url}{path}", json={} if method == "POST" else None,
                                headers={"Authorization": f"Bearer {sessions[principal]}"}, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


@pytest.mark.parametrize(("path", "principal"), [
    ("/api/v1/admin/keys", "officer"), ("/api/v1/audit", "auditor"), ("/api/v1/admin/policies", "auditor"),
    ("/api/v1/inbox", "official"),
])
def test_route_serves_its_role(policy_server: tuple[Server, dict[str, Any]], sessions: dict[str, str],
                               path: str, principal: str) -> None:
    server, _credentials = policy_server
    response = requests.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {sessions[principal]}"},
                            timeout=30)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("parameter", ["after", "limit"])
def test_audit_list_names_invalid_parameter(policy_server: tuple[Server, dict[str, Any]],
                                            sessions: dict[str, str], parameter: str) -> None:
    server, _credentials = policy_server
    response = requests.get(f"{server.url}/api/v1/audit", params={parameter: "many"},
                            headers={"Authorization": f"Bearer {sessions['auditor']}", "Accept-Language": "en"},
                            timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "field_invalid"
    assert f'Field "{parameter}" is invalid' in response.json()["detail"]


def _audit_records(server: Server, sessions: dict[str, str], action: str) -> list[dict[str, Any]]:
    response = requests.get(f"{server.url}/api/v1/audit", params={"limit": "5000"},
                            headers={"Authorization": f"Bearer {sessions['auditor']}"}, timeout=30)
    assert response.status_code == 200, response.text
    return [record for record in response.json()["items"] if record["action"] == action]


def test_officer_login_without_code_fails(policy_server: tuple[Server, dict[str, Any]]) -> None:
    server, credentials = policy_server
    response = _person_login(server, credentials["security_officers"][1], None)
    assert response.status_code == 401
    assert response.json()["code"] == "login_failed"


def test_admin_login_failures_look_alike(policy_server: tuple[Server, dict[str, Any]]) -> None:
    server, credentials = policy_server
    officer = credentials["security_officers"][1]
    wrong_code = next(code for code in ("000000", "111111", "222222", "333333")
                      if code not in {pyotp.TOTP(officer["totp_secret"]).at(time.time() + offset)
                                      for offset in (-30, 0, 30)})
    attempts = {
        "wrong password": {"username": officer["username"], "password": "sai-mat-khau", "otp": wrong_code},
        "missing code": {"username": officer["username"], "password": officer["password"]},
        "wrong code": {"username": officer["username"], "password": officer["password"], "otp": wrong_code},
        "unknown user": {"username": "khong-ton-tai", "password": officer["password"], "otp": wrong_code},
    }
    answers = {}
    for name, body in attempts.items():
        response = requests.post(f"{server.url}/api/v1/sessions", json=body, headers={"Accept-Language": "en"},
                                 timeout=30)
        assert response.status_code == 401, f"{name}: {response.text}"
        answers[name] = (response.json()["code"], response.json()["detail"])
    assert set(answers.values()) == {("login_failed", answers["wrong code"][1])}
    assert "username, password or OTP code" in answers["wrong code"][1]


def test_route_refusal_audited(policy_server: tuple[Server, dict[str, Any]], sessions: dict[str, str]) -> None:
    server, credentials = policy_server
    # principal: (method, path, the person's id, their roles, the roles the route requires)
    rejected = {
        "official": ("POST", "/api/v1/admin/credentials/cred-tran-thi-bich-ngoc/disable",
                     credentials["officials"][0]["id"], ["official"], ["security_officer"]),
        "auditor": ("POST", "/api/v1/admin/keys/key-khong-ton-tai/destruction", credentials["auditors"][0]["id"],
                    ["auditor"], ["security_officer"]),
        "officer": ("GET", "/api/v1/audit", credentials["security_officers"][0]["id"], ["security_officer"],
                    ["auditor"]),
    }
    for principal, (method, path, *_expected) in rejected.items():
        response = requests.request(method, f"{server.url}{path}", json={} if method == "POST" else None,
                                    headers={"Authorization": f"Bearer {sessions[principal]}"}, timeout=30)
        assert response.status_code == 403, response.text

    records = _audit_records(server, sessions, "access_denied")
    for principal, (method, path, person_id, roles, required_roles) in rejected.items():
        matching = [record for record in records if record["details"]["operation"] == f"{method} {path}"]
        assert matching, f"no access_denied record for {principal} on {method} {path}"
        assert matching[-1]["actor_id"] == person_id
        assert matching[-1]["details"]["channel"] == "api"
        assert matching[-1]["details"]["roles"] == roles
        assert matching[-1]["details"]["required_roles"] == required_roles


def test_unauthenticated_refusal_not_audited(policy_server: tuple[Server, dict[str, Any]],
                                             sessions: dict[str, str]) -> None:
    server, _credentials = policy_server
    before = len(_audit_records(server, sessions, "access_denied"))
    response = requests.get(f"{server.url}/api/v1/admin/officials",
                            headers={"Authorization": f"Bearer {sessions['application']}"}, timeout=30)
    assert response.status_code == 401, response.text
    assert len(_audit_records(server, sessions, "access_denied")) == before


def test_cli_audit_rejects_official(policy_server: tuple[Server, dict[str, Any]],
                                    sessions: dict[str, str]) -> None:
    server, credentials = policy_server
    result = run_cli(server.home, "audit", "list", session=sessions["official"])
    assert result.returncode == 2
    assert "role_required" not in result.stderr  # people read the message, not the code
    assert "Cần vai trò: auditor" in result.stderr
    assert "Required role: auditor" in result.stderr

    records = [record for record in _audit_records(server, sessions, "access_denied")
               if record["details"]["channel"] == "cli"]
    assert records, "the refused command left no access_denied record"
    assert records[-1]["actor_id"] == credentials["officials"][0]["id"]
    assert records[-1]["details"]["operation"] == "audit list"
    assert records[-1]["details"]["required_roles"] == ["auditor"]
    assert records[-1]["details"]["roles"] == ["official"]


# Agency isolation


def test_listing_shows_only_own_agency_keys(app_a: Client, app_b: Client) -> None:
    seen_a = {c["id"] for c in requests.get(f"{app_a.url}/api/v1/credentials", headers=app_a.app_headers(),
                                            timeout=30).json()["items"]}
    seen_b = {c["id"] for c in requests.get(f"{app_b.url}/api/v1/credentials", headers=app_b.app_headers(),
                                            timeout=30).json()["items"]}
    assert seen_a == {"cred-tran-thi-bich-ngoc", "cred-nguyen-van-an", "cred-seal-ubnd-mau-son"}
    assert seen_b == {B_SEAL}


def test_other_agency_key_answers_like_unknown(app_a: Client, sample_pdf: Path) -> None:
    foreign = app_a.submit(sample_pdf, signer=B_SEAL, language="en")
    unknown = app_a.submit(sample_pdf, signer=UNKNOWN_SIGNER, language="en")
    assert foreign.status_code == unknown.status_code == 422
    assert foreign.json()["code"] == unknown.json()["code"] == "signer_unknown"
    assert foreign.json()["detail"].replace(B_SEAL, "X") == unknown.json()["detail"].replace(UNKNOWN_SIGNER, "X")
    assert "Tư pháp" not in foreign.text


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_csc_other_agency_key_answers_like_unknown(app_a: Client, version: str) -> None:
    headers = {"Authorization": f"Bearer {app_a.api_key}", "Accept-Language": "en"}

    def info(credential_id: str) -> requests.Response:
        return requests.post(f"{app_a.url}/csc/{version}/credentials/info", json={"credentialID": credential_id},
                             headers=headers, timeout=30)

    foreign, unknown = info(B_SEAL), info(UNKNOWN_SIGNER)
    assert foreign.status_code == unknown.status_code == 400
    assert foreign.json()["error"] == unknown.json()["error"]
    assert foreign.json()["error_description"].replace(B_SEAL, "X") == \
        unknown.json()["error_description"].replace(UNKNOWN_SIGNER, "X")
    listed = requests.post(f"{app_a.url}/csc/{version}/credentials/list", json={}, headers=headers, timeout=30)
    assert B_SEAL not in json.dumps(listed.json())


def test_denial_names_own_rule_only(app_a: Client, sample_pdf: Path) -> None:
    denied = app_a.submit(sample_pdf, signer="cred-tran-thi-bich-ngoc", level="B-LT", language="en")
    assert denied.status_code == 403, denied.text
    problem = denied.json()
    assert problem["code"] == "policy_denied"
    assert "motcua-ngoc" in problem["detail"]
    assert "sotuphap" not in denied.text
    assert "Tư pháp" not in denied.text


# Quotas


def test_lifetime_quota_stops_at_exact_count(app_a: Client, policy_server: tuple[Server, dict[str, Any]]) -> None:
    _server, credentials = policy_server
    an = credentials["officials"][1]
    ids = []
    for _ in range(4):
        response = _digest_request(app_a, "cred-nguyen-van-an")
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    approved = app_a.approve(app_a.login(1), ids, app_a.otp.next(an["totp_secret"]))
    assert approved.status_code == 201, approved.text
    finals = [app_a.wait_final(request_id) for request_id in ids]
    assert sorted(f["state"] for f in finals) == ["failed", "signed", "signed", "signed"]
    failed = next(f for f in finals if f["state"] == "failed")
    assert failed["state_reason"] == "quota_exceeded"

    after = _digest_request(app_a, "cred-nguyen-van-an")
    assert after.status_code == 403, after.text
    assert after.json()["code"] == "quota_exceeded"
    assert "cred-nguyen-van-an.quota.lifetime" in after.json()["detail"]


def test_csc_batch_over_app_daily_quota(app_a: Client) -> None:
    response = requests.post(
        f"{app_a.url}/csc/v2/credentials/authorize",
        json={"credentialID": "cred-tran-thi-bich-ngoc", "numSignatures": 3, "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1",
              "hashes": [base64.b64encode(hashlib.sha256(bytes([n])).digest()).decode() for n in range(3)],
              "OTP": "000000"},
        headers={"Authorization": f"Bearer {app_a.api_key}", "Accept-Language": "en"}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "access_denied"
    assert "cred-tran-thi-bich-ngoc.quota.per_application.daily" in response.json()["error_description"]
    assert "otp" not in response.json()["error_description"].lower()  # refused before the code was checked


# A disabled key


def test_disabled_key_rejected_then_signs(app_a: Client, sessions: dict[str, str], sample_pdf: Path,
                                          policy_server: tuple[Server, dict[str, Any]]) -> None:
    _server, credentials = policy_server
    ngoc = credentials["officials"][0]
    officer = {"Authorization": f"Bearer {sessions['officer']}"}
    waiting = app_a.submit(sample_pdf, signer="cred-tran-thi-bich-ngoc")
    assert waiting.status_code == 201, waiting.text

    disabled = requests.post(f"{app_a.url}/api/v1/admin/credentials/cred-tran-thi-bich-ngoc/disable",
                             headers=officer, timeout=30)
    assert disabled.status_code == 200, disabled.text
    rejected = app_a.submit(sample_pdf, signer="cred-tran-thi-bich-ngoc", language="en")
    assert rejected.status_code == 403, rejected.text
    assert rejected.json()["code"] == "key_disabled"
    code = app_a.otp.next(ngoc["totp_secret"])
    not_approved = app_a.approve(sessions["official"], [waiting.json()["id"]], code)
    assert not_approved.status_code == 403, not_approved.text
    assert not_approved.json()["code"] == "key_disabled"

    enabled = requests.post(f"{app_a.url}/api/v1/admin/credentials/cred-tran-thi-bich-ngoc/enable",
                            headers=officer, timeout=30)
    assert enabled.status_code == 200, enabled.text
    accepted = app_a.submit(sample_pdf, signer="cred-tran-thi-bich-ngoc")
    assert accepted.status_code == 201, accepted.text
    # The refusal came before the code was checked, so the same code still approves.
    approved = app_a.approve(sessions["official"], [waiting.json()["id"]], code)
    assert approved.status_code == 201, approved.text


# The agency seal without a human approval


def test_seal_signs_receipt_without_otp(app_a: Client, sample_pdf: Path, trust_db: Path, tmp_path: Path) -> None:
    response = app_a.submit(sample_pdf, signer="cred-seal-ubnd-mau-son", document_type="BN-TIEPNHAN",
                            appearance="text")
    assert response.status_code == 201, response.text
    final = app_a.wait_final(response.json()["id"])
    assert final["state"] == "signed", final
    signed = app_a.download(final["id"], tmp_path / "bien-nhan.pdf")
    signatures = pdfsig_signatures(signed, trust_db)
    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw
    assert signatures[0].signer_common_name == "Ủy ban nhân dân huyện Mẫu Sơn"


def test_seal_rejects_other_document_type(app_a: Client, sample_pdf: Path) -> None:
    response = app_a.submit(sample_pdf, signer="cred-seal-ubnd-mau-son", document_type="QD-CAPPHEP", language="en")
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "policy_denied"
    assert "seal-receipts-unattended" in response.json()["detail"]
    untyped = app_a.submit(sample_pdf, signer="cred-seal-ubnd-mau-son", language="en")
    assert untyped.status_code == 403, untyped.text


# Four-eyes policy change, through the CLI


def test_policy_change_needs_second_officer(policy_server: tuple[Server, dict[str, Any]], app_b: Client,
                                            codes: OtpCodes, sample_pdf: Path, tmp_path: Path) -> None:
    server, credentials = policy_server
    first, second = credentials["security_officers"]
    b_request = {"signer": B_SEAL, "document_type": "BN-KETQUA", "appearance": "text", "language": "en"}

    closed = app_b.submit(sample_pdf, **b_request)
    assert closed.status_code == 403, closed.text
    assert closed.json()["code"] == "policy_denied"
    assert f"{B_SEAL}.validity" in closed.json()["detail"]

    changed = tmp_path / "province.yaml"
    changed.write_text(A_POLICY + B_SEAL_OPEN, encoding="utf-8")
    first_session = cli_login(server.home, first, codes)
    requested = run_cli(server.home, "policy", "apply", str(changed), "--json", session=first_session)
    assert requested.returncode == 0, requested.stderr
    change = json.loads(requested.stdout)
    assert change["state"] == "pending"
    assert change["requested_by"] == first["id"]
    change_id = change["id"]

    still_closed = app_b.submit(sample_pdf, **b_request)
    assert still_closed.status_code == 403, "a change one officer made alone took effect"

    own = run_cli(server.home, "changes", "approve", change_id, session=first_session)
    assert own.returncode == 2, own.stdout + own.stderr
    assert "bốn mắt" in own.stderr, own.stdout + own.stderr
    assert app_b.submit(sample_pdf, **b_request).status_code == 403
    listed = requests.get(f"{server.url}/api/v1/admin/changes",
                          headers={"Authorization": f"Bearer {first_session}"}, timeout=30)
    assert listed.status_code == 200, listed.text
    assert next(c for c in listed.json()["items"] if c["id"] == change_id)["state"] == "pending"

    second_session = cli_login(server.home, second, codes)
    approved = run_cli(server.home, "changes", "approve", change_id, session=second_session)
    assert approved.returncode == 0, approved.stderr

    opened = app_b.submit(sample_pdf, **b_request)
    assert opened.status_code == 201, opened.text
    assert app_b.wait_final(opened.json()["id"])["state"] == "signed"

    auditor_session = cli_login(server.home, credentials["auditors"][0], codes)
    listing = run_cli(server.home, "audit", "list", "--json", session=auditor_session)
    assert listing.returncode == 0, listing.stderr
    records = json.loads(listing.stdout)
    requested_record = next(r for r in records if r["action"] == "policy_change_requested"
                            and r["details"]["change_id"] == change_id)
    applied_record = next(r for r in records if r["action"] == "policy_applied"
                          and r["details"].get("change_id") == change_id)
    rejection_record = next(r for r in records if r["action"] == "four_eyes_refused"
                          and r["details"]["change_id"] == change_id)
    assert requested_record["actor_id"] == first["id"]
    assert requested_record["details"]["requested_by"] == first["id"]
    assert requested_record["details"]["requested_by_name"] == first["full_name"]
    assert rejection_record["actor_id"] == first["id"]
    assert rejection_record["details"]["officer_id"] == first["id"]
    assert rejection_record["details"]["kind"] == "policy_apply"
    assert applied_record["actor_id"] == second["id"]
    assert applied_record["details"]["requested_by"] == first["id"]
    assert applied_record["details"]["approved_by"] == second["id"]
    assert applied_record["details"]["requested_by_name"] == first["full_name"]
    assert applied_record["details"]["approved_by_name"] == second["full_name"]
    assert run_cli(server.home, "audit", "verify", session=auditor_session).returncode == 0

    versions = run_cli(server.home, "policy", "versions", session=auditor_session)
    assert versions.returncode == 0, versions.stderr
    assert "v2" in versions.stdout
    assert first["id"] in versions.stdout
    assert second["id"] in versions.stdout


def test_rejected_apply_changes_nothing(policy_server: tuple[Server, dict[str, Any]], codes: OtpCodes,
                                        tmp_path: Path, sessions: dict[str, str]) -> None:
    server, _credentials = policy_server
    broken = tmp_path / "province.yaml"
    broken.write_text(A_POLICY.replace("approval: none", "approval: sometimes"), encoding="utf-8")
    before = requests.get(f"{server.url}/api/v1/admin/changes",
                          headers={"Authorization": f"Bearer {sessions['officer']}"}, timeout=30).json()["count"]
    checked = run_cli(server.home, "policy", "check", str(broken))
    assert checked.returncode == 2
    line = A_POLICY.splitlines().index("        approval: none") + 1
    assert "province.yaml" in checked.stderr
    assert str(line) in checked.stderr, checked.stderr
    applied = run_cli(server.home, "policy", "apply", str(broken), session=sessions["officer"])
    assert applied.returncode == 2, applied.stdout
    after = requests.get(f"{server.url}/api/v1/admin/changes",
                         headers={"Authorization": f"Bearer {sessions['officer']}"}, timeout=30).json()["count"]
    assert after == before


# Four-eyes review and input checks


def _officer_headers(sessions: dict[str, str], principal: str = "officer") -> dict[str, str]:
    return {"Authorization": f"Bearer {sessions[principal]}", "Accept-Language": "en"}


def test_changes_unknown_state_rejected(policy_server: tuple[Server, dict[str, Any]],
                                        sessions: dict[str, str]) -> None:
    server, _credentials = policy_server
    response = requests.get(f"{server.url}/api/v1/admin/changes", params={"state": "bogus"},
                            headers=_officer_headers(sessions), timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "field_invalid"
    assert 'Field "state" is invalid' in response.json()["detail"]


def test_explanation_unknown_format_rejected(policy_server: tuple[Server, dict[str, Any]],
                                             sessions: dict[str, str]) -> None:
    server, _credentials = policy_server
    response = requests.get(f"{server.url}/api/v1/admin/policies/explanation",
                            params={"app": "app-motcua-demo", "key": "cred-seal-ubnd-mau-son", "format": "zzz"},
                            headers=_officer_headers(sessions, "auditor"), timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "field_invalid"
    assert 'Field "format" is invalid' in response.json()["detail"]


@pytest.mark.parametrize("name", ["../province.yaml", "province\x1b[2J.yaml", " province.yaml"])
def test_policy_check_rejects_file_name(policy_server: tuple[Server, dict[str, Any]], sessions: dict[str, str],
                                        name: str) -> None:
    server, _credentials = policy_server
    response = requests.post(f"{server.url}/api/v1/admin/policies/check",
                             json={"documents": [{"name": name, "text": A_POLICY + B_SEAL_CLOSED}]},
                             headers=_officer_headers(sessions), timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "field_invalid"
    assert repr(name) in response.json()["detail"]
    assert "\x1b" not in response.json()["detail"]


def test_cli_policy_check_rejects_file_name(policy_server: tuple[Server, dict[str, Any]], tmp_path: Path) -> None:
    server, _credentials = policy_server
    path = tmp_path / "bản mới.yaml"
    path.write_text(A_POLICY + B_SEAL_CLOSED, encoding="utf-8")
    checked = run_cli(server.home, "policy", "check", str(path))
    assert checked.returncode == 2, checked.stdout
    assert "'bản mới.yaml'" in checked.stderr
    assert "không hợp lệ" in checked.stderr


def test_policy_change_shown_to_approver(policy_server: tuple[Server, dict[str, Any]], sessions: dict[str, str],
                                         tmp_path: Path) -> None:
    server, credentials = policy_server
    headers = _officer_headers(sessions)
    text = (A_POLICY + B_SEAL_OPEN).replace("{daily: 2}", "{daily: 3}")
    requested = requests.post(f"{server.url}/api/v1/admin/policies",
                              json={"documents": [{"name": "province.yaml", "text": text}]}, headers=headers,
                              timeout=60)
    assert requested.status_code == 202, requested.text
    change_id = requested.json()["id"]
    versions = requests.get(f"{server.url}/api/v1/admin/policies", headers=headers, timeout=30).json()["items"]
    (tmp_path / "province.yaml").write_bytes(text.encode())
    sha256sum_line = subprocess.run(["sha256sum", "province.yaml"], cwd=tmp_path, capture_output=True, text=True,
                                    check=True, timeout=30).stdout

    details_response = requests.get(f"{server.url}/api/v1/admin/changes/{change_id}", headers=headers, timeout=30)
    assert details_response.status_code == 200, details_response.text
    body = details_response.json()
    assert body["id"] == change_id
    assert body["requested_by_name"] == credentials["security_officers"][0]["full_name"]
    assert body["key"] is None
    assert body["policy"]["base_version"] == versions[0]["version"]
    assert body["policy"]["version_in_force"] == versions[0]["version"]
    assert body["policy"]["documents"] == [{"name": "province.yaml", "text": text,
                                            "sha256": sha256sum_line.split()[0]}]
    assert body["policy"]["diffs"][0]["status"] == "changed"
    diff = body["policy"]["diffs"][0]["diff"]
    assert "-    quota: {per_application: {daily: 2}}\n+    quota: {per_application: {daily: 3}}\n" in diff

    cli = run_cli(server.home, "changes", "show", change_id, session=sessions["officer"])
    assert cli.returncode == 0, cli.stderr
    assert sha256sum_line in cli.stdout
    assert diff in cli.stdout
    assert "Hãy so với `sha256sum`" in cli.stdout

    blank = requests.post(f"{server.url}/api/v1/admin/changes/{change_id}/rejection", json={"note": "   "},
                          headers=headers, timeout=30)
    assert blank.status_code == 400, blank.text
    assert blank.json()["code"] == "field_missing"
    cli_blank = run_cli(server.home, "changes", "reject", change_id, "--note", " ", session=sessions["officer"])
    assert cli_blank.returncode == 2, cli_blank.stdout
    assert 'Thiếu trường bắt buộc "note"' in cli_blank.stderr
    rejected = requests.post(f"{server.url}/api/v1/admin/changes/{change_id}/rejection",
                             json={"note": "Chỉ để xem thử"}, headers=headers, timeout=30)
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["state"] == "rejected"


def test_unknown_change_not_found(policy_server: tuple[Server, dict[str, Any]], sessions: dict[str, str]) -> None:
    server, _credentials = policy_server
    response = requests.get(f"{server.url}/api/v1/admin/changes/chg_khong_ton_tai",
                            headers=_officer_headers(sessions), timeout=30)
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "change_not_found"
