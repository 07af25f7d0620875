"""Batches of 20 hashes, each signed in one signHash call under a SAD of one OTP, checked with pyca/cryptography.

The two RSA batches share one SAD for 40 hashes, which also shows a SAD
spent over several calls.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from asn1crypto import algos
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from tests.csc.conftest import (
    ECDSA_WITH_SHA256_OID,
    RSASSA_PSS_OID,
    SHA256_WITH_RSA_OID,
    CscClient,
    random_hashes,
)
from tests.harness import Client

BATCH_SIZE = 20
PSS_SALT_LENGTH = 32
PSS_PARAMS = algos.RSASSAPSSParams({
    "hash_algorithm": {"algorithm": "sha256"},
    "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
    "salt_length": PSS_SALT_LENGTH,
}).dump()


def signing_certificate(csc: CscClient, credential_id: str) -> x509.Certificate:
    response = csc.call("v2", "credentials/info", {"credentialID": credential_id, "certificates": "single"})
    assert response.status_code == 200, response.text
    return x509.load_der_x509_certificate(base64.b64decode(response.json()["cert"]["certificates"][0]))


Batch = tuple[list[bytes], list[bytes], x509.Certificate]


def sign_batch(csc: CscClient, version: str, credential_id: str, sad: str, digests: list[bytes], sign_algo: str,
               params: bytes | None = None) -> list[bytes]:
    response = csc.sign_hash(version, credential_id, sad, digests, sign_algo, params=params)
    assert response.status_code == 200, response.text
    return [base64.b64decode(value) for value in response.json()["signatures"]]


@pytest.fixture(scope="module")
def rsa_batches(client: Client, csc: CscClient, rsa_official: dict[str, Any]) -> tuple[Batch, Batch]:
    """Two batches of 20 under one SAD: one signed PKCS#1 v1.5 (v1 names), one RSASSA-PSS (v2 names)."""
    pkcs1_digests, pss_digests = random_hashes(BATCH_SIZE), random_hashes(BATCH_SIZE)
    credential_id = rsa_official["credential_id"]
    sad = csc.sad("v2", credential_id, pkcs1_digests + pss_digests, client.otp.next(rsa_official["totp_secret"]))
    pkcs1 = sign_batch(csc, "v1", credential_id, sad, pkcs1_digests, SHA256_WITH_RSA_OID)
    pss = sign_batch(csc, "v2", credential_id, sad, pss_digests, RSASSA_PSS_OID, PSS_PARAMS)
    certificate = signing_certificate(csc, credential_id)
    return (pkcs1_digests, pkcs1, certificate), (pss_digests, pss, certificate)


@pytest.fixture(scope="module")
def rsa_pkcs1_batch(rsa_batches: tuple[Batch, Batch]) -> Batch:
    return rsa_batches[0]


@pytest.fixture(scope="module")
def rsa_pss_batch(rsa_batches: tuple[Batch, Batch]) -> Batch:
    return rsa_batches[1]


@pytest.fixture(scope="module")
def ecdsa_batch(client: Client, csc: CscClient, ec_official: dict[str, Any]) -> Batch:
    digests = random_hashes(BATCH_SIZE)
    credential_id = ec_official["credential_id"]
    sad = csc.sad("v2", credential_id, digests, client.otp.next(ec_official["totp_secret"]))
    signatures = sign_batch(csc, "v2", credential_id, sad, digests, ECDSA_WITH_SHA256_OID)
    return digests, signatures, signing_certificate(csc, credential_id)


@pytest.mark.parametrize("batch", ["rsa_pkcs1_batch", "rsa_pss_batch", "ecdsa_batch"])
def test_batch_returns_one_signature_per_hash(batch: str, request: pytest.FixtureRequest) -> None:
    digests, signatures, _certificate = request.getfixturevalue(batch)
    assert len(signatures) == len(digests)


def test_batch_rsa_pkcs1_verifies(rsa_pkcs1_batch) -> None:
    digests, signatures, certificate = rsa_pkcs1_batch
    for digest, signature in zip(digests, signatures):
        certificate.public_key().verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def test_batch_rsa_pss_verifies(rsa_pss_batch) -> None:
    digests, signatures, certificate = rsa_pss_batch
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
    for digest, signature in zip(digests, signatures):
        certificate.public_key().verify(signature, digest, pss, utils.Prehashed(hashes.SHA256()))


def test_batch_ecdsa_der_verifies(ecdsa_batch) -> None:
    digests, signatures, certificate = ecdsa_batch
    for digest, signature in zip(digests, signatures):
        certificate.public_key().verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_batch_ecdsa_is_der_sequence(ecdsa_batch) -> None:
    _digests, signatures, _certificate = ecdsa_batch
    assert all(signature[0] == 0x30 for signature in signatures)


def test_batch_signatures_in_hash_order(rsa_pkcs1_batch) -> None:
    digests, signatures, certificate = rsa_pkcs1_batch
    # The first signature must not verify against the second hash: the order is the hashes' order.
    with pytest.raises(InvalidSignature):
        certificate.public_key().verify(signatures[0], digests[1], padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
