"""Bilingual (Vietnamese first, English) messages for error codes.

Vietnamese is the default; English is chosen when the client's
``Accept-Language`` prefers it (RFC 9110 section 12.5.4 quality values).
"""

from __future__ import annotations

import json
import string
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


def message(code: str, language: str, params: dict[str, Any] | None = None) -> str:
    entry = _catalog().get(code) or _catalog()["internal_error"]
    template = entry.get(language) or entry[DEFAULT_LANGUAGE]
    return string.Formatter().vformat(template, (), _KeepMissing(params or {}))
