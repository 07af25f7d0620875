"""Errors raised by the PKCS#11 layer.

Every error has a stable ``code`` so that the service can map it to a problem
response once, at its edge. Messages name the token object or operation that
failed and never contain a PIN or key material.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AmbiguousTokenError",
    "HsmError",
    "HsmUnavailable",
    "InvalidSecretBlob",
    "KeyAlreadyExists",
    "KeyNotFound",
    "TokenNotFound",
    "TokenObject",
]


class HsmError(Exception):
    """Base of every error raised by the ``hsm`` package."""

    code = "hsm_error"


class HsmUnavailable(HsmError):
    """The library, token or session failed: device error, token not present, session invalid, login rejected."""

    code = "hsm_unavailable"


class TokenNotFound(HsmError):
    """No slot contains a token with the configured label."""

    code = "hsm_token_not_found"


class KeyNotFound(HsmError):
    """The token has no key of the requested class with that CKA_ID."""

    code = "hsm_key_not_found"

    def __init__(self, key_id: bytes, object_class: str = "private key") -> None:
        self.key_id = key_id
        self.object_class = object_class
        super().__init__(f"no {object_class} with CKA_ID {key_id.hex() or '(empty)'} on the token")


class KeyAlreadyExists(HsmError):
    """Key generation was rejected because an object already uses the CKA_ID or label."""

    code = "hsm_key_exists"


class InvalidSecretBlob(HsmError):
    """A wrapped secret failed authentication: it was altered, truncated or made with another key."""

    code = "hsm_secret_invalid"


@dataclass(frozen=True)
class TokenObject:
    """One object on the token, as named in error messages."""

    object_class: str
    key_id: bytes
    label: str

    def __str__(self) -> str:
        return f"{self.object_class} CKA_ID={self.key_id.hex() or '(empty)'} CKA_LABEL={self.label!r}"


class AmbiguousTokenError(HsmError):
    """Two or more objects of one class share a CKA_ID or a CKA_LABEL, or two tokens share a label.

    ``objects`` lists every object involved so that an officer can find and
    remove the extra ones.
    """

    code = "hsm_token_ambiguous"

    def __init__(self, message: str, objects: tuple[TokenObject, ...] = ()) -> None:
        self.objects = objects
        super().__init__(message)
