"""CAdES baseline signatures of any file (ETSI EN 319 122-1), built by pyHanko.

The output is a CMS SignedData (RFC 5652) whose signed attributes are
content-type, message-digest, signing-time and signing-certificate-v2
(ESSCertIDv2, RFC 5035), which makes it CAdES B-B. With a timestamper, the
signature value is time-stamped (RFC 3161) into the unsigned attribute
id-aa-signatureTimeStampToken, which makes it CAdES B-T.

A detached signature (``.p7s``) carries no eContent, so the verifier needs the
original file. An attached (enveloping) signature (``.p7m``) embeds the file
as eContent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asn1crypto import cms, x509
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.validation import async_validate_detached_cms

from signserver.signing.errors import SignatureValidationFailed, TimestampFailed
from signserver.signing.keys import SigningKey, pyhanko_signer
from signserver.signing.validate import SIGNER_KEY_USAGE, validation_context

__all__ = ["CadesResult", "sign_cades", "ensure_cades_valid"]

_READ_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class CadesResult:
    """Outcome of ``sign_cades``."""

    # Lower-case hex SHA-256 of the written CMS file.
    output_digest_sha256: str
    signing_time: datetime
    # "B-B" or "B-T".
    level: str


def _digest_file(path: Path, digest_algorithm: str, attached: bool) -> tuple[bytes, bytes | None]:
    """Return the file's digest and, when ``attached``, its content (read once)."""
    if attached:
        content = path.read_bytes()
        return hashlib.new(digest_algorithm, content).digest(), content
    digest = hashlib.new(digest_algorithm)
    with path.open("rb") as stream:
        while chunk := stream.read(_READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.digest(), None


def _write_atomically(path: Path, data: bytes) -> str:
    """Write ``data`` to a temporary file beside ``path``, rename it into place, return its SHA-256 hex."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary_path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)
    return hashlib.sha256(data).hexdigest()


async def sign_cades(
    input_path: Path,
    output_path: Path,
    *,
    key: SigningKey,
    timestamper: TimeStamper | None,
    attached: bool,
    digest_algorithm: str = "sha256",
) -> CadesResult:
    """Sign the file at ``input_path`` as CAdES B-B, or B-T with ``timestamper``, into ``output_path``.

    The file is hashed in chunks for a detached signature and read into memory
    once for an attached one, because its content goes into the CMS object.
    ``output_path`` is written to a temporary file and renamed, so it is never
    half written. Raises TimestampFailed when the TSA gives no token.
    """
    loop = asyncio.get_running_loop()
    signing_time = datetime.now(timezone.utc).replace(microsecond=0)

    digest, content = await loop.run_in_executor(None, _digest_file, Path(input_path), digest_algorithm, attached)

    # Detached: only the content type. Attached: the content as eContent.
    encap_content_info: dict[str, Any] = {"content_type": "data"}
    if content is not None:
        encap_content_info["content"] = content

    signer = pyhanko_signer(key, digest_algorithm)
    try:
        # In pyHanko 0.38, use_pades=True selects the CAdES signed attributes
        # (with signing-certificate-v2), and is_pdf_sig=False keeps the
        # signing-time attribute, which a PAdES signature leaves out.
        content_info = await signer.async_sign(
            data_digest=digest,
            digest_algorithm=digest_algorithm,
            use_pades=True,
            is_pdf_sig=False,
            timestamper=timestamper,
            encap_content_info=encap_content_info,
            signed_attr_settings=PdfCMSSignedAttributes(signing_time=signing_time),
        )
    except (TimestampRequestError, asyncio.TimeoutError) as exc:
        raise TimestampFailed(reason=f"{type(exc).__name__}: {exc}"[:200]) from exc

    output_sha256 = await loop.run_in_executor(None, _write_atomically, Path(output_path), content_info.dump())
    return CadesResult(
        output_digest_sha256=output_sha256,
        signing_time=signing_time,
        level="B-T" if timestamper is not None else "B-B",
    )


async def ensure_cades_valid(
    signature_path: Path, original_path: Path, trust_roots: list[x509.Certificate], *, level: str
) -> None:
    """Validate a CAdES file against ``original_path`` and raise SignatureValidationFailed unless it is sound.

    The signature must be intact over the original file, valid, trusted to
    one of ``trust_roots``, and for B-T carry a valid signature time-stamp.
    An attached signature must also embed exactly the original file.
    """
    encoded = Path(signature_path).read_bytes()
    content_info = cms.ContentInfo.load(encoded)
    if content_info["content_type"].native != "signed_data":
        raise SignatureValidationFailed(field_name=None, reason="the output is not a CMS SignedData")
    signed_data = content_info["content"]

    embedded = signed_data["encap_content_info"]["content"]
    if embedded.native is not None:
        original_sha256 = await asyncio.get_running_loop().run_in_executor(None, _sha256_hex_of_file, original_path)
        if hashlib.sha256(embedded.native).hexdigest() != original_sha256:
            raise SignatureValidationFailed(field_name=None, reason="the embedded content differs from the original")

        # The signature covers the signed attributes, whose message-digest is
        # that of the content, so a copy without eContent validates the same
        # against the original file. pyHanko 0.38's detached validator
        # rejects SignedData that carries eContent.
        signed_data = cms.ContentInfo.load(encoded)["content"]
        signed_data["encap_content_info"] = {"content_type": "data"}

    context = validation_context(trust_roots)
    # NOTE: pyHanko hashes the original file inside the event loop, so a large
    # file delays other requests while it is validated.
    with Path(original_path).open("rb") as original:
        status = await async_validate_detached_cms(
            original,
            signed_data,
            signer_validation_context=context,
            ts_validation_context=context,
            key_usage_settings=SIGNER_KEY_USAGE,
        )

    timestamp = status.timestamp_validity
    timestamp_valid = timestamp is not None and timestamp.intact and timestamp.valid and timestamp.trusted
    checks = (
        (status.intact, "the file digest does not match the signed digest"),
        (status.valid, "the signature value does not verify with the signer's certificate"),
        (status.trusted, "the signer's certificate does not chain to a trusted root"),
        (level != "B-T" or timestamp_valid, "the signature time-stamp is missing, invalid or untrusted"),
    )
    for passed, reason in checks:
        if not passed:
            raise SignatureValidationFailed(field_name=None, reason=reason)


def _sha256_hex_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while chunk := stream.read(_READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
