"""CAdES baseline levels (ETSI EN 319 122-1 V1.1.1): reaching a requested level, and reading the level reached.

B-B and B-T are made by pyHanko (see ``cades``). ``reach_cades_level`` raises
such a signature to B-LT by embedding validation data
(``cades_validation_data``) and to B-LTA by adding an archive-time-stamp-v3
(``cades_lta``). Either the requested level is reached or
CadesLevelNotReached is raised: a signature is never returned at a lower
level than requested.

``cades_level`` reads the level of any CAdES SignedData, from its attributes
and their consistency, for the release check and for validation reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from asn1crypto import cms, core
from pyhanko.sign.general import (
    MultivaluedAttributeError,
    NonexistentAttributeError,
    check_ess_certid,
    find_cms_attribute_iter,
    find_unique_cms_attribute,
)
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
from pyhanko.sign.validation.status import TimestampSignatureStatus
from pyhanko_certvalidator import ValidationContext

from signserver.signing.baseline_levels import BASELINE_LEVELS, LONG_TERM_LEVELS, level_reaches
from signserver.signing.cades_lta import (
    add_archive_timestamp,
    archive_timestamp_tokens,
    check_archive_timestamp,
    check_token_signature,
    find_signer_certificate,
)
from signserver.signing.cades_validation_data import (
    collect_token_validation_data,
    collect_validation_data,
    embed_validation_data,
    embedded_certificates,
    revocation_gaps,
)
from signserver.signing.errors import CadesLevelNotReached, SignatureValidationFailed

__all__ = [
    "cades_level",
    "check_cades_level",
    "reach_cades_level",
    "requested_cades_level",
]

# Exceptions of asn1crypto on malformed DER. pyHanko's validation errors are ValueErrors too.
_MALFORMED = (ValueError, TypeError, KeyError, IndexError)


def requested_cades_level(level: str | None, timestamper: TimeStamper | None) -> str:
    """Return the level to sign at, checking that a timestamper is given where the level needs one.

    Without ``level``, it is B-T when there is a timestamper and B-B when
    there is none. Raises ValueError for an unknown level or a missing timestamper.
    """
    if level is None:
        return "B-T" if timestamper is not None else "B-B"
    if level not in BASELINE_LEVELS:
        raise ValueError(f"level must be one of {', '.join(BASELINE_LEVELS)}, got {level!r}")
    if level != "B-B" and timestamper is None:
        raise ValueError(f"level {level} needs a timestamper")
    return level


async def reach_cades_level(content_info: cms.ContentInfo, level: str, *, timestamper: TimeStamper | None,
                            validation_context: ValidationContext | None) -> cms.ContentInfo:
    """Raise a B-B or B-T signature made by pyHanko to ``level`` and return it, or raise CadesLevelNotReached.

    For B-LT and B-LTA, ``validation_context`` validates the signer's and
    TSA's chains and fetches their revocation values, so it should require
    them. For B-LTA, ``timestamper`` issues the archive time-stamp. The
    result is read back with ``cades_level`` before it is returned.
    Raises TimestampFailed when the TSA gives no archive time-stamp.
    """
    if level not in LONG_TERM_LEVELS:
        return content_info
    if validation_context is None:
        raise ValueError(f"level {level} needs a validation_context to fetch revocation values")
    signed_data = content_info["content"]

    data = await collect_validation_data(signed_data, validation_context, level=level)
    signed_data = embed_validation_data(signed_data, data)
    gaps = revocation_gaps(signed_data, signed_data["signer_infos"][0])
    if gaps:
        raise CadesLevelNotReached(level=level, reason=("no revocation values for " + "; ".join(gaps))[:300])

    if level == "B-LTA":
        assert timestamper is not None, "checked by requested_cades_level"
        signed_data = await add_archive_timestamp(signed_data, timestamper)
        # Validation data of the archive TSA's chain goes in after the archive
        # time-stamp, which therefore does not cover it (a later archive
        # time-stamp would). Usually it is the signature TSA, whose data is
        # embedded already, and nothing is added.
        token = archive_timestamp_tokens(signed_data["signer_infos"][0])[-1]
        token_data = await collect_token_validation_data(token["content"], validation_context, level=level,
                                                         embedded_in=signed_data)
        signed_data = embed_validation_data(signed_data, token_data)

    reached = cades_level(signed_data)
    if not level_reaches(reached, level):
        raise CadesLevelNotReached(level=level, reason=f"the signature reaches only {reached}")
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data})


def cades_level(signed_data: cms.SignedData, *, signer_index: int = 0, content: bytes | None = None) -> str:
    """Return the CAdES baseline level that a SignerInfo of ``signed_data`` reaches, or "none".

    The attributes of each level must be present and consistent:

    - B-B: content-type (equal to eContentType), message-digest, signing-time
      and signing-certificate-v2 (or signing-certificate) whose hash matches
      the embedded certificate that the sid names. With eContent, or with
      ``content`` for a detached signature, message-digest must match its hash.
    - B-T: a signature-time-stamp. Each one's token signature verifies and its
      imprint is the hash of the signature value.
    - B-LT: the signer's and signature TSAs' chains are embedded up to a root,
      with revocation values for each certificate that needs them.
    - B-LTA: at least one archive-time-stamp-v3, each with a valid
      ats-hash-index-v3 and a matching imprint. For a detached signature
      without ``content``, this works when the archive time-stamp uses the
      signer's digest algorithm, as ours do.

    Trust in the signer and TSA certificates, and the signer's signature
    value, are for a validator such as pyHanko to decide. A malformed part
    ends the reading at the level below the one it belongs to.
    """
    signer_info = signed_data["signer_infos"][signer_index]
    try:
        content_digest = _content_digests(signed_data, signer_info, content)
    except _MALFORMED:
        return "none"
    if content_digest is None:
        return "none"

    checks = (
        ("B-B", lambda: _has_b_b_attributes(signed_data, signer_info)),
        ("B-T", lambda: _has_signature_timestamp(signed_data, signer_info)),
        ("B-LT", lambda: not revocation_gaps(signed_data, signer_info)),
        ("B-LTA", lambda: _has_archive_timestamps(signed_data, signer_info, content_digest)),
    )
    reached = "none"
    for level, check in checks:
        try:
            if not check():
                break
        except _MALFORMED:
            break
        reached = level
    return reached


async def check_cades_level(signed_data: cms.SignedData, level: str, context: ValidationContext, *,
                            content: bytes | None = None) -> None:
    """Raise SignatureValidationFailed unless ``signed_data`` reaches ``level`` and its archive time-stamps validate.

    ``context`` validates the archive TSAs' chains. For the release check it
    is ``embedded_validation_context``, so nothing is fetched.
    """
    reached = cades_level(signed_data, content=content)
    if not level_reaches(reached, level):
        raise SignatureValidationFailed(field_name=None, reason=f"the signature reaches {reached}, not {level}")
    if level != "B-LTA":
        return

    signer_info = signed_data["signer_infos"][0]
    content_digest = _content_digests(signed_data, signer_info, content) or (lambda _algorithm: None)
    for token in archive_timestamp_tokens(signer_info):
        imprint = _imprint_of(token)
        status = TimestampSignatureStatus(
            **await validate_tst_signed_data(token["content"], context, lambda _algorithm: imprint)
        )
        if not (status.intact and status.valid and status.trusted):
            raise SignatureValidationFailed(field_name=None,
                                            reason="the archive time-stamp is invalid or its TSA is untrusted")
        problem = check_archive_timestamp(signed_data, signer_info, token, embedded_certificates(signed_data),
                                          content_digest)
        if problem is not None:
            raise SignatureValidationFailed(field_name=None, reason=f"the archive time-stamp is unsound: {problem}")


def _imprint_of(token: cms.ContentInfo) -> bytes:
    # check_archive_timestamp recomputes the imprint, so pyHanko only checks the token's signature and trust.
    return token["content"]["encap_content_info"]["content"].parsed["message_imprint"]["hashed_message"].native


def _has_b_b_attributes(signed_data: cms.SignedData, signer_info: cms.SignerInfo) -> bool:
    signed_attrs = signer_info["signed_attrs"]
    try:
        content_type = find_unique_cms_attribute(signed_attrs, "content_type")
        find_unique_cms_attribute(signed_attrs, "message_digest")
        find_unique_cms_attribute(signed_attrs, "signing_time")
    except (NonexistentAttributeError, MultivaluedAttributeError):
        return False
    if content_type.native != signed_data["encap_content_info"]["content_type"].native:
        return False

    signer = find_signer_certificate(signer_info["sid"], embedded_certificates(signed_data))
    if signer is None:
        return False
    for name in ("signing_certificate_v2", "signing_certificate"):
        try:
            attribute = find_unique_cms_attribute(signed_attrs, name)
        except NonexistentAttributeError:
            continue
        except MultivaluedAttributeError:
            return False
        return check_ess_certid(signer, attribute["certs"][0])
    return False


def _has_archive_timestamps(signed_data: cms.SignedData, signer_info: cms.SignerInfo,
                            content_digest: Callable[[str], bytes | None]) -> bool:
    tokens = archive_timestamp_tokens(signer_info)
    certificates = embedded_certificates(signed_data)
    return bool(tokens) and all(
        check_archive_timestamp(signed_data, signer_info, token, certificates, content_digest) is None
        for token in tokens
    )


def _has_signature_timestamp(signed_data: cms.SignedData, signer_info: cms.SignerInfo) -> bool:
    signature = signer_info["signature"].native
    certificates = embedded_certificates(signed_data)
    tokens = list(find_cms_attribute_iter(signer_info["unsigned_attrs"], "signature_time_stamp_token"))
    for token in tokens:
        tst_info = token["content"]["encap_content_info"]["content"].parsed
        algorithm = tst_info["message_imprint"]["hash_algorithm"]["algorithm"].native
        if tst_info["message_imprint"]["hashed_message"].native != hashlib.new(algorithm, signature).digest():
            return False
        if check_token_signature(token["content"], certificates) is not None:
            return False
    return bool(tokens)


def _content_digests(signed_data: cms.SignedData, signer_info: cms.SignerInfo,
                     content: bytes | None) -> Callable[[str], bytes | None] | None:
    """Return a function from digest algorithm names to the signed content's hash, None where it is unknown.

    Returns None instead of a function when message-digest is missing or
    contradicts the content.
    """
    try:
        message_digest = find_unique_cms_attribute(signer_info["signed_attrs"], "message_digest").native
    except (NonexistentAttributeError, MultivaluedAttributeError):
        return None
    signer_algorithm = signer_info["digest_algorithm"]["algorithm"].native
    embedded = signed_data["encap_content_info"]["content"]
    if not isinstance(embedded, core.Void):
        content = bytes(embedded)
    if content is not None and hashlib.new(signer_algorithm, content).digest() != message_digest:
        return None

    def content_digest(algorithm: str) -> bytes | None:
        if algorithm == signer_algorithm:
            return message_digest
        return None if content is None else hashlib.new(algorithm, content).digest()

    return content_digest
