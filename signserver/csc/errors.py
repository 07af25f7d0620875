"""The CSC API's error shape, and the one mapping from domain errors to it.

CSC API v2.0.0.2 section 10.2 returns errors as an HTTP status and a JSON
body ``{"error": ..., "error_description": ...}``, the shape v1.0.4.0 uses too.
The ``error`` values are those of the specification's tables: 400
``invalid_request`` for nearly every bad parameter (including an invalid or
expired SAD), 401 ``invalid_token``/``expired_token`` for service
authorization, ``invalid_otp`` for a wrong OTP in v1, which v2 calls
``invalid_authentication_data``. The description is in Vietnamese unless the
client requests English (``Accept-Language`` or the body's ``lang``), and its
English text starts with the specification's description.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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
from signserver.i18n import message

from .fields import V1

__all__ = ["CscErrorShape", "error_shape", "csc_error_response", "json_dumps"]


def json_dumps(value: Any) -> str:
    """Serialize a response body with Vietnamese text as UTF-8 rather than escapes."""
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class CscErrorShape:
    status: int
    error: str
    # Key of the description in the i18n catalog.
    message_code: str


# Codes whose status, error value or description differ from what their class gives.
_BY_CODE: dict[str, tuple[int, str, str]] = {
    "unauthenticated": (401, "invalid_token", "token_invalid"),
    "token_invalid": (401, "invalid_token", "token_invalid"),
    "token_expired": (401, "expired_token", "token_expired"),
    "login_failed": (401, "authentication_error", "csc_login_failed"),
    "csc_basic_auth_malformed": (401, "invalid_request", "csc_basic_auth_malformed"),
    "official_locked": (400, "invalid_request", "csc_official_locked"),
    "policy_denied": (400, "access_denied", "csc_policy_denied"),
    "csc_method_not_implemented": (501, "invalid_request", "csc_method_not_implemented"),
}

# A wrong or replayed OTP: CSC v1 has its own error value, v2 folds it into the authentication data.
_OTP_CODES = {"otp_invalid": "csc_otp_invalid", "otp_replayed": "csc_otp_replayed"}

_BY_CLASS: list[tuple[type[SignserverError], int, str]] = [
    (PayloadTooLarge, 413, "invalid_request"),
    (InvalidInput, 400, "invalid_request"),
    (Conflict, 400, "invalid_request"),
    (NotFound, 400, "invalid_request"),
    (Forbidden, 400, "access_denied"),
    (Unauthenticated, 401, "invalid_token"),
    (Unavailable, 503, "temporarily_unavailable"),
]


def error_shape(error: SignserverError, version: str) -> CscErrorShape:
    """Return the status, error value and description key of ``error`` on CSC API ``version``."""
    if error.code in _OTP_CODES:
        value = "invalid_otp" if version == V1 else "invalid_authentication_data"
        return CscErrorShape(400, value, _OTP_CODES[error.code])
    if error.code in _BY_CODE:
        return CscErrorShape(*_BY_CODE[error.code])
    for cls, status, value in _BY_CLASS:
        if isinstance(error, cls):
            return CscErrorShape(status, value, error.code)
    return CscErrorShape(500, "server_error", "internal_error")


def csc_error_response(error: SignserverError, version: str, language: str,
                       request_id: str | None = None) -> web.Response:
    shape = error_shape(error, version)
    params = dict(error.params)
    params.setdefault("request_ref", request_id or "-")
    body = {"error": shape.error, "error_description": message(shape.message_code, language, params)}
    headers = {"Content-Language": language}
    if shape.status == 401 and error.code in ("login_failed", "csc_basic_auth_malformed"):
        headers["WWW-Authenticate"] = 'Basic realm="signserver"'
    elif shape.status == 401:
        # RFC 6750 section 3.1: the error of a rejected bearer token.
        headers["WWW-Authenticate"] = f'Bearer realm="signserver", error="{shape.error}"'
    if shape.status == 503:
        headers["Retry-After"] = "5"
    return web.json_response(body, status=shape.status, headers=headers, dumps=json_dumps)
