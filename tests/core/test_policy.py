"""Policy files: validation with file and location, and first-match decisions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from signserver.config import PROJECT_ROOT
from signserver.core.policy import PolicyFileInvalid, load_policies


def policy_dir(tmp_path: Path, text: str) -> Path:
    shutil.copy(PROJECT_ROOT / "policies" / "schema.json", tmp_path / "schema.json")
    (tmp_path / "p.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def test_shipped_policy_loads() -> None:
    policies = load_policies(PROJECT_ROOT / "policies")
    assert policies.decide("app-motcua-demo", "cred-tran-thi-bich-ngoc", "pades").allowed


def test_unlisted_application_denied(tmp_path: Path) -> None:
    policies = load_policies(policy_dir(tmp_path, "version: 1\nrules:\n  - {id: a, applications: [x], credentials: ['*']}\n"))
    decision = policies.decide("y", "cred-1", "pades")
    assert not decision.allowed
    assert decision.rule_id == "default-deny"


def test_wildcard_credential_allows(tmp_path: Path) -> None:
    policies = load_policies(policy_dir(tmp_path, "version: 1\nrules:\n  - {id: a, applications: [x], credentials: ['*']}\n"))
    decision = policies.decide("x", "cred-1", "pades")
    assert decision.allowed
    assert decision.rule_id == "a"


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileInvalid) as caught:
        load_policies(policy_dir(tmp_path, "version: 1\nrules:\n  - id: [unclosed\n"))
    assert caught.value.params["file"] == "p.yaml"
    assert caught.value.params["line"] != "?"


def test_schema_violation_names_location(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileInvalid) as caught:
        load_policies(policy_dir(tmp_path, "version: 1\nrules:\n  - {id: a, applications: [], credentials: [c]}\n"))
    assert caught.value.params["line"] == "rules/0/applications"
