"""CAdES baseline signatures of any file (ETSI EN 319 122-1), built by pyHanko.

The output is a CMS SignedData (RFC 5652) whose signed attributes are
content-type, message-digest, signing-time and signing-certificate-v2
(ESSCertIDv2, RFC 5035), which makes it CAdES B-B. With a timestamper, the
signature value is time-stamped (RFC 3161) into the unsigned attribute
id-aa-signatureTimeStampToken, which makes it CAdES B-T. B-LT and B-LTA add
validation data and an archive time-stamp (see ``cades_levels``).

A detached signature (``.p7s``) carries no eContent, so the verifier needs the
original file. An attached (enveloping) signature (``.p7m``) embeds the file
as eContent. A signature over a digest that the application computed
(``sign_cades_digest``) can only be detached.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asn1crypto import cms, x509
from pyhanko.sign.general import extract_signer_info
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.validation import async_validate_detached_cms
from pyhanko.sign.validation.generic_cms import cms_basic_validation, collect_timing_info
from pyhanko.sign.validation.status import StandardCMSSignatureStatus
from pyhanko_certvalidator import ValidationContext

from signserver.signing.baseline_levels import LONG_TERM_LEVELS
from signserver.signing.cades_levels import (
    check_cades_level,
    reach_cades_level,
    requested_cades_level,
)
from signserver.signing.cades_validation_data import embedded_certificates, embedded_validation_context
from signserver.signing.errors import SignatureValidationFailed, TimestampFailed
from signserver.signing.files import digest_of_file, write_atomically
from signserver.signing.keys import SigningKey, pyhanko_signer
from signserver.signing.validate import SIGNER_KEY_USAGE, validation_context

__all__ = ["CadesResult", "sign_cades", "sign_cades_digest", "ensure_cades_valid", "ensure_cades_digest_valid"]


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
    return digest_of_file(path, digest_algorithm), None


async def sign_cades(
    input_path: Path,
    output_path: Path,
    *,
    key: SigningKey,
    timestamper: TimeStamper | None,
    attached: bool,
    digest_algorithm: str = "sha256",
    level: str | None = None,
    validation_context: ValidationContext | None = None,
) -> CadesResult:
    """Sign the file at ``input_path`` as CAdES at ``level`` into ``output_path``.

    Without ``level``, the signature is B-T with ``timestamper`` and B-B
    without one. B-T and higher need ``timestamper``. B-LT and B-LTA need
    ``validation_context`` to fetch revocation values, and either reach the
    level or raise CadesLevelNotReached. The file is hashed in chunks for a
    detached signature and read into memory once for an attached one, because
    its content goes into the CMS object. ``output_path`` is written to a
    temporary file and renamed, so it is never half written. Raises
    TimestampFailed when the TSA gives no token.
    """
    level = requested_cades_level(level, timestamper)
    signature_timestamper = None if level == "B-B" else timestamper
    loop = asyncio.get_running_loop()
    signing_time = datetime.now(timezone.utc).replace(microsecond=0)

    digest, content = await loop.run_in_executor(None, _digest_file, Path(input_path), digest_algorithm, attached)

    # Detached: only the content type. Attached: the content as eContent.
    encap_content_info: dict[str, Any] = {"content_type": "data"}
    if content is not None:
        encap_content_info["content"] = content

    content_info = await _sign_digest(key, digest, digest_algorithm, signature_timestamper, encap_content_info,
                                      signing_time)
    content_info = await reach_cades_level(content_info, level, timestamper=timestamper,
                                           validation_context=validation_context)

    output_sha256 = await loop.run_in_executor(None, write_atomically, Path(output_path), content_info.dump())
    return CadesResult(output_digest_sha256=output_sha256, signing_time=signing_time, level=level)


async def sign_cades_digest(
    digest: bytes,
    output_path: Path,
    *,
    key: SigningKey,
    timestamper: TimeStamper | None,
    digest_algorithm: str,
) -> CadesResult:
    """Sign a digest that the application computed as a detached CAdES B-B, or B-T with ``timestamper``.

    The message-digest attribute is ``digest`` itself, so the signature
    verifies against the file the application hashed, which the service
    never receives. Raises ValueError when the length of ``digest`` does not fit
    ``digest_algorithm``, and TimestampFailed when the TSA gives no token.
    """
    expected_size = hashlib.new(digest_algorithm).digest_size
    if len(digest) != expected_size:
        raise ValueError(f"a {digest_algorithm} digest has {expected_size} bytes, got {len(digest)}")
    loop = asyncio.get_running_loop()
    signing_time = datetime.now(timezone.utc).replace(microsecond=0)

    content_info = await _sign_digest(key, digest, digest_algorithm, timestamper, {"content_type": "data"},
                                      signing_time)

    output_sha256 = await loop.run_in_executor(None, write_atomically, Path(output_path), content_info.dump())
    return CadesResult(
        output_digest_sha256=output_sha256,
        signing_time=signing_time,
        level="B-T" if timestamper is not None else "B-B",
    )


async def _sign_digest(
    key: SigningKey,
    digest: bytes,
    digest_algorithm: str,
    timestamper: TimeStamper | None,
    encap_content_info: dict[str, Any],
    signing_time: datetime,
) -> cms.ContentInfo:
    signer = pyhanko_signer(key, digest_algorithm)
    try:
        # In pyHanko 0.38, use_pades=True selects the CAdES signed attributes
        # (with signing-certificate-v2), and is_pdf_sig=False keeps the
        # signing-time attribute, which a PAdES signature leaves out.
        return await signer.async_sign(
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


async def ensure_cades_valid(
    signature_path: Path, original_path: Path, trust_roots: list[x509.Certificate], *, level: str
) -> None:
    """Validate a CAdES file against ``original_path`` and raise SignatureValidationFailed unless it is sound.

    The signature must be intact over the original file, valid, trusted to
    one of ``trust_roots``, from B-T on carry a valid signature time-stamp,
    and reach ``level`` by ``check_cades_level``. An attached signature must
    also embed exactly the original file. B-LT and B-LTA are validated with
    only the embedded validation data and no fetching, which proves that the
    file is self-contained.
    """
    encoded = Path(signature_path).read_bytes()
    content_info = cms.ContentInfo.load(encoded)
    if content_info["content_type"].native != "signed_data":
        raise SignatureValidationFailed(field_name=None, reason="the output is not a CMS SignedData")
    signed_data = content_info["content"]
    if level in LONG_TERM_LEVELS:
        context = embedded_validation_context(signed_data, trust_roots)
    else:
        context = validation_context(trust_roots)
        # The TSA's issuing CA may be embedded only in SignedData.certificates, not in the token.
        context.certificate_registry.register_multiple(embedded_certificates(signed_data))

    embedded = signed_data["encap_content_info"]["content"]
    if embedded.native is not None:
        loop = asyncio.get_running_loop()
        original_digest = await loop.run_in_executor(None, digest_of_file, original_path, "sha256")
        if hashlib.sha256(embedded.native).digest() != original_digest:
            raise SignatureValidationFailed(field_name=None, reason="the embedded content differs from the original")

        # The signature covers the signed attributes, whose message-digest is
        # that of the content, so a copy without eContent validates the same
        # against the original file. pyHanko 0.38's detached validator
        # rejects SignedData that carries eContent.
        signed_data = cms.ContentInfo.load(encoded)["content"]
        signed_data["encap_content_info"] = {"content_type": "data"}

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

    _raise_unless_sound(status, level)
    await check_cades_level(content_info["content"], level, context)


async def ensure_cades_digest_valid(
    signature_path: Path, digest: bytes, trust_roots: list[x509.Certificate], *, level: str
) -> None:
    """Validate a detached CAdES file against the ``digest`` it was made over, as ``ensure_cades_valid`` does.

    Raises SignatureValidationFailed unless the signature is detached, its
    message-digest equals ``digest``, it is valid and trusted to one of
    ``trust_roots``, and for B-T carries a valid signature time-stamp.
    """
    content_info = cms.ContentInfo.load(Path(signature_path).read_bytes())
    if content_info["content_type"].native != "signed_data":
        raise SignatureValidationFailed(field_name=None, reason="the output is not a CMS SignedData")
    signed_data = content_info["content"]
    if signed_data["encap_content_info"]["content"].native is not None:
        raise SignatureValidationFailed(field_name=None, reason="a signature over a digest must be detached")

    status = await _validate_against_digest(signed_data, digest, validation_context(trust_roots))
    _raise_unless_sound(status, level)


async def _validate_against_digest(
    signed_data: cms.SignedData, digest: bytes, context: ValidationContext
) -> StandardCMSSignatureStatus:
    """Validate ``signed_data`` over ``digest``: the steps of pyHanko 0.38's async_validate_detached_cms, less hashing."""
    signer_info = extract_signer_info(signed_data)
    digest_algorithm = signer_info["digest_algorithm"]["algorithm"].native

    def content_digest(requested_algorithm: str) -> bytes:
        # pyHanko requests this digest only to check a content time-stamp,
        # and one made with another hash cannot be checked without the file.
        if requested_algorithm != digest_algorithm:
            raise SignatureValidationFailed(
                field_name=None, reason=f"a content time-stamp over {requested_algorithm} cannot be checked"
            )
        return digest

    status_kwargs = await collect_timing_info(signer_info, ts_validation_context=context, raw_digest=content_digest)
    status_kwargs = await cms_basic_validation(
        signed_data,
        raw_digest=digest,
        validation_context=context,
        status_kwargs=status_kwargs,
        key_usage_settings=SIGNER_KEY_USAGE,
    )
    return StandardCMSSignatureStatus(**status_kwargs)


def _raise_unless_sound(status: StandardCMSSignatureStatus, level: str) -> None:
    timestamp = status.timestamp_validity
    timestamp_valid = timestamp is not None and timestamp.intact and timestamp.valid and timestamp.trusted
    checks = (
        (status.intact, "the file digest does not match the signed digest"),
        (status.valid, "the signature value does not verify with the signer's certificate"),
        (status.trusted, "the signer's certificate does not chain to a trusted root"),
        (level == "B-B" or timestamp_valid, "the signature time-stamp is missing, invalid or untrusted"),
    )
    for passed, reason in checks:
        if not passed:
            raise SignatureValidationFailed(field_name=None, reason=reason)
