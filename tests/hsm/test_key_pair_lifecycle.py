"""Key pair destruction, and RSA-4096 generation, on the real SoftHSM2 token."""

from __future__ import annotations

import hashlib

import pytest
from asn1crypto import algos
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, ObjectClass

from hsm import Hsm, KeyNotFound
from tests.hsm.conftest import SoftHsmTokens, raw_session


def count_objects(tokens: SoftHsmTokens, key_id: bytes) -> dict[ObjectClass, int]:
    session = raw_session(tokens.main_label, tokens.user_pin)
    try:
        counts = {}
        for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.SECRET_KEY):
            counts[object_class] = len(list(session.get_objects({Attribute.CLASS: object_class, Attribute.ID: key_id})))
        return counts
    finally:
        session.close()


def sha256_digest_info(data: bytes) -> bytes:
    return algos.DigestInfo(
        {"digest_algorithm": {"algorithm": "sha256"}, "digest": hashlib.sha256(data).digest()}
    ).dump()


def test_destroy_key_pair_removes_both_objects(hsm: Hsm, softhsm_tokens: SoftHsmTokens, key_id: bytes,
                                                label: str) -> None:
    hsm.generate_ec_key(key_id, label, "P-256")

    destroyed = hsm.destroy_key_pair(key_id)

    assert destroyed == 2
    remaining = count_objects(softhsm_tokens, key_id)
    assert remaining[ObjectClass.PRIVATE_KEY] == 0
    assert remaining[ObjectClass.PUBLIC_KEY] == 0


def test_destroyed_key_no_longer_signs(hsm: Hsm, key_id: bytes, label: str) -> None:
    hsm.generate_rsa_key(key_id, label, 2048)
    # Signing caches the key object in a pooled session; destruction must drop that cache.
    hsm.sign(key_id, "RSA_PKCS", sha256_digest_info(b"before"))

    hsm.destroy_key_pair(key_id)

    with pytest.raises(KeyNotFound):
        hsm.sign(key_id, "RSA_PKCS", sha256_digest_info(b"after"))
    with pytest.raises(KeyNotFound):
        hsm.public_key(key_id)


def test_destroy_unknown_key_returns_zero(hsm: Hsm, key_id: bytes) -> None:
    assert hsm.destroy_key_pair(key_id) == 0


def test_destroy_keeps_secret_key_with_same_id(hsm: Hsm, softhsm_tokens: SoftHsmTokens, key_id: bytes,
                                               label: str) -> None:
    hsm.generate_secret_key(key_id, label)

    destroyed = hsm.destroy_key_pair(key_id)

    assert destroyed == 0
    assert count_objects(softhsm_tokens, key_id)[ObjectClass.SECRET_KEY] == 1


def test_destroy_keeps_other_key_pairs(hsm: Hsm, key_id: bytes, label: str) -> None:
    other_id = key_id + b"\x01"
    other_public_key = hsm.generate_ec_key(other_id, label + "-other", "P-256")
    hsm.generate_ec_key(key_id, label, "P-256")

    hsm.destroy_key_pair(key_id)

    assert hsm.public_key(other_id) == other_public_key
    assert len(hsm.sign(other_id, "ECDSA", hashlib.sha256(b"still here").digest())) == 64


def test_destroy_rejects_empty_key_id(hsm: Hsm) -> None:
    with pytest.raises(ValueError, match="key_id"):
        hsm.destroy_key_pair(b"")


def test_generate_rsa_4096(hsm: Hsm, softhsm_tokens: SoftHsmTokens, key_id: bytes, label: str) -> None:
    spki = hsm.generate_rsa_key(key_id, label, 4096)

    public_key = load_der_public_key(spki)
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 4096
    session = raw_session(softhsm_tokens.main_label, softhsm_tokens.user_pin)
    try:
        private_key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
        found = private_key.get_attributes([Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.NEVER_EXTRACTABLE])
    finally:
        session.close()
    assert found[Attribute.SENSITIVE] is True
    assert found[Attribute.EXTRACTABLE] is False
    assert found[Attribute.NEVER_EXTRACTABLE] is True
