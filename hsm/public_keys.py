"""Encoding of token public keys as DER SubjectPublicKeyInfo, the X.509 public key structure."""

from __future__ import annotations

from asn1crypto import core, keys
from pkcs11 import Attribute, KeyType
from pkcs11.types import PublicKey

from hsm.errors import HsmError

__all__ = ["ec_point_from_attribute", "subject_public_key_info"]


def subject_public_key_info(public_key: PublicKey) -> bytes:
    """Read an RSA or EC public key's attributes and return its SPKI DER."""
    key_type = public_key[Attribute.KEY_TYPE]

    if key_type == KeyType.RSA:
        rsa_public_key = keys.RSAPublicKey(
            {
                "modulus": int.from_bytes(public_key[Attribute.MODULUS], "big"),
                "public_exponent": int.from_bytes(public_key[Attribute.PUBLIC_EXPONENT], "big"),
            }
        )
        # The rsaEncryption algorithm identifier with NULL parameters.
        return keys.PublicKeyInfo.wrap(rsa_public_key, "rsa").dump()

    if key_type == KeyType.EC:
        parameters = keys.ECDomainParameters.load(public_key[Attribute.EC_PARAMS])
        point = ec_point_from_attribute(public_key[Attribute.EC_POINT], parameters.key_size)
        info = keys.PublicKeyInfo(
            {
                "algorithm": {"algorithm": "ec", "parameters": parameters},
                "public_key": point,
            }
        )
        return info.dump()

    raise HsmError(f"public key has type {KeyType(key_type).name}; only RSA and EC keys are supported")


def ec_point_from_attribute(value: bytes, coordinate_size: int) -> bytes:
    """Return the X9.62 uncompressed point from a CKA_EC_POINT value.

    PKCS#11 specifies CKA_EC_POINT as a DER OCTET STRING that wraps the
    point, and SoftHSM 2.6 returns that form. Some modules return the bare
    point instead, recognised here by its length: 0x04 followed by two
    coordinates of ``coordinate_size`` bytes.
    """
    bare_point_size = 1 + 2 * coordinate_size
    if len(value) == bare_point_size and value[0] == 0x04:
        return value

    try:
        point = core.OctetString.load(value, strict=True).native
    except ValueError as exc:
        raise HsmError(f"CKA_EC_POINT is neither a DER OCTET STRING nor a bare point: {exc}") from exc
    if len(point) != bare_point_size or point[0] != 0x04:
        raise HsmError(
            f"CKA_EC_POINT contains a {len(point)}-byte point; expected {bare_point_size} bytes starting with 0x04"
        )
    return point
