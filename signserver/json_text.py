"""Parsing JSON request bodies as text: JSON's \\u escapes can encode lone UTF-16 surrogates, which are not text.

``json.loads('"\\\\ud800"')`` returns a string that cannot be encoded as
UTF-8, so it would fail later, far from the input, when a hash, the store or
a log encodes it. Such a body is refused here instead.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["LoneSurrogate", "loads_text_json"]


class LoneSurrogate(ValueError):
    """A string of the JSON value contains a lone UTF-16 surrogate (U+D800 to U+DFFF)."""


def loads_text_json(text: str | bytes) -> Any:
    """Parse JSON like ``json.loads``, raising LoneSurrogate if any string of it is not valid Unicode text."""
    value = json.loads(text)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise LoneSurrogate("a string contains a lone UTF-16 surrogate (\\ud800 to \\udfff), which is not text") from None
    return value
