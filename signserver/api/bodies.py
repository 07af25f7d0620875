"""Reading JSON request bodies and their fields, with the stable errors every route gives for bad input."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from signserver.errors import InvalidInput
from signserver.json_text import loads_text_json

__all__ = ["json_body", "string_field", "optional_string"]


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise InvalidInput("unsupported_media_type", content_type=request.content_type, expected="application/json")
    try:
        body = await request.json(loads=loads_text_json)
    except RecursionError:
        raise InvalidInput("invalid_request", reason="body is JSON nested too deeply") from None
    except ValueError as exc:
        raise InvalidInput("invalid_request", reason=f"body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise InvalidInput("invalid_request", reason="body must be a JSON object")
    return body


def string_field(body: dict[str, Any], name: str, max_length: int = 1000) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise InvalidInput("field_missing", field=name)
    if not isinstance(value, str):
        raise InvalidInput("field_invalid", field=name, reason="must be a string")
    if len(value) > max_length:
        raise InvalidInput("field_invalid", field=name, reason=f"longer than {max_length} characters")
    return value


def optional_string(body: dict[str, Any], name: str, max_length: int = 1000) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    return string_field(body, name, max_length)
