"""Signatures made in SoftHSM, each verified with pyca/cryptography against the returned public key."""

from __future__ import annotations

import hashlib
import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key

from hsm import Hsm, KeyNotFound

MESSAGE = "Hồ sơ 000.00.01.H01-240101-0001: Giấy chứng nhận đăng ký kinh doanh".encode()

# DER DigestInfo prefixes from RFC 8017, section 9.2, note 1: the encoding of
# AlgorithmIdentifier (with NULL parameters) and the OCTET STRING header.
DIGEST_INFO_PREFIXES = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}

HASHES = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


@pytest.fixture(scope="module")
def rsa_key(hsm: Hsm) -> tuple[bytes, bytes]:
    key_id = secrets.token_bytes(8)
    spki = hsm.generate_rsa_key(key_id, f"rsa-{key_id.hex()}", 2048)
    return key_id, spki


@pytest.fixture(scope="module")
def ec_keys(hsm: Hsm) -> dict[str, tuple[bytes, bytes]]:
    keys = {}
    for curve in ("P-256", "P-384"):
        key_id = secrets.token_bytes(8)
        keys[curve] = (key_id, hsm.generate_ec_key(key_id, f"ec-{key_id.hex()}", curve))
    return keys


def digest(hash_name: str, message: bytes = MESSAGE) -> bytes:
    return hashlib.new(hash_name, message).digest()


def ecdsa_der(raw_signature: bytes) -> bytes:
    half = len(raw_signature) // 2
    r = int.from_bytes(raw_signature[:half], "big")
    s = int.from_bytes(raw_signature[half:], "big")
    return encode_dss_signature(r, s)


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_sign_rsa_pkcs1_verifies(hsm: Hsm, rsa_key: tuple[bytes, bytes], hash_name: str) -> None:
    key_id, spki = rsa_key
    digest_info = DIGEST_INFO_PREFIXES[hash_name] + digest(hash_name)

    signature = hsm.sign(key_id, "RSA_PKCS", digest_info)

    public_key = load_der_public_key(spki)
    public_key.verify(signature, MESSAGE, padding.PKCS1v15(), HASHES[hash_name])


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_sign_rsa_pss_verifies(hsm: Hsm, rsa_key: tuple[bytes, bytes], hash_name: str) -> None:
    key_id, spki = rsa_key

    signature = hsm.sign(key_id, "RSA_PKCS_PSS", digest(hash_name), pss_hash=hash_name)

    public_key = load_der_public_key(spki)
    salt_length = HASHES[hash_name].digest_size
    pss = padding.PSS(mgf=padding.MGF1(HASHES[hash_name]), salt_length=salt_length)
    public_key.verify(signature, MESSAGE, pss, HASHES[hash_name])


def test_sign_rsa_pss_explicit_salt_verifies(hsm: Hsm, rsa_key: tuple[bytes, bytes]) -> None:
    key_id, spki = rsa_key

    signature = hsm.sign(key_id, "RSA_PKCS_PSS", digest("sha256"), pss_hash="sha256", pss_salt_len=0)

    public_key = load_der_public_key(spki)
    no_salt = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=0)
    public_key.verify(signature, MESSAGE, no_salt, hashes.SHA256())


def test_sign_rsa_pss_salt_length_is_checked(hsm: Hsm, rsa_key: tuple[bytes, bytes]) -> None:
    key_id, spki = rsa_key

    signature = hsm.sign(key_id, "RSA_PKCS_PSS", digest("sha256"), pss_hash="sha256", pss_salt_len=0)

    public_key = load_der_public_key(spki)
    wrong_salt = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, MESSAGE, wrong_salt, hashes.SHA256())


@pytest.mark.parametrize(
    ("curve", "hash_name", "size"),
    [("P-256", "sha256", 64), ("P-384", "sha384", 96), ("P-384", "sha256", 96)],
)
def test_sign_ecdsa_verifies(
    hsm: Hsm, ec_keys: dict[str, tuple[bytes, bytes]], curve: str, hash_name: str, size: int
) -> None:
    key_id, spki = ec_keys[curve]

    signature = hsm.sign(key_id, "ECDSA", digest(hash_name))

    assert len(signature) == size
    public_key = load_der_public_key(spki)
    public_key.verify(ecdsa_der(signature), MESSAGE, ec.ECDSA(HASHES[hash_name]))


def test_sign_ecdsa_other_message_fails_verification(hsm: Hsm, ec_keys: dict[str, tuple[bytes, bytes]]) -> None:
    key_id, spki = ec_keys["P-256"]

    signature = hsm.sign(key_id, "ECDSA", digest("sha256"))

    public_key = load_der_public_key(spki)
    with pytest.raises(InvalidSignature):
        public_key.verify(ecdsa_der(signature), MESSAGE + b".", ec.ECDSA(hashes.SHA256()))


def test_sign_concurrent_threads_verify(
    hsm: Hsm, rsa_key: tuple[bytes, bytes], ec_keys: dict[str, tuple[bytes, bytes]]
) -> None:
    rsa_id, rsa_spki = rsa_key
    ec_id, ec_spki = ec_keys["P-256"]
    messages = [f"{MESSAGE.decode()} #{index}".encode() for index in range(64)]

    def sign_one(index: int) -> tuple[bytes, bytes]:
        message = messages[index]
        digest_info = DIGEST_INFO_PREFIXES["sha256"] + digest("sha256", message)
        return (
            hsm.sign(rsa_id, "RSA_PKCS", digest_info),
            hsm.sign(ec_id, "ECDSA", digest("sha256", message)),
        )

    # 8 threads on a pool of 4 sessions, so threads also wait for sessions.
    with ThreadPoolExecutor(max_workers=8) as executor:
        results = list(executor.map(sign_one, range(len(messages))))

    rsa_public_key = load_der_public_key(rsa_spki)
    ec_public_key = load_der_public_key(ec_spki)
    for message, (rsa_signature, ec_signature) in zip(messages, results, strict=True):
        rsa_public_key.verify(rsa_signature, message, padding.PKCS1v15(), hashes.SHA256())
        ec_public_key.verify(ecdsa_der(ec_signature), message, ec.ECDSA(hashes.SHA256()))
    assert len(results) == 64


def test_sign_unknown_key_raises_key_not_found(hsm: Hsm) -> None:
    unknown_id = secrets.token_bytes(8)

    with pytest.raises(KeyNotFound) as raised:
        hsm.sign(unknown_id, "ECDSA", digest("sha256"))
    assert raised.value.key_id == unknown_id
    assert unknown_id.hex() in str(raised.value)


def test_sign_ecdsa_with_rsa_key_rejected(hsm: Hsm, rsa_key: tuple[bytes, bytes]) -> None:
    key_id, _ = rsa_key

    with pytest.raises(ValueError, match="needs a key of type EC"):
        hsm.sign(key_id, "ECDSA", digest("sha256"))


def test_sign_unknown_mechanism_rejected(hsm: Hsm, rsa_key: tuple[bytes, bytes]) -> None:
    key_id, _ = rsa_key

    with pytest.raises(ValueError, match="RSA_PKCS, RSA_PKCS_PSS, ECDSA"):
        hsm.sign(key_id, "SHA256_RSA_PKCS", MESSAGE)


def test_sign_rsa_pkcs1_rejects_bare_digest(hsm: Hsm, rsa_key: tuple[bytes, bytes]) -> None:
    key_id, _ = rsa_key

    with pytest.raises(ValueError, match="DigestInfo"):
        hsm.sign(key_id, "RSA_PKCS", digest("sha256"))


def test_sign_rsa_pkcs1_rejects_trailing_bytes(hsm: Hsm, rsa_key: tuple[bytes, bytes]) -> None:
    key_id, _ = rsa_key
    digest_info = DIGEST_INFO_PREFIXES["sha256"] + digest("sha256")

    with pytest.raises(ValueError, match="DigestInfo"):
        hsm.sign(key_id, "RSA_PKCS", digest_info + b"\x00")


def test_sign_rsa_pss_rejects_digest_size_mismatch(hsm: Hsm, rsa_key: tuple[bytes, bytes]) -> None:
    key_id, _ = rsa_key

    with pytest.raises(ValueError, match="48-byte sha384 digest"):
        hsm.sign(key_id, "RSA_PKCS_PSS", digest("sha256"), pss_hash="sha384")


def test_sign_pss_options_rejected_for_ecdsa(hsm: Hsm, ec_keys: dict[str, tuple[bytes, bytes]]) -> None:
    key_id, _ = ec_keys["P-256"]

    with pytest.raises(ValueError, match="only to RSA_PKCS_PSS"):
        hsm.sign(key_id, "ECDSA", digest("sha256"), pss_hash="sha256")
