"""Wrapping stored secrets (TOTP seeds) with an AES-256 key that never leaves the token.

The blob format is ``iv || ciphertext || tag``: a random 12-byte IV, then
the CKM_AES_GCM output, which PKCS#11 defines as the ciphertext followed by
the 16-byte tag. SoftHSM 2.6.1 supports CKM_AES_GCM, so no CBC+HMAC
fallback is needed.
"""

from __future__ import annotations

import os

import pkcs11
from pkcs11 import KeyType, Mechanism
from pkcs11.exceptions import (
    DataInvalid,
    DataLenRange,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
    PKCS11Error,
)
from pkcs11.types import SecretKey

from hsm.errors import HsmError, InvalidSecretBlob

__all__ = ["IV_SIZE", "TAG_SIZE", "decrypt_secret", "encrypt_secret"]

IV_SIZE = 12
TAG_SIZE = 16
TAG_BITS = TAG_SIZE * 8


def encrypt_secret(key: SecretKey, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` with AES-GCM in the token and return ``iv || ciphertext || tag``."""
    _require_aes(key)
    # Random 96-bit IVs keep the chance of a repeated IV negligible up to
    # about 2**32 encryptions per key, far more than the number of stored seeds.
    iv = os.urandom(IV_SIZE)
    parameters = pkcs11.GCMParams(iv, tag_bits=TAG_BITS)
    return iv + key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=parameters)


def decrypt_secret(session: pkcs11.Session, key: SecretKey, blob: bytes) -> bytes:
    """Check the tag of ``blob`` and return its plaintext, or raise InvalidSecretBlob."""
    _require_aes(key)
    if len(blob) < IV_SIZE + TAG_SIZE:
        raise InvalidSecretBlob(
            f"secret blob has {len(blob)} bytes; an AES-GCM blob has at least {IV_SIZE + TAG_SIZE}"
        )

    iv, ciphertext_and_tag = blob[:IV_SIZE], blob[IV_SIZE:]
    parameters = pkcs11.GCMParams(iv, tag_bits=TAG_BITS)
    try:
        return key.decrypt(ciphertext_and_tag, mechanism=Mechanism.AES_GCM, mechanism_param=parameters)
    except (DataInvalid, DataLenRange, EncryptedDataInvalid, EncryptedDataLenRange) as exc:
        raise InvalidSecretBlob("secret blob failed AES-GCM authentication") from exc
    except (GeneralError, FunctionFailed) as exc:
        # SoftHSM 2.6.1 reports a GCM tag mismatch as CKR_GENERAL_ERROR, the
        # same code as a device failure. If the session still responds to
        # C_GenerateRandom, the blob is at fault, not the token.
        if _session_alive(session):
            raise InvalidSecretBlob("secret blob failed AES-GCM authentication") from exc
        raise


def _session_alive(session: pkcs11.Session) -> bool:
    try:
        session.generate_random(64)
    except PKCS11Error:
        return False
    return True


def _require_aes(key: SecretKey) -> None:
    if key.key_type != KeyType.AES:
        raise HsmError(
            f"secret key CKA_ID={key.id.hex()} is {KeyType(key.key_type).name}, not AES; "
            "wrap secrets with a key made by generate_secret_key"
        )
