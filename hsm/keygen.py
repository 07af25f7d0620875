"""Key generation inside the token, with the attributes the security model requires.

Private and secret keys are created with CKA_SENSITIVE=true and
CKA_EXTRACTABLE=false, so the token never releases their value, and they
carry only the capabilities they are for: sign for private keys,
encrypt/decrypt for the AES key that wraps stored secrets.
"""

from __future__ import annotations

from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, MechanismFlag
from pkcs11.util.ec import encode_named_curve_parameters

from hsm.errors import KeyAlreadyExists, TokenObject
from hsm.mechanisms import CURVES
from hsm.inventory import describe_object
from hsm.public_keys import subject_public_key_info

__all__ = ["RSA_KEY_SIZES", "SECRET_KEY_BITS", "generate_ec", "generate_rsa", "generate_secret", "reject_existing"]

RSA_KEY_SIZES = (2048, 3072, 4096)
SECRET_KEY_BITS = 256

# Capabilities a signing key must not have, so that one key serves one purpose.
_NO_CAPABILITIES_EXCEPT_SIGN = {
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}


def reject_existing(session: pkcs11.Session, key_id: bytes, label: str) -> None:
    """Raise KeyAlreadyExists if any object on the token has CKA_ID ``key_id`` or CKA_LABEL ``label``."""
    existing: list[TokenObject] = []
    seen_handles: set[int] = set()
    for template in ({Attribute.ID: key_id}, {Attribute.LABEL: label}):
        for found in session.get_objects(template):
            if found.handle in seen_handles:
                continue
            seen_handles.add(found.handle)
            existing.append(describe_object(found))

    if existing:
        names = "; ".join(str(found) for found in existing)
        raise KeyAlreadyExists(
            f"cannot generate key CKA_ID={key_id.hex()} CKA_LABEL={label!r}: the token already has {names}; "
            "choose another key id and label"
        )


def generate_rsa(session: pkcs11.Session, key_id: bytes, label: str, bits: int) -> bytes:
    """Generate an RSA key pair with public exponent 65537 and return its SPKI DER."""
    public_key, _ = session.generate_keypair(
        KeyType.RSA,
        bits,
        id=key_id,
        label=label,
        store=True,
        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        public_template=_public_template(),
        private_template=_private_template(),
    )
    return subject_public_key_info(public_key)


def generate_ec(session: pkcs11.Session, key_id: bytes, label: str, curve: str) -> bytes:
    """Generate an EC key pair on named curve ``curve`` and return its SPKI DER."""
    public_template = _public_template()
    public_template[Attribute.EC_PARAMS] = encode_named_curve_parameters(CURVES[curve])
    public_key, _ = session.generate_keypair(
        KeyType.EC,
        id=key_id,
        label=label,
        store=True,
        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        public_template=public_template,
        private_template=_private_template(),
    )
    return subject_public_key_info(public_key)


def generate_secret(session: pkcs11.Session, key_id: bytes, label: str) -> None:
    """Generate an AES-256 key that can only encrypt and decrypt."""
    session.generate_key(
        KeyType.AES,
        SECRET_KEY_BITS,
        id=key_id,
        label=label,
        store=True,
        capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
        template={
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.WRAP: False,
            Attribute.UNWRAP: False,
            Attribute.SIGN: False,
            Attribute.VERIFY: False,
            Attribute.DERIVE: False,
        },
    )


def _private_template() -> dict[Attribute, Any]:
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        **_NO_CAPABILITIES_EXCEPT_SIGN,
    }


def _public_template() -> dict[Attribute, Any]:
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
    }

