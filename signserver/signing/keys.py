"""Signing keys whose private half lives elsewhere, usually in the HSM.

A ``SigningKey`` pairs a certificate and its chain with a ``RawSigner`` that
signs a precomputed digest. ``pyhanko_signer`` adapts it to pyHanko's
``Signer`` so that pyHanko builds the CMS structure (RFC 5652) while the
private-key operation stays behind the ``RawSigner``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from asn1crypto import algos, x509
from pyhanko.sign.signers import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore

__all__ = [
    "KEY_TYPES",
    "SUPPORTED_DIGEST_ALGORITHMS",
    "RawSigner",
    "SigningKey",
    "RawDigestSigner",
    "pyhanko_signer",
    "signature_mechanism",
    "sign_data",
]

KEY_TYPES = ("RSA", "EC")

# SHA-1 is excluded because RFC 8017 and ETSI TS 119 312 no longer allow it
# for new signatures.
SUPPORTED_DIGEST_ALGORITHMS = ("sha256", "sha384", "sha512")

_CERTIFICATE_KEY_ALGORITHMS = {"RSA": "rsa", "EC": "ec"}


class RawSigner(Protocol):
    """A private-key operation over a digest computed by the caller."""

    async def sign_digest(self, digest: bytes, digest_algorithm: str) -> bytes:
        """Sign ``digest`` and return the signature value in its CMS encoding.

        RSA keys return the PKCS#1 v1.5 signature over the DER DigestInfo of
        ``digest``. EC keys return the DER-encoded ECDSA-Sig-Value
        (RFC 5480 section 2.2 and RFC 3279), not the raw r||s of PKCS#11.
        """
        ...


@dataclass(frozen=True)
class SigningKey:
    """A certificate, its issuing chain and the signer of its private key."""

    certificate: x509.Certificate
    # Issuing CA(s) first, then the root.
    chain: tuple[x509.Certificate, ...]
    key_type: str
    raw_signer: RawSigner

    def __post_init__(self) -> None:
        if self.key_type not in KEY_TYPES:
            raise ValueError(f"key_type must be one of {KEY_TYPES}, got {self.key_type!r}")

        certificate_algorithm = self.certificate.public_key.algorithm
        if certificate_algorithm != _CERTIFICATE_KEY_ALGORITHMS[self.key_type]:
            raise ValueError(
                f"key_type is {self.key_type!r} but the certificate of "
                f"{self.certificate.subject.human_friendly!r} holds a "
                f"{certificate_algorithm!r} public key"
            )


def signature_mechanism(key_type: str, digest_algorithm: str) -> algos.SignedDigestAlgorithm:
    """Return the CMS signatureAlgorithm for a key type and digest.

    RSA uses rsaEncryption (PKCS#1 v1.5), as RFC 3370 section 3.2 allows
    whatever the digest. ECDSA must name the digest, as in
    ecdsa-with-SHA256 (RFC 5753 section 2.1.1).
    """
    _check_digest_algorithm(digest_algorithm)
    if key_type == "RSA":
        return algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"})
    if key_type == "EC":
        return algos.SignedDigestAlgorithm({"algorithm": f"{digest_algorithm}_ecdsa"})
    raise ValueError(f"key_type must be one of {KEY_TYPES}, got {key_type!r}")


async def sign_data(key: SigningKey, data: bytes, digest_algorithm: str) -> bytes:
    """Hash ``data`` in software and sign the digest with the key's ``RawSigner``."""
    _check_digest_algorithm(digest_algorithm)
    digest = hashlib.new(digest_algorithm, data).digest()
    return await key.raw_signer.sign_digest(digest, digest_algorithm)


class RawDigestSigner(Signer):
    """A pyHanko ``Signer`` that delegates the private-key operation to a ``RawSigner``."""

    def __init__(self, key: SigningKey, digest_algorithm: str = "sha256") -> None:
        super().__init__(
            signing_cert=key.certificate,
            cert_registry=SimpleCertificateStore.from_certs(key.chain),
            signature_mechanism=signature_mechanism(key.key_type, digest_algorithm),
            embed_roots=True,
        )
        self.key = key
        self.digest_algorithm = digest_algorithm

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if digest_algorithm != self.digest_algorithm:
            # ECDSA names its digest in signatureAlgorithm, so a different one
            # would yield a CMS object that contradicts itself.
            raise ValueError(
                f"this signer was set up for {self.digest_algorithm}, "
                f"but pyHanko requested {digest_algorithm}"
            )
        if dry_run:
            return bytes(_maximum_signature_size(self.key))
        return await sign_data(self.key, data, digest_algorithm)


def pyhanko_signer(key: SigningKey, digest_algorithm: str = "sha256") -> Signer:
    """Return a pyHanko ``Signer`` for ``key`` that hashes in software.

    The signer never makes a trial signature to size the PDF signature field,
    so callers must pass a fixed ``bytes_reserved`` to pyHanko.
    """
    return RawDigestSigner(key, digest_algorithm)


def _check_digest_algorithm(digest_algorithm: str) -> None:
    if digest_algorithm not in SUPPORTED_DIGEST_ALGORITHMS:
        raise ValueError(
            f"digest_algorithm must be one of {SUPPORTED_DIGEST_ALGORITHMS}, got {digest_algorithm!r}"
        )


def _maximum_signature_size(key: SigningKey) -> int:
    key_bytes = key.certificate.public_key.byte_size
    if key.key_type == "RSA":
        return key_bytes
    # DER SEQUENCE of two INTEGERs, each possibly one byte longer for the sign
    # bit, with at most 3 bytes of tag and length per element.
    return 2 * (key_bytes + 1) + 9
