"""PKCS#10 certificate signing requests (RFC 2986) signed by a key that stays in the HSM.

The request is assembled with asn1crypto, and its signature comes from a
callback, so the private key is never in this process. The subject follows
what Vietnamese CAs issue: the attributes are UTF8String in Unicode NFC,
countryName is a PrintableString (RFC 5280 appendix A), and the holder's
identity numbers go into UID attributes (0.9.2342.19200300.100.1.1,
RFC 4519) as "CCCD:…", "CMND:…", "HC:…" or "MST:…". The request contains
the key usages digitalSignature and nonRepudiation in an extensionRequest
attribute (RFC 2985 section 5.4.2).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from asn1crypto import csr as asn1_csr
from asn1crypto import keys, pem, x509
from cryptography import x509 as crypto_x509

from signserver.errors import Conflict, InvalidInput

__all__ = [
    "CsrSubject",
    "SignDigest",
    "build_csr",
    "csr_pem",
    "CsrSubjectFieldMissing",
    "CsrSubjectFieldInvalid",
    "CsrSubjectFieldTooLong",
    "CsrCountryInvalid",
    "CsrIdentifierInvalid",
    "CsrSignatureInvalid",
]

# Signs a digest and returns the signature as X.509 carries it: PKCS#1 v1.5
# for RSA, a DER ECDSA-Sig-Value for EC. Arguments: the digest, and its
# algorithm as asn1crypto names it ("sha256", "sha384").
SignDigest = Callable[[bytes, str], Awaitable[bytes]]


class CsrSubjectFieldMissing(InvalidInput):
    """Params: ``field``."""

    code = "csr_subject_field_missing"


class CsrSubjectFieldInvalid(InvalidInput):
    """The field contains control or invisible format characters. Params: ``field``."""

    code = "csr_subject_field_invalid"


class CsrSubjectFieldTooLong(InvalidInput):
    """Params: ``field``, ``length`` and ``limit``, in characters."""

    code = "csr_subject_field_too_long"


class CsrCountryInvalid(InvalidInput):
    """Params: ``country``."""

    code = "csr_country_invalid"


class CsrIdentifierInvalid(InvalidInput):
    """Params: ``identifier``."""

    code = "csr_identifier_invalid"


class CsrSignatureInvalid(Conflict):
    """The signature made by the HSM key does not verify with the public key put into the request."""

    code = "csr_signature_invalid"


# Upper bounds in characters from RFC 5280 appendix A (ub-common-name and the others).
FIELD_LIMITS = {
    "common_name": 64,
    "organization": 64,
    "organizational_unit": 64,
    "locality": 128,
    "state": 128,
    "title": 64,
}

# Identity numbers as Vietnamese CAs write them in UID. CCCD is the citizen
# identity card (12 digits) and CMND the older identity card (9 or 12
# digits). HC is a passport (one letter and 7 digits). MST is a tax code:
# 10 digits, or 10-3 digits for a branch.
IDENTIFIER_FORMATS = {
    "CCCD": re.compile(r"[0-9]{12}"),
    "CMND": re.compile(r"[0-9]{9}|[0-9]{12}"),
    "HC": re.compile(r"[A-Z][0-9]{7}"),
    "MST": re.compile(r"[0-9]{10}(-[0-9]{3})?"),
}

# The signature algorithm and hash for each key: SHA-256 for RSA and P-256, SHA-384 for P-384.
_EC_DIGESTS = {"secp256r1": "sha256", "secp384r1": "sha384"}


@dataclass(frozen=True)
class CsrSubject:
    """The subject of a request: the holder's name, agency, place and identity numbers.

    Strings are stripped and normalised to NFC. ``state`` is the province,
    ``country`` a two-letter ISO 3166 code, and ``identifiers`` the UID
    values, each checked against the format of its prefix.
    """

    common_name: str
    organization: str
    organizational_unit: str | None = None
    locality: str | None = None
    state: str | None = None
    country: str = "VN"
    title: str | None = None
    identifiers: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # The API builds a subject straight from JSON, so any field may hold another type.
        for name in ("common_name", "organization", "organizational_unit", "locality", "state", "country", "title"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidInput("field_invalid", field=name, reason="must be a string")
        identifiers = (self.identifiers,) if isinstance(self.identifiers, str) else self.identifiers
        if not isinstance(identifiers, (list, tuple)) or not all(isinstance(item, str) for item in identifiers):
            raise InvalidInput("field_invalid", field="identifiers", reason="must be a list of strings")

        for name in ("common_name", "organization"):
            value = _clean(name, getattr(self, name))
            if not value:
                raise CsrSubjectFieldMissing(field=name)
            object.__setattr__(self, name, value)
        for name in ("organizational_unit", "locality", "state", "title"):
            value = _clean(name, getattr(self, name))
            object.__setattr__(self, name, value or None)

        country = (self.country or "").strip().upper()
        if len(country) != 2 or not country.isascii() or not country.isalpha():
            raise CsrCountryInvalid(country=self.country)
        object.__setattr__(self, "country", country)
        object.__setattr__(self, "identifiers", tuple(_check_identifier(value) for value in identifiers))

    def to_name(self) -> x509.Name:
        """Build the X.509 name, most general attribute first, as ``signserver.demo_pki`` orders it."""
        attributes: list[tuple[str, str | None]] = [
            ("country_name", self.country),
            ("state_or_province_name", self.state),
            ("locality_name", self.locality),
            ("organization_name", self.organization),
            ("organizational_unit_name", self.organizational_unit),
            ("title", self.title),
            ("common_name", self.common_name),
        ]
        attributes.extend(("user_id", identifier) for identifier in self.identifiers)

        rdns = []
        for attribute_type, value in attributes:
            if value is None:
                continue
            string_type = "printable_string" if attribute_type == "country_name" else "utf8_string"
            rdns.append(x509.RelativeDistinguishedName([
                x509.NameTypeAndValue({
                    "type": attribute_type,
                    "value": x509.DirectoryString(name=string_type, value=value),
                })
            ]))
        return x509.Name(name="", value=x509.RDNSequence(rdns))

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as JSON values, for audit records and command output."""
        fields = asdict(self)
        fields["identifiers"] = list(self.identifiers)
        return fields


async def build_csr(public_key_der: bytes, subject: x509.Name, sign: SignDigest) -> bytes:
    """Build a PKCS#10 request for the key ``public_key_der`` (SPKI DER), signed through ``sign``, and return its DER.

    The signature is checked against ``public_key_der`` before the request
    is returned, so a key in the HSM that does not match the public key
    raises CsrSignatureInvalid instead of producing a request that no CA accepts.
    """
    public_key_info = keys.PublicKeyInfo.load(public_key_der)
    digest_algorithm, signature_algorithm = _algorithms_for(public_key_info)

    info = asn1_csr.CertificationRequestInfo({
        "version": "v1",
        "subject": subject,
        "subject_pk_info": public_key_info,
        "attributes": [
            {"type": "extension_request", "values": [[_requested_key_usage()]]},
        ],
    })
    digest = hashlib.new(digest_algorithm, info.dump()).digest()
    signature = await sign(digest, digest_algorithm)

    request = asn1_csr.CertificationRequest({
        "certification_request_info": info,
        "signature_algorithm": {"algorithm": signature_algorithm},
        "signature": signature,
    })
    der = request.dump()
    if not crypto_x509.load_der_x509_csr(der).is_signature_valid:
        raise CsrSignatureInvalid()
    return der


def csr_pem(der: bytes) -> bytes:
    """Armor a DER request as PEM with the "CERTIFICATE REQUEST" label that OpenSSL reads."""
    return pem.armor("CERTIFICATE REQUEST", der)


def _algorithms_for(public_key_info: keys.PublicKeyInfo) -> tuple[str, str]:
    """Return the digest and the signature algorithm (asn1crypto names) for an RSA or EC public key."""
    algorithm = public_key_info.algorithm
    if algorithm == "rsa":
        return "sha256", "sha256_rsa"
    if algorithm == "ec":
        curve = public_key_info.curve[1]
        if curve in _EC_DIGESTS:
            digest = _EC_DIGESTS[curve]
            return digest, f"{digest}_ecdsa"
        raise ValueError(f"EC curve {curve} is not supported; use P-256 or P-384")
    raise ValueError(f"public key algorithm {algorithm} is not supported; use RSA or EC")


def _requested_key_usage() -> x509.Extension:
    return x509.Extension({
        "extn_id": "key_usage",
        "critical": True,
        "extn_value": x509.KeyUsage({"digital_signature", "non_repudiation"}),
    })


def _clean(name: str, value: str | None) -> str | None:
    """Strip and NFC-normalise a subject field, rejecting control characters and oversize values."""
    if value is None:
        return None
    cleaned = unicodedata.normalize("NFC", value.strip())
    # Categories Cc and Cf: control characters and invisible format characters such as U+200B.
    if any(unicodedata.category(character) in ("Cc", "Cf") for character in cleaned):
        raise CsrSubjectFieldInvalid(field=name)
    limit = FIELD_LIMITS[name]
    if len(cleaned) > limit:
        raise CsrSubjectFieldTooLong(field=name, length=len(cleaned), limit=limit)
    return cleaned


def _check_identifier(value: str) -> str:
    """Return the identifier with its prefix in capitals, or raise CsrIdentifierInvalid."""
    prefix, separator, number = value.strip().partition(":")
    prefix = prefix.strip().upper()
    number = number.strip()
    pattern = IDENTIFIER_FORMATS.get(prefix)
    if not separator or pattern is None or not pattern.fullmatch(number):
        raise CsrIdentifierInvalid(identifier=value)
    return f"{prefix}:{number}"
