"""Key policy decisions: may this application ask this credential for this format?

Policies are YAML documents under ``policies/`` validated against
``policies/schema.json``. A request is allowed by the first rule that lists
both its application and its credential (``"*"`` matches any) and, when the
rule lists formats, its format. Without such a rule it is denied by ``default-deny``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from signserver.errors import InvalidInput

__all__ = ["PolicySet", "PolicyDecision", "load_policies", "PolicyFileInvalid"]

DEFAULT_DENY_RULE = "default-deny"


class PolicyFileInvalid(InvalidInput):
    code = "policy_file_invalid"


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    rule_id: str
    policy_version: str


@dataclass(frozen=True)
class _Rule:
    id: str
    source: str
    applications: frozenset[str]
    credentials: frozenset[str]
    formats: frozenset[str] | None

    def matches(self, application_id: str, credential_id: str, signature_format: str) -> bool:
        if "*" not in self.applications and application_id not in self.applications:
            return False
        if "*" not in self.credentials and credential_id not in self.credentials:
            return False
        return self.formats is None or signature_format in self.formats


@dataclass(frozen=True)
class PolicySet:
    rules: tuple[_Rule, ...]
    version: str  # file versions plus a content digest, so a decision names exactly what decided it

    def decide(self, application_id: str, credential_id: str, signature_format: str) -> PolicyDecision:
        for rule in self.rules:
            if rule.matches(application_id, credential_id, signature_format):
                return PolicyDecision(True, rule.id, self.version)
        return PolicyDecision(False, DEFAULT_DENY_RULE, self.version)

    def credentials_for(self, application_id: str) -> set[str] | None:
        """Credential ids an application may request; None means any."""
        allowed: set[str] = set()
        for rule in self.rules:
            if "*" in rule.applications or application_id in rule.applications:
                if "*" in rule.credentials:
                    return None
                allowed |= rule.credentials
        return allowed


def _schema(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "schema.json").read_text())


def load_policies(directory: Path) -> PolicySet:
    """Load and validate every ``*.yaml`` file in ``directory``, in file-name order."""
    schema = _schema(directory)
    digest = hashlib.sha256()
    versions = []
    rules: list[_Rule] = []
    seen_ids: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")):
        raw = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + raw)
        try:
            document = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            raise PolicyFileInvalid(file=path.name, line=(line + 1) if line is not None else "?", reason=str(exc)) from None
        try:
            jsonschema.validate(document, schema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(part) for part in exc.absolute_path) or "(document)"
            raise PolicyFileInvalid(file=path.name, line=where, reason=exc.message) from None
        versions.append(f"{path.stem}@{document['version']}")
        for item in document["rules"]:
            if item["id"] in seen_ids:
                raise PolicyFileInvalid(file=path.name, line=item["id"], reason=f"rule id also used in {seen_ids[item['id']]}")
            seen_ids[item["id"]] = path.name
            formats = item.get("formats")
            rules.append(
                _Rule(
                    id=item["id"],
                    source=path.name,
                    applications=frozenset(item["applications"]),
                    credentials=frozenset(item["credentials"]),
                    formats=frozenset(formats) if formats else None,
                )
            )
    version = ",".join(versions) + "#" + digest.hexdigest()[:12]
    return PolicySet(tuple(rules), version)
