"""Adapters from the service's interfaces to the PKCS#11 layer in ``hsm``.

Every PKCS#11 call runs in a thread executor: python-pkcs11 releases the GIL
during C_Sign and C_Encrypt, so the event loop keeps serving while the HSM
works. PKCS#11 failures become ``hsm_unavailable`` (HTTP 503). A keep-alive
task probes the token between requests, so that a dead HSM shows in
``/readyz`` and in the ``signserver_hsm_up`` gauge before a user meets it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from asn1crypto import algos, pem, x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from prometheus_client import Counter, Gauge

import hsm
from signserver.core.errors import HsmUnavailable
from signserver.core.key_errors import KeyLabelTaken, KeyMissingFromHsm
from signserver.signing.keys import SigningKey
from signserver.store.records import Credential

__all__ = ["HsmSecretBox", "HsmRawSigner", "HsmKeyVault", "signing_key_for", "chain_from_pem", "run_hsm",
           "sign_in_hsm", "sign_many_in_hsm", "rsa_digest_info", "ecdsa_der", "keep_hsm_alive", "HSM_SIGNATURES",
           "HSM_UP"]

T = TypeVar("T")

SECRET_WRAP_KEY_ID = bytes.fromhex("5357524150")  # "SWRAP": the AES key that wraps TOTP seeds and PDF passwords
SECRET_WRAP_KEY_LABEL = "signserver-secret-wrap"

HSM_SIGNATURES = Counter(
    "signserver_hsm_signatures_total",
    "Signatures the HSM computed (documents, hashes, time-stamps), by mechanism.",
    ["mechanism"],
)

# With several workers, /metrics reports the lowest value of the live workers, so 0 means at least one
# worker cannot reach the HSM. NOTE: a worker that exited keeps its last value until the supervisor
# calls prometheus_client.multiprocess.mark_process_dead() for it.
HSM_UP = Gauge(
    "signserver_hsm_up",
    "1 when this worker's last HSM call or keep-alive probe reached the token, else 0; set at each probe.",
    multiprocess_mode="livemin",
)


async def run_hsm(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, lambda: function(*args, **kwargs))
    except hsm.HsmUnavailable as exc:
        raise HsmUnavailable(reason=str(exc)[:200]) from exc


async def keep_hsm_alive(token: hsm.Hsm, interval_seconds: float) -> None:
    """Probe ``token`` every ``interval_seconds`` and export the outcome as ``HSM_UP``, until cancelled.

    ``Hsm.probe`` reopens a dropped pool with the token's back-off and logs
    ``hsm.down`` and ``hsm.up`` when the token's state changes, so requests
    after an outage find the sessions open again.
    """
    loop = asyncio.get_running_loop()
    while True:
        # Hsm.probe catches every Exception and returns False, so only cancelling ends this loop.
        await loop.run_in_executor(None, token.probe)
        HSM_UP.set(1 if token.available else 0)
        await asyncio.sleep(interval_seconds)


async def sign_in_hsm(token: hsm.Hsm, key_id: bytes, mechanism: str, data: bytes, **options: Any) -> bytes:
    """Sign with ``token.sign`` in an executor thread, counting the signature in ``HSM_SIGNATURES``."""
    signature = await run_hsm(token.sign, key_id, mechanism, data, **options)
    HSM_SIGNATURES.labels(mechanism=mechanism).inc()
    return signature


async def sign_many_in_hsm(token: hsm.Hsm, key_id: bytes, mechanism: str, items: list[bytes],
                           **options: Any) -> list[bytes]:
    """Sign every item with ``token.sign_many`` in one executor call, counting each signature."""
    signatures = await run_hsm(token.sign_many, key_id, mechanism, items, **options)
    HSM_SIGNATURES.labels(mechanism=mechanism).inc(len(signatures))
    return signatures


def rsa_digest_info(digest: bytes, digest_algorithm: str) -> bytes:
    """Return the DER DigestInfo that CKM_RSA_PKCS must be given (RFC 8017 section 9.2)."""
    return algos.DigestInfo({"digest_algorithm": {"algorithm": digest_algorithm}, "digest": digest}).dump()


def ecdsa_der(raw: bytes) -> bytes:
    """Convert PKCS#11's r || s to the DER ECDSA-Sig-Value of CMS and X.509 (RFC 5480 section 2.2)."""
    # cryptography's encoder, about ten times faster than building the asn1crypto structure.
    half = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


class HsmSecretBox:
    """Seals small secrets with an AES key that never leaves the HSM."""

    def __init__(self, token: hsm.Hsm, key_id: bytes = SECRET_WRAP_KEY_ID) -> None:
        self.token = token
        self.key_id = key_id

    async def seal(self, plaintext: bytes) -> bytes:
        return await run_hsm(self.token.encrypt_secret, self.key_id, plaintext)

    async def open(self, blob: bytes) -> bytes:
        return await run_hsm(self.token.decrypt_secret, self.key_id, blob)


class HsmRawSigner:
    """Signs a digest with a private key in the HSM, returning the CMS encoding of the signature."""

    def __init__(self, token: hsm.Hsm, key_id: bytes, key_type: str) -> None:
        self.token = token
        self.key_id = key_id
        self.key_type = key_type

    async def sign_digest(self, digest: bytes, digest_algorithm: str) -> bytes:
        if self.key_type == "RSA":
            # CKM_RSA_PKCS pads whatever it gets: give it the DER DigestInfo.
            return await sign_in_hsm(self.token, self.key_id, "RSA_PKCS", rsa_digest_info(digest, digest_algorithm))
        return ecdsa_der(await sign_in_hsm(self.token, self.key_id, "ECDSA", digest))


def chain_from_pem(chain_pem: str) -> tuple[x509.Certificate, ...]:
    certificates = []
    for _type, _headers, der in pem.unarmor(chain_pem.encode(), multiple=True):
        certificates.append(x509.Certificate.load(der))
    return tuple(certificates)


def signing_key_for(token: hsm.Hsm, credential: Credential) -> SigningKey:
    key_id = bytes.fromhex(credential.key_id_hex)
    return SigningKey(
        certificate=x509.Certificate.load(credential.certificate_der),
        chain=chain_from_pem(credential.chain_pem),
        key_type=credential.key_type,
        raw_signer=HsmRawSigner(token, key_id, credential.key_type),
    )


class HsmKeyVault:
    """The ``KeyVault`` of the key lifecycle: generation, signing and destruction of key pairs in the token."""

    # The curve of each EC key size that core.keys accepts.
    EC_CURVES = {256: "P-256", 384: "P-384"}

    def __init__(self, token: hsm.Hsm) -> None:
        self.token = token

    async def generate(self, key_id: bytes, label: str, key_type: str, key_size: int) -> bytes:
        try:
            if key_type == "RSA":
                return await run_hsm(self.token.generate_rsa_key, key_id, label, key_size)
            return await run_hsm(self.token.generate_ec_key, key_id, label, self.EC_CURVES[key_size])
        except hsm.KeyAlreadyExists:
            raise KeyLabelTaken(label=label) from None

    async def sign_digest(self, key_id: bytes, key_type: str, digest: bytes, digest_algorithm: str) -> bytes:
        try:
            return await HsmRawSigner(self.token, key_id, key_type).sign_digest(digest, digest_algorithm)
        except hsm.KeyNotFound:
            raise KeyMissingFromHsm(key_id=key_id.hex()) from None

    async def destroy(self, key_id: bytes) -> int:
        return await run_hsm(self.token.destroy_key_pair, key_id)
