"""Raw signature values over a digest, for applications that build their own signature containers.

A raw signature is the bare signature value, without CMS or PDF around it:

- ``rsa_pkcs1v15``: RSASSA-PKCS1-v1_5 (RFC 8017 section 8.2), the key's
  modulus length in bytes;
- ``rsa_pss``: RSASSA-PSS (RFC 8017 section 8.1) with MGF1 over the same hash
  and a salt as long as the hash, the parameters RFC 4055 section 3.1 names;
- ``ecdsa``: ECDSA (FIPS 186-5) as the DER ECDSA-Sig-Value of RFC 3279
  section 2.2.3, the encoding X.509 and CMS use, not the r||s of PKCS#11.

This module maps those names to a ``RawSignatureScheme`` and checks a
signature value with ``cryptography`` before it is released, so a wrong HSM
result or a certificate that does not match the key is never handed out.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pyhanko_certvalidator import CertificateValidator
from pyhanko_certvalidator.errors import PathError, ValidationError

from signserver.errors import InvalidInput
from signserver.signing.errors import SignatureValidationFailed
from signserver.signing.keys import SigningKey
from signserver.signing.validate import SIGNER_KEY_USAGE, validation_context

__all__ = [
    "DIGEST_SIZES",
    "SIGNATURE_ALGORITHMS",
    "RSASSA_PSS_OID",
    "RSA_WITH_DIGEST_OIDS",
    "ECDSA_WITH_DIGEST_OIDS",
    "RawSignatureScheme",
    "SignatureAlgorithmUnsupported",
    "SignatureAlgorithmKeyMismatch",
    "raw_signature_scheme",
    "verify_raw_signature",
    "ensure_signer_certificate_trusted",
]

DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}

RSASSA_PSS_OID = "1.2.840.113549.1.1.10"
RSA_WITH_DIGEST_OIDS = {
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
}
ECDSA_WITH_DIGEST_OIDS = {
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
}

# Signature algorithm names of the native API, and the key type each needs.
SIGNATURE_ALGORITHMS = {"rsa_pkcs1v15": "RSA", "rsa_pss": "RSA", "ecdsa": "EC"}

_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class SignatureAlgorithmUnsupported(InvalidInput):
    """The signature algorithm name is not one of ``SIGNATURE_ALGORITHMS``. Params: ``algorithm``, ``supported``."""

    code = "signature_algorithm_unsupported"


class SignatureAlgorithmKeyMismatch(InvalidInput):
    """The signer's key cannot make this kind of signature. Params: ``algorithm``, ``key_type``, ``allowed``."""

    code = "signature_algorithm_key_mismatch"


@dataclass(frozen=True)
class RawSignatureScheme:
    """How to sign: the HSM mechanism, the hash the digest was made with, and the PSS salt length."""

    sign_algorithm_oid: str
    mechanism: str  # RSA_PKCS | RSA_PKCS_PSS | ECDSA, as ``hsm.Hsm.sign`` names them
    digest_algorithm: str
    pss_salt_length: int | None = None


def raw_signature_scheme(signature_algorithm: str, key_type: str, digest_algorithm: str) -> RawSignatureScheme:
    """Return the scheme for a native API signature algorithm name, a key type (RSA or EC) and a SHA-2 digest."""
    if signature_algorithm not in SIGNATURE_ALGORITHMS:
        raise SignatureAlgorithmUnsupported(algorithm=signature_algorithm, supported=", ".join(SIGNATURE_ALGORITHMS))
    if SIGNATURE_ALGORITHMS[signature_algorithm] != key_type:
        allowed = [name for name, needed in SIGNATURE_ALGORITHMS.items() if needed == key_type]
        raise SignatureAlgorithmKeyMismatch(algorithm=signature_algorithm, key_type=key_type,
                                            allowed=", ".join(allowed))
    if digest_algorithm not in DIGEST_SIZES:
        raise ValueError(f"digest_algorithm must be one of {', '.join(DIGEST_SIZES)}, got {digest_algorithm!r}")

    if signature_algorithm == "rsa_pss":
        return RawSignatureScheme(RSASSA_PSS_OID, "RSA_PKCS_PSS", digest_algorithm, DIGEST_SIZES[digest_algorithm])
    if signature_algorithm == "rsa_pkcs1v15":
        return RawSignatureScheme(_oid_for(RSA_WITH_DIGEST_OIDS, digest_algorithm), "RSA_PKCS", digest_algorithm)
    return RawSignatureScheme(_oid_for(ECDSA_WITH_DIGEST_OIDS, digest_algorithm), "ECDSA", digest_algorithm)


def verify_raw_signature(certificate: x509.Certificate, scheme: RawSignatureScheme, digest: bytes,
                         signature: bytes) -> None:
    """Check ``signature`` over ``digest`` with the public key of ``certificate``.

    Raises SignatureValidationFailed when it does not verify, so the value is not released.
    """
    public_key = load_der_public_key(certificate.public_key.dump())
    prehashed = utils.Prehashed(_HASHES[scheme.digest_algorithm]())
    try:
        if scheme.mechanism == "ECDSA":
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise SignatureValidationFailed(field_name=None, reason="the certificate's public key is not an EC key")
            public_key.verify(signature, digest, ec.ECDSA(prehashed))
            return
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SignatureValidationFailed(field_name=None, reason="the certificate's public key is not an RSA key")
        if scheme.mechanism == "RSA_PKCS_PSS":
            assert scheme.pss_salt_length is not None
            mgf = padding.MGF1(_HASHES[scheme.digest_algorithm]())
            public_key.verify(signature, digest, padding.PSS(mgf, scheme.pss_salt_length), prehashed)
        else:
            public_key.verify(signature, digest, padding.PKCS1v15(), prehashed)
    except InvalidSignature:
        raise SignatureValidationFailed(
            field_name=None, reason="the signature value does not verify with the signer's certificate"
        ) from None


async def ensure_signer_certificate_trusted(key: SigningKey, trust_roots: list[x509.Certificate]) -> None:
    """Raise SignatureValidationFailed unless the key's certificate chains to ``trust_roots`` and may sign.

    The certificate must allow digitalSignature or nonRepudiation, as for
    CAdES and PAdES signatures.
    """
    validator = CertificateValidator(key.certificate, intermediate_certs=list(key.chain),
                                     validation_context=validation_context(trust_roots))
    try:
        await validator.async_validate_path()
        SIGNER_KEY_USAGE.validate(key.certificate)
    except (PathError, ValidationError) as exc:
        raise SignatureValidationFailed(
            field_name=None, reason=f"the signer's certificate is not trusted ({type(exc).__name__}: {exc})"[:300]
        ) from exc


def _oid_for(oids: dict[str, str], digest_algorithm: str) -> str:
    return next(oid for oid, digest in oids.items() if digest == digest_algorithm)
