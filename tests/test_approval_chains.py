"""Approval chains on a real server: a specialist approves before the leader, one code per batch, digest binding.

The demo official an.nv stands for the specialist and ngoc.ttb for the
leader who owns the signing key. Signed PDFs are checked with pdfsig.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from signserver.signing.sample import SAMPLE_STAMP_BOX, generate_sample_pdf
from tests.approval_helpers import DEFAULT_POLICIES, ChainService, own_service
from tests.verifiers import make_nss_trust_db, pdfsig_signatures

SPECIALIST = "an.nv"
LEADER = "ngoc.ttb"
LEADER_CREDENTIAL = "cred-tran-thi-bich-ngoc"
SPECIALIST_CREDENTIAL = "cred-nguyen-van-an"
# An official of the other demo agency, to make a chain longer than the server's limit of 2 steps.
OTHER_OFFICIAL = "lan.vt"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainService]:
    home = tmp_path_factory.mktemp("chains-home")
    # The expiry sweep runs every second, so that a request with a short deadline expires within the test.
    with own_service(home, DEFAULT_POLICIES, SIGNSERVER_APPROVAL_CHAIN_MAX_LENGTH="2",
                     SIGNSERVER_EXPIRY_SWEEP_SECONDS="1") as running:
        yield running


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("chains-pdf") / "sample.pdf", pages=1)


def submit(service: ChainService, pdf: Path, signer: str = LEADER_CREDENTIAL, **metadata: Any) -> dict[str, Any]:
    response = service.client.submit(pdf, signer=signer, placement={"rect": list(SAMPLE_STAMP_BOX)}, **metadata)
    assert response.status_code == 201, response.text
    return response.json()


def official_id(service: ChainService, username: str) -> str:
    return service.person(username)["id"]


def test_chain_specialist_then_leader_signs(service: ChainService, sample_pdf: Path, tmp_path: Path) -> None:
    created = submit(service, sample_pdf, approvers=[SPECIALIST])
    request_id = created["id"]
    assert created["signer"]["approver_official_id"] == official_id(service, SPECIALIST)
    assert request_id in service.pending_ids(SPECIALIST)
    assert request_id not in service.pending_ids(LEADER)
    assert service.inbox_item(LEADER, request_id).status_code == 404

    first = service.approve(SPECIALIST, [request_id], service.code(SPECIALIST))
    assert first.status_code == 201, first.text
    assert first.json()["ready_to_sign"] == []
    assert first.json()["requests"][0]["state"] == "pending_approval"
    assert request_id not in service.pending_ids(SPECIALIST)
    assert request_id in service.pending_ids(LEADER)
    # The specialist keeps the request in their history.
    assert service.inbox_item(SPECIALIST, request_id).status_code == 200

    second = service.approve(LEADER, [request_id], service.code(LEADER))
    assert second.status_code == 201, second.text
    assert second.json()["ready_to_sign"] == [request_id]
    final = service.client.wait_final(request_id)
    assert final["state"] == "signed", final

    signed = service.client.download(request_id, tmp_path / "signed.pdf")
    signatures = pdfsig_signatures(signed, make_nss_trust_db(tmp_path / "nss", service.server.home / "demo-root.pem"))
    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw
    assert signatures[0].signer_common_name == "Trần Thị Bích Ngọc"

    chain = final["approval_chain"]
    assert [step["assignee"]["username"] for step in chain] == [SPECIALIST, LEADER]
    assert [step["state"] for step in chain] == ["approved", "approved"]

    records = service.audit_actions(request_id)
    decisions = [(r["action"], r["actor_id"]) for r in records if r["action"] in ("approval_step_approved", "approved")]
    assert decisions == [("approval_step_approved", official_id(service, SPECIALIST)),
                         ("approved", official_id(service, LEADER))]
    step_record = next(r for r in records if r["action"] == "approval_step_approved")
    assert step_record["details"]["position"] == 1
    assert step_record["details"]["step_count"] == 2
    assert step_record["details"]["next_assignee_official_id"] == official_id(service, LEADER)


def test_chain_rejected_by_specialist_ends(service: ChainService, sample_pdf: Path) -> None:
    request_id = submit(service, sample_pdf, approvers=[SPECIALIST])["id"]

    rejected = service.reject(SPECIALIST, request_id, "Thiếu chữ ký nháy của phòng chuyên môn")
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["state"] == "rejected"
    assert request_id not in service.pending_ids(LEADER)
    assert service.inbox_item(LEADER, request_id).status_code == 404

    chain = service.client.get(request_id)["approval_chain"]
    assert [step["state"] for step in chain] == ["rejected", "waiting"]


def test_chain_expired_at_leader_step(service: ChainService, sample_pdf: Path) -> None:
    request_id = submit(service, sample_pdf, approvers=[SPECIALIST], expires_in_seconds=3)["id"]
    first = service.approve(SPECIALIST, [request_id], service.code(SPECIALIST))
    assert first.status_code == 201, first.text

    final = service.client.wait_final(request_id, timeout=30)
    chain = final["approval_chain"]

    assert final["state"] == "expired"
    assert [step["state"] for step in chain] == ["approved", "expired"]
    assert chain[1]["decided_at"] is not None
    assert request_id not in service.pending_ids(LEADER)
    assert "expired" in [record["action"] for record in service.audit_actions(request_id)]


def test_batch_across_steps_with_one_code(service: ChainService, sample_pdf: Path) -> None:
    # At the specialist's first step of two, and at the specialist's last step after the leader's.
    first_step = submit(service, sample_pdf, approvers=[SPECIALIST])["id"]
    to_reject = submit(service, sample_pdf, approvers=[SPECIALIST])["id"]
    last_step = submit(service, sample_pdf, signer=SPECIALIST_CREDENTIAL, approvers=[LEADER])["id"]
    leader_first = service.approve(LEADER, [last_step], service.code(LEADER))
    assert leader_first.status_code == 201, leader_first.text
    batch = [first_step, to_reject, last_step]
    digests = {request_id: service.client.get(request_id)["document"]["sha256"] for request_id in batch}
    code = service.code(SPECIALIST)

    wrong = service.approve(SPECIALIST, batch, code, {**digests, last_step: hashlib.sha256(b"other").hexdigest()})
    assert wrong.status_code == 409, wrong.text
    assert wrong.json()["code"] == "document_digest_mismatch"
    assert set(service.pending_ids(SPECIALIST)) >= set(batch)

    # The same code still works: the mismatch was found before the code was checked.
    approved = service.approve(SPECIALIST, batch, code, digests)
    assert approved.status_code == 201, approved.text
    assert approved.json()["ready_to_sign"] == [last_step]
    assert service.client.wait_final(last_step)["state"] == "signed"
    assert service.client.get(first_step)["state"] == "pending_approval"
    assert set(service.pending_ids(LEADER)) >= {first_step, to_reject}

    rejected = service.reject(LEADER, to_reject, "Sai thẩm quyền ký")
    assert rejected.status_code == 200, rejected.text
    chain = service.client.get(to_reject)["approval_chain"]
    assert [step["state"] for step in chain] == ["approved", "rejected"]
    assert service.inbox_item(SPECIALIST, to_reject).status_code == 200


def test_unattended_seal_waits_for_named_approver(service: ChainService, sample_pdf: Path) -> None:
    seal = service.credentials["seal"]["credential_id"]
    created = submit(service, sample_pdf, signer=seal, document_type="BN-TIEPNHAN", approvers=[LEADER])
    assert created["state"] == "pending_approval"
    assert created["signer"]["approver_official_id"] == official_id(service, LEADER)
    assert [step["official"]["username"] for step in service.client.get(created["id"])["approval_chain"]] == [LEADER]

    approved = service.approve(LEADER, [created["id"]], service.code(LEADER))
    assert approved.status_code == 201, approved.text
    assert approved.json()["ready_to_sign"] == [created["id"]]
    assert service.client.wait_final(created["id"])["state"] == "signed"


@pytest.mark.parametrize(("approvers", "code", "named"), [
    (["no.such.official"], "approver_unknown", "no.such.official"),
    (["cuong.lv"], "approver_unknown", "cuong.lv"),
    ([SPECIALIST, SPECIALIST], "approver_repeated", SPECIALIST),
    ([LEADER, SPECIALIST], "approver_repeated", LEADER),
    ([SPECIALIST, OTHER_OFFICIAL], "approval_chain_too_long", "3"),
])
def test_invalid_approvers_rejected(service: ChainService, sample_pdf: Path, approvers: list[str], code: str,
                                    named: str) -> None:
    response = service.client.submit(sample_pdf, signer=LEADER_CREDENTIAL, approvers=approvers, language="en")
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert named in response.json()["detail"]


def test_key_approver_named_last_not_repeated(service: ChainService, sample_pdf: Path) -> None:
    created = submit(service, sample_pdf, approvers=[SPECIALIST, LEADER])
    chain = service.client.get(created["id"])["approval_chain"]
    assert [step["official"]["username"] for step in chain] == [SPECIALIST, LEADER]


def test_chain_step_otp_replay_and_lockout(service: ChainService, sample_pdf: Path) -> None:
    # The other agency's official approves first here, so that the codes of the others last the whole module.
    first = submit(service, sample_pdf, approvers=[OTHER_OFFICIAL])["id"]
    second = submit(service, sample_pdf, approvers=[OTHER_OFFICIAL])["id"]
    code = service.code(OTHER_OFFICIAL)
    assert service.approve(OTHER_OFFICIAL, [first], code).status_code == 201

    replayed = service.approve(OTHER_OFFICIAL, [second], code)
    assert replayed.status_code == 403
    assert replayed.json()["code"] == "otp_replayed"

    # Valid long enough to be used again once the lock has ended.
    valid = service.otp.next(service.person(OTHER_OFFICIAL)["totp_secret"], valid_for=20)
    wrong = "000000" if valid != "000000" else "111111"
    codes = [service.approve(OTHER_OFFICIAL, [second], wrong).json()["code"] for _ in range(5)]
    assert codes == ["otp_invalid"] * 4 + ["official_locked"]
    locked = service.approve(OTHER_OFFICIAL, [second], valid)
    assert locked.status_code == 403
    assert locked.json()["code"] == "official_locked"

    # The test server locks for 4 s. The code refused during the lock was not spent, and the step is still theirs.
    time.sleep(4.5)
    after = service.approve(OTHER_OFFICIAL, [second], valid)
    assert after.status_code == 201, after.text
    assert after.json()["requests"][0]["approver_official_id"] == official_id(service, LEADER)
