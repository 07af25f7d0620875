"""Key policy decisions: may this application have this key sign this document, and with whose approval?

A policy set governs each signing key (a credential) with one entry: its
owner (officials for a personal key, an agency for a seal key), an optional
validity window, the maximum number of signatures one approval may cover (``max_batch``),
quotas, and rules. Each rule names the applications it serves and may narrow
formats, levels and document types. A rule may waive the human OTP approval
(``approval: none``) only under an agency's key, so a personal key always
needs its own official.

:meth:`PolicySet.decide` checks, in order:

1. that some rule of the key names the application; otherwise the key is not
   ``visible`` to it, and the caller must answer as for an unknown signer so
   that one agency's application learns nothing about another agency's keys;
2. the validity window (rule ``<credential>.validity``);
3. the rules naming the application, in file order: the first whose formats,
   levels and document types all match allows;
4. the batch size against ``max_batch`` (rule ``<credential>.max_batch``).

Quotas are counted separately, right before each HSM signature (see
:mod:`signserver.core.quotas`). Files are read and validated by
:mod:`signserver.core.policy_files`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .policy_explain import Explanation, RuleCheck
from .policy_files import (
    KnownCredential,
    KnownNames,
    PolicyDocument,
    PolicyFileInvalid,
    parse_date_time,
    read_policy_dir,
    shipped_schema,
    validate_documents,
)
from .quotas import quota_denial

if TYPE_CHECKING:
    from .quotas import QuotaUsage

__all__ = [
    "PolicySet",
    "PolicyQuery",
    "PolicyDecision",
    "KeyPolicy",
    "KeyOwner",
    "QuotaLimits",
    "Rule",
    "KnownCredential",
    "KnownNames",
    "Explanation",
    "PolicyFileInvalid",
    "parse_policy_documents",
    "read_policy_dir",
    "load_policies",
    "APPROVAL_NONE",
    "APPROVAL_OFFICIAL",
    "DEFAULT_DENY_RULE",
    "DECISION_REASONS",
    "documents_digest",
]

APPROVAL_NONE = "none"
APPROVAL_OFFICIAL = "official"
# The rule id of a decision on a key the application may not see. It reveals nothing of the key's policy.
DEFAULT_DENY_RULE = "default-deny"

# Decision reasons.
ALLOWED = "allowed"
# One reason for a credential without a policy entry and for one whose rules do not name the application, so
# that the decision itself cannot tell an application which credentials exist.
NOT_VISIBLE = "credential_not_visible"
KEY_NOT_YET_VALID = "key_not_yet_valid"
KEY_VALIDITY_ENDED = "key_validity_ended"
FORMAT_NOT_ALLOWED = "format_not_allowed"
LEVEL_NOT_ALLOWED = "level_not_allowed"
DOCUMENT_TYPE_NOT_ALLOWED = "document_type_not_allowed"
BATCH_TOO_LARGE = "batch_too_large"
DECISION_REASONS = (ALLOWED, NOT_VISIBLE, KEY_NOT_YET_VALID, KEY_VALIDITY_ENDED, FORMAT_NOT_ALLOWED,
                    LEVEL_NOT_ALLOWED, DOCUMENT_TYPE_NOT_ALLOWED, BATCH_TOO_LARGE)


@dataclass(frozen=True)
class PolicyQuery:
    """The input of a decision: application, credential, format and level, document type and batch size."""

    application_id: str
    credential_id: str
    signature_format: str  # pades | cades | raw
    signature_level: str  # B-B | B-T | B-LT | B-LTA, or "none" for format raw
    document_type: str | None = None
    batch_size: int = 1  # signatures one approval (or one CSC SAD) covers

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    rule_id: str
    policy_version: str
    reason: str
    # Whether a person (the key's official, or the seal holder) must approve with an OTP code.
    # It is True for every personal key and every denial.
    approval_required: bool
    # False when no rule of the key names the application. The caller must then respond as for an unknown signer.
    visible: bool
    max_batch: int | None


@dataclass(frozen=True)
class KeyOwner:
    """Exactly one of an agency (a seal key) and the officials who own a personal key."""

    agency: str | None
    officials: tuple[str, ...]

    @property
    def is_agency(self) -> bool:
        return self.agency is not None


@dataclass(frozen=True)
class QuotaLimits:
    """Signature counts allowed, where None is unlimited. Days and months are in Vietnam time (UTC+7)."""

    daily: int | None = None
    monthly: int | None = None
    lifetime: int | None = None
    per_application_daily: int | None = None
    per_application_monthly: int | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    applications: frozenset[str]
    document_types: frozenset[str] | None  # None: any document type, also none sent
    formats: frozenset[str] | None  # None: any format
    levels: frozenset[str] | None  # None: any level
    approval: str  # APPROVAL_OFFICIAL | APPROVAL_NONE
    description: str
    file: str
    line: int

    def mismatch(self, query: PolicyQuery) -> str | None:
        """Return the reason this rule does not allow ``query``, checking format, level, document type in turn."""
        if self.formats is not None and query.signature_format not in self.formats:
            return FORMAT_NOT_ALLOWED
        if self.levels is not None and query.signature_level not in self.levels:
            return LEVEL_NOT_ALLOWED
        if self.document_types is not None and query.document_type not in self.document_types:
            return DOCUMENT_TYPE_NOT_ALLOWED
        return None


# How far a query got through a rule's checks, to pick the closest rule of a denial.
_MISMATCH_PROGRESS = {FORMAT_NOT_ALLOWED: 0, LEVEL_NOT_ALLOWED: 1, DOCUMENT_TYPE_NOT_ALLOWED: 2}


@dataclass(frozen=True)
class KeyPolicy:
    """The policy entry of one credential."""

    credential_id: str
    owner: KeyOwner
    valid_from: datetime | None
    valid_until: datetime | None
    max_batch: int | None
    quota: QuotaLimits
    rules: tuple[Rule, ...]
    description: str
    file: str
    line: int

    @property
    def validity_rule_id(self) -> str:
        return f"{self.credential_id}.validity"

    @property
    def max_batch_rule_id(self) -> str:
        return f"{self.credential_id}.max_batch"

    def rules_for(self, application_id: str) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if application_id in rule.applications)

    def validity_problem(self, now: datetime) -> str | None:
        """Return KEY_NOT_YET_VALID or KEY_VALIDITY_ENDED when ``now`` is outside the window (ends inclusive)."""
        if self.valid_from is not None and now < self.valid_from:
            return KEY_NOT_YET_VALID
        if self.valid_until is not None and now > self.valid_until:
            return KEY_VALIDITY_ENDED
        return None


class PolicySet:
    """The parsed policy files: one :class:`KeyPolicy` per credential. Immutable."""

    def __init__(self, keys: Iterable[KeyPolicy], documents: Sequence[tuple[str, str]], version: str | None = None):
        self._keys: dict[str, KeyPolicy] = {key.credential_id: key for key in keys}
        self.documents: tuple[tuple[str, str], ...] = tuple(documents)
        self.digest = documents_digest(self.documents)
        # The store's version label (such as "v3") once applied, or a digest-based label before that.
        self.version = version if version is not None else f"sha256:{self.digest[:16]}"

    def __repr__(self) -> str:
        return f"PolicySet(version={self.version!r}, credentials={sorted(self._keys)!r})"

    def with_version(self, label: str) -> PolicySet:
        return PolicySet(self._keys.values(), self.documents, label)

    @property
    def keys(self) -> tuple[KeyPolicy, ...]:
        return tuple(self._keys.values())

    def credential_ids(self) -> set[str]:
        return set(self._keys)

    def key_policy(self, credential_id: str) -> KeyPolicy | None:
        return self._keys.get(credential_id)

    def credentials_for(self, application_id: str) -> set[str]:
        """Return the credentials that some rule lets ``application_id`` request, in or out of their validity window."""
        return {key.credential_id for key in self._keys.values() if key.rules_for(application_id)}

    def decide(self, query: PolicyQuery, now: datetime) -> PolicyDecision:
        """Decide ``query`` at ``now`` (timezone-aware), in the order given in the module docstring."""
        return self._evaluate(query, now)[0]

    def explain(self, query: PolicyQuery, now: datetime, usage: QuotaUsage | None = None) -> Explanation:
        """Decide ``query`` and return why, with every rule that names the application.

        ``usage``, read by :func:`~signserver.core.quotas.quota_usage` with this set's key policy, adds the
        counters and whether the query's batch would pass a quota.
        """
        decision, checks = self._evaluate(query, now)
        key = self._keys.get(query.credential_id)
        denied = quota_denial(usage, query.batch_size) if usage is not None else None
        return Explanation(query=query, at=now, policy_version=self.version, decision=decision, key=key,
                           rule_checks=checks, usage=usage, quota_denial=denied)

    def _evaluate(self, query: PolicyQuery, now: datetime) -> tuple[PolicyDecision, tuple[RuleCheck, ...]]:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        key = self._keys.get(query.credential_id)
        if key is None:
            return self._hidden(), ()
        rules = key.rules_for(query.application_id)
        if not rules:
            return self._hidden(), ()

        checks = tuple(RuleCheck(rule, rule.mismatch(query)) for rule in rules)
        window_problem = key.validity_problem(now)
        if window_problem is not None:
            return self._denied(key, key.validity_rule_id, window_problem), checks

        matched = next((check.rule for check in checks if check.mismatch is None), None)
        if matched is None:
            closest = _closest_denial(checks)
            assert closest.mismatch is not None
            return self._denied(key, closest.rule.id, closest.mismatch), checks
        if key.max_batch is not None and query.batch_size > key.max_batch:
            return self._denied(key, key.max_batch_rule_id, BATCH_TOO_LARGE), checks

        approval_required = matched.approval != APPROVAL_NONE or not key.owner.is_agency
        decision = PolicyDecision(allowed=True, rule_id=matched.id, policy_version=self.version, reason=ALLOWED,
                                  approval_required=approval_required, visible=True, max_batch=key.max_batch)
        return decision, checks

    def _hidden(self) -> PolicyDecision:
        return PolicyDecision(allowed=False, rule_id=DEFAULT_DENY_RULE, policy_version=self.version,
                              reason=NOT_VISIBLE, approval_required=True, visible=False, max_batch=None)

    def _denied(self, key: KeyPolicy, rule_id: str, reason: str) -> PolicyDecision:
        return PolicyDecision(allowed=False, rule_id=rule_id, policy_version=self.version, reason=reason,
                              approval_required=True, visible=True, max_batch=key.max_batch)


def _closest_denial(checks: Sequence[RuleCheck]) -> RuleCheck:
    """Return the rule that got furthest through its checks (format, level, document type), the first one on a tie."""
    closest = checks[0]
    for check in checks[1:]:
        if _MISMATCH_PROGRESS[check.mismatch or ""] > _MISMATCH_PROGRESS[closest.mismatch or ""]:
            closest = check
    return closest


def documents_digest(documents: Sequence[tuple[str, str]]) -> str:
    """Return the SHA-256 hex digest of the (file name, text) pairs in their order, each part followed by a NUL byte.

    YAML forbids NUL in text and file systems forbid it in names, so the encoding is unambiguous.
    """
    digest = hashlib.sha256()
    for name, text in documents:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


def parse_policy_documents(documents: Sequence[tuple[str, str]], known: KnownNames | None = None,
                           schema: dict[str, Any] | None = None) -> PolicySet:
    """Validate (file name, YAML text) pairs and build the policy set.

    ``known`` adds the checks against the store: every credential, application and official named must exist, and
    owners must match the credential's kind. ``schema`` defaults to ``policies/schema.json``.
    Raises PolicyFileInvalid with the file, line and reason of the first error.
    """
    validated = validate_documents(documents, known, schema if schema is not None else shipped_schema())
    keys = [_key_policy(document, index, item) for document in validated
            for index, item in enumerate(document.data["keys"])]
    return PolicySet(keys, documents)


def load_policies(directory: Path, known: KnownNames | None = None) -> PolicySet:
    """Parse the ``*.yaml`` files of ``directory`` in file-name order."""
    return parse_policy_documents(read_policy_dir(directory), known)


def _key_policy(document: PolicyDocument, index: int, item: Mapping[str, Any]) -> KeyPolicy:
    owner = item["owner"]
    quota = item.get("quota", {})
    per_application = quota.get("per_application", {})
    rules = tuple(_rule(document, index, rule_index, rule) for rule_index, rule in enumerate(item["rules"]))
    return KeyPolicy(
        credential_id=item["credential"],
        owner=KeyOwner(agency=owner.get("agency"), officials=tuple(owner.get("officials", ()))),
        valid_from=parse_date_time(item["valid_from"]) if "valid_from" in item else None,
        valid_until=parse_date_time(item["valid_until"]) if "valid_until" in item else None,
        max_batch=item.get("max_batch"),
        quota=QuotaLimits(daily=quota.get("daily"), monthly=quota.get("monthly"), lifetime=quota.get("lifetime"),
                          per_application_daily=per_application.get("daily"),
                          per_application_monthly=per_application.get("monthly")),
        rules=rules,
        description=item.get("description", ""),
        file=document.name,
        line=document.line("keys", index),
    )


def _rule(document: PolicyDocument, key_index: int, rule_index: int, item: Mapping[str, Any]) -> Rule:
    def optional_set(field: str) -> frozenset[str] | None:
        return frozenset(item[field]) if field in item else None

    return Rule(
        id=item["id"],
        applications=frozenset(item["applications"]),
        document_types=optional_set("document_types"),
        formats=optional_set("formats"),
        levels=optional_set("levels"),
        approval=item.get("approval", APPROVAL_OFFICIAL),
        description=item.get("description", ""),
        file=document.name,
        line=document.line("keys", key_index, "rules", rule_index),
    )
