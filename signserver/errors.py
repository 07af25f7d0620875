"""Domain error hierarchy shared by every part of the service.

Each error has a stable machine ``code`` that clients can rely on, and
``params`` that fill the bilingual message templates (``signserver/i18n``).
The HTTP status is decided once, at the API edge, from the class.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SignserverError",
    "InvalidInput",
    "NotFound",
    "Conflict",
    "Forbidden",
    "Unauthenticated",
    "Unavailable",
    "DatabaseUnavailable",
    "PayloadTooLarge",
]


class SignserverError(Exception):
    """Base of every error the service reports to a caller."""

    code = "internal_error"

    def __init__(self, code: str | None = None, /, **params: Any) -> None:
        if code is not None:
            self.code = code
        self.params = params
        super().__init__(f"{self.code}: {params}" if params else self.code)


class InvalidInput(SignserverError):
    """The request or its document cannot be processed as sent (HTTP 400/422)."""

    code = "invalid_request"


class NotFound(SignserverError):
    code = "not_found"


class Conflict(SignserverError):
    """The request is valid but the resource's state does not allow it (HTTP 409)."""

    code = "conflict"


class Forbidden(SignserverError):
    code = "forbidden"


class Unauthenticated(SignserverError):
    code = "unauthenticated"


class Unavailable(SignserverError):
    """A dependency (HSM, database, TSA) is down; the caller may retry (HTTP 503)."""

    code = "service_unavailable"


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached; nothing of the interrupted transaction was kept."""

    code = "database_unavailable"


class PayloadTooLarge(SignserverError):
    code = "payload_too_large"
