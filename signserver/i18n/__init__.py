"""Bilingual (Vietnamese first, English) messages for error codes.

Vietnamese is the default; English is chosen when the client's
``Accept-Language`` prefers it (RFC 9110 section 12.5.4 quality values).
"""

from __future__ import annotations

import json
import string
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["LANGUAGES", "DEFAULT_LANGUAGE", "negotiate_language", "message"]

LANGUAGES = ("vi", "en")
DEFAULT_LANGUAGE = "vi"


@lru_cache(maxsize=1)
def _catalog() -> dict[str, dict[str, str]]:
    """Merge ``messages.json`` and the catalogs of each area (``messages_*.json``); a code defined twice is an error."""
    catalog: dict[str, dict[str, str]] = {}
    for path in sorted(Path(__file__).parent.glob("messages*.json")):
        for code, entry in json.loads(path.read_text(encoding="utf-8")).items():
            if code in catalog:
                raise ValueError(f"message code {code} is defined twice ({path.name})")
            catalog[code] = entry
    return catalog


def negotiate_language(accept_language: str | None) -> str:
    if not accept_language:
        return DEFAULT_LANGUAGE
    best, best_quality = DEFAULT_LANGUAGE, -1.0
    for position, item in enumerate(accept_language.split(",")):
        parts = item.strip().split(";")
        tag = parts[0].strip().lower().split("-")[0]
        quality = 1.0
        for parameter in parts[1:]:
            name, _, value = parameter.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag in LANGUAGES and quality > best_quality and quality > 0:
            best, best_quality = tag, quality - position * 1e-6
    return best


class _KeepMissing(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


# Vietnamese names of the states that messages quote. The code's own name follows, for integrators.
_VIETNAMESE_STATES = {
    "pending_approval": "chờ phê duyệt",
    "approved": "đã phê duyệt",
    "signing": "đang ký",
    "signed": "đã ký",
    "rejected": "đã từ chối",
    "expired": "đã hết hạn",
    "failed": "không thành công",
    "pending": "đang chờ",
    "carrying_out": "đang thực hiện",
    "applied": "đã áp dụng",
    "generated": "đã tạo",
    "active": "đang dùng",
    "retired": "đã thay thế",
    "destroyed": "đã hủy",
    "delivered": "đã gửi",
}
VIETNAM_TIME = timezone(timedelta(hours=7))


def _aware_time(value: Any) -> datetime | None:
    """Return ``value`` parsed as an ISO 8601 time with an offset, or None for any other value."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _vietnamese_time(value: Any) -> Any:
    """Return an ISO 8601 time as Vietnam time ("05/12/2026 18:29:07 (UTC+07:00)"), or the value unchanged."""
    parsed = _aware_time(value)
    return parsed.astimezone(VIETNAM_TIME).strftime("%d/%m/%Y %H:%M:%S (UTC+07:00)") if parsed else value


def _english_time(value: Any) -> Any:
    """Return an ISO 8601 time at Vietnam's offset ("2026-12-05T18:29:07+07:00"), or the value unchanged."""
    parsed = _aware_time(value)
    return parsed.astimezone(VIETNAM_TIME).isoformat() if parsed else value


def _english_params(params: dict[str, Any]) -> dict[str, Any]:
    # Still ISO 8601, for integrators, but at the offset that forms and lists in the inbox use.
    return {name: _english_time(value) if name.endswith("_at") else value for name, value in params.items()}


def _vietnamese_params(params: dict[str, Any]) -> dict[str, Any]:
    localized = dict(params)
    state = localized.get("state")
    if isinstance(state, str) and state in _VIETNAMESE_STATES:
        localized["state"] = f"{_VIETNAMESE_STATES[state]} – {state}"
    for name, value in params.items():
        if name.endswith("_at"):
            localized[name] = _vietnamese_time(value)
    return localized


def message(code: str, language: str, params: dict[str, Any] | None = None) -> str:
    entry = _catalog().get(code) or _catalog()["internal_error"]
    template = entry.get(language) or entry[DEFAULT_LANGUAGE]
    values = params or {}
    if template is entry[DEFAULT_LANGUAGE]:
        values = _vietnamese_params(values)
    else:
        values = _english_params(values)
    return string.Formatter().vformat(template, (), _KeepMissing(values))
