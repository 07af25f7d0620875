"""Sign mechanisms and their parameters, checked before anything reaches the token.

The service hashes documents itself. It sends the token only the digest
(ECDSA, RSA-PSS) or the DER DigestInfo (RSA PKCS#1 v1.5), so the token uses
the mechanisms without a built-in hash: CKM_RSA_PKCS, CKM_RSA_PKCS_PSS and
CKM_ECDSA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asn1crypto import algos
from pkcs11 import MGF, KeyType, Mechanism

__all__ = [
    "CURVES",
    "DIGEST_SIZES",
    "PSS_HASHES",
    "SIGN_MECHANISMS",
    "SignMechanism",
    "sign_mechanism",
]

SIGN_MECHANISMS = ("RSA_PKCS", "RSA_PKCS_PSS", "ECDSA")


@dataclass(frozen=True)
class PssHash:
    hash_mechanism: Mechanism
    mgf: MGF
    digest_size: int


PSS_HASHES: dict[str, PssHash] = {
    "sha256": PssHash(Mechanism.SHA256, MGF.SHA256, 32),
    "sha384": PssHash(Mechanism.SHA384, MGF.SHA384, 48),
    "sha512": PssHash(Mechanism.SHA512, MGF.SHA512, 64),
}

# Digest algorithms accepted inside an RSA PKCS#1 v1.5 DigestInfo, by asn1crypto name.
DIGEST_SIZES: dict[str, int] = {
    "sha256": 32,
    "sha384": 48,
    "sha512": 64,
    "sha3_256": 32,
    "sha3_384": 48,
    "sha3_512": 64,
}

# Curve names of the public API (FIPS 186 / RFC 5480 spelling) to asn1crypto named curves.
CURVES: dict[str, str] = {
    "P-256": "secp256r1",
    "P-384": "secp384r1",
}

# ECDSA input is a 256, 384 or 512-bit digest (SHA-2 or SHA-3).
ECDSA_DIGEST_SIZES = frozenset({32, 48, 64})


@dataclass(frozen=True)
class SignMechanism:
    """A PKCS#11 mechanism with its parameter, and the key type it needs."""

    name: str
    mechanism: Mechanism
    param: Any
    key_type: KeyType


def sign_mechanism(
    name: str, data: bytes, pss_hash: str | None = None, pss_salt_len: int | None = None
) -> SignMechanism:
    """Check ``data`` against mechanism ``name`` and build the PKCS#11 mechanism.

    Raises ValueError naming the argument and the accepted values.
    """
    if name not in SIGN_MECHANISMS:
        raise ValueError(f"mechanism {name!r} is not supported; use one of {', '.join(SIGN_MECHANISMS)}")
    if name != "RSA_PKCS_PSS" and (pss_hash is not None or pss_salt_len is not None):
        raise ValueError(f"pss_hash and pss_salt_len apply only to RSA_PKCS_PSS, not {name}")

    if name == "RSA_PKCS":
        _check_digest_info(data)
        return SignMechanism(name, Mechanism.RSA_PKCS, None, KeyType.RSA)

    if name == "ECDSA":
        if len(data) not in ECDSA_DIGEST_SIZES:
            raise ValueError(f"ECDSA data must be a 32, 48 or 64-byte digest, got {len(data)} bytes")
        return SignMechanism(name, Mechanism.ECDSA, None, KeyType.EC)

    pss = _pss_hash(pss_hash, data)
    salt_length = pss.digest_size if pss_salt_len is None else pss_salt_len
    if salt_length < 0:
        raise ValueError(f"pss_salt_len must be 0 or more, got {salt_length}")
    # python-pkcs11 takes CK_RSA_PKCS_PSS_PARAMS as (hashAlg, mgf, sLen).
    param = (pss.hash_mechanism, pss.mgf, salt_length)
    return SignMechanism(name, Mechanism.RSA_PKCS_PSS, param, KeyType.RSA)


def _pss_hash(pss_hash: str | None, data: bytes) -> PssHash:
    if pss_hash is None:
        # The digest size identifies the SHA-2 hash without ambiguity.
        for candidate in PSS_HASHES.values():
            if candidate.digest_size == len(data):
                return candidate
        raise ValueError(f"RSA_PKCS_PSS data must be a SHA-256, SHA-384 or SHA-512 digest, got {len(data)} bytes")

    if pss_hash not in PSS_HASHES:
        raise ValueError(f"pss_hash {pss_hash!r} is not supported; use one of {', '.join(PSS_HASHES)}")
    pss = PSS_HASHES[pss_hash]
    if len(data) != pss.digest_size:
        raise ValueError(f"RSA_PKCS_PSS data must be a {pss.digest_size}-byte {pss_hash} digest, got {len(data)} bytes")
    return pss


def _check_digest_info(data: bytes) -> None:
    """Raise ValueError unless ``data`` is one DER DigestInfo (RFC 8017, section 9.2) of an accepted hash."""
    try:
        digest_info = algos.DigestInfo.load(data, strict=True)
        algorithm = digest_info["digest_algorithm"]["algorithm"].native
        digest = digest_info["digest"].native
    except ValueError as exc:
        raise ValueError(f"RSA_PKCS data must be a DER DigestInfo: {exc}") from exc

    if algorithm not in DIGEST_SIZES:
        raise ValueError(f"DigestInfo hash {algorithm!r} is not accepted; use one of {', '.join(DIGEST_SIZES)}")
    if len(digest) != DIGEST_SIZES[algorithm]:
        raise ValueError(
            f"DigestInfo {algorithm} digest must be {DIGEST_SIZES[algorithm]} bytes, got {len(digest)} bytes"
        )
