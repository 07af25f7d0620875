"""Options of a sign request besides the document: the digest algorithm, a digest sent instead of the document, and
the algorithm of a raw signature.

A hash-only request carries, in place of the document, the digest that the
application computed over its file. Format "cades" turns it into a detached
CAdES signature and format "raw" into a bare signature value. The official
approves that digest. The request stores it in a file like a document
(``digest.bin``, the digest's bytes) and the options in ``placement_json``:

- ``digest_algorithm``: sha256, sha384 or sha512; absent means sha256;
- ``digest``: the client's digest in lower-case hex, for a hash-only request;
- ``signature_algorithm``: rsa_pkcs1v15, rsa_pss or ecdsa, for format "raw".

The request's ``document_sha256`` column is the approval binding and contains
at most 64 hex digits. For a SHA-256 digest it is the digest itself, which is
the SHA-256 of the application's file. For a SHA-384 or SHA-512 digest it is
the SHA-256 of the digest's bytes, which identifies the digest but is no
digest of the file, so the request view shows ``digest`` instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from signserver.errors import InvalidInput
from signserver.signing.keys import SUPPORTED_DIGEST_ALGORITHMS
from signserver.signing.raw import (
    DIGEST_SIZES,
    SIGNATURE_ALGORITHMS,
    SignatureAlgorithmUnsupported,
    raw_signature_scheme,
)
from signserver.store.records import SignRequest

from .raw_signing import DigestLengthInvalid

__all__ = [
    "RAW_FORMAT",
    "RAW_LEVEL",
    "HASH_ONLY_LEVELS",
    "DIGEST_FILE_NAME",
    "SignatureOptions",
    "parse_signature_options",
    "options_of",
    "DigestInvalid",
    "DigestAlgorithmUnsupported",
    "DigestFormatUnsupported",
    "DigestWithDocument",
    "LevelNotApplicable",
]

RAW_FORMAT = "raw"
# A bare signature value has no AdES level, so requests of format "raw" record this one.
RAW_LEVEL = "none"
# Formats that accept a digest in place of the document, and the levels they reach from it.
HASH_ONLY_LEVELS = {"cades": ("B-B", "B-T"), RAW_FORMAT: (RAW_LEVEL,)}
DIGEST_FILE_NAME = "digest.bin"
DEFAULT_DIGEST_ALGORITHM = "sha256"

_HEX = re.compile(r"[0-9a-fA-F]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
# Longer than any accepted encoding: 128 hex digits for SHA-512.
_MAX_DIGEST_TEXT = 160


class DigestInvalid(InvalidInput):
    """The ``digest`` field is neither hex nor base64url. Params: ``reason``."""

    code = "digest_invalid"


class DigestAlgorithmUnsupported(InvalidInput):
    """The ``digest_algorithm`` field names no accepted hash. Params: ``algorithm``, ``supported``."""

    code = "digest_algorithm_unsupported"


class DigestFormatUnsupported(InvalidInput):
    """A digest was sent for a format that needs the whole document. Params: ``format``, ``supported``."""

    code = "digest_format_unsupported"


class DigestWithDocument(InvalidInput):
    """Both a document part and a ``digest`` field were sent."""

    code = "digest_with_document"


class LevelNotApplicable(InvalidInput):
    """A ``level`` was sent for a format without levels. Params: ``format``, ``level``."""

    code = "level_not_applicable"


@dataclass(frozen=True)
class SignatureOptions:
    """The digest algorithm, the client's digest of a hash-only request, and the raw signature algorithm."""

    digest_algorithm: str = DEFAULT_DIGEST_ALGORITHM
    # The digest the application sent instead of the document, else None.
    digest: bytes | None = None
    # Only for format "raw", else None.
    signature_algorithm: str | None = None

    @property
    def hash_only(self) -> bool:
        return self.digest is not None

    def binding_sha256(self) -> str:
        """Return the ``document_sha256`` of a hash-only request (see the module docstring)."""
        assert self.digest is not None
        if self.digest_algorithm == "sha256":
            return self.digest.hex()
        return hashlib.sha256(self.digest).hexdigest()

    def stored_fields(self) -> dict[str, Any]:
        """Return the keys these options add to ``placement_json``. A document signed with SHA-256 adds none."""
        fields: dict[str, Any] = {}
        if self.digest_algorithm != DEFAULT_DIGEST_ALGORITHM or self.hash_only or self.signature_algorithm:
            fields["digest_algorithm"] = self.digest_algorithm
        if self.digest is not None:
            fields["digest"] = self.digest.hex()
        if self.signature_algorithm is not None:
            fields["signature_algorithm"] = self.signature_algorithm
        return fields

    def check_key_type(self, key_type: str) -> None:
        """Raise SignatureAlgorithmKeyMismatch when a raw signature algorithm does not fit the signer's key."""
        if self.signature_algorithm is not None:
            raw_signature_scheme(self.signature_algorithm, key_type, self.digest_algorithm)


def parse_signature_options(data: dict[str, Any], signature_format: str, level: str,
                            cades_packaging: str | None) -> SignatureOptions:
    """Read ``digest_algorithm``, ``digest`` and ``signature_algorithm`` from submitted metadata."""
    digest_algorithm = _text(data, "digest_algorithm") or DEFAULT_DIGEST_ALGORITHM
    digest_algorithm = digest_algorithm.lower().replace("-", "")
    if digest_algorithm not in SUPPORTED_DIGEST_ALGORITHMS:
        raise DigestAlgorithmUnsupported(algorithm=digest_algorithm[:16],
                                         supported=", ".join(SUPPORTED_DIGEST_ALGORITHMS))

    digest = None
    if data.get("digest") is not None:
        if signature_format not in HASH_ONLY_LEVELS:
            raise DigestFormatUnsupported(format=signature_format, supported=", ".join(HASH_ONLY_LEVELS))
        if level not in HASH_ONLY_LEVELS[signature_format]:
            raise InvalidInput("level_unsupported", level=level,
                               supported=", ".join(HASH_ONLY_LEVELS[signature_format]))
        if cades_packaging == "attached":
            raise InvalidInput("field_invalid", field="cades_packaging",
                               reason="an attached signature embeds the document, so send the document, not a digest")
        digest = _decode_digest(data["digest"], digest_algorithm)

    signature_algorithm = _text(data, "signature_algorithm")
    if signature_format != RAW_FORMAT and signature_algorithm is not None:
        raise InvalidInput("field_invalid", field="signature_algorithm",
                           reason=f'only applies to format "{RAW_FORMAT}"')
    if signature_format == RAW_FORMAT:
        if signature_algorithm is None:
            raise InvalidInput("field_missing", field="signature_algorithm")
        signature_algorithm = signature_algorithm.lower()
        if signature_algorithm not in SIGNATURE_ALGORITHMS:
            raise SignatureAlgorithmUnsupported(algorithm=signature_algorithm[:32],
                                                supported=", ".join(SIGNATURE_ALGORITHMS))

    return SignatureOptions(digest_algorithm=digest_algorithm, digest=digest, signature_algorithm=signature_algorithm)


def options_of(request: SignRequest) -> SignatureOptions:
    """Return the options stored in a request's ``placement_json``."""
    stored = json.loads(request.placement_json or "{}")
    digest = stored.get("digest")
    return SignatureOptions(
        digest_algorithm=stored.get("digest_algorithm", DEFAULT_DIGEST_ALGORITHM),
        digest=bytes.fromhex(digest) if digest is not None else None,
        signature_algorithm=stored.get("signature_algorithm"),
    )


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput("field_invalid", field=name, reason="must be a string of at most 64 characters")
    return value.strip()


def _decode_digest(value: Any, digest_algorithm: str) -> bytes:
    """Decode a digest given as hex or as base64url (RFC 4648 section 5, padding optional).

    A string of an even number of hex digits is read as hex. The expected
    lengths never collide: a SHA-384 digest is 64 characters in base64url,
    but a 64-digit hex string decodes to 32 bytes and is then rejected.
    """
    if not isinstance(value, str):
        raise DigestInvalid(reason="must be a string")
    text = value.strip()
    if not text or len(text) > _MAX_DIGEST_TEXT:
        raise DigestInvalid(reason=f"must be 1 to {_MAX_DIGEST_TEXT} characters")

    if len(text) % 2 == 0 and _HEX.fullmatch(text):
        digest = bytes.fromhex(text)
    elif _BASE64URL.fullmatch(text):
        unpadded = text.rstrip("=")
        try:
            digest = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
        except binascii.Error:
            raise DigestInvalid(reason="not valid base64url") from None
    else:
        raise DigestInvalid(reason="use hex digits or base64url (A-Z, a-z, 0-9, '-', '_')")

    expected = DIGEST_SIZES[digest_algorithm]
    if len(digest) != expected:
        raise DigestLengthInvalid(length=len(digest), algorithm=digest_algorithm, expected=expected)
    return digest
