"""Request bodies of the CSC API: JSON parsing, v1 and v2 field names, types and Base64 values.

CSC API v2 renamed some fields (``hash`` to ``hashes``, ``hashAlgo`` to
``hashAlgorithmOID``, ``OTP`` to ``authData``). Clients such as pyHanko's
CSCSigner send the v1 names whatever the URL's version, so every lookup
accepts both names and reports the one of the URL's version in errors.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from signserver.errors import InvalidInput, PayloadTooLarge
from signserver.http_streams import read_at_most
from signserver.i18n import LANGUAGES
from signserver.json_text import LoneSurrogate, loads_text_json

__all__ = ["V1", "V2", "CscBody", "decode_base64"]

V1 = "v1"
V2 = "v2"

# Free-text and identifier fields are bounded so that nothing unbounded reaches the store or the trail.
MAX_TEXT_LENGTH = 1024


def decode_base64(text: str) -> bytes:
    """Decode standard Base64 or Base64url (RFC 4648 sections 4 and 5), padded or not."""
    normalized = text.strip().replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    return base64.b64decode(normalized, validate=True)


class CscBody:
    """One request's JSON object, read with the field names of the URL's CSC version."""

    def __init__(self, data: dict[str, Any], version: str) -> None:
        self.data = data
        self.version = version

    @classmethod
    async def read(cls, request: web.Request, version: str, limit: int) -> "CscBody":
        """Read the body as a JSON object. An empty body is an empty object, because the info method needs none."""
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(limit=limit)
        try:
            raw = await read_at_most(request.content, limit)
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(limit=limit) from None
        if len(raw) > limit:
            raise PayloadTooLarge(limit=limit)
        if not raw.strip():
            return cls({}, version)
        try:
            data = loads_text_json(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, LoneSurrogate) as exc:
            raise InvalidInput("csc_body_invalid", reason=f"not UTF-8 JSON: {exc}") from None
        except (ValueError, RecursionError) as exc:
            # Integers of more than 4300 digits (CPython's limit) and very deep nesting.
            raise InvalidInput("csc_body_invalid",
                               reason=f"JSON nested too deeply or with a number too long ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise InvalidInput("csc_body_invalid", reason=f"got a JSON {type(data).__name__}")
        return cls(data, version)

    def name(self, v1: str, v2: str | None = None) -> str:
        """Return the field's name in the URL's version."""
        return v2 if self.version == V2 and v2 else v1

    def _lookup(self, v1: str, v2: str | None) -> tuple[str, Any]:
        preferred = self.name(v1, v2)
        for candidate in dict.fromkeys([preferred, v1, v2 or v1]):
            if self.data.get(candidate) is not None:
                return candidate, self.data[candidate]
        return preferred, None

    def present(self, v1: str, v2: str | None = None) -> bool:
        """Return whether the field is given, under its v1 or its v2 name."""
        return self._lookup(v1, v2)[1] is not None

    def text(self, v1: str, v2: str | None = None, *, required: bool = True,
             max_length: int = MAX_TEXT_LENGTH) -> str | None:
        field, value = self._lookup(v1, v2)
        if value is None or value == "":
            if required:
                raise InvalidInput("csc_parameter_missing", field=field, kind="string")
            return None
        if not isinstance(value, str):
            raise InvalidInput("csc_parameter_missing", field=field, kind="string")
        if len(value) > max_length:
            raise InvalidInput("csc_parameter_invalid", field=field, reason=f"longer than {max_length} characters")
        return value

    def integer(self, name: str, *, required: bool = True) -> int | None:
        value = self.data.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInput("csc_parameter_missing", field=name, kind="integer")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise InvalidInput("csc_parameter_missing", field=name, kind="boolean")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.text(name, required=False) or default
        if value not in allowed:
            raise InvalidInput("csc_parameter_invalid", field=name, reason=f"use one of {', '.join(allowed)}")
        return value

    def objects(self, v1: str, v2: str | None = None, *, required: bool = True) -> list[dict[str, Any]] | None:
        field, value = self._lookup(v1, v2)
        if value is None and not required:
            return None
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise InvalidInput("csc_parameter_missing", field=field, kind="array of objects")
        return value

    def digests(self, v1: str = "hash", v2: str | None = "hashes", *, max_count: int | None = None) -> list[bytes]:
        """Return the Base64 (or Base64url) hashes of an array field, in order, duplicates kept.

        More than ``max_count`` hashes is rejected before any is decoded, so that
        neither the decoding nor the audit record of the rejection grows with them.
        """
        field, value = self._lookup(v1, v2)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise InvalidInput("csc_parameter_missing", field=field, kind="array")
        if not value:
            raise InvalidInput("csc_hash_array_empty", field=field)
        if max_count is not None and len(value) > max_count:
            raise InvalidInput("csc_too_many_hashes", field=field, count=len(value), limit=max_count)
        return [self.base64_value(field, item, hash_value=True) for item in value]

    def base64_value(self, field: str, value: str, *, hash_value: bool = False) -> bytes:
        try:
            decoded = decode_base64(value)
        except (binascii.Error, ValueError):
            if hash_value:
                raise InvalidInput("csc_hash_base64_invalid", field=field) from None
            raise InvalidInput("csc_parameter_invalid", field=field, reason="not Base64") from None
        if hash_value and not decoded:
            raise InvalidInput("csc_hash_base64_invalid", field=field)
        return decoded

    def language(self) -> str | None:
        """Return the supported language the ``lang`` field requests (RFC 5646 primary subtag), if any."""
        value = self.data.get("lang")
        if not isinstance(value, str):
            return None
        primary = value.strip().lower().split("-")[0]
        return primary if primary in LANGUAGES else None
