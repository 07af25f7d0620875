"""Raw signatures over hashes computed by the client, for the CSC API's signatures/signHash.

``sign_digests_with_key`` also signs the native API's requests of format "raw"
(``signserver.signing.raw`` names their schemes).

The client names the signature algorithm by OID (CSC API v1.0.4.0 section 11.9,
v2.0.0.2 section 11.10) and this module maps it to one HSM mechanism:

- RSA PKCS#1 v1.5 (RFC 8017 section 8.2): the HSM's CKM_RSA_PKCS pads the DER
  DigestInfo of the hash, so sha256/384/512WithRSAEncryption, and
  rsaEncryption with a separately named hash, become one mechanism;
- RSASSA-PSS (RFC 8017 section 8.1) with its RSASSA-PSS-params (RFC 4055
  section 3.1): CKM_RSA_PKCS_PSS with MGF1 over the same hash;
- ECDSA with SHA-2 (RFC 5758 section 3.2): CKM_ECDSA, whose raw r||s output
  is returned as the DER ECDSA-Sig-Value (RFC 5480 section 2.2).

SHA-1 is not accepted: ETSI TS 119 312 no longer allows it for new signatures.
"""

from __future__ import annotations

from asn1crypto import algos

import hsm
from signserver.errors import InvalidInput
from signserver.hsm_bridge import ecdsa_der, rsa_digest_info, sign_many_in_hsm
from signserver.signing.raw import (
    DIGEST_SIZES,
    ECDSA_WITH_DIGEST_OIDS,
    RSA_WITH_DIGEST_OIDS,
    RSASSA_PSS_OID,
    RawSignatureScheme,
)
from signserver.store.records import Credential

__all__ = [
    "DIGEST_SIZES",
    "RawSignatureScheme",
    "signature_algorithm_oids",
    "digest_algorithm_for_oid",
    "resolve_signature_scheme",
    "check_digest_length",
    "sign_digests",
    "sign_digests_with_key",
    "SignAlgorithmInvalid",
    "SignAlgorithmParamsInvalid",
    "HashAlgorithmInvalid",
    "HashAlgorithmMissing",
    "DigestLengthInvalid",
]

_DIGEST_OIDS = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}

DER_NULL = b"\x05\x00"

RSA_ENCRYPTION_OID = "1.2.840.113549.1.1.1"


class SignAlgorithmInvalid(InvalidInput):
    code = "sign_algorithm_invalid"


class SignAlgorithmParamsInvalid(InvalidInput):
    code = "sign_algorithm_params_invalid"


class HashAlgorithmInvalid(InvalidInput):
    code = "hash_algorithm_invalid"


class HashAlgorithmMissing(InvalidInput):
    code = "hash_algorithm_missing"


class DigestLengthInvalid(InvalidInput):
    code = "digest_length_invalid"


def signature_algorithm_oids(key_type: str) -> list[str]:
    """Return the signature algorithm OIDs a key of ``key_type`` (RSA or EC) signs with, for key/algo."""
    if key_type == "RSA":
        return [*RSA_WITH_DIGEST_OIDS, RSASSA_PSS_OID, RSA_ENCRYPTION_OID]
    if key_type == "EC":
        return list(ECDSA_WITH_DIGEST_OIDS)
    return []


def digest_algorithm_for_oid(oid: str) -> str:
    """Return the asn1crypto name (sha256, sha384, sha512) of a hash algorithm OID."""
    if oid not in _DIGEST_OIDS:
        raise HashAlgorithmInvalid(oid=oid, supported=", ".join(_DIGEST_OIDS))
    return _DIGEST_OIDS[oid]


def resolve_signature_scheme(
    key_type: str,
    key_size: int,
    sign_algorithm_oid: str,
    hash_algorithm_oid: str | None,
    params_der: bytes | None,
) -> RawSignatureScheme:
    """Check the client's algorithm choice against the key and return the scheme to sign with.

    A hash algorithm that contradicts the one ``sign_algorithm_oid`` implies is
    rejected rather than ignored, because the hashes were computed with it.
    """
    allowed = signature_algorithm_oids(key_type)
    if sign_algorithm_oid not in allowed:
        raise SignAlgorithmInvalid(oid=sign_algorithm_oid, allowed=", ".join(allowed))
    named_digest = digest_algorithm_for_oid(hash_algorithm_oid) if hash_algorithm_oid is not None else None

    if sign_algorithm_oid == RSASSA_PSS_OID:
        digest, salt_length = _pss_parameters(params_der, key_size)
        _check_same_digest(named_digest, digest)
        return RawSignatureScheme(sign_algorithm_oid, "RSA_PKCS_PSS", digest, salt_length)

    # The other algorithms take no parameters; DER NULL is how RFC 4055 writes "none" for RSA.
    if params_der not in (None, DER_NULL):
        raise SignAlgorithmParamsInvalid(reason=f"{sign_algorithm_oid} takes no parameters")

    if sign_algorithm_oid == RSA_ENCRYPTION_OID:
        if named_digest is None:
            raise HashAlgorithmMissing(sign_algorithm=sign_algorithm_oid)
        return RawSignatureScheme(sign_algorithm_oid, "RSA_PKCS", named_digest)

    implied = RSA_WITH_DIGEST_OIDS.get(sign_algorithm_oid) or ECDSA_WITH_DIGEST_OIDS[sign_algorithm_oid]
    _check_same_digest(named_digest, implied)
    mechanism = "RSA_PKCS" if key_type == "RSA" else "ECDSA"
    return RawSignatureScheme(sign_algorithm_oid, mechanism, implied)


def check_digest_length(digest: bytes, digest_algorithm: str | None) -> None:
    """Reject a hash whose length does not fit ``digest_algorithm``, or any SHA-2 size when it is None."""
    if digest_algorithm is None:
        if len(digest) not in DIGEST_SIZES.values():
            raise DigestLengthInvalid(length=len(digest), algorithm="SHA-2",
                                      expected=", ".join(str(size) for size in DIGEST_SIZES.values()))
        return
    if len(digest) != DIGEST_SIZES[digest_algorithm]:
        raise DigestLengthInvalid(length=len(digest), algorithm=digest_algorithm,
                                  expected=DIGEST_SIZES[digest_algorithm])


async def sign_digests(token: hsm.Hsm, credential: Credential, scheme: RawSignatureScheme,
                       digests: list[bytes]) -> list[bytes]:
    """Sign each digest with the credential's HSM key and return the signatures in the order of ``digests``."""
    return await sign_digests_with_key(token, bytes.fromhex(credential.key_id_hex), credential.key_type, scheme,
                                       digests)


async def sign_digests_with_key(token: hsm.Hsm, key_id: bytes, key_type: str, scheme: RawSignatureScheme,
                                digests: list[bytes]) -> list[bytes]:
    """Sign each digest with the HSM key ``key_id`` (of ``key_type`` RSA or EC), keeping the order of ``digests``.

    The whole batch goes to the HSM in one call, on one session.
    """
    if scheme.mechanism == "RSA_PKCS_PSS":
        return await sign_many_in_hsm(token, key_id, "RSA_PKCS_PSS", digests, pss_hash=scheme.digest_algorithm,
                                      pss_salt_len=scheme.pss_salt_length)
    # PKCS#1 v1.5 over the DigestInfo, or ECDSA converted to DER: the encodings of CMS signatures.
    if key_type == "RSA":
        digest_infos = [rsa_digest_info(digest, scheme.digest_algorithm) for digest in digests]
        return await sign_many_in_hsm(token, key_id, "RSA_PKCS", digest_infos)
    raw = await sign_many_in_hsm(token, key_id, "ECDSA", digests)
    return [ecdsa_der(signature) for signature in raw]


def _check_same_digest(named: str | None, implied: str) -> None:
    if named is not None and named != implied:
        raise HashAlgorithmInvalid(oid=named, supported=f"{implied}, which the signature algorithm implies")


def _pss_parameters(params_der: bytes | None, key_size: int) -> tuple[str, int]:
    """Return the hash and salt length of DER RSASSA-PSS-params that the HSM can apply."""
    if params_der is None:
        raise SignAlgorithmParamsInvalid(reason="RSASSA-PSS needs signAlgoParams (DER RSASSA-PSS-params)")
    try:
        params = algos.RSASSAPSSParams.load(params_der, strict=True)
        digest = params["hash_algorithm"]["algorithm"].native
        mask_generation = params["mask_gen_algorithm"]["algorithm"].native
        mask_digest = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
        salt_length = params["salt_length"].native
        trailer_field = params["trailer_field"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise SignAlgorithmParamsInvalid(reason=f"not DER RSASSA-PSS-params ({type(exc).__name__})") from None

    if digest not in DIGEST_SIZES:
        raise SignAlgorithmParamsInvalid(reason=f"hash {digest} is not one of {', '.join(DIGEST_SIZES)}")
    if mask_generation != "mgf1" or mask_digest != digest:
        raise SignAlgorithmParamsInvalid(reason=f"the mask generation must be MGF1 with {digest}")
    if trailer_field != "trailer_field_bc":
        raise SignAlgorithmParamsInvalid(reason="the trailer field must be 1 (0xBC)")
    # RFC 8017 section 9.1.1: emLen >= hLen + sLen + 2, with emLen = ceil((modBits - 1) / 8).
    maximum_salt = (key_size - 1 + 7) // 8 - DIGEST_SIZES[digest] - 2
    if not 0 <= salt_length <= maximum_salt:
        raise SignAlgorithmParamsInvalid(reason=f"salt length {salt_length} is outside 0 to {maximum_salt}")
    return digest, salt_length
