"""The CAdES archive-time-stamp-v3 attribute and its ats-hash-index-v3 (ETSI EN 319 122-1 V1.1.1, 5.5.2 and 5.5.3).

pyHanko 0.38 neither creates nor checks archive-time-stamp-v3, so this module
implements the two clauses:

- ats-hash-index-v3 (OID 0.4.0.19122.1.5) is an unsigned attribute of the
  archive time-stamp token's own SignerInfo. Its ATSHashIndexV3 value contains
  the hash of every CertificateChoices in SignedData.certificates, of every
  RevocationInfoChoice in SignedData.crls, and, for every value of every
  unsigned attribute of the archived SignerInfo, the hash of the attribute's
  attrType DER followed by that value's DER. hashIndAlgorithm is the message
  imprint's algorithm. It is left out when it is SHA-256, its DEFAULT.
- The message imprint of archive-time-stamp-v3 (OID 0.4.0.1733.2.4) is one
  hash over these parts, in this order. First the DER of eContentType, then
  the hash of the signed content (the content that message-digest covers).
  Then the encodings of the SignerInfo's version, sid, digestAlgorithm,
  signedAttrs (with its [0] tag), signatureAlgorithm and signature. Last the
  DER of the ATSHashIndexV3 value.
- An ats-hash-index-v3 is invalid when one of its entries matches no element
  that is present.

The archive time-stamp uses the signer's digest algorithm, so the content hash
is the message-digest attribute's value and no content is needed. That also
serves signatures made over a digest alone.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from asn1crypto import algos, cms, core, tsp, x509
from pyhanko.sign.general import find_unique_cms_attribute
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.validation.generic_cms import validate_sig_integrity

from signserver.signing.embedded_validation_data import signed_data_certificates
from signserver.signing.errors import TimestampFailed

__all__ = [
    "ARCHIVE_TIME_STAMP_V3",
    "ATS_HASH_INDEX_V3",
    "HashIndex",
    "add_archive_timestamp",
    "archive_imprint",
    "archive_timestamp_tokens",
    "ats_hash_index",
    "check_archive_timestamp",
    "check_token_signature",
    "find_signer_certificate",
    "present",
    "read_hash_index",
]

ARCHIVE_TIME_STAMP_V3 = "0.4.0.1733.2.4"
ATS_HASH_INDEX_V3 = "0.4.0.19122.1.5"
_DEFAULT_HASH_INDEX_ALGORITHM = "sha256"


class _OctetStrings(core.SequenceOf):
    _child_spec = core.OctetString


class _ATSHashIndexV3(core.Sequence):
    # ATSHashIndexV3 ::= SEQUENCE { hashIndAlgorithm AlgorithmIdentifier DEFAULT {algorithm id-sha256},
    #   certificatesHashIndex, crlsHashIndex, unsignedAttrValuesHashIndex SEQUENCE OF OCTET STRING }
    _fields = [
        ("hash_ind_algorithm", algos.DigestAlgorithm, {"default": {"algorithm": _DEFAULT_HASH_INDEX_ALGORITHM}}),
        ("certificates_hash_index", _OctetStrings),
        ("crls_hash_index", _OctetStrings),
        ("unsigned_attr_values_hash_index", _OctetStrings),
    ]


@dataclass(frozen=True)
class HashIndex:
    """One ATSHashIndexV3 value, read from its DER."""

    algorithm: str
    certificates: tuple[bytes, ...]
    crls: tuple[bytes, ...]
    unsigned_attr_values: tuple[bytes, ...]
    # The value's DER as found, which the archive imprint covers.
    encoded: bytes


def ats_hash_index(signed_data: cms.SignedData, signer_info: cms.SignerInfo, algorithm: str) -> bytes:
    """Return the DER of the ATSHashIndexV3 value over what ``signed_data`` and ``signer_info`` contain now."""
    index: dict[str, object] = {
        "certificates_hash_index": list(_certificate_hashes(signed_data, algorithm)),
        "crls_hash_index": list(_crl_hashes(signed_data, algorithm)),
        "unsigned_attr_values_hash_index": list(_unsigned_attr_value_hashes(signer_info, algorithm)),
    }
    if algorithm != _DEFAULT_HASH_INDEX_ALGORITHM:
        index["hash_ind_algorithm"] = {"algorithm": algorithm}
    return _ATSHashIndexV3(index).dump()


def read_hash_index(encoded: bytes) -> HashIndex:
    """Read an ATSHashIndexV3 value. Raises ValueError if it is malformed.

    hashIndAlgorithm and certificatesHashIndex are both SEQUENCEs, so whether
    the optional algorithm is present is decided by the number of elements.
    """
    try:
        elements = core.SequenceOf.load(encoded)
        count = len(elements)
        if count not in (3, 4):
            raise ValueError(f"ATSHashIndexV3 has {count} elements, expected 3 or 4")
        algorithm = _DEFAULT_HASH_INDEX_ALGORITHM
        if count == 4:
            algorithm = algos.DigestAlgorithm.load(elements[0].dump())["algorithm"].native
        lists = [tuple(item.native for item in _OctetStrings.load(element.dump())) for element in elements][-3:]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed ATSHashIndexV3: {exc}") from exc
    return HashIndex(algorithm=algorithm, certificates=lists[0], crls=lists[1], unsigned_attr_values=lists[2],
                     encoded=encoded)


def archive_imprint(signed_data: cms.SignedData, signer_info: cms.SignerInfo, hash_index: bytes,
                    algorithm: str, content_digest: bytes) -> bytes:
    """Return the archive-time-stamp-v3 message imprint (EN 319 122-1 5.5.3).

    ``content_digest`` is the hash of the signed content with ``algorithm``.
    ``hash_index`` is the DER of the ATSHashIndexV3 value.
    """
    digest = hashlib.new(algorithm)
    digest.update(signed_data["encap_content_info"]["content_type"].dump())
    digest.update(content_digest)
    for field in ("version", "sid", "digest_algorithm", "signed_attrs", "signature_algorithm", "signature"):
        digest.update(signer_info[field].dump())
    digest.update(hash_index)
    return digest.digest()


async def add_archive_timestamp(signed_data: cms.SignedData, timestamper: TimeStamper) -> cms.SignedData:
    """Add an archive-time-stamp-v3 to the first SignerInfo of ``signed_data`` and return the new SignedData.

    The archive time-stamp covers the certificates, revocation values and
    unsigned attributes present now, so validation data must be embedded
    before. Raises TimestampFailed when the TSA gives no token.
    """
    signed_data = cms.SignedData.load(signed_data.untag().dump())
    signer_info = signed_data["signer_infos"][0]
    algorithm = signer_info["digest_algorithm"]["algorithm"].native
    content_digest = find_unique_cms_attribute(signer_info["signed_attrs"], "message_digest").native

    hash_index = ats_hash_index(signed_data, signer_info, algorithm)
    imprint = archive_imprint(signed_data, signer_info, hash_index, algorithm, content_digest)
    try:
        token = await timestamper.async_timestamp(imprint, algorithm)
    except (TimestampRequestError, asyncio.TimeoutError) as exc:
        raise TimestampFailed(reason=f"{type(exc).__name__}: {exc}"[:200]) from exc

    # The TSA signature does not cover the token's unsigned attributes, so the
    # index is added there after the token was issued.
    token = cms.ContentInfo.load(token.dump())
    token_signer_info = token["content"]["signer_infos"][0]
    token_signer_info["unsigned_attrs"] = _with_attribute(token_signer_info["unsigned_attrs"], ATS_HASH_INDEX_V3,
                                                          core.Any.load(hash_index))
    signer_info["unsigned_attrs"] = _with_attribute(signer_info["unsigned_attrs"], ARCHIVE_TIME_STAMP_V3,
                                                    core.Any.load(token.dump()))
    return cms.SignedData.load(signed_data.untag().dump())


def archive_timestamp_tokens(signer_info: cms.SignerInfo) -> list[cms.ContentInfo]:
    """Return the tokens of every archive-time-stamp-v3 attribute of ``signer_info``, in order."""
    tokens = []
    for attribute in _attributes(signer_info["unsigned_attrs"]):
        if attribute["type"].dotted == ARCHIVE_TIME_STAMP_V3:
            tokens.extend(cms.ContentInfo.load(value.dump()) for value in attribute["values"])
    return tokens


def check_archive_timestamp(signed_data: cms.SignedData, signer_info: cms.SignerInfo, token: cms.ContentInfo,
                            certificates: list[x509.Certificate],
                            content_digest: Callable[[str], bytes | None]) -> str | None:
    """Return why ``token`` is no valid archive-time-stamp-v3 of ``signer_info``, or None if it is one.

    The token's CMS signature must verify with its TSA certificate (found in
    the token or in ``certificates``), its ats-hash-index-v3 must be valid and
    its message imprint must match. ``content_digest`` returns the signed
    content's hash with a digest algorithm, or None when it is not known.
    Trust in the TSA is not checked here.
    """
    token_signed_data = token["content"]
    token_signer_info = token_signed_data["signer_infos"][0]
    problem = check_token_signature(token_signed_data, certificates)
    if problem is not None:
        return problem

    index_values = [value for attribute in _attributes(token_signer_info["unsigned_attrs"])
                    if attribute["type"].dotted == ATS_HASH_INDEX_V3 for value in attribute["values"]]
    if len(index_values) != 1:
        return f"the token carries {len(index_values)} ats-hash-index-v3 values, expected exactly 1"
    try:
        index = read_hash_index(index_values[0].dump())
    except ValueError as exc:
        return str(exc)

    tst_info = token_signed_data["encap_content_info"]["content"].parsed
    imprint_algorithm = tst_info["message_imprint"]["hash_algorithm"]["algorithm"].native
    if index.algorithm != imprint_algorithm:
        return f"hashIndAlgorithm {index.algorithm} differs from the message imprint's {imprint_algorithm}"
    problem = _unmatched_entries(signed_data, signer_info, index)
    if problem is not None:
        return problem
    signed_content_digest = content_digest(imprint_algorithm)
    if signed_content_digest is None:
        return f"no {imprint_algorithm} hash of the signed content is available"

    expected = archive_imprint(signed_data, signer_info, index.encoded, imprint_algorithm, signed_content_digest)
    if tst_info["message_imprint"]["hashed_message"].native != expected:
        return "the message imprint does not match the archived signature"
    return None


def _certificate_hashes(signed_data: cms.SignedData, algorithm: str) -> list[bytes]:
    return [hashlib.new(algorithm, item.dump()).digest() for item in present(signed_data["certificates"])]


def _crl_hashes(signed_data: cms.SignedData, algorithm: str) -> list[bytes]:
    return [hashlib.new(algorithm, item.dump()).digest() for item in present(signed_data["crls"])]


def _unsigned_attr_value_hashes(signer_info: cms.SignerInfo, algorithm: str) -> list[bytes]:
    hashes = []
    for attribute in _attributes(signer_info["unsigned_attrs"]):
        attribute_type = attribute["type"].dump()
        for value in attribute["values"]:
            hashes.append(hashlib.new(algorithm, attribute_type + value.dump()).digest())
    return hashes


def _unmatched_entries(signed_data: cms.SignedData, signer_info: cms.SignerInfo, index: HashIndex) -> str | None:
    lists = (
        ("certificatesHashIndex", index.certificates, _certificate_hashes(signed_data, index.algorithm)),
        ("crlsHashIndex", index.crls, _crl_hashes(signed_data, index.algorithm)),
        ("unsignedAttrValuesHashIndex", index.unsigned_attr_values,
         _unsigned_attr_value_hashes(signer_info, index.algorithm)),
    )
    for name, entries, found in lists:
        unmatched = [entry for entry in entries if entry not in found]
        if unmatched:
            return f"{len(unmatched)} {name} entries match no element of the signature"
    return None


def check_token_signature(token_signed_data: cms.SignedData, certificates: list[x509.Certificate]) -> str | None:
    """Return why the CMS signature of a time-stamp token does not verify, or None if it does.

    The TSA certificate is looked up in the token and in ``certificates``.
    Trust in it is not checked.
    """
    token_signer_info = token_signed_data["signer_infos"][0]
    pool = list(certificates)
    pool.extend(signed_data_certificates(token_signed_data))
    tsa_certificate = find_signer_certificate(token_signer_info["sid"], pool)
    if tsa_certificate is None:
        return "the time-stamp token's TSA certificate is missing"

    content = token_signed_data["encap_content_info"]["content"]
    if not isinstance(content.parsed, tsp.TSTInfo):
        return "the time-stamp token does not encapsulate a TSTInfo"
    algorithm = token_signer_info["digest_algorithm"]["algorithm"].native
    intact, valid = validate_sig_integrity(token_signer_info, tsa_certificate, "tst_info",
                                           hashlib.new(algorithm, bytes(content)).digest())
    if not (intact and valid):
        return "the time-stamp token's signature does not verify"
    return None


def find_signer_certificate(sid: cms.SignerIdentifier, certificates: list[x509.Certificate]) -> x509.Certificate | None:
    """Return the certificate that ``sid`` names, or None."""
    for certificate in certificates:
        if sid.name == "issuer_and_serial_number":
            if (certificate.issuer == sid.chosen["issuer"]
                    and certificate.serial_number == sid.chosen["serial_number"].native):
                return certificate
        elif certificate.key_identifier == sid.chosen.native:
            return certificate
    return None


def _attributes(attributes: cms.CMSAttributes) -> list[cms.CMSAttribute]:
    return present(attributes)


def present(values: core.Asn1Value) -> list:
    """Return the elements of an optional SET OF or SEQUENCE OF field, an empty list when it is absent.

    Unlike ``.native``, this does not parse the elements, some of which
    (such as attribute values of unregistered types) asn1crypto cannot.
    """
    return [] if isinstance(values, core.Void) else list(values)


def _with_attribute(attributes: cms.CMSAttributes, attribute_type: str, value: core.Asn1Value) -> cms.CMSAttributes:
    existing = [cms.CMSAttribute.load(attribute.dump()) for attribute in _attributes(attributes)]
    return cms.CMSAttributes(existing + [cms.CMSAttribute({"type": attribute_type, "values": [value]})])

