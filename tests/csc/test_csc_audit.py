"""The audit trail of CSC calls: the authorization, the signature and the rejections, each with the hashes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.csc.conftest import CscClient, SadMisuse, random_hashes
from tests.harness import Server
from tests.test_audit_trail import audit


@pytest.fixture(scope="module")
def trail(server: Server, auditor_session: str, sad_misuse: SadMisuse) -> tuple[list[dict[str, Any]], str]:
    """Return the audit trail after the misuses of one SAD, and the hash that was signed, then rejected, in hex."""
    result = audit(server, auditor_session, "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), sad_misuse.hashes[0].hex()


def records_with_hash(trail: tuple[list[dict[str, Any]], str], action: str) -> list[dict[str, Any]]:
    records, hash_hex = trail
    return [record for record in records if record["action"] == action
            and hash_hex in record["details"].get("hashes", [])]


@pytest.mark.parametrize("action", ["csc_authorized", "csc_sad_spent", "csc_hashes_signed"])
def test_trail_records_action_with_hash(trail, action: str) -> None:
    assert len(records_with_hash(trail, action)) == 1


def test_trail_records_each_rejection(trail) -> None:
    # [a, a] beyond its count, the other credential, and the reuse after the SAD was spent.
    reasons = [record["details"]["reason"] for record in records_with_hash(trail, "csc_rejected")]
    assert reasons == ["hash_not_authorized", "sad_invalid", "sad_invalid"]


def test_trail_authorization_by_official(trail, rsa_official: dict) -> None:
    (record,) = records_with_hash(trail, "csc_authorized")
    assert record["actor_id"] == rsa_official["id"]


@pytest.mark.parametrize("action", ["csc_authorized", "csc_hashes_signed", "csc_rejected"])
def test_trail_names_key_and_certificate(trail, action: str) -> None:
    record = records_with_hash(trail, action)[-1]
    assert record["key_id"]
    assert record["certificate_serial"]


def test_trail_has_no_sad(trail, sad_misuse: SadMisuse) -> None:
    records, _hash_hex = trail
    assert sad_misuse.sad not in json.dumps(records)


def test_trail_has_no_otp_field(trail) -> None:
    records, _hash_hex = trail
    assert all("otp" not in record["details"] for record in records)


def test_trail_wrong_otp_recorded(server: Server, auditor_session: str, csc: CscClient, rsa_official: dict) -> None:
    digests = random_hashes(1)
    csc.authorize("v1", rsa_official["credential_id"], digests, "000000")
    records = json.loads(audit(server, auditor_session, "list", "--json").stdout)
    rejections = [record for record in records if record["action"] == "csc_rejected"
                and digests[0].hex() in record["details"].get("hashes", [])]
    assert [record["details"]["reason"] for record in rejections] == ["otp_invalid"]


def test_trail_verifies_after_csc(server: Server, auditor_session: str, trail) -> None:
    result = audit(server, auditor_session, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
