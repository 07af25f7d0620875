"""Key generation: attributes read back from the token, duplicates, public keys and listing."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.exceptions import AttributeSensitive

from hsm import Hsm, KeyAlreadyExists, KeyNotFound
from tests.hsm.conftest import SoftHsmTokens, raw_session


def read_attributes(
    tokens: SoftHsmTokens, object_class: ObjectClass, key_id: bytes, attributes: list[Attribute]
) -> dict[Attribute, object]:
    session = raw_session(tokens.main_label, tokens.user_pin)
    try:
        key = session.get_key(object_class=object_class, id=key_id)
        return key.get_attributes(attributes)
    finally:
        session.close()


PRIVATE_KEY_ATTRIBUTES = [
    Attribute.TOKEN,
    Attribute.PRIVATE,
    Attribute.SENSITIVE,
    Attribute.EXTRACTABLE,
    Attribute.ALWAYS_SENSITIVE,
    Attribute.NEVER_EXTRACTABLE,
    Attribute.SIGN,
    Attribute.DECRYPT,
    Attribute.UNWRAP,
    Attribute.DERIVE,
    Attribute.ID,
    Attribute.LABEL,
]


def test_rsa_private_key_attributes(hsm: Hsm, softhsm_tokens: SoftHsmTokens, key_id: bytes, label: str) -> None:
    hsm.generate_rsa_key(key_id, label, 2048)

    found = read_attributes(softhsm_tokens, ObjectClass.PRIVATE_KEY, key_id, PRIVATE_KEY_ATTRIBUTES)

    assert found[Attribute.TOKEN] is True
    assert found[Attribute.PRIVATE] is True
    assert found[Attribute.SENSITIVE] is True
    assert found[Attribute.EXTRACTABLE] is False
    assert found[Attribute.ALWAYS_SENSITIVE] is True
    assert found[Attribute.NEVER_EXTRACTABLE] is True
    assert found[Attribute.SIGN] is True
    assert found[Attribute.DECRYPT] is False
    assert found[Attribute.UNWRAP] is False
    assert found[Attribute.DERIVE] is False
    assert found[Attribute.ID] == key_id
    assert found[Attribute.LABEL] == label


def test_ec_private_key_attributes(hsm: Hsm, softhsm_tokens: SoftHsmTokens, key_id: bytes, label: str) -> None:
    hsm.generate_ec_key(key_id, label, "P-256")

    found = read_attributes(softhsm_tokens, ObjectClass.PRIVATE_KEY, key_id, PRIVATE_KEY_ATTRIBUTES)

    assert found[Attribute.TOKEN] is True
    assert found[Attribute.PRIVATE] is True
    assert found[Attribute.SENSITIVE] is True
    assert found[Attribute.EXTRACTABLE] is False
    assert found[Attribute.SIGN] is True
    assert found[Attribute.DERIVE] is False
    assert found[Attribute.ID] == key_id
    assert found[Attribute.LABEL] == label


def test_private_key_value_unreadable(hsm: Hsm, softhsm_tokens: SoftHsmTokens, key_id: bytes, label: str) -> None:
    hsm.generate_ec_key(key_id, label, "P-256")

    session = raw_session(softhsm_tokens.main_label, softhsm_tokens.user_pin)
    try:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
        with pytest.raises(AttributeSensitive):
            key[Attribute.VALUE]
    finally:
        session.close()


def test_public_key_attributes(hsm: Hsm, softhsm_tokens: SoftHsmTokens, key_id: bytes, label: str) -> None:
    hsm.generate_ec_key(key_id, label, "P-384")

    found = read_attributes(
        softhsm_tokens,
        ObjectClass.PUBLIC_KEY,
        key_id,
        [Attribute.TOKEN, Attribute.VERIFY, Attribute.ENCRYPT, Attribute.WRAP, Attribute.LABEL],
    )

    assert found[Attribute.TOKEN] is True
    assert found[Attribute.VERIFY] is True
    assert found[Attribute.ENCRYPT] is False
    assert found[Attribute.WRAP] is False
    assert found[Attribute.LABEL] == label


def test_secret_key_attributes(hsm: Hsm, softhsm_tokens: SoftHsmTokens, key_id: bytes, label: str) -> None:
    hsm.generate_secret_key(key_id, label)

    found = read_attributes(
        softhsm_tokens,
        ObjectClass.SECRET_KEY,
        key_id,
        [
            Attribute.KEY_TYPE,
            Attribute.VALUE_LEN,
            Attribute.TOKEN,
            Attribute.SENSITIVE,
            Attribute.EXTRACTABLE,
            Attribute.ENCRYPT,
            Attribute.DECRYPT,
            Attribute.WRAP,
            Attribute.UNWRAP,
            Attribute.SIGN,
            Attribute.DERIVE,
        ],
    )

    assert found[Attribute.KEY_TYPE] == KeyType.AES
    assert found[Attribute.VALUE_LEN] == 32
    assert found[Attribute.TOKEN] is True
    assert found[Attribute.SENSITIVE] is True
    assert found[Attribute.EXTRACTABLE] is False
    assert found[Attribute.ENCRYPT] is True
    assert found[Attribute.DECRYPT] is True
    assert found[Attribute.WRAP] is False
    assert found[Attribute.UNWRAP] is False
    assert found[Attribute.SIGN] is False
    assert found[Attribute.DERIVE] is False


def test_generate_rsa_returns_spki(hsm: Hsm, key_id: bytes, label: str) -> None:
    spki = hsm.generate_rsa_key(key_id, label, 3072)

    public_key = load_der_public_key(spki)
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 3072
    assert public_key.public_numbers().e == 65537


@pytest.mark.parametrize(("curve", "curve_class"), [("P-256", ec.SECP256R1), ("P-384", ec.SECP384R1)])
def test_generate_ec_returns_spki(
    hsm: Hsm, key_id: bytes, label: str, curve: str, curve_class: type[ec.EllipticCurve]
) -> None:
    spki = hsm.generate_ec_key(key_id, label, curve)

    public_key = load_der_public_key(spki)
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, curve_class)


def test_public_key_matches_generated(hsm: Hsm, key_id: bytes, label: str) -> None:
    spki = hsm.generate_ec_key(key_id, label, "P-256")

    assert hsm.public_key(key_id) == spki


def test_public_key_unknown_id_raises(hsm: Hsm, key_id: bytes) -> None:
    with pytest.raises(KeyNotFound, match="no public key"):
        hsm.public_key(key_id)


@pytest.mark.parametrize(("generate", "expected"), [("rsa", "RSA"), ("ec", "EC")])
def test_key_type_reports_algorithm(hsm: Hsm, key_id: bytes, label: str, generate: str, expected: str) -> None:
    if generate == "rsa":
        hsm.generate_rsa_key(key_id, label, 2048)
    else:
        hsm.generate_ec_key(key_id, label, "P-256")

    assert hsm.key_type(key_id) == expected


def test_key_type_unknown_id_raises(hsm: Hsm, key_id: bytes) -> None:
    with pytest.raises(KeyNotFound):
        hsm.key_type(key_id)


def test_generate_duplicate_id_rejected(hsm: Hsm, key_id: bytes, label: str) -> None:
    hsm.generate_ec_key(key_id, label, "P-256")

    with pytest.raises(KeyAlreadyExists) as raised:
        hsm.generate_rsa_key(key_id, label + "-other", 2048)
    assert key_id.hex() in str(raised.value)
    assert repr(label) in str(raised.value)


def test_generate_duplicate_label_rejected(hsm: Hsm, key_id: bytes, label: str) -> None:
    hsm.generate_secret_key(key_id, label)

    with pytest.raises(KeyAlreadyExists, match=label):
        hsm.generate_ec_key(key_id[::-1] + b"\x01", label, "P-256")


def test_generate_rejects_unsupported_rsa_size(hsm: Hsm, key_id: bytes, label: str) -> None:
    with pytest.raises(ValueError, match="2048, 3072, 4096"):
        hsm.generate_rsa_key(key_id, label, 1024)


def test_generate_rejects_unsupported_curve(hsm: Hsm, key_id: bytes, label: str) -> None:
    with pytest.raises(ValueError, match="P-256, P-384"):
        hsm.generate_ec_key(key_id, label, "secp256k1")


def test_generate_rejects_empty_key_id(hsm: Hsm, label: str) -> None:
    with pytest.raises(ValueError, match="key_id"):
        hsm.generate_ec_key(b"", label, "P-256")


def test_find_key_ids_lists_private_keys(hsm: Hsm, key_id: bytes, label: str) -> None:
    hsm.generate_ec_key(key_id, label, "P-256")
    secret_id = key_id + b"\x00"
    hsm.generate_secret_key(secret_id, label + "-aes")

    listed = hsm.find_key_ids()

    assert (key_id, label, "EC") in listed
    assert all(entry[0] != secret_id for entry in listed)
    assert listed == sorted(listed)
