"""Delegation of approval (ủy quyền) on a real server: routing to the deputy, the deputy's own key, the rules.

The leader ngoc.ttb delegates to an.nv, who owns a personal key; lan.vt has
no personal key. The signer of the deputy's PDF is read with pdfsig.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from signserver.signing.sample import SAMPLE_STAMP_BOX, generate_sample_pdf
from tests.approval_helpers import DEFAULT_POLICIES, ChainService, own_service
from tests.verifiers import make_nss_trust_db, pdfsig_signatures

LEADER = "ngoc.ttb"
DEPUTY = "an.nv"
DEPUTY_WITHOUT_KEY = "lan.vt"
OFFICER = "cuong.lv"
LEADER_CREDENTIAL = "cred-tran-thi-bich-ngoc"
DEPUTY_CREDENTIAL = "cred-nguyen-van-an"

# Only the leader's key: the policy does not let the application use the deputy's personal key.
LEADER_KEY_ONLY_POLICY = """\
description: The leader's key for the demo one-stop application, and no other key.
keys:
  - credential: cred-tran-thi-bich-ngoc
    owner: {officials: [off-tran-thi-bich-ngoc]}
    rules:
      - id: leader-only
        applications: [app-motcua-demo]
        formats: [pades]
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainService]:
    home = tmp_path_factory.mktemp("delegations-home")
    with own_service(home, DEFAULT_POLICIES) as running:
        yield running


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("delegations-pdf") / "sample.pdf", pages=1)


def at(offset: timedelta) -> str:
    return (datetime.now(timezone.utc) + offset).isoformat(timespec="seconds")


def delegate(service: ChainService, actor: str, deputy: str, starts: timedelta = timedelta(0),
             length: timedelta = timedelta(days=1), **extra: Any) -> requests.Response:
    body = {"deputy": deputy, "starts_at": at(starts), "ends_at": at(starts + length),
            "reason": "Đi công tác", **extra}
    return requests.post(f"{service.url}/api/v1/delegations", json=body, headers=service.headers(actor), timeout=30)


def revoke(service: ChainService, actor: str, delegation_id: str) -> requests.Response:
    return requests.delete(f"{service.url}/api/v1/delegations/{delegation_id}", headers=service.headers(actor),
                           timeout=30)


def submit(service: ChainService, pdf: Path, signer: str = LEADER_CREDENTIAL, **metadata: Any) -> requests.Response:
    return service.client.submit(pdf, signer=signer, placement={"rect": list(SAMPLE_STAMP_BOX)},
                                 language="en", **metadata)


def official_id(service: ChainService, username: str) -> str:
    return service.person(username)["id"]


def test_delegated_request_signed_with_deputy_key(service: ChainService, sample_pdf: Path, tmp_path: Path) -> None:
    created = delegate(service, LEADER, DEPUTY)
    assert created.status_code == 201, created.text
    delegation_id = created.json()["id"]
    assert created.json()["in_force"] is True

    submitted = submit(service, sample_pdf)
    assert submitted.status_code == 201, submitted.text
    request = submitted.json()
    assert request["signer"]["approver_official_id"] == official_id(service, DEPUTY)
    assert request["signer"]["credential_id"] == DEPUTY_CREDENTIAL
    assert request["signer"]["requested_credential_id"] == LEADER_CREDENTIAL
    assert request["delegation_id"] == delegation_id
    assert request["id"] not in service.pending_ids(LEADER)
    # Submitted while the delegation is in force, and still the deputy's after it is revoked.
    still_routed = submit(service, sample_pdf).json()["id"]

    approved = service.approve(DEPUTY, [request["id"]], service.code(DEPUTY))
    assert approved.status_code == 201, approved.text
    final = service.client.wait_final(request["id"])
    assert final["state"] == "signed", final
    signed = service.client.download(request["id"], tmp_path / "signed.pdf")
    signatures = pdfsig_signatures(signed, make_nss_trust_db(tmp_path / "nss", service.server.home / "demo-root.pem"))
    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw
    assert signatures[0].signer_common_name == "Nguyễn Văn An"

    records = {record["action"]: record for record in service.audit_actions(request["id"])}
    assert records["delegation_applied"]["details"]["delegation_id"] == delegation_id
    assert records["delegation_applied"]["details"]["delegator_official_id"] == official_id(service, LEADER)
    assert records["delegation_applied"]["details"]["credential_id"] == DEPUTY_CREDENTIAL
    assert records["approved"]["actor_id"] == official_id(service, DEPUTY)
    assert records["approved"]["details"]["delegation_id"] == delegation_id
    assert records["approved"]["details"]["delegator_official_id"] == official_id(service, LEADER)

    revoked = revoke(service, LEADER, delegation_id)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["in_force"] is False
    after = submit(service, sample_pdf).json()
    assert after["signer"]["approver_official_id"] == official_id(service, LEADER)
    assert after["signer"]["credential_id"] == LEADER_CREDENTIAL
    assert after["delegation_id"] is None
    assert service.client.get(still_routed)["signer"]["approver_official_id"] == official_id(service, DEPUTY)
    assert still_routed in service.pending_ids(DEPUTY)


def test_delegation_in_vietnam_time_in_force_now(service: ChainService, sample_pdf: Path) -> None:
    # A period written with +07:00, as a Vietnamese integrator writes it, means the same instants.
    vietnam = timezone(timedelta(hours=7))
    starts = datetime.now(vietnam) - timedelta(minutes=1)
    body = {"deputy": DEPUTY, "starts_at": starts.isoformat(timespec="seconds"),
            "ends_at": (starts + timedelta(hours=2)).isoformat(timespec="seconds"), "reason": "Nghỉ phép"}
    created = requests.post(f"{service.url}/api/v1/delegations", json=body, headers=service.headers(LEADER),
                            timeout=30)
    assert created.status_code == 201, created.text
    try:
        assert created.json()["in_force"] is True
        stored_start = datetime.fromisoformat(created.json()["starts_at"].replace("Z", "+00:00"))
        assert stored_start == starts.replace(microsecond=0)
        request = submit(service, sample_pdf).json()
        assert request["delegation_id"] == created.json()["id"]
    finally:
        assert revoke(service, LEADER, created.json()["id"]).status_code == 200


def test_future_delegation_leaves_leader(service: ChainService, sample_pdf: Path) -> None:
    created = delegate(service, LEADER, DEPUTY, starts=timedelta(hours=1))
    assert created.status_code == 201, created.text
    try:
        request = submit(service, sample_pdf).json()
        assert request["signer"]["approver_official_id"] == official_id(service, LEADER)

        overlapping = delegate(service, LEADER, DEPUTY_WITHOUT_KEY, starts=timedelta(hours=2))
        assert overlapping.status_code == 409, overlapping.text
        assert overlapping.json()["code"] == "delegation_overlaps"
        assert created.json()["id"] in overlapping.json()["detail"]
    finally:
        assert revoke(service, LEADER, created.json()["id"]).status_code == 200


def test_delegated_chain_step_keeps_key(service: ChainService, sample_pdf: Path) -> None:
    # The specialist's step goes to their deputy; the leader's key and step do not change.
    created = delegate(service, DEPUTY, DEPUTY_WITHOUT_KEY)
    assert created.status_code == 201, created.text
    try:
        request = submit(service, sample_pdf, approvers=[DEPUTY]).json()
        assert request["signer"]["credential_id"] == LEADER_CREDENTIAL
        assert request["delegation_id"] is None
        chain = service.client.get(request["id"])["approval_chain"]
        assert [step["official"]["username"] for step in chain] == [DEPUTY, LEADER]
        assert [step["assignee"]["username"] for step in chain] == [DEPUTY_WITHOUT_KEY, LEADER]
        assert chain[0]["delegation_id"] == created.json()["id"]
        assert request["id"] in service.pending_ids(DEPUTY_WITHOUT_KEY)
    finally:
        assert revoke(service, DEPUTY, created.json()["id"]).status_code == 200


def test_deputy_holding_two_steps_rejected(service: ChainService, sample_pdf: Path) -> None:
    # The leader delegates to an.nv, who is also the chain's first approver: one person would approve twice.
    created = delegate(service, LEADER, DEPUTY)
    assert created.status_code == 201, created.text
    try:
        response = submit(service, sample_pdf, approvers=[DEPUTY])
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "approver_twice_by_delegation"
        assert LEADER in response.json()["detail"]
    finally:
        assert revoke(service, LEADER, created.json()["id"]).status_code == 200


def test_deputy_without_personal_key_rejected(service: ChainService, sample_pdf: Path) -> None:
    created = delegate(service, LEADER, DEPUTY_WITHOUT_KEY)
    assert created.status_code == 201, created.text
    try:
        response = submit(service, sample_pdf)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "deputy_credential_missing"
        assert DEPUTY_WITHOUT_KEY in response.json()["detail"]
    finally:
        assert revoke(service, LEADER, created.json()["id"]).status_code == 200


def test_deputy_key_outside_policy_rejected(sample_pdf: Path, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "leader-only.yaml").write_text(LEADER_KEY_ONLY_POLICY, encoding="utf-8")
    dossier_code = "000.00.01.H01-261205-0777"
    with own_service(tmp_path / "home", policies) as leader_only:
        created = delegate(leader_only, LEADER, DEPUTY)
        response = submit(leader_only, sample_pdf, dossier_code=dossier_code)
        auditor = leader_only.credentials["auditors"][0]["username"]
        audit = requests.get(f"{leader_only.url}/api/v1/audit", params={"dossier_code": dossier_code},
                             headers=leader_only.headers(auditor), timeout=30).json()["items"]

    assert created.status_code == 201, created.text
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "deputy_credential_not_allowed"
    assert DEPUTY in response.json()["detail"]
    assert created.json()["id"] in response.json()["detail"]
    # The policy hides the deputy's key from the application, so only the audit record names it.
    assert DEPUTY_CREDENTIAL not in response.text
    assert audit[0]["details"]["credential_id"] == DEPUTY_CREDENTIAL
    assert [record["action"] for record in audit] == ["policy_denied"]
    assert audit[0]["details"]["reason"] == "deputy_credential_not_allowed"
    assert audit[0]["details"]["requested_credential_id"] == LEADER_CREDENTIAL


def test_seal_holder_delegation_keeps_seal(service: ChainService, sample_pdf: Path) -> None:
    # an.nv is also the seal holder (văn thư); the deputy approves, but the agency seal still signs.
    seal = service.credentials["seal"]["credential_id"]
    created = delegate(service, DEPUTY, LEADER)
    assert created.status_code == 201, created.text
    try:
        request = submit(service, sample_pdf, signer=seal).json()
        assert request["signer"]["approver_official_id"] == official_id(service, LEADER)
        assert request["signer"]["credential_id"] == seal
        assert request["signer"]["requested_credential_id"] is None
        assert request["delegation_id"] is None
    finally:
        assert revoke(service, DEPUTY, created.json()["id"]).status_code == 200


@pytest.mark.parametrize(("deputy", "starts", "length", "status", "code"), [
    (LEADER, timedelta(0), timedelta(days=1), 400, "delegation_to_self"),
    (DEPUTY, timedelta(0), timedelta(days=91), 400, "delegation_too_long"),
    ("no.such.official", timedelta(0), timedelta(days=1), 400, "deputy_unknown"),
    (OFFICER, timedelta(0), timedelta(days=1), 400, "deputy_unknown"),
    (DEPUTY, timedelta(hours=2), timedelta(hours=-1), 400, "delegation_period_invalid"),
])
def test_invalid_delegation_rejected(service: ChainService, deputy: str, starts: timedelta, length: timedelta,
                                     status: int, code: str) -> None:
    response = delegate(service, LEADER, deputy, starts=starts, length=length)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_delegation_for_other_official_needs_officer(service: ChainService) -> None:
    leader_id = official_id(service, LEADER)
    by_official = delegate(service, DEPUTY, DEPUTY_WITHOUT_KEY, delegator_official_id=leader_id)
    assert by_official.status_code == 403, by_official.text
    assert by_official.json()["code"] == "role_required"

    by_officer = delegate(service, OFFICER, DEPUTY, starts=timedelta(days=10), delegator_official_id=leader_id)
    assert by_officer.status_code == 201, by_officer.text
    delegation_id = by_officer.json()["id"]
    assert by_officer.json()["delegator"]["official_id"] == leader_id
    listed = requests.get(f"{service.url}/api/v1/delegations", headers=service.headers(DEPUTY), timeout=30).json()
    assert delegation_id in [item["id"] for item in listed["received"]]

    assert revoke(service, DEPUTY_WITHOUT_KEY, delegation_id).status_code == 404
    assert revoke(service, OFFICER, delegation_id).status_code == 200
    again = revoke(service, LEADER, delegation_id)
    assert again.status_code == 409
    assert again.json()["code"] == "delegation_already_revoked"
