"""PKCS#10 requests signed by real SoftHSM keys, checked with OpenSSL; subject field validation.

OpenSSL, which did not build the requests, verifies their signatures and
prints their subjects, public keys and ASN.1 string types.
"""

from __future__ import annotations

import secrets
import subprocess
import unicodedata
from pathlib import Path

import pytest

from hsm import Hsm
from signserver.errors import InvalidInput
from signserver.hsm_bridge import HsmRawSigner
from signserver.signing.csr import (
    CsrCountryInvalid,
    CsrIdentifierInvalid,
    CsrSignatureInvalid,
    CsrSubject,
    CsrSubjectFieldInvalid,
    CsrSubjectFieldMissing,
    CsrSubjectFieldTooLong,
    build_csr,
    csr_pem,
)
from tests.hsm.conftest import hsm, softhsm_tokens  # noqa: F401 - fixtures of the real SoftHSM token

SUBJECT = CsrSubject(
    common_name="Nguyễn Thị Hằng",
    organization="Ủy ban nhân dân huyện Mẫu Sơn",
    organizational_unit="Văn phòng HĐND và UBND",
    locality="Huyện Mẫu Sơn",
    state="Tỉnh Lạng Sơn",
    title="Chuyên viên",
    identifiers=("CCCD:001190012345",),
)
EXPECTED_SUBJECT_LINE = (
    "subject=C=VN,ST=Tỉnh Lạng Sơn,L=Huyện Mẫu Sơn,O=Ủy ban nhân dân huyện Mẫu Sơn,"
    "OU=Văn phòng HĐND và UBND,title=Chuyên viên,CN=Nguyễn Thị Hằng,UID=CCCD:001190012345"
)

KEY_PARAMETERS = {"RSA-2048": ("RSA", 2048), "EC-P-256": ("EC", "P-256"), "EC-P-384": ("EC", "P-384")}


def generate(token: Hsm, name: str) -> tuple[bytes, bytes, str]:
    """Generate a key pair of ``name`` on the token; return its CKA_ID, SPKI DER and key type."""
    key_type, size = KEY_PARAMETERS[name]
    key_id = secrets.token_bytes(16)
    label = f"csr-test-{key_id.hex()[:12]}"
    if key_type == "RSA":
        return key_id, token.generate_rsa_key(key_id, label, size), key_type
    return key_id, token.generate_ec_key(key_id, label, size), key_type


async def request_file(token: Hsm, name: str, directory: Path,
                       subject: CsrSubject = SUBJECT) -> tuple[Path, bytes]:
    """Write a PEM request for a new key of ``name`` and return its path and the key's SPKI DER."""
    key_id, public_key_der, key_type = generate(token, name)
    signer = HsmRawSigner(token, key_id, key_type)
    der = await build_csr(public_key_der, subject.to_name(), signer.sign_digest)
    path = directory / f"{name}.csr"
    path.write_bytes(csr_pem(der))
    return path, public_key_der


def openssl_req(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "req", "-in", str(path), "-noout", *options], capture_output=True, text=True)


@pytest.mark.parametrize("name", ["RSA-2048", "EC-P-256", "EC-P-384"])
async def test_csr_signature_verifies_with_openssl(hsm: Hsm, tmp_path: Path, name: str) -> None:  # noqa: F811
    path, _ = await request_file(hsm, name, tmp_path)

    verified = openssl_req(path, "-verify")

    assert verified.returncode == 0, verified.stderr
    assert "verify OK" in verified.stderr


@pytest.mark.parametrize("name", ["RSA-2048", "EC-P-256"])
async def test_csr_subject_shows_vietnamese(hsm: Hsm, tmp_path: Path, name: str) -> None:  # noqa: F811
    path, _ = await request_file(hsm, name, tmp_path)

    printed = openssl_req(path, "-subject", "-nameopt", "utf8,sep_comma_plus")

    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == EXPECTED_SUBJECT_LINE


async def test_csr_public_key_is_hsm_key(hsm: Hsm, tmp_path: Path) -> None:  # noqa: F811
    path, public_key_der = await request_file(hsm, "EC-P-256", tmp_path)

    printed = subprocess.run(["openssl", "req", "-in", str(path), "-noout", "-pubkey"], capture_output=True)
    converted = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=printed.stdout,
                               capture_output=True)

    assert converted.returncode == 0, converted.stderr
    assert converted.stdout == public_key_der


@pytest.mark.parametrize(("name", "algorithm"), [
    ("RSA-2048", "sha256WithRSAEncryption"),
    ("EC-P-256", "ecdsa-with-SHA256"),
    ("EC-P-384", "ecdsa-with-SHA384"),
])
async def test_csr_signature_algorithm_fits_key(hsm: Hsm, tmp_path: Path, name: str,  # noqa: F811
                                                algorithm: str) -> None:
    path, _ = await request_file(hsm, name, tmp_path)

    text = openssl_req(path, "-text").stdout

    assert f"Signature Algorithm: {algorithm}" in text


async def test_csr_requests_signing_key_usage(hsm: Hsm, tmp_path: Path) -> None:  # noqa: F811
    path, _ = await request_file(hsm, "EC-P-256", tmp_path)

    text = openssl_req(path, "-text").stdout

    assert "X509v3 Key Usage: critical" in text
    assert "Digital Signature, Non Repudiation" in text


async def test_csr_string_types(hsm: Hsm, tmp_path: Path) -> None:  # noqa: F811
    path, _ = await request_file(hsm, "EC-P-256", tmp_path)

    parsed = subprocess.run(["openssl", "asn1parse", "-in", str(path)], capture_output=True, text=True).stdout
    lines = parsed.splitlines()
    string_lines = [line for line in lines if "STRING" in line and "BIT STRING" not in line
                    and "OCTET STRING" not in line]

    assert "PRINTABLESTRING   :VN" in string_lines[0]
    assert all("UTF8STRING" in line for line in string_lines[1:]), string_lines
    assert len(string_lines) == 8


async def test_csr_subject_normalised_to_nfc(hsm: Hsm, tmp_path: Path) -> None:  # noqa: F811
    decomposed = unicodedata.normalize("NFD", "Nguyễn Thị Hằng")
    subject = CsrSubject(common_name=decomposed, organization=unicodedata.normalize("NFD", "Ủy ban nhân dân"),
                         identifiers=("CCCD:001190012345",))
    path, _ = await request_file(hsm, "EC-P-256", tmp_path, subject)

    printed = openssl_req(path, "-subject", "-nameopt", "utf8,sep_comma_plus").stdout

    assert "CN=Nguyễn Thị Hằng" in printed
    assert unicodedata.is_normalized("NFC", printed)


async def test_csr_other_key_signature_rejected(hsm: Hsm) -> None:  # noqa: F811
    _, public_key_der, _ = generate(hsm, "EC-P-256")
    other_id, _, other_type = generate(hsm, "EC-P-256")
    signer = HsmRawSigner(hsm, other_id, other_type)

    with pytest.raises(CsrSignatureInvalid):
        await build_csr(public_key_der, SUBJECT.to_name(), signer.sign_digest)


@pytest.mark.parametrize(("given", "stored"), [
    ("CCCD:001190012345", "CCCD:001190012345"),
    ("cccd: 001190012345", "CCCD:001190012345"),
    ("CMND:123456789", "CMND:123456789"),
    ("CMND:001190012345", "CMND:001190012345"),
    ("HC:B1234567", "HC:B1234567"),
    ("MST:0100000001", "MST:0100000001"),
    ("MST:0100000001-001", "MST:0100000001-001"),
])
def test_identifier_accepted(given: str, stored: str) -> None:
    subject = CsrSubject(common_name="Nguyễn Thị Hằng", organization="UBND", identifiers=(given,))

    assert subject.identifiers == (stored,)


@pytest.mark.parametrize("identifier", [
    "CCCD:00119001234",
    "CCCD:0011900123456",
    "CCCD:00119001234X",
    "CCCD:٠٠١١٩٠٠١٢٣٤٥",
    "CMND:1234567890",
    "HC:12345678",
    "HC:b1234567",
    "MST:010000000",
    "MST:0100000001-01",
    "MST:0100000001001",
    "CMT:001190012345",
    "001190012345",
])
def test_identifier_rejected(identifier: str) -> None:
    with pytest.raises(CsrIdentifierInvalid) as raised:
        CsrSubject(common_name="Nguyễn Thị Hằng", organization="UBND", identifiers=(identifier,))

    assert raised.value.params["identifier"] == identifier


def test_subject_common_name_required() -> None:
    with pytest.raises(CsrSubjectFieldMissing) as raised:
        CsrSubject(common_name="  ", organization="UBND")

    assert raised.value.params["field"] == "common_name"


def test_subject_field_too_long() -> None:
    with pytest.raises(CsrSubjectFieldTooLong) as raised:
        CsrSubject(common_name="Nguyễn " * 11, organization="UBND")

    assert raised.value.params == {"field": "common_name", "length": 76, "limit": 64}


@pytest.mark.parametrize("value", ["Nguyễn\nThị Hằng", "Nguyễn\u200bThị Hằng"])
def test_subject_control_character_rejected(value: str) -> None:
    with pytest.raises(CsrSubjectFieldInvalid) as raised:
        CsrSubject(common_name="Nguyễn Thị Hằng", organization=value)

    assert raised.value.params["field"] == "organization"


@pytest.mark.parametrize("country", ["Việt Nam", "V", "V1"])
def test_subject_country_rejected(country: str) -> None:
    with pytest.raises(CsrCountryInvalid):
        CsrSubject(common_name="Nguyễn Thị Hằng", organization="UBND", country=country)


@pytest.mark.parametrize(("fields", "field"), [
    ({"common_name": 12345}, "common_name"),
    ({"title": ["Chuyên viên"]}, "title"),
    ({"identifiers": ["CCCD:001190012345", 1]}, "identifiers"),
    ({"identifiers": {"CCCD": "001190012345"}}, "identifiers"),
])
def test_subject_wrong_type_rejected(fields: dict[str, object], field: str) -> None:
    values: dict[str, object] = {"common_name": "Nguyễn Thị Hằng", "organization": "UBND", **fields}

    with pytest.raises(InvalidInput) as raised:
        CsrSubject(**values)  # type: ignore[arg-type]

    assert raised.value.code == "field_invalid"
    assert raised.value.params["field"] == field


def test_subject_single_identifier_string() -> None:
    subject = CsrSubject(common_name="Nguyễn Thị Hằng", organization="UBND",
                         identifiers="CCCD:001190012345")  # type: ignore[arg-type]

    assert subject.identifiers == ("CCCD:001190012345",)
