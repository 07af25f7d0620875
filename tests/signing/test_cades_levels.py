"""CAdES B-B, B-T, B-LT and B-LTA with SoftHSM keys under a certomancer PKI, checked by OpenSSL and pyHanko.

Every level is signed detached and attached while certomancer's OCSP, CRL
and TSA services run. The services are then stopped, so each validation
below works only from what the files embed. The archive time-stamp is
checked against a message imprint that this file recomputes from the raw
DER with its own small parser, and its token with ``openssl ts -verify``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests
from asn1crypto import cms, core, ocsp, pem
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko.sign.validation import async_validate_detached_cms
from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
from pyhanko.sign.validation.status import TimestampSignatureStatus
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend

from signserver.hsm_bridge import HsmRawSigner
from signserver.signing.cades import ensure_cades_valid, sign_cades
from signserver.signing.cades_levels import cades_level
from signserver.signing.errors import CadesLevelNotReached, SignatureValidationFailed
from signserver.signing.keys import SigningKey
from signserver.signing.validate import SIGNER_KEY_USAGE
from tests.certomancer_pki import CertomancerPki, start_certomancer_pki
from tests.hsm.conftest import hsm, softhsm_tokens  # noqa: F401 - pytest fixtures: the SoftHSM2 token
from tests.verifiers import openssl_cms_verify

LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")
CASES = [(level, attached) for level in LEVELS for attached in (False, True)]
CONTENT = ("<HoSo><MaHoSo>000.00.01.H01-261204-0042</MaHoSo>"
           "<TenThuTuc>Cấp giấy phép xây dựng</TenThuTuc></HoSo>\n").encode() * 200

OID_ARCHIVE_TIME_STAMP_V3 = "0.4.0.1733.2.4"
OID_ATS_HASH_INDEX_V3 = "0.4.0.19122.1.5"
OID_SIGNATURE_TIME_STAMP = "1.2.840.113549.1.9.16.2.14"
OID_OCSP_RESPONSE = "1.3.6.1.5.5.7.16.2"
REVOCATION_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class HsmKey:
    key_id: bytes
    key_type: str
    spki: bytes


@dataclass(frozen=True)
class Signed:
    path: Path
    level: str
    attached: bool
    reported_level: str


@pytest.fixture(scope="module")
def hsm_keys(hsm) -> dict[str, HsmKey]:  # noqa: F811 - the imported fixture
    rsa_id, ec_id = secrets.token_bytes(8), secrets.token_bytes(8)
    rsa_spki = hsm.generate_rsa_key(rsa_id, f"cades-levels-rsa-{rsa_id.hex()}", 2048)
    ec_spki = hsm.generate_ec_key(ec_id, f"cades-levels-ec-{ec_id.hex()}", "P-256")
    return {"hsm-rsa": HsmKey(rsa_id, "RSA", rsa_spki), "hsm-ec": HsmKey(ec_id, "EC", ec_spki)}


def _signing_key(hsm, pki: CertomancerPki, label: str, key: HsmKey) -> SigningKey:  # noqa: F811
    return SigningKey(pki.cert(label), tuple(pki.chain(label)[1:]), key.key_type,
                      HsmRawSigner(hsm, key.key_id, key.key_type))


def _write_certificates(path: Path, certificates: list) -> Path:
    path.write_bytes(b"".join(pem.armor("CERTIFICATE", certificate.dump()) for certificate in certificates))
    return path


@pytest.fixture(scope="module")
def lt_pki(hsm_keys: dict[str, HsmKey], tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertomancerPki]:
    pki = start_certomancer_pki(tmp_path_factory.mktemp("cades-levels-pki"),
                                {label: key.spki for label, key in hsm_keys.items()})
    yield pki
    pki.stop()


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cades-levels-input") / "to-khai.xml"
    path.write_bytes(CONTENT)
    return path


@pytest.fixture(scope="module")
def root_pem(lt_pki: CertomancerPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_certificates(tmp_path_factory.mktemp("cades-levels-root") / "root.pem", [lt_pki.root])


@pytest.fixture(scope="module")
def signed(hsm, hsm_keys: dict[str, HsmKey], lt_pki: CertomancerPki, original: Path,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Signed]:
    """Sign every level detached (RSA key) and attached (EC key), then stop the PKI's services."""
    directory = tmp_path_factory.mktemp("cades-levels-out")

    async def sign_all() -> dict[tuple[str, bool], Signed]:
        outputs = {}
        timestamper = HTTPTimeStamper(lt_pki.tsa_url)
        async with AIOHttpFetcherBackend(per_request_timeout=REVOCATION_TIMEOUT_SECONDS) as fetchers:
            for level, attached in CASES:
                label = "hsm-ec" if attached else "hsm-rsa"
                context = ValidationContext(trust_roots=[lt_pki.root], allow_fetching=True,
                                            revocation_mode="hard-fail", fetchers=fetchers)
                path = directory / f"{level}-{'attached.p7m' if attached else 'detached.p7s'}"
                result = await sign_cades(original, path, key=_signing_key(hsm, lt_pki, label, hsm_keys[label]),
                                          timestamper=timestamper, attached=attached, level=level,
                                          validation_context=context)
                outputs[(level, attached)] = Signed(path, level, attached, result.level)
        return outputs

    outputs = asyncio.run(sign_all())
    lt_pki.stop()
    return outputs


def _signed_data(path: Path) -> cms.SignedData:
    return cms.ContentInfo.load(path.read_bytes())["content"]


# A small DER reader, independent of asn1crypto, for recomputing what the archive time-stamp covers.

def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """Return (tag, start of value, end of element) of the DER element at ``offset``."""
    tag = data[offset]
    length = data[offset + 1]
    position = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[position:position + count], "big")
        position += count
    return tag, position, position + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, bytes, int, int]]:
    """Return (tag, whole element, start of value, end) of each element between ``start`` and ``end``."""
    children = []
    offset = start
    while offset < end:
        tag, value_start, element_end = _tlv(data, offset)
        children.append((tag, data[offset:element_end], value_start, element_end))
        offset = element_end
    return children


def _oid_der(dotted: str) -> bytes:
    numbers = [int(part) for part in dotted.split(".")]
    body = bytearray([40 * numbers[0] + numbers[1]])
    for number in numbers[2:]:
        chunk = [number & 0x7F]
        number >>= 7
        while number:
            chunk.append(0x80 | (number & 0x7F))
            number >>= 7
        body += bytes(reversed(chunk))
    return bytes([0x06, len(body)]) + bytes(body)


@dataclass(frozen=True)
class RawSignature:
    """Raw DER pieces of a CAdES file, found without asn1crypto."""

    econtent_type: bytes
    certificates: list[bytes]
    crls: list[bytes]
    # version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature.
    signer_fields: list[bytes]
    # (attrType element, [each value element]) for each unsigned attribute.
    unsigned_attributes: list[tuple[bytes, list[bytes]]]


def _read_raw(data: bytes) -> RawSignature:
    _tag, content_start, content_end = _tlv(data, 0)
    # ContentInfo: contentType, then [0] EXPLICIT SignedData.
    explicit = _children(data, content_start, content_end)[1]
    _tag, signed_start, signed_end = _tlv(data, explicit[2])
    fields = _children(data, signed_start, signed_end)
    encap = next(field for field in fields if field[0] == 0x30)
    econtent_type = _children(data, encap[2], encap[3])[0][1]
    certificates = [child[1] for field in fields if field[0] == 0xA0 for child in _children(data, field[2], field[3])]
    crls = [child[1] for field in fields if field[0] == 0xA1 for child in _children(data, field[2], field[3])]
    signer_infos = fields[-1]
    signer_info = _children(data, signer_infos[2], signer_infos[3])[0]
    signer_fields = _children(data, signer_info[2], signer_info[3])
    unsigned = [field for field in signer_fields if field[0] == 0xA1]
    attributes = []
    for attribute in _children(data, unsigned[0][2], unsigned[0][3]) if unsigned else []:
        attr_type, values = _children(data, attribute[2], attribute[3])
        attributes.append((attr_type[1], [value[1] for value in _children(data, values[2], values[3])]))
    return RawSignature(econtent_type=econtent_type, certificates=certificates, crls=crls,
                        signer_fields=[field[1] for field in signer_fields if field[0] != 0xA1],
                        unsigned_attributes=attributes)


def _attribute_values(attributes: list[tuple[bytes, list[bytes]]], oid: str) -> list[bytes]:
    return [value for attr_type, values in attributes if attr_type == _oid_der(oid) for value in values]


def _archive_token(data: bytes) -> bytes:
    (token,) = _attribute_values(_read_raw(data).unsigned_attributes, OID_ARCHIVE_TIME_STAMP_V3)
    return token


def _hash_index_of(token: bytes) -> bytes:
    (index,) = _attribute_values(_read_raw(token).unsigned_attributes, OID_ATS_HASH_INDEX_V3)
    return index


def _hash_index_lists(index: bytes) -> list[list[bytes]]:
    _tag, start, end = _tlv(index, 0)
    elements = _children(index, start, end)
    assert len(elements) == 3, "a SHA-256 index leaves out hashIndAlgorithm, its DEFAULT"
    return [[index[child[2]:child[3]] for child in _children(index, element[2], element[3])]
            for element in elements]


def _offline_context(signed_data: cms.SignedData, root) -> ValidationContext:
    """Build a pyHanko context from the file's own certificates and revocation values, fetching nothing."""
    certificates = [choice.chosen for choice in signed_data["certificates"]]
    crls, ocsps = [], []
    for choice in [] if isinstance(signed_data["crls"], core.Void) else signed_data["crls"]:
        if choice.name == "crl":
            crls.append(choice.chosen)
        else:
            ocsps.append(ocsp.OCSPResponse.load(choice.chosen["other_rev_info"].dump()))
    return ValidationContext(trust_roots=[root], other_certs=certificates, crls=crls, ocsps=ocsps,
                             allow_fetching=False, revocation_mode="hard-fail")


async def _pyhanko_status(case: Signed, original: Path, context: ValidationContext):
    signed_data = _signed_data(case.path)
    signed_data["encap_content_info"] = {"content_type": "data"}
    return await async_validate_detached_cms(original.read_bytes(), signed_data, signer_validation_context=context,
                                             ts_validation_context=context, key_usage_settings=SIGNER_KEY_USAGE)


def _stripped_of_revocation_values(path: Path, target: Path) -> Path:
    content_info = cms.ContentInfo.load(path.read_bytes())
    content_info["content"]["crls"] = None
    target.write_bytes(content_info.dump())
    return target


def _flip_byte(data: bytes, needle: bytes, position: int) -> bytes:
    offset = data.index(needle) + position
    assert data.count(needle) == 1
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


@pytest.mark.parametrize(("level", "attached"), CASES)
def test_openssl_verifies_each_level(signed, original, root_pem, level, attached):
    case = signed[(level, attached)]

    verified = openssl_cms_verify(case.path, root_pem, None if case.attached else original)

    assert verified.returncode == 0, verified.stderr
    assert "Verification successful" in verified.stderr


@pytest.mark.parametrize(("level", "attached"), CASES)
def test_sign_cades_reports_requested_level(signed, level, attached):
    assert signed[(level, attached)].reported_level == level


@pytest.mark.parametrize(("level", "attached"), CASES)
def test_cades_level_reads_each_level(signed, level, attached):
    assert cades_level(_signed_data(signed[(level, attached)].path)) == level


@pytest.mark.parametrize(("level", "attached"), CASES)
async def test_ensure_cades_valid_accepts_each_level(signed, lt_pki, original, level, attached):
    await ensure_cades_valid(signed[(level, attached)].path, original, [lt_pki.root], level=level)


@pytest.mark.parametrize("level", ["B-LT", "B-LTA"])
@pytest.mark.parametrize("attached", [False, True])
async def test_pyhanko_validates_embedded_data_offline(signed, lt_pki, original, level, attached):
    case = signed[(level, attached)]
    context = _offline_context(_signed_data(case.path), lt_pki.root)

    status = await _pyhanko_status(case, original, context)

    assert status.intact
    assert status.valid
    assert status.trusted
    assert status.timestamp_validity is not None
    assert status.timestamp_validity.valid
    assert status.timestamp_validity.trusted


def test_revocation_services_are_stopped(signed, lt_pki):
    with pytest.raises(requests.ConnectionError):
        requests.post(lt_pki.ocsp_url, data=b"", timeout=REVOCATION_TIMEOUT_SECONDS)


@pytest.mark.parametrize("attached", [False, True])
def test_b_lt_embeds_ocsp_as_rfc5940_and_crl(signed, attached):
    raw = _read_raw(signed[("B-LT", attached)].path.read_bytes())

    other = [item for item in raw.crls if item[0] == 0xA1]
    crls = [item for item in raw.crls if item[0] == 0x30]
    assert len(other) == 2, "one OCSP response for the signer, one for the TSA"
    assert all(_oid_der(OID_OCSP_RESPONSE) in item[:16] for item in other)
    assert len(crls) == 1, "the root's CRL for the issuing CA"


def test_b_t_has_no_revocation_values(signed):
    assert _read_raw(signed[("B-T", False)].path.read_bytes()).crls == []


@pytest.mark.parametrize("attached", [False, True])
async def test_pyhanko_rejects_lt_without_revocation_values(signed, lt_pki, original, tmp_path, attached):
    stripped = _stripped_of_revocation_values(signed[("B-LT", attached)].path, tmp_path / "stripped.p7")
    case = Signed(stripped, "B-LT", attached, "B-LT")
    context = _offline_context(_signed_data(stripped), lt_pki.root)

    status = await _pyhanko_status(case, original, context)

    assert not status.trusted


@pytest.mark.parametrize("attached", [False, True])
def test_cades_level_without_revocation_values_is_b_t(signed, tmp_path, attached):
    stripped = _stripped_of_revocation_values(signed[("B-LT", attached)].path, tmp_path / "stripped.p7")

    assert cades_level(_signed_data(stripped)) == "B-T"


async def test_ensure_cades_valid_rejects_lt_without_revocation_values(signed, lt_pki, original, tmp_path):
    stripped = _stripped_of_revocation_values(signed[("B-LT", False)].path, tmp_path / "stripped.p7s")

    with pytest.raises(SignatureValidationFailed):
        await ensure_cades_valid(stripped, original, [lt_pki.root], level="B-LT")


@pytest.mark.parametrize("attached", [False, True])
def test_archive_imprint_recomputed_from_raw_der(signed, original, attached):
    data = signed[("B-LTA", attached)].path.read_bytes()
    raw = _read_raw(data)
    token = _archive_token(data)

    imprint = hashlib.sha256(raw.econtent_type + hashlib.sha256(original.read_bytes()).digest()
                             + b"".join(raw.signer_fields) + _hash_index_of(token)).digest()

    tst_info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    assert tst_info["message_imprint"]["hashed_message"].native == imprint


@pytest.mark.parametrize("attached", [False, True])
def test_openssl_ts_verifies_archive_token(signed, lt_pki, original, root_pem, tmp_path, attached):
    data = signed[("B-LTA", attached)].path.read_bytes()
    raw = _read_raw(data)
    token = _archive_token(data)
    imprint = hashlib.sha256(raw.econtent_type + hashlib.sha256(original.read_bytes()).digest()
                             + b"".join(raw.signer_fields) + _hash_index_of(token)).digest()
    token_path = tmp_path / "archive-token.der"
    token_path.write_bytes(token)
    untrusted = _write_certificates(tmp_path / "tsa-chain.pem", [lt_pki.cert("tsa"), lt_pki.cert("interm")])

    verified = subprocess.run(
        ["openssl", "ts", "-verify", "-digest", imprint.hex(), "-in", str(token_path), "-token_in",
         "-CAfile", str(root_pem), "-untrusted", str(untrusted)],
        capture_output=True, text=True,
    )

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verification: OK" in verified.stdout


@pytest.mark.parametrize("attached", [False, True])
def test_ats_hash_index_lists_what_it_covers(signed, attached):
    data = signed[("B-LTA", attached)].path.read_bytes()
    raw = _read_raw(data)
    certificates, crls, attribute_values = _hash_index_lists(_hash_index_of(_archive_token(data)))

    expected_values = [hashlib.sha256(_oid_der(OID_SIGNATURE_TIME_STAMP) + value).digest()
                       for value in _attribute_values(raw.unsigned_attributes, OID_SIGNATURE_TIME_STAMP)]
    assert sorted(certificates) == sorted(hashlib.sha256(item).digest() for item in raw.certificates)
    assert sorted(crls) == sorted(hashlib.sha256(item).digest() for item in raw.crls)
    assert attribute_values == expected_values


@pytest.mark.parametrize("attached", [False, True])
async def test_pyhanko_validates_archive_token_offline(signed, lt_pki, attached):
    signed_data = _signed_data(signed[("B-LTA", attached)].path)
    token = cms.ContentInfo.load(_archive_token(signed[("B-LTA", attached)].path.read_bytes()))
    imprint = token["content"]["encap_content_info"]["content"].parsed["message_imprint"]["hashed_message"].native

    status = TimestampSignatureStatus(**await validate_tst_signed_data(
        token["content"], _offline_context(signed_data, lt_pki.root), lambda _algorithm: imprint))

    assert status.intact
    assert status.valid
    assert status.trusted


@pytest.mark.parametrize("attached", [False, True])
def test_tampered_hash_index_is_not_lta(signed, tmp_path, attached):
    data = signed[("B-LTA", attached)].path.read_bytes()
    index = _hash_index_of(_archive_token(data))
    tampered = tmp_path / "tampered.p7"

    tampered.write_bytes(_flip_byte(data, index, len(index) - 1))

    assert cades_level(_signed_data(tampered)) == "B-LT"


@pytest.mark.parametrize("attached", [False, True])
def test_tampered_archive_token_is_not_lta(signed, tmp_path, attached):
    data = signed[("B-LTA", attached)].path.read_bytes()
    token = cms.ContentInfo.load(_archive_token(data))
    tst_info = token["content"]["encap_content_info"]["content"].parsed
    tampered = tmp_path / "tampered.p7"

    # The TSA's signature covers the TSTInfo, so changing its serial number breaks the token.
    tampered.write_bytes(_flip_byte(data, tst_info["serial_number"].dump(), -1))

    assert cades_level(_signed_data(tampered)) == "B-LT"


async def test_ensure_cades_valid_rejects_tampered_hash_index(signed, lt_pki, original, tmp_path):
    data = signed[("B-LTA", False)].path.read_bytes()
    index = _hash_index_of(_archive_token(data))
    tampered = tmp_path / "tampered.p7s"
    tampered.write_bytes(_flip_byte(data, index, len(index) - 1))

    with pytest.raises(SignatureValidationFailed):
        await ensure_cades_valid(tampered, original, [lt_pki.root], level="B-LTA")


async def test_b_lt_refused_when_revocation_services_down(hsm, hsm_keys, pki, timestamper, original,  # noqa: F811
                                                          tmp_path):
    offline = start_certomancer_pki(tmp_path / "offline-pki", {"hsm-rsa": hsm_keys["hsm-rsa"].spki})
    offline.stop()
    output = tmp_path / "refused.p7s"
    key = _signing_key(hsm, offline, "hsm-rsa", hsm_keys["hsm-rsa"])

    async with AIOHttpFetcherBackend(per_request_timeout=REVOCATION_TIMEOUT_SECONDS) as fetchers:
        context = ValidationContext(trust_roots=[offline.root, pki.root], allow_fetching=True,
                                    revocation_mode="hard-fail", fetchers=fetchers)
        with pytest.raises(CadesLevelNotReached) as refused:
            await sign_cades(original, output, key=key, timestamper=timestamper, attached=False, level="B-LT",
                             validation_context=context)

    assert refused.value.code == "level_not_reached"
    assert refused.value.params["level"] == "B-LT"
    assert not output.exists()


async def test_b_lt_refused_for_revoked_signer(hsm, hsm_keys, original, tmp_path):  # noqa: F811
    revoked = start_certomancer_pki(tmp_path / "revoked-pki", {"hsm-rsa": hsm_keys["hsm-rsa"].spki},
                                    hsm_revoked={"hsm-rsa"})
    output = tmp_path / "refused.p7s"
    key = _signing_key(hsm, revoked, "hsm-rsa", hsm_keys["hsm-rsa"])
    try:
        async with AIOHttpFetcherBackend(per_request_timeout=REVOCATION_TIMEOUT_SECONDS) as fetchers:
            context = ValidationContext(trust_roots=[revoked.root], allow_fetching=True,
                                        revocation_mode="hard-fail", fetchers=fetchers)
            with pytest.raises(CadesLevelNotReached) as refused:
                await sign_cades(original, output, key=key, timestamper=HTTPTimeStamper(revoked.tsa_url),
                                 attached=False, level="B-LT", validation_context=context)
    finally:
        revoked.stop()

    assert "revoked" in refused.value.params["reason"]
    assert not output.exists()


async def test_b_lt_without_validation_context_rejected(hsm, hsm_keys, lt_pki, timestamper, original,  # noqa: F811
                                                        tmp_path):
    key = _signing_key(hsm, lt_pki, "hsm-rsa", hsm_keys["hsm-rsa"])

    with pytest.raises(ValueError, match="validation_context"):
        await sign_cades(original, tmp_path / "out.p7s", key=key, timestamper=timestamper, attached=False,
                         level="B-LT")


async def test_b_t_without_timestamper_rejected(hsm, hsm_keys, lt_pki, original, tmp_path):  # noqa: F811
    key = _signing_key(hsm, lt_pki, "hsm-rsa", hsm_keys["hsm-rsa"])

    with pytest.raises(ValueError, match="timestamper"):
        await sign_cades(original, tmp_path / "out.p7s", key=key, timestamper=None, attached=False, level="B-T")
