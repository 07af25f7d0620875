"""Key policy files and decisions: every validation error with its file and line, every decision reason,
isolation between agencies, and explanations in Vietnamese and English."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from signserver.config import PROJECT_ROOT
from signserver.core.policy import (
    APPROVAL_NONE,
    DEFAULT_DENY_RULE,
    KeyOwner,
    KeyPolicy,
    KnownCredential,
    KnownNames,
    PolicyFileInvalid,
    PolicyQuery,
    PolicySet,
    QuotaLimits,
    Rule,
    documents_digest,
    load_policies,
    parse_policy_documents,
    read_policy_dir,
)
from signserver.core.policy_files import check_policy_input
from signserver.core.policy_versions import parse_off_loop
from signserver.core.quotas import QuotaCounter, QuotaUsage
from signserver.errors import InvalidInput
from signserver.i18n import message

NOW = datetime(2026, 12, 5, 3, 0, tzinfo=timezone.utc)  # 10:00 in Vietnam
ICT = timezone(timedelta(hours=7))

APP_A = "app-motcua-a"
APP_B = "app-motcua-b"
SEAL_A = "cred-seal-a"
SEAL_B = "cred-seal-b"
PERSONAL = "cred-personal"
OFFICIAL = "off-personal"

# Agency A's seal seals receipts unattended and anything else with approval. The personal key has a
# validity window and three rules, to tell the closest denial apart. Agency B's seal serves only B's application.
POLICY = """\
description: Thử nghiệm — hai cơ quan
keys:
  - credential: cred-seal-a
    owner: {agency: "Cơ quan A"}
    max_batch: 5
    quota: {daily: 10, lifetime: 100, per_application: {daily: 4}}
    rules:
      - id: seal-a-receipts
        applications: [app-motcua-a]
        document_types: [BN-TIEPNHAN, BN-KETQUA]
        formats: [pades]
        approval: none
      - id: seal-a-approved
        applications: [app-motcua-a]
        formats: [pades, cades]
  - credential: cred-personal
    owner: {officials: [off-personal]}
    valid_from: 2026-01-01T00:00:00+07:00
    valid_until: 2026-12-31T23:59:59+07:00
    rules:
      - id: personal-pades-lt
        applications: [app-motcua-a]
        formats: [pades]
        levels: [B-LT, B-LTA]
      - id: personal-cades-decisions
        applications: [app-motcua-a]
        formats: [cades]
        levels: [B-T]
        document_types: [QD-01]
      - id: personal-raw
        applications: [app-motcua-a]
        formats: [raw]
  - credential: cred-seal-b
    owner: {agency: "Cơ quan B"}
    rules:
      - id: seal-b-approved
        applications: [app-motcua-b]
"""

KNOWN = KnownNames(
    credentials={
        SEAL_A: KnownCredential(kind="seal", owner_official_id=None, agency="Cơ quan A"),
        SEAL_B: KnownCredential(kind="seal", owner_official_id=None, agency="Cơ quan B"),
        PERSONAL: KnownCredential(kind="personal", owner_official_id=OFFICIAL, agency="Cơ quan A"),
        "cred-tsa": KnownCredential(kind="tsa", owner_official_id=None, agency=""),
    },
    applications=frozenset({APP_A, APP_B}),
    officials=frozenset({OFFICIAL, "off-other"}),
)


def line_of(text: str, needle: str) -> int:
    """Return the 1-based line of the only line of ``text`` that contains ``needle``."""
    found = [number for number, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(found) == 1, f"{needle!r} is on lines {found}"
    return found[0]


def invalid(documents: list[tuple[str, str]], known: KnownNames | None = None) -> dict:
    with pytest.raises(PolicyFileInvalid) as caught:
        parse_policy_documents(documents, known)
    return caught.value.params


def query(credential: str = SEAL_A, application: str = APP_A, signature_format: str = "pades",
          level: str = "B-T", document_type: str | None = None, batch_size: int = 1) -> PolicyQuery:
    return PolicyQuery(application_id=application, credential_id=credential, signature_format=signature_format,
                       signature_level=level, document_type=document_type, batch_size=batch_size)


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return parse_policy_documents([("p.yaml", POLICY)], KNOWN)


# Valid files


def test_policy_parses_with_store_names(policies: PolicySet) -> None:
    assert policies.credential_ids() == {SEAL_A, SEAL_B, PERSONAL}


def test_key_policy_fields(policies: PolicySet) -> None:
    key = policies.key_policy(PERSONAL)
    assert key is not None
    assert key.owner.officials == (OFFICIAL,)
    assert key.owner.agency is None
    assert key.valid_from == datetime(2026, 1, 1, tzinfo=ICT)
    assert key.valid_until == datetime(2026, 12, 31, 23, 59, 59, tzinfo=ICT)
    assert key.line == line_of(POLICY, "- credential: cred-personal")
    assert [rule.id for rule in key.rules] == ["personal-pades-lt", "personal-cades-decisions", "personal-raw"]


def test_key_policy_quota(policies: PolicySet) -> None:
    key = policies.key_policy(SEAL_A)
    assert key is not None
    assert key.quota.daily == 10
    assert key.quota.monthly is None
    assert key.quota.lifetime == 100
    assert key.quota.per_application_daily == 4
    assert key.quota.per_application_monthly is None
    assert key.max_batch == 5


def test_key_policy_unknown_credential(policies: PolicySet) -> None:
    assert policies.key_policy("cred-nobody") is None


def test_default_version_from_digest(policies: PolicySet) -> None:
    assert policies.digest == documents_digest([("p.yaml", POLICY)])
    assert policies.version == f"sha256:{policies.digest[:16]}"


def test_digest_changes_with_text() -> None:
    changed = POLICY.replace("max_batch: 5", "max_batch: 6")
    assert parse_policy_documents([("p.yaml", changed)]).digest != parse_policy_documents([("p.yaml", POLICY)]).digest


def test_digest_changes_with_file_name() -> None:
    assert parse_policy_documents([("q.yaml", POLICY)]).digest != parse_policy_documents([("p.yaml", POLICY)]).digest


def test_with_version_labels_decisions(policies: PolicySet) -> None:
    labelled = policies.with_version("v7")
    assert labelled.version == "v7"
    assert labelled.digest == policies.digest
    assert labelled.decide(query(document_type="BN-TIEPNHAN"), NOW).policy_version == "v7"
    assert policies.version != "v7"


def test_empty_policy_set_hides_everything() -> None:
    empty = parse_policy_documents([])
    decision = empty.decide(query(), NOW)
    assert not decision.visible
    assert not decision.allowed


def test_timestamps_stay_strings_for_schema() -> None:
    # Without an offset YAML would construct a datetime, but the schema must validate the text and reject it.
    text = POLICY.replace("valid_from: 2026-01-01T00:00:00+07:00", "valid_from: 2026-01-01 00:00:00")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "valid_from:")
    assert "does not match" in params["reason"]


# YAML syntax errors


def test_yaml_syntax_error_line() -> None:
    text = "keys:\n  - credential: cred-seal-a\n    owner: {agency: A}: x\n"
    params = invalid([("broken.yaml", text)])
    assert params["file"] == "broken.yaml"
    assert params["line"] == 3
    assert params["reason"].startswith("invalid YAML:")


def test_yaml_unclosed_flow_line() -> None:
    text = "keys:\n  - credential: cred-seal-a\n    owner: {agency: A\n    rules: []\n"
    params = invalid([("p.yaml", text)])
    assert params["line"] == 4


def test_yaml_alias_rejected() -> None:
    text = textwrap.dedent("""\
        keys:
          - credential: cred-seal-a
            owner: &owner {agency: A}
            rules: [{id: r1, applications: [app-motcua-a]}]
          - credential: cred-seal-b
            owner: *owner
            rules: [{id: r2, applications: [app-motcua-b]}]
        """)
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "*owner")
    assert "alias" in params["reason"]


def test_yaml_duplicate_key_line() -> None:
    text = textwrap.dedent("""\
        keys:
          - credential: cred-seal-a
            owner: {agency: A}
            rules: [{id: r1, applications: [app-motcua-a]}]
            rules: [{id: r2, applications: [app-motcua-b]}]
        """)
    params = invalid([("p.yaml", text)])
    assert params["line"] == 5
    assert "duplicate key 'rules'" in params["reason"]
    assert "line 4" in params["reason"]


def test_yaml_deep_nesting_rejected() -> None:
    text = "keys: " + "[" * 40 + "]" * 40 + "\n"
    params = invalid([("p.yaml", text)])
    assert params["line"] == 1
    assert "nested deeper" in params["reason"]


def test_yaml_two_documents_rejected() -> None:
    text = "keys: []\n---\nkeys: []\n"
    params = invalid([("p.yaml", text)])
    assert params["line"] == 2


def test_non_utf8_file_line(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"keys: []\ndescription: \xe9t\xe9\n")
    with pytest.raises(PolicyFileInvalid) as caught:
        read_policy_dir(tmp_path)
    assert caught.value.params["file"] == "latin.yaml"
    assert caught.value.params["line"] == 2


def test_duplicate_file_name_rejected() -> None:
    params = invalid([("p.yaml", POLICY), ("p.yaml", "keys: []\n")])
    assert params["file"] == "p.yaml"
    assert "given twice" in params["reason"]


# JSON Schema errors


def test_schema_unexpected_key_line() -> None:
    text = POLICY.replace("    max_batch: 5\n", "    max_batch: 5\n    colour: blue\n")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "colour: blue")
    assert "'colour' was unexpected" in params["reason"]


def test_schema_old_format_rejected() -> None:
    text = "version: 1\nrules:\n  - {id: a, applications: [x], credentials: ['*']}\n"
    params = invalid([("old.yaml", text)])
    assert params["line"] == 1
    assert "'keys' is a required property" in params["reason"]


def test_schema_missing_rules_line() -> None:
    text = "keys:\n  - credential: cred-seal-a\n    owner: {agency: A}\n"
    params = invalid([("p.yaml", text)])
    assert params["line"] == 2
    assert "'rules' is a required property" in params["reason"]


def test_schema_wildcard_application_rejected() -> None:
    text = textwrap.dedent("""\
        keys:
          - credential: cred-seal-a
            owner: {agency: A}
            rules:
              - id: everyone
                applications:
                  - app-motcua-a
                  - "*"
        """)
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, '- "*"')
    assert "does not match" in params["reason"]


def test_schema_owner_with_both_line() -> None:
    text = POLICY.replace('owner: {agency: "Cơ quan B"}', 'owner: {agency: "Cơ quan B", officials: [off-other]}')
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "officials: [off-other]")
    assert "too many properties" in params["reason"]


def test_schema_block_value_names_key_line() -> None:
    # The value of owner starts on the next line; the error points at "owner:" itself.
    text = POLICY.replace('owner: {agency: "Cơ quan B"}',
                          'owner:\n      agency: "Cơ quan B"\n      officials: [off-other]')
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, '- credential: cred-seal-b') + 1
    assert "too many properties" in params["reason"]


def test_schema_max_batch_zero_line() -> None:
    text = POLICY.replace("max_batch: 5", "max_batch: 0")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "max_batch: 0")
    assert "less than the minimum of 1" in params["reason"]


def test_schema_unknown_format_line() -> None:
    text = POLICY.replace("formats: [pades, cades]", "formats: [pades, xades]")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "formats: [pades, xades]")
    assert "'xades' is not one of" in params["reason"]


def test_schema_unknown_approval_line() -> None:
    text = POLICY.replace("approval: none", "approval: maybe")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "approval: maybe")


def test_schema_rule_id_with_dot_rejected() -> None:
    # Dots are kept for the engine's own rule ids such as cred-seal-a.validity.
    text = POLICY.replace("id: seal-a-approved", "id: cred-seal-a.validity")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "id: cred-seal-a.validity")


def test_schema_quota_negative_line() -> None:
    text = POLICY.replace("per_application: {daily: 4}", "per_application: {daily: -1}")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "per_application: {daily: -1}")


def test_schema_empty_file_line() -> None:
    params = invalid([("empty.yaml", "")])
    assert params["file"] == "empty.yaml"
    assert params["line"] == 1
    assert "None is not of type 'object'" in params["reason"]


def test_schema_error_in_second_file() -> None:
    second = "keys:\n  - credential: cred-x\n    owner: {agency: X}\n    rules: []\n"
    params = invalid([("a.yaml", POLICY), ("b.yaml", second)])
    assert params["file"] == "b.yaml"
    assert params["line"] == 4
    assert "should be non-empty" in params["reason"]


def test_schema_first_error_by_line() -> None:
    text = POLICY.replace("max_batch: 5", "max_batch: 0").replace("approval: none", "approval: maybe")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "max_batch: 0")


# Semantic errors


def test_rule_id_reused_across_files() -> None:
    second = "keys:\n  - credential: cred-other\n    owner: {agency: X}\n    rules:\n      - id: seal-a-receipts\n" \
             "        applications: [app-motcua-b]\n"
    params = invalid([("a.yaml", POLICY), ("b.yaml", second)])
    assert params["file"] == "b.yaml"
    assert params["line"] == 5
    assert f"a.yaml line {line_of(POLICY, 'id: seal-a-receipts')}" in params["reason"]


def test_credential_listed_twice_across_files() -> None:
    second = "keys:\n  - credential: cred-seal-b\n    owner: {agency: X}\n    rules: [{id: other, applications: [x]}]\n"
    params = invalid([("a.yaml", POLICY), ("b.yaml", second)])
    assert params["file"] == "b.yaml"
    assert params["line"] == 2
    assert "cred-seal-b" in params["reason"]
    assert f"a.yaml line {line_of(POLICY, 'credential: cred-seal-b')}" in params["reason"]


def test_credential_listed_twice_in_one_file() -> None:
    text = POLICY + "  - credential: cred-seal-a\n    owner: {agency: A}\n    rules: [{id: again, applications: [x]}]\n"
    params = invalid([("p.yaml", text)])
    assert params["line"] == len(POLICY.splitlines()) + 1


def test_personal_key_unattended_rejected() -> None:
    text = POLICY.replace("      - id: personal-raw\n", "      - id: personal-raw\n        approval: none\n")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "id: personal-raw") + 1
    assert "personal key always needs its own official" in params["reason"]


def test_validity_window_reversed() -> None:
    text = POLICY.replace("valid_until: 2026-12-31T23:59:59+07:00", "valid_until: 2025-12-31T23:59:59+07:00")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "valid_until:")
    assert "must be later than valid_from" in params["reason"]


def test_validity_window_empty() -> None:
    text = POLICY.replace("valid_until: 2026-12-31T23:59:59+07:00", "valid_until: 2026-01-01T00:00:00+07:00")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "valid_until:")


def test_impossible_date_line() -> None:
    text = POLICY.replace("valid_from: 2026-01-01T00:00:00+07:00", "valid_from: 2026-13-01T00:00:00+07:00")
    params = invalid([("p.yaml", text)])
    assert params["line"] == line_of(text, "valid_from:")
    assert "not a valid date and time" in params["reason"]


def test_first_semantic_error_by_line() -> None:
    # The unknown application comes after the unattended personal rule in the file, so the rule is reported.
    text = POLICY.replace("      - id: personal-raw\n", "      - id: personal-raw\n        approval: none\n")
    text = text.replace("applications: [app-motcua-b]", "applications: [app-unknown]")
    params = invalid([("p.yaml", text)], KNOWN)
    assert params["line"] == line_of(text, "id: personal-raw") + 1


def test_unknown_credential_line() -> None:
    text = POLICY.replace("credential: cred-seal-b", "credential: cred-seal-c")
    params = invalid([("p.yaml", text)], KNOWN)
    assert params["line"] == line_of(text, "credential: cred-seal-c")
    assert "unknown credential 'cred-seal-c'" in params["reason"]


def test_unknown_application_line() -> None:
    text = POLICY.replace("applications: [app-motcua-b]", "applications:\n          - app-motcua-b\n"
                                                             "          - app-motcua-c")
    params = invalid([("p.yaml", text)], KNOWN)
    assert params["line"] == line_of(text, "- app-motcua-c")
    assert "unknown application 'app-motcua-c'" in params["reason"]


def test_unknown_official_line() -> None:
    text = POLICY.replace("owner: {officials: [off-personal]}",
                          "owner:\n      officials:\n        - off-personal\n        - off-ghost")
    params = invalid([("p.yaml", text)], KNOWN)
    assert params["line"] == line_of(text, "- off-ghost")
    assert "unknown official 'off-ghost'" in params["reason"]


def test_personal_key_other_owner_rejected() -> None:
    text = POLICY.replace("officials: [off-personal]", "officials: [off-other]")
    params = invalid([("p.yaml", text)], KNOWN)
    assert params["line"] == line_of(text, "officials: [off-other]")
    assert "personal key of official 'off-personal'" in params["reason"]


def test_personal_key_agency_owner_rejected() -> None:
    text = POLICY.replace("owner: {officials: [off-personal]}", 'owner: {agency: "Cơ quan A"}')
    params = invalid([("p.yaml", text)], KNOWN)
    assert params["line"] == line_of(text, "- credential: cred-personal") + 1
    assert "personal key" in params["reason"]


def test_personal_key_extra_owner_allowed() -> None:
    text = POLICY.replace("officials: [off-personal]", "officials: [off-personal, off-other]")
    parsed = parse_policy_documents([("p.yaml", text)], KNOWN)
    assert parsed.key_policy(PERSONAL).owner.officials == (OFFICIAL, "off-other")


def test_seal_key_official_owner_rejected() -> None:
    text = POLICY.replace('owner: {agency: "Cơ quan B"}', "owner: {officials: [off-other]}")
    params = invalid([("p.yaml", text)], KNOWN)
    assert params["line"] == line_of(text, "officials: [off-other]")
    assert "agency seal key" in params["reason"]


def test_seal_key_other_agency_rejected() -> None:
    text = POLICY.replace('owner: {agency: "Cơ quan B"}', 'owner: {agency: "Cơ quan A"}')
    params = invalid([("p.yaml", text)], KNOWN)
    assert params["line"] == line_of(text, "- credential: cred-seal-b") + 1
    assert "differs from the credential's agency 'Cơ quan B'" in params["reason"]


def test_tsa_credential_rejected() -> None:
    text = POLICY + ("  - credential: cred-tsa\n    owner: {agency: TSA}\n"
                     "    rules: [{id: tsa, applications: [app-motcua-a]}]\n")
    params = invalid([("p.yaml", text)], KNOWN)
    assert params["line"] == line_of(text, "credential: cred-tsa")
    assert "time-stamping" in params["reason"]


def test_store_checks_skipped_without_known_names() -> None:
    text = POLICY.replace("credential: cred-seal-b", "credential: cred-seal-c")
    assert parse_policy_documents([("p.yaml", text)]).key_policy("cred-seal-c") is not None


def test_policy_file_invalid_message() -> None:
    error = PolicyFileInvalid(file="p.yaml", line=7, reason="x")
    assert error.code == "policy_file_invalid"
    assert message(error.code, "vi", error.params).startswith("Tệp chính sách p.yaml không hợp lệ tại dòng 7: x.")
    assert message(error.code, "en", error.params).startswith("Policy file p.yaml is invalid at line 7: x.")


# Decisions


def test_seal_receipt_allowed_unattended(policies: PolicySet) -> None:
    decision = policies.decide(query(document_type="BN-TIEPNHAN"), NOW)
    assert decision.allowed
    assert decision.rule_id == "seal-a-receipts"
    assert decision.reason == "allowed"
    assert not decision.approval_required
    assert decision.visible
    assert decision.max_batch == 5
    assert decision.policy_version == policies.version


def test_seal_other_type_needs_approval(policies: PolicySet) -> None:
    decision = policies.decide(query(document_type="QD-01"), NOW)
    assert decision.allowed
    assert decision.rule_id == "seal-a-approved"
    assert decision.approval_required


def test_seal_receipt_without_type_needs_approval(policies: PolicySet) -> None:
    decision = policies.decide(query(document_type=None), NOW)
    assert decision.rule_id == "seal-a-approved"
    assert decision.approval_required


def test_seal_receipt_cades_needs_approval(policies: PolicySet) -> None:
    decision = policies.decide(query(signature_format="cades", document_type="BN-TIEPNHAN"), NOW)
    assert decision.rule_id == "seal-a-approved"
    assert decision.approval_required


def test_personal_key_always_needs_approval(policies: PolicySet) -> None:
    decision = policies.decide(query(PERSONAL, signature_format="raw", level="none"), NOW)
    assert decision.allowed
    assert decision.rule_id == "personal-raw"
    assert decision.approval_required


def test_format_not_allowed(policies: PolicySet) -> None:
    decision = policies.decide(query(signature_format="raw", level="none"), NOW)
    assert not decision.allowed
    assert decision.visible
    assert decision.reason == "format_not_allowed"
    assert decision.rule_id == "seal-a-receipts"  # both rules fail at the format: the first is named
    assert decision.approval_required


def test_level_not_allowed_names_closest_rule(policies: PolicySet) -> None:
    # personal-pades-lt fails at the level, the two others at the format.
    decision = policies.decide(query(PERSONAL, level="B-T"), NOW)
    assert not decision.allowed
    assert decision.reason == "level_not_allowed"
    assert decision.rule_id == "personal-pades-lt"


def test_document_type_not_allowed_names_closest_rule(policies: PolicySet) -> None:
    # personal-cades-decisions passes format and level, then fails at the document type.
    decision = policies.decide(query(PERSONAL, signature_format="cades", level="B-T", document_type="BN-KETQUA"), NOW)
    assert not decision.allowed
    assert decision.reason == "document_type_not_allowed"
    assert decision.rule_id == "personal-cades-decisions"


def test_document_type_missing_not_allowed(policies: PolicySet) -> None:
    decision = policies.decide(query(PERSONAL, signature_format="cades", level="B-T"), NOW)
    assert decision.reason == "document_type_not_allowed"


def test_level_matches_when_listed(policies: PolicySet) -> None:
    decision = policies.decide(query(PERSONAL, level="B-LTA"), NOW)
    assert decision.allowed
    assert decision.rule_id == "personal-pades-lt"


def test_key_not_yet_valid(policies: PolicySet) -> None:
    before = datetime(2025, 12, 31, 16, 59, 59, tzinfo=timezone.utc)  # 23:59:59 in Vietnam
    decision = policies.decide(query(PERSONAL, level="B-LT"), before)
    assert not decision.allowed
    assert decision.visible
    assert decision.reason == "key_not_yet_valid"
    assert decision.rule_id == "cred-personal.validity"


def test_key_valid_from_inclusive(policies: PolicySet) -> None:
    start = datetime(2025, 12, 31, 17, 0, 0, tzinfo=timezone.utc)
    assert policies.decide(query(PERSONAL, level="B-LT"), start).allowed


def test_key_valid_until_inclusive(policies: PolicySet) -> None:
    end = datetime(2026, 12, 31, 23, 59, 59, tzinfo=ICT)
    assert policies.decide(query(PERSONAL, level="B-LT"), end).allowed


def test_key_validity_ended(policies: PolicySet) -> None:
    after = datetime(2027, 1, 1, 0, 0, 0, tzinfo=ICT)
    decision = policies.decide(query(PERSONAL, level="B-LT"), after)
    assert not decision.allowed
    assert decision.reason == "key_validity_ended"
    assert decision.rule_id == "cred-personal.validity"


def test_validity_checked_before_rules(policies: PolicySet) -> None:
    after = datetime(2027, 1, 1, tzinfo=ICT)
    decision = policies.decide(query(PERSONAL, signature_format="xades"), after)
    assert decision.reason == "key_validity_ended"


def test_batch_at_max_allowed(policies: PolicySet) -> None:
    assert policies.decide(query(document_type="BN-KETQUA", batch_size=5), NOW).allowed


def test_batch_too_large(policies: PolicySet) -> None:
    decision = policies.decide(query(document_type="BN-KETQUA", batch_size=6), NOW)
    assert not decision.allowed
    assert decision.reason == "batch_too_large"
    assert decision.rule_id == "cred-seal-a.max_batch"
    assert decision.max_batch == 5


def test_batch_without_max_allowed(policies: PolicySet) -> None:
    assert policies.decide(query(PERSONAL, level="B-LT", batch_size=500), NOW).allowed


def test_batch_size_zero_invalid() -> None:
    with pytest.raises(ValueError):
        query(batch_size=0)


def test_naive_time_invalid(policies: PolicySet) -> None:
    with pytest.raises(ValueError):
        policies.decide(query(), datetime(2026, 12, 5, 10, 0))


def test_personal_owner_never_unattended() -> None:
    # Validation rejects approval: none under officials; the decision holds the line on its own too.
    rule = Rule(id="r", applications=frozenset({APP_A}), document_types=None, formats=None, levels=None,
                approval=APPROVAL_NONE, description="", file="built.yaml", line=1)
    key = KeyPolicy(credential_id=PERSONAL, owner=KeyOwner(agency=None, officials=(OFFICIAL,)), valid_from=None,
                    valid_until=None, max_batch=None, quota=QuotaLimits(), rules=(rule,), description="",
                    file="built.yaml", line=1)
    decision = PolicySet([key], []).decide(query(PERSONAL), NOW)
    assert decision.allowed
    assert decision.approval_required


def test_first_matching_rule_wins() -> None:
    text = POLICY.replace("      - id: seal-a-receipts\n", "      - id: seal-a-first\n"
                          "        applications: [app-motcua-a]\n      - id: seal-a-receipts\n")
    decision = parse_policy_documents([("p.yaml", text)]).decide(query(document_type="BN-TIEPNHAN"), NOW)
    assert decision.rule_id == "seal-a-first"
    assert decision.approval_required


# Isolation between agencies


def test_other_agency_key_hidden(policies: PolicySet) -> None:
    decision = policies.decide(query(SEAL_B, APP_A), NOW)
    assert not decision.visible
    assert not decision.allowed
    assert decision.rule_id == DEFAULT_DENY_RULE
    assert decision.max_batch is None


def test_hidden_key_same_as_unknown_signer(policies: PolicySet) -> None:
    other_agency = policies.decide(query(SEAL_B, APP_A, document_type="BN-TIEPNHAN"), NOW)
    nonexistent = policies.decide(query("cred-does-not-exist", APP_A, document_type="BN-TIEPNHAN"), NOW)
    assert other_agency == nonexistent


def test_hidden_key_reveals_no_window(policies: PolicySet) -> None:
    # cred-personal is outside its window here, but application B must not learn even that.
    after = datetime(2027, 6, 1, tzinfo=ICT)
    decision = policies.decide(query(PERSONAL, APP_B), after)
    assert not decision.visible
    assert decision.reason == "credential_not_visible"


def test_credentials_for_each_agency(policies: PolicySet) -> None:
    assert policies.credentials_for(APP_A) == {SEAL_A, PERSONAL}
    assert policies.credentials_for(APP_B) == {SEAL_B}
    assert policies.credentials_for("app-unknown") == set()


# The shipped demo policy


MAU_SON = "Ủy ban nhân dân huyện Mẫu Sơn"
DEMO_KNOWN = KnownNames(
    credentials={
        "cred-tran-thi-bich-ngoc": KnownCredential("personal", "off-tran-thi-bich-ngoc", MAU_SON),
        "cred-nguyen-van-an": KnownCredential("personal", "off-nguyen-van-an", MAU_SON),
        "cred-seal-ubnd-mau-son": KnownCredential("seal", None, MAU_SON),
        "cred-seal-so-tu-phap": KnownCredential("seal", None, "Sở Tư pháp tỉnh Thử Nghiệm"),
        "cred-tsa": KnownCredential("tsa", None, ""),
    },
    applications=frozenset({"app-motcua-demo", "app-motcua-so-tu-phap"}),
    officials=frozenset({"off-tran-thi-bich-ngoc", "off-nguyen-van-an", "off-vu-thi-lan"}),
)


@pytest.fixture(scope="module")
def demo_policies() -> PolicySet:
    return load_policies(PROJECT_ROOT / "policies", DEMO_KNOWN)


def test_demo_policy_official_signs(demo_policies: PolicySet) -> None:
    for credential in ("cred-tran-thi-bich-ngoc", "cred-nguyen-van-an"):
        for signature_format, level in (("pades", "B-T"), ("cades", "B-LT"), ("raw", "none")):
            decision = demo_policies.decide(query(credential, "app-motcua-demo", signature_format, level), NOW)
            assert decision.allowed, (credential, signature_format)
            assert decision.approval_required, (credential, signature_format)


def test_demo_seal_receipts_unattended(demo_policies: PolicySet) -> None:
    for document_type in ("BN-TIEPNHAN", "BN-KETQUA"):
        decision = demo_policies.decide(query("cred-seal-ubnd-mau-son", "app-motcua-demo",
                                              document_type=document_type), NOW)
        assert decision.rule_id == "seal-receipts-unattended", document_type
        assert not decision.approval_required, document_type


def test_demo_seal_other_type_needs_clerk(demo_policies: PolicySet) -> None:
    decision = demo_policies.decide(query("cred-seal-ubnd-mau-son", "app-motcua-demo", document_type="QD-01"), NOW)
    assert decision.rule_id == "seal-with-clerk-approval"
    assert decision.approval_required


def test_demo_agencies_isolated(demo_policies: PolicySet) -> None:
    assert "cred-seal-so-tu-phap" not in demo_policies.credentials_for("app-motcua-demo")
    assert demo_policies.credentials_for("app-motcua-so-tu-phap") == {"cred-seal-so-tu-phap"}


def test_read_policy_dir_sorted_yaml_only(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("keys: []\n", encoding="utf-8")
    (tmp_path / "a.yaml").write_text("description: a\nkeys: []\n", encoding="utf-8")
    (tmp_path / "schema.json").write_text("{}", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    assert read_policy_dir(tmp_path) == [("a.yaml", "description: a\nkeys: []\n"), ("b.yaml", "keys: []\n")]


# Explanations


def usage(used: dict[str, int], limits: dict[str, int | None]) -> QuotaUsage:
    periods = {"daily": "2026-12-05", "monthly": "2026-12", "lifetime": "lifetime",
               "per_application.daily": "2026-12-05", "per_application.monthly": "2026-12"}
    counters = tuple(
        QuotaCounter(name, APP_A if name.startswith("per_application") else "", period, limits.get(name),
                     used.get(name, 0))
        for name, period in periods.items()
    )
    return QuotaUsage(SEAL_A, APP_A, counters)


def test_explain_allowed_vietnamese(policies: PolicySet) -> None:
    lines = policies.with_version("v3").explain(query(document_type="BN-TIEPNHAN"), NOW).lines("vi")
    rule_line = line_of(POLICY, "id: seal-a-receipts")
    assert lines[0] == "Chính sách khóa phiên bản v3, xét tại thời điểm 2026-12-05T10:00:00+07:00"
    assert lines[1] == ("Yêu cầu: hệ thống app-motcua-a ký bằng khóa cred-seal-a, định dạng pades, mức B-T, "
                        "loại văn bản BN-TIEPNHAN, 1 chữ ký mỗi lần phê duyệt")
    assert lines[2] == f"Kết quả: ĐƯỢC PHÉP theo quy tắc seal-a-receipts (p.yaml, dòng {rule_line})."
    assert "Phê duyệt: không cần người phê duyệt bằng mã OTP; dịch vụ ký ngay khi nhận yêu cầu." in lines
    assert "Chủ sở hữu khóa: cơ quan Cơ quan A" in lines
    assert "  - mỗi ngày, mọi hệ thống: tối đa 10" in lines
    assert "  - mỗi tháng, mọi hệ thống: không giới hạn" in lines
    assert "  - mỗi ngày, riêng hệ thống app-motcua-a: tối đa 4" in lines
    assert f"  1. seal-a-receipts (p.yaml, dòng {rule_line}): khớp" in lines


def test_explain_allowed_english(policies: PolicySet) -> None:
    lines = policies.with_version("v3").explain(query(document_type="QD-01"), NOW).lines("en")
    assert lines[0] == "Key policy version v3, decided at 2026-12-05T10:00:00+07:00"
    assert lines[2].startswith("Result: ALLOWED by rule seal-a-approved (p.yaml, line ")
    assert "Approval: an OTP code from the seal holder (văn thư) of Cơ quan A." in lines
    assert "Key validity window: unbounded" in lines
    assert "Maximum per approval: 5 signatures" in lines
    assert ("  1. seal-a-receipts (p.yaml, line {}): does not match, document type QD-01 is not allowed "
            "(allowed: BN-KETQUA, BN-TIEPNHAN)".format(line_of(POLICY, "id: seal-a-receipts"))) in lines


def test_explain_denied_level_both_languages(policies: PolicySet) -> None:
    explanation = policies.explain(query(PERSONAL, level="B-T"), NOW)
    assert explanation.deciding_rule is not None
    assert explanation.deciding_rule.id == "personal-pades-lt"
    assert ("Kết quả: BỊ TỪ CHỐI theo quy tắc personal-pades-lt: mức B-T không được phép "
            "(được phép: B-LT, B-LTA).") in explanation.lines("vi")
    assert ("Result: DENIED by rule personal-pades-lt: level B-T is not allowed (allowed: B-LT, B-LTA)."
            in explanation.lines("en"))


def test_explain_personal_approver(policies: PolicySet) -> None:
    explanation = policies.explain(query(PERSONAL, level="B-LT"), NOW)
    assert "Phê duyệt: cần mã OTP của cán bộ sở hữu khóa (off-personal)." in explanation.lines("vi")
    assert ("Key validity window: from 2026-01-01T00:00:00+07:00 until 2026-12-31T23:59:59+07:00"
            in explanation.lines("en"))


def test_explain_validity_ended_vietnamese(policies: PolicySet) -> None:
    lines = policies.explain(query(PERSONAL, level="B-LT"), datetime(2027, 1, 2, tzinfo=ICT)).lines("vi")
    assert lines[2] == ("Kết quả: BỊ TỪ CHỐI theo quy tắc cred-personal.validity: khóa đã hết thời hạn sử dụng "
                        "(kết thúc lúc 2026-12-31T23:59:59+07:00).")


def test_explain_batch_too_large_english(policies: PolicySet) -> None:
    lines = policies.explain(query(document_type="BN-KETQUA", batch_size=9), NOW).lines("en")
    assert lines[2] == ("Result: DENIED by rule cred-seal-a.max_batch: a batch of 9 signatures is over the limit "
                        "of 5 per approval.")


def test_explain_hidden_key(policies: PolicySet) -> None:
    explanation = policies.explain(query(SEAL_B, APP_A), NOW)
    assert not explanation.would_sign
    assert explanation.lines("vi")[2].startswith(
        "Kết quả: BỊ TỪ CHỐI vì không quy tắc nào của khóa cred-seal-b nêu tên hệ thống app-motcua-a.")
    assert explanation.lines("en")[2].startswith(
        "Result: DENIED because no rule of key cred-seal-b names application app-motcua-a.")


def test_explain_key_not_in_policy(policies: PolicySet) -> None:
    explanation = policies.explain(query("cred-nobody"), NOW)
    assert explanation.key is None
    assert explanation.lines("en")[2].startswith("Result: DENIED because the policy has no entry for key cred-nobody.")
    assert len(explanation.lines("en")) == 3


def test_explain_quota_usage_lines(policies: PolicySet) -> None:
    current = usage({"daily": 7, "per_application.daily": 2}, {"daily": 10, "lifetime": 100,
                                                               "per_application.daily": 4})
    explanation = policies.explain(query(document_type="BN-KETQUA", batch_size=2), NOW, current)
    assert explanation.would_sign
    assert "  - mỗi ngày, mọi hệ thống, kỳ 2026-12-05: đã dùng 7, tối đa 10, còn 3" in explanation.lines("vi")
    assert "  - per month, all applications, period 2026-12: 0 used, unlimited" in explanation.lines("en")


def test_explain_quota_would_block(policies: PolicySet) -> None:
    current = usage({"daily": 7, "per_application.daily": 3}, {"daily": 10, "lifetime": 100,
                                                               "per_application.daily": 4})
    explanation = policies.explain(query(document_type="BN-KETQUA", batch_size=2), NOW, current)
    assert explanation.decision.allowed
    assert not explanation.would_sign
    assert explanation.quota_denial is not None
    assert explanation.quota_denial.rule == "cred-seal-a.quota.per_application.daily"
    assert ("lần ký sẽ bị từ chối theo quy tắc cred-seal-a.quota.per_application.daily: đã dùng 3 trên tối đa 4 "
            "chữ ký (kỳ tính 2026-12-05), lô này cần 2.") in explanation.lines("vi")[2]


def test_explain_to_json_serializable(policies: PolicySet) -> None:
    current = usage({"daily": 1}, {"daily": 10})
    data = json.loads(json.dumps(policies.explain(query(document_type="BN-KETQUA"), NOW, current).to_json()))
    assert data["decision"]["rule_id"] == "seal-a-receipts"
    assert data["key"]["owner"] == {"agency": "Cơ quan A", "officials": []}
    assert [rule["allows"] for rule in data["rules"]] == [True, True]
    assert data["quota_usage"][0] == {"name": "daily", "application_id": "", "period": "2026-12-05", "limit": 10,
                                      "used": 1}


def test_explain_unknown_language(policies: PolicySet) -> None:
    with pytest.raises(ValueError):
        policies.explain(query(), NOW).lines("fr")


# Characters that a terminal acts on would let a policy look different to the approving officer.


@pytest.mark.parametrize(("text", "line", "character"), [
    ("keys: []\n        approval: none\r                  \n", 2, "U+000D"),
    ("description: a\n# \u202egnihton\n", 2, "U+202E"),
    ("description: \x1b[2Ka\n", 1, "U+001B"),
])
def test_policy_text_with_hidden_character_rejected(text: str, line: int, character: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        check_policy_input([("province.yaml", text)])

    assert raised.value.code == "field_invalid"
    assert raised.value.params["field"] == "documents[0].text"
    assert f"province.yaml line {line} contains {character}" in raised.value.params["reason"]


def test_policy_text_with_crlf_and_tabs_accepted() -> None:
    check_policy_input([("province.yaml", "description: a\r\n\t# tab\r\n")])


async def test_policy_parses_leave_default_executor_free() -> None:
    """More parses than the default executor has threads must not delay the HSM calls that use it."""
    loop = asyncio.get_running_loop()
    parses = [asyncio.ensure_future(parse_off_loop(time.sleep, 0.25)) for _ in range(12)]
    await asyncio.sleep(0.05)

    started = time.monotonic()
    await loop.run_in_executor(None, lambda: None)
    waited = time.monotonic() - started
    await asyncio.gather(*parses)

    assert waited < 0.1, f"a default-executor call waited {waited:.2f} s behind policy parses"
