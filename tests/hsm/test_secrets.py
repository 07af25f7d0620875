"""Secret wrapping with AES-256-GCM inside the token."""

from __future__ import annotations

import secrets

import pytest
import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsm import Hsm, InvalidSecretBlob, KeyNotFound

TOTP_SEED = bytes.fromhex("3132333435363738393031323334353637383930")  # RFC 6238 SHA-1 test seed


@pytest.fixture(scope="module")
def secret_key_id(hsm: Hsm) -> bytes:
    key_id = secrets.token_bytes(8)
    hsm.generate_secret_key(key_id, f"wrap-{key_id.hex()}")
    return key_id


def test_secret_round_trip(hsm: Hsm, secret_key_id: bytes) -> None:
    blob = hsm.encrypt_secret(secret_key_id, TOTP_SEED)

    assert hsm.decrypt_secret(secret_key_id, blob) == TOTP_SEED


def test_secret_empty_plaintext_round_trip(hsm: Hsm, secret_key_id: bytes) -> None:
    blob = hsm.encrypt_secret(secret_key_id, b"")

    assert hsm.decrypt_secret(secret_key_id, blob) == b""


def test_secret_blob_layout(hsm: Hsm, secret_key_id: bytes) -> None:
    blob = hsm.encrypt_secret(secret_key_id, TOTP_SEED)

    # 12-byte IV, ciphertext as long as the plaintext, 16-byte tag.
    assert len(blob) == 12 + len(TOTP_SEED) + 16
    assert TOTP_SEED not in blob


def test_secret_blobs_use_fresh_iv(hsm: Hsm, secret_key_id: bytes) -> None:
    first = hsm.encrypt_secret(secret_key_id, TOTP_SEED)
    second = hsm.encrypt_secret(secret_key_id, TOTP_SEED)

    assert first[:12] != second[:12]
    assert first[12:] != second[12:]


@pytest.mark.parametrize(("part", "offset"), [("iv", 0), ("ciphertext", 12), ("tag", -1)])
def test_secret_tampered_blob_rejected(hsm: Hsm, secret_key_id: bytes, part: str, offset: int) -> None:
    blob = bytearray(hsm.encrypt_secret(secret_key_id, TOTP_SEED))
    blob[offset] ^= 0x01

    with structlog.testing.capture_logs() as logs, pytest.raises(InvalidSecretBlob):
        hsm.decrypt_secret(secret_key_id, bytes(blob))
    # SoftHSM reports the bad tag as CKR_GENERAL_ERROR, which must not count as a device fault.
    assert "hsm.session_pool.dropped" not in [entry["event"] for entry in logs]


def test_secret_truncated_blob_rejected(hsm: Hsm, secret_key_id: bytes) -> None:
    blob = hsm.encrypt_secret(secret_key_id, TOTP_SEED)

    with pytest.raises(InvalidSecretBlob, match="at least 28"):
        hsm.decrypt_secret(secret_key_id, blob[:27])


def test_secret_blob_from_other_key_rejected(hsm: Hsm, secret_key_id: bytes) -> None:
    iv = secrets.token_bytes(12)
    foreign_blob = iv + AESGCM(AESGCM.generate_key(bit_length=256)).encrypt(iv, TOTP_SEED, None)

    with pytest.raises(InvalidSecretBlob):
        hsm.decrypt_secret(secret_key_id, foreign_blob)


def test_secret_session_usable_after_rejection(hsm: Hsm, secret_key_id: bytes) -> None:
    blob = hsm.encrypt_secret(secret_key_id, TOTP_SEED)
    with pytest.raises(InvalidSecretBlob):
        hsm.decrypt_secret(secret_key_id, blob[:-1] + bytes([blob[-1] ^ 0x01]))

    # The pool lends its 4 sessions in turn, so 8 decryptions use each one and
    # show that none was left in the middle of an operation.
    for _ in range(8):
        assert hsm.decrypt_secret(secret_key_id, blob) == TOTP_SEED


def test_secret_unknown_key_raises(hsm: Hsm) -> None:
    with pytest.raises(KeyNotFound, match="no secret key"):
        hsm.encrypt_secret(secrets.token_bytes(8), TOTP_SEED)
