"""Tests for SigningKey and the pyHanko signer adapter, verified with ``cryptography``."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from signserver.signing.keys import SigningKey, pyhanko_signer, sign_data, signature_mechanism

DATA = b"signed attributes"


def test_signing_key_rejects_unknown_key_type(pki):
    key = pki.rsa_signer

    with pytest.raises(ValueError, match="key_type must be one of"):
        SigningKey(key.certificate, key.chain, "DSA", key.raw_signer)


def test_signing_key_rejects_mismatched_certificate(pki):
    key = pki.rsa_signer

    with pytest.raises(ValueError, match="'rsa' public key"):
        SigningKey(key.certificate, key.chain, "EC", key.raw_signer)


def test_signature_mechanism_rsa():
    assert signature_mechanism("RSA", "sha256")["algorithm"].native == "rsassa_pkcs1v15"


@pytest.mark.parametrize("digest_algorithm", ["sha256", "sha384", "sha512"])
def test_signature_mechanism_ec_names_digest(digest_algorithm):
    mechanism = signature_mechanism("EC", digest_algorithm)

    assert mechanism["algorithm"].native == f"{digest_algorithm}_ecdsa"


def test_signature_mechanism_rejects_sha1():
    with pytest.raises(ValueError, match="digest_algorithm must be one of"):
        signature_mechanism("RSA", "sha1")


async def test_pyhanko_signer_rsa_signature_verifies(pki):
    signer = pyhanko_signer(pki.rsa_signer)

    signature = await signer.async_sign_raw(DATA, "sha256")

    public_key = pki.rsa_signer.raw_signer.private_key.public_key()
    public_key.verify(signature, DATA, padding.PKCS1v15(), hashes.SHA256())


async def test_pyhanko_signer_ec_signature_verifies(pki):
    signer = pyhanko_signer(pki.ec_signer, "sha384")

    signature = await signer.async_sign_raw(DATA, "sha384")

    public_key = pki.ec_signer.raw_signer.private_key.public_key()
    public_key.verify(signature, DATA, ec.ECDSA(hashes.SHA384()))


async def test_pyhanko_signer_rejects_other_digest(pki):
    signer = pyhanko_signer(pki.ec_signer, "sha256")

    with pytest.raises(ValueError, match="set up for sha256"):
        await signer.async_sign_raw(DATA, "sha512")


@pytest.mark.parametrize(("key_name", "minimum_size"), [("rsa_signer", 256), ("ec_signer", 72)])
async def test_pyhanko_signer_dry_run_skips_key(pki, key_name, minimum_size):
    key = getattr(pki, key_name)
    calls_before = key.raw_signer.calls

    placeholder = await pyhanko_signer(key).async_sign_raw(DATA, "sha256", dry_run=True)

    assert len(placeholder) >= minimum_size
    assert key.raw_signer.calls == calls_before


def test_pyhanko_signer_carries_chain(pki):
    signer = pyhanko_signer(pki.rsa_signer)

    assert signer.signing_cert.sha256 == pki.rsa_signer.certificate.sha256
    assert {cert.sha256 for cert in signer.cert_registry} == {pki.issuing.sha256, pki.root.sha256}


async def test_sign_data_rejects_md5(pki):
    with pytest.raises(ValueError, match="digest_algorithm"):
        await sign_data(pki.rsa_signer, DATA, "md5")
