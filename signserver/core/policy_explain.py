"""Explanations of policy decisions for security officers (``signserver policy explain``).

An :class:`Explanation` is the decision plus what led to it: the key's
owner, validity window, batch limit and quotas, and every rule of the key
that names the application with the first check it fails. It shows the
whole configuration of the key, so it is for security officers only and must
never be returned to an application.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .quotas import VIETNAM_TIME

if TYPE_CHECKING:
    from .policy import KeyPolicy, PolicyDecision, PolicyQuery, Rule
    from .quotas import QuotaDenied, QuotaUsage

__all__ = ["Explanation", "RuleCheck", "EXPLANATION_LANGUAGES"]

EXPLANATION_LANGUAGES = ("vi", "en")


@dataclass(frozen=True)
class RuleCheck:
    """One rule naming the application, and the reason it does not allow the query (None: it allows it)."""

    rule: Rule
    mismatch: str | None


@dataclass(frozen=True)
class Explanation:
    query: PolicyQuery
    at: datetime
    policy_version: str
    decision: PolicyDecision
    key: KeyPolicy | None  # None when the policy has no entry for the credential
    rule_checks: tuple[RuleCheck, ...]  # the key's rules that name the application, in order
    usage: QuotaUsage | None  # None when the caller gave no usage
    quota_denial: QuotaDenied | None  # the quota the query's batch would pass, when usage is given

    @property
    def would_sign(self) -> bool:
        """Whether the policy allows the query and, as far as the given usage shows, the quotas do too."""
        return self.decision.allowed and self.quota_denial is None

    @property
    def deciding_rule(self) -> Rule | None:
        """The written rule that allowed or denied, or None for the engine's own rules (validity, max_batch)."""
        for check in self.rule_checks:
            if check.rule.id == self.decision.rule_id:
                return check.rule
        return None

    def to_json(self) -> dict[str, Any]:
        """Return the explanation as JSON-ready values, with times in ISO 8601."""
        key = self.key
        return {
            "policy_version": self.policy_version,
            "at": self.at.isoformat(),
            "query": asdict(self.query),
            "decision": asdict(self.decision),
            "would_sign": self.would_sign,
            "key": None if key is None else {
                "credential_id": key.credential_id,
                "owner": {"agency": key.owner.agency, "officials": list(key.owner.officials)},
                "valid_from": key.valid_from.isoformat() if key.valid_from else None,
                "valid_until": key.valid_until.isoformat() if key.valid_until else None,
                "max_batch": key.max_batch,
                "quota": asdict(key.quota),
                "file": key.file,
                "line": key.line,
            },
            "rules": [{"id": check.rule.id, "file": check.rule.file, "line": check.rule.line,
                       "allows": check.mismatch is None, "mismatch": check.mismatch,
                       "approval": check.rule.approval} for check in self.rule_checks],
            "quota_usage": None if self.usage is None else [asdict(counter) for counter in self.usage.counters],
            "quota_denial": None if self.quota_denial is None else asdict(self.quota_denial),
        }

    def lines(self, language: str = "vi") -> list[str]:
        """Return readable lines in Vietnamese ("vi", full diacritics) or English ("en")."""
        if language not in EXPLANATION_LANGUAGES:
            raise ValueError(f"language must be one of {', '.join(EXPLANATION_LANGUAGES)}, got {language!r}")
        return _Writer(self, _TEXT[language]).lines()


# Templates of each language. Reason templates take the query's fields and the key's limits.
_TEXT: dict[str, dict[str, str]] = {
    "vi": {
        "header": "Chính sách khóa phiên bản {version}, xét tại thời điểm {at}",
        "query": "Yêu cầu: hệ thống {application} ký bằng khóa {credential}, định dạng {format}, mức {level}, "
                 "loại văn bản {document_type}, {batch_size} chữ ký mỗi lần phê duyệt",
        "no_document_type": "(không gửi)",
        "allowed": "Kết quả: ĐƯỢC PHÉP theo quy tắc {rule} ({file}, dòng {line}).",
        "denied": "Kết quả: BỊ TỪ CHỐI theo quy tắc {rule}: {reason}.",
        "hidden": "Kết quả: BỊ TỪ CHỐI vì {reason}. Hệ thống này không được biết khóa, nên nhận câu trả lời "
                  "như khi người ký không tồn tại.",
        "quota_blocks": "Tuy chính sách cho phép, lần ký sẽ bị từ chối theo quy tắc {rule}: đã dùng {used} trên "
                        "tối đa {limit} chữ ký (kỳ tính {period}), lô này cần {requested}.",
        "approval_official": "Phê duyệt: cần mã OTP của cán bộ sở hữu khóa ({officials}).",
        "approval_seal_holder": "Phê duyệt: cần mã OTP của văn thư giữ con dấu của {agency}.",
        "approval_none": "Phê duyệt: không cần người phê duyệt bằng mã OTP; dịch vụ ký ngay khi nhận yêu cầu.",
        "owner_agency": "Chủ sở hữu khóa: cơ quan {agency}",
        "owner_officials": "Chủ sở hữu khóa: cán bộ {officials}",
        "key_entry": "Mục chính sách của khóa: {file}, dòng {line}",
        "window_both": "Thời hạn sử dụng khóa: từ {valid_from} đến {valid_until}",
        "window_from": "Thời hạn sử dụng khóa: từ {valid_from}, không có thời điểm kết thúc",
        "window_until": "Thời hạn sử dụng khóa: đến {valid_until}, không có thời điểm bắt đầu",
        "window_none": "Thời hạn sử dụng khóa: không giới hạn",
        "max_batch": "Tối đa mỗi lần phê duyệt: {max_batch} chữ ký",
        "max_batch_unbounded": "Tối đa mỗi lần phê duyệt: không giới hạn trong chính sách",
        "quotas": "Hạn mức chữ ký:",
        "quota_limit": "  - {label}: tối đa {limit}",
        "quota_unlimited": "  - {label}: không giới hạn",
        "quota_used": "  - {label}, kỳ {period}: đã dùng {used}, tối đa {limit}, còn {remaining}",
        "quota_used_unlimited": "  - {label}, kỳ {period}: đã dùng {used}, không giới hạn",
        "quota.daily": "mỗi ngày, mọi hệ thống",
        "quota.monthly": "mỗi tháng, mọi hệ thống",
        "quota.lifetime": "suốt thời gian dùng khóa",
        "quota.per_application.daily": "mỗi ngày, riêng hệ thống {application}",
        "quota.per_application.monthly": "mỗi tháng, riêng hệ thống {application}",
        "rules": "Các quy tắc của khóa nêu tên hệ thống {application}:",
        "rule_matches": "  {number}. {rule} ({file}, dòng {line}): khớp",
        "rule_mismatch": "  {number}. {rule} ({file}, dòng {line}): không khớp, {reason}",
        "reason.allowed": "được phép",
        "reason.credential_not_in_policy": "chính sách không có mục nào cho khóa {credential}",
        "reason.application_not_named": "không quy tắc nào của khóa {credential} nêu tên hệ thống {application}",
        "reason.key_not_yet_valid": "khóa chưa đến thời hạn sử dụng (bắt đầu từ {valid_from})",
        "reason.key_validity_ended": "khóa đã hết thời hạn sử dụng (kết thúc lúc {valid_until})",
        "reason.format_not_allowed": "định dạng {format} không được phép (được phép: {allowed})",
        "reason.level_not_allowed": "mức {level} không được phép (được phép: {allowed})",
        "reason.document_type_not_allowed": "loại văn bản {document_type} không được phép (được phép: {allowed})",
        "reason.batch_too_large": "lô {batch_size} chữ ký vượt quá giới hạn {max_batch} chữ ký mỗi lần phê duyệt",
    },
    "en": {
        "header": "Key policy version {version}, decided at {at}",
        "query": "Request: application {application} asks key {credential} for format {format}, level {level}, "
                 "document type {document_type}, batch size {batch_size}",
        "no_document_type": "(none sent)",
        "allowed": "Result: ALLOWED by rule {rule} ({file}, line {line}).",
        "denied": "Result: DENIED by rule {rule}: {reason}.",
        "hidden": "Result: DENIED because {reason}. The application may not know of this key, so it is answered "
                  "as for an unknown signer.",
        "quota_blocks": "The policy allows it, but signing will be rejected by rule {rule}: {used} of at most "
                        "{limit} signatures used (period {period}), and this batch needs {requested}.",
        "approval_official": "Approval: an OTP code from the key's owning official ({officials}).",
        "approval_seal_holder": "Approval: an OTP code from the seal holder (văn thư) of {agency}.",
        "approval_none": "Approval: no human OTP approval; the service signs as soon as it receives the request.",
        "owner_agency": "Key owner: agency {agency}",
        "owner_officials": "Key owner: officials {officials}",
        "key_entry": "Policy entry of the key: {file}, line {line}",
        "window_both": "Key validity window: from {valid_from} until {valid_until}",
        "window_from": "Key validity window: from {valid_from}, with no end",
        "window_until": "Key validity window: until {valid_until}, with no start",
        "window_none": "Key validity window: unbounded",
        "max_batch": "Maximum per approval: {max_batch} signatures",
        "max_batch_unbounded": "Maximum per approval: not limited by the policy",
        "quotas": "Signature quotas:",
        "quota_limit": "  - {label}: at most {limit}",
        "quota_unlimited": "  - {label}: unlimited",
        "quota_used": "  - {label}, period {period}: {used} used, at most {limit}, {remaining} remaining",
        "quota_used_unlimited": "  - {label}, period {period}: {used} used, unlimited",
        "quota.daily": "per day, all applications",
        "quota.monthly": "per month, all applications",
        "quota.lifetime": "over the key's lifetime",
        "quota.per_application.daily": "per day, application {application} alone",
        "quota.per_application.monthly": "per month, application {application} alone",
        "rules": "Rules of the key that name application {application}:",
        "rule_matches": "  {number}. {rule} ({file}, line {line}): matches",
        "rule_mismatch": "  {number}. {rule} ({file}, line {line}): does not match, {reason}",
        "reason.allowed": "allowed",
        "reason.credential_not_in_policy": "the policy has no entry for key {credential}",
        "reason.application_not_named": "no rule of key {credential} names application {application}",
        "reason.key_not_yet_valid": "the key is not valid yet (valid from {valid_from})",
        "reason.key_validity_ended": "the key's validity ended (valid until {valid_until})",
        "reason.format_not_allowed": "format {format} is not allowed (allowed: {allowed})",
        "reason.level_not_allowed": "level {level} is not allowed (allowed: {allowed})",
        "reason.document_type_not_allowed": "document type {document_type} is not allowed (allowed: {allowed})",
        "reason.batch_too_large": "a batch of {batch_size} signatures is over the limit of {max_batch} per approval",
    },
}

_QUOTA_FIELDS = (
    ("daily", "daily"),
    ("monthly", "monthly"),
    ("lifetime", "lifetime"),
    ("per_application.daily", "per_application_daily"),
    ("per_application.monthly", "per_application_monthly"),
)


class _Writer:
    """The renderer of one explanation with one language's templates."""

    def __init__(self, explanation: Explanation, text: dict[str, str]) -> None:
        self.explanation = explanation
        self.text = text
        query = explanation.query
        key = explanation.key
        self.fields = {
            "application": query.application_id,
            "credential": query.credential_id,
            "format": query.signature_format,
            "level": query.signature_level,
            "document_type": query.document_type if query.document_type is not None else text["no_document_type"],
            "batch_size": query.batch_size,
            "valid_from": _time(key.valid_from) if key and key.valid_from else "",
            "valid_until": _time(key.valid_until) if key and key.valid_until else "",
            "max_batch": key.max_batch if key else "",
        }

    def say(self, template: str, **values: Any) -> str:
        return self.text[template].format(**{**self.fields, **values})

    def reason(self, reason: str, rule: Rule | None = None) -> str:
        allowed: frozenset[str] | None = None
        if rule is not None:
            allowed = {"format_not_allowed": rule.formats, "level_not_allowed": rule.levels,
                       "document_type_not_allowed": rule.document_types}.get(reason)
        return self.say(f"reason.{reason}", allowed=", ".join(sorted(allowed)) if allowed else "")

    def lines(self) -> list[str]:
        explanation = self.explanation
        output = [
            self.say("header", version=explanation.policy_version, at=_time(explanation.at)),
            self.say("query"),
            self._verdict(),
        ]
        if explanation.key is None:
            return output
        output += self._key_lines(explanation.key)
        output += self._rule_lines()
        return output

    def _verdict(self) -> str:
        explanation = self.explanation
        decision = explanation.decision
        if not decision.visible:
            # The decision does not say why the key is hidden; the explanation, for officers only, does.
            cause = "credential_not_in_policy" if explanation.key is None else "application_not_named"
            return self.say("hidden", reason=self.reason(cause))
        if not decision.allowed:
            return self.say("denied", rule=decision.rule_id,
                            reason=self.reason(decision.reason, explanation.deciding_rule))
        rule = explanation.deciding_rule
        assert rule is not None
        verdict = self.say("allowed", rule=rule.id, file=rule.file, line=rule.line)
        denied = explanation.quota_denial
        if denied is not None:
            verdict += " " + self.say("quota_blocks", rule=denied.rule, used=denied.used, limit=denied.limit,
                                      period=denied.period, requested=denied.requested)
        return verdict

    def _key_lines(self, key: KeyPolicy) -> list[str]:
        decision = self.explanation.decision
        officials = ", ".join(key.owner.officials)
        output = []
        if decision.allowed and not decision.approval_required:
            output.append(self.say("approval_none"))
        elif decision.allowed and key.owner.is_agency:
            output.append(self.say("approval_seal_holder", agency=key.owner.agency))
        elif decision.allowed:
            output.append(self.say("approval_official", officials=officials))
        if key.owner.is_agency:
            output.append(self.say("owner_agency", agency=key.owner.agency))
        else:
            output.append(self.say("owner_officials", officials=officials))
        output.append(self.say("key_entry", file=key.file, line=key.line))
        output.append(self.say(_window_template(key)))
        output.append(self.say("max_batch") if key.max_batch is not None else self.say("max_batch_unbounded"))
        output.append(self.say("quotas"))
        output += self._quota_lines(key)
        return output

    def _quota_lines(self, key: KeyPolicy) -> list[str]:
        usage = self.explanation.usage
        output = []
        for name, field in _QUOTA_FIELDS:
            limit = getattr(key.quota, field)
            label = self.say(f"quota.{name}")
            if usage is None:
                template = "quota_limit" if limit is not None else "quota_unlimited"
                output.append(self.say(template, label=label, limit=limit))
                continue
            # The counter's own limit, so that these lines agree with quota_denial, which read the same counter.
            counter = usage.counter(name)
            template = "quota_used" if counter.limit is not None else "quota_used_unlimited"
            output.append(self.say(template, label=label, period=counter.period, used=counter.used,
                                   limit=counter.limit, remaining=counter.remaining))
        return output

    def _rule_lines(self) -> list[str]:
        if not self.explanation.rule_checks:
            return []
        output = [self.say("rules")]
        for number, check in enumerate(self.explanation.rule_checks, start=1):
            rule = check.rule
            if check.mismatch is None:
                output.append(self.say("rule_matches", number=number, rule=rule.id, file=rule.file, line=rule.line))
            else:
                output.append(self.say("rule_mismatch", number=number, rule=rule.id, file=rule.file, line=rule.line,
                                       reason=self.reason(check.mismatch, rule)))
        return output


def _window_template(key: KeyPolicy) -> str:
    if key.valid_from is not None and key.valid_until is not None:
        return "window_both"
    if key.valid_from is not None:
        return "window_from"
    if key.valid_until is not None:
        return "window_until"
    return "window_none"


def _time(value: datetime) -> str:
    return value.astimezone(VIETNAM_TIME).isoformat(timespec="seconds")
