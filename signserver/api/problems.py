"""RFC 9457 problem details: the one error shape of the native API.

The HTTP status of each domain error is decided here, once. Every error
response carries the stable ``code``, the ``detail`` in the language the
client prefers, and the ``request_id`` that also appears in the logs.
"""

from __future__ import annotations

import secrets
from typing import Any

import structlog
from aiohttp import web

from signserver.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    SignserverError,
    Unauthenticated,
    Unavailable,
)
from signserver.i18n import message, negotiate_language

__all__ = ["problem_response", "error_middleware", "status_for"]

log = structlog.get_logger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

_STATUS_BY_CLASS: list[tuple[type[SignserverError], int]] = [
    (PayloadTooLarge, 413),
    (InvalidInput, 400),
    (NotFound, 404),
    (Conflict, 409),
    (Forbidden, 403),
    (Unauthenticated, 401),
    (Unavailable, 503),
]

# Input that is well-formed HTTP but cannot be processed: 422 (RFC 9110 section 15.5.21).
_UNPROCESSABLE_CODES = {"signer_unknown", "format_unsupported", "level_unsupported"}


def status_for(error: SignserverError) -> int:
    if error.code in _UNPROCESSABLE_CODES or error.code.startswith("pdf_"):
        return 422
    if error.code == "unsupported_media_type":
        return 415
    for cls, status in _STATUS_BY_CLASS:
        if isinstance(error, cls):
            return status
    return 500


def problem_response(request: web.Request, status: int, code: str, params: dict[str, Any] | None = None,
                     headers: dict[str, str] | None = None) -> web.Response:
    language = negotiate_language(request.headers.get("Accept-Language"))
    body = {
        "type": f"/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": message(code, language, params),
        "instance": request.path,
        "request_id": request.get("request_id"),
    }
    response = web.json_response(body, status=status, content_type=PROBLEM_CONTENT_TYPE, headers=headers)
    response.headers["Content-Language"] = language
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-ID", "")[:64] or secrets.token_hex(8)
    request["request_id"] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    except SignserverError as error:
        status = status_for(error)
        headers: dict[str, str] = {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="signserver"'
        if status == 503:
            headers["Retry-After"] = "5"
        log.info("api.request_refused", path=request.path, status=status, code=error.code)
        return problem_response(request, status, error.code, error.params, headers)
    except web.HTTPException as exc:
        if exc.status == 413:
            return problem_response(request, 413, "payload_too_large", {"limit": request.app["settings"].max_body_bytes})
        if exc.status == 404:
            return problem_response(request, 404, "not_found")
        if exc.status == 405:
            return problem_response(request, 405, "method_not_allowed")
        raise
    except Exception:  # noqa: BLE001 - the last line of defence: log, then a problem without internals
        log.exception("api.unhandled_error", path=request.path)
        return problem_response(request, 500, "internal_error", {"request_ref": request_id})
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers.setdefault("X-Request-ID", request_id)
    return response
