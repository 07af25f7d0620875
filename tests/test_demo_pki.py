"""Tests for the demo PKI, checked with OpenSSL as the independent verifier."""

from __future__ import annotations

import stat
import subprocess
import unicodedata
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from signserver import demo_pki
from signserver.demo_pki import SubjectSpec

OFFICIAL = SubjectSpec(
    common_name="Nguyễn Thị Hồng Nhung",
    organization="ỦY BAN NHÂN DÂN HUYỆN MẪU SƠN",
    organizational_unit="Văn phòng HĐND và UBND",
    locality="Huyện Mẫu Sơn",
    state="Tỉnh Lạng Sơn",
    title="Phó Chủ tịch",
    user_id="CCCD:001085012345",
)
TSA_SUBJECT = SubjectSpec(common_name="Dịch vụ cấp dấu thời gian thử nghiệm", organization="Ban Cơ yếu thử nghiệm")


@pytest.fixture(scope="module")
def root() -> demo_pki.CertificateAuthority:
    return demo_pki.create_root_ca("CA gốc thử nghiệm", "Tổ chức chứng thực thử nghiệm")


@pytest.fixture(scope="module")
def issuing(root: demo_pki.CertificateAuthority) -> demo_pki.CertificateAuthority:
    return demo_pki.create_issuing_ca(root, "CA cấp dưới thử nghiệm", "Tổ chức chứng thực thử nghiệm")


def public_key_der(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rsa_public_key_der() -> bytes:
    return public_key_der(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_public_key_der() -> bytes:
    return public_key_der(ec.generate_private_key(ec.SECP256R1()))


def openssl_verify(tmp_path: Path, root, issuing, leaf: x509.Certificate) -> subprocess.CompletedProcess:
    demo_pki.write_pem(tmp_path / "root.pem", root.certificate)
    demo_pki.write_pem(tmp_path / "issuing.pem", issuing.certificate)
    demo_pki.write_pem(tmp_path / "leaf.pem", leaf)
    return subprocess.run(
        [
            "openssl", "verify",
            "-CAfile", str(tmp_path / "root.pem"),
            "-untrusted", str(tmp_path / "issuing.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
    )


def openssl_text(path: Path) -> str:
    result = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-text", "-nameopt", "utf8"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def extension(certificate: x509.Certificate, extension_class: type) -> x509.Extension:
    return certificate.extensions.get_extension_for_class(extension_class)


def test_signing_chain_verifies_with_openssl(tmp_path, root, issuing):
    leaf = demo_pki.issue_signing_certificate(issuing, rsa_public_key_der(), OFFICIAL)

    result = openssl_verify(tmp_path, root, issuing, leaf)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_ec_p256_key_chain_verifies(tmp_path, root, issuing):
    leaf = demo_pki.issue_signing_certificate(issuing, ec_public_key_der(), OFFICIAL)

    result = openssl_verify(tmp_path, root, issuing, leaf)

    assert result.returncode == 0, result.stderr
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"


def test_tsa_chain_verifies_with_openssl(tmp_path, root, issuing):
    tsa = demo_pki.issue_tsa_certificate(issuing, ec_public_key_der(), TSA_SUBJECT)

    result = openssl_verify(tmp_path, root, issuing, tsa)

    assert result.returncode == 0, result.stderr


def test_vietnamese_subject_shown_by_openssl(tmp_path, issuing):
    leaf = demo_pki.issue_signing_certificate(issuing, rsa_public_key_der(), OFFICIAL)
    demo_pki.write_pem(tmp_path / "leaf.pem", leaf)

    text = openssl_text(tmp_path / "leaf.pem")

    assert "CN=Nguyễn Thị Hồng Nhung" in text
    assert "O=ỦY BAN NHÂN DÂN HUYỆN MẪU SƠN" in text
    assert "UID=CCCD:001085012345" in text
    assert "title=Phó Chủ tịch" in text


def test_subject_attributes_are_utf8_strings(issuing):
    leaf = demo_pki.issue_signing_certificate(issuing, rsa_public_key_der(), OFFICIAL)

    subject = asn1_x509.Certificate.load(leaf.public_bytes(serialization.Encoding.DER)).subject
    string_types = {
        attribute["type"].native: attribute["value"].chosen.__class__.__name__
        for rdn in subject.chosen
        for attribute in rdn
    }

    assert string_types.pop("country_name") == "PrintableString"
    assert set(string_types.values()) == {"UTF8String"}


def test_subject_normalized_to_nfc(issuing):
    decomposed = unicodedata.normalize("NFD", "Trần Văn Đức")
    subject = SubjectSpec(common_name=decomposed, organization="UBND huyện Mẫu Sơn")

    leaf = demo_pki.issue_signing_certificate(issuing, rsa_public_key_der(), subject)

    common_name = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert common_name == unicodedata.normalize("NFC", "Trần Văn Đức")
    assert common_name != decomposed


def test_signing_certificate_profile(issuing):
    leaf = demo_pki.issue_signing_certificate(issuing, rsa_public_key_der(), OFFICIAL)

    key_usage = extension(leaf, x509.KeyUsage)
    extended_key_usage = extension(leaf, x509.ExtendedKeyUsage)
    basic_constraints = extension(leaf, x509.BasicConstraints)
    assert key_usage.critical
    assert key_usage.value.digital_signature
    assert key_usage.value.content_commitment
    assert not key_usage.value.key_cert_sign
    assert list(extended_key_usage.value) == [
        demo_pki.ID_KP_DOCUMENT_SIGNING,
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ]
    assert not extended_key_usage.critical
    assert basic_constraints.value.ca is False
    assert extension(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == (
        extension(issuing.certificate, x509.SubjectKeyIdentifier).value.digest
    )
    assert extension(leaf, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())
    )


def test_tsa_certificate_eku_critical(tmp_path, issuing):
    tsa = demo_pki.issue_tsa_certificate(issuing, rsa_public_key_der(), TSA_SUBJECT)
    demo_pki.write_pem(tmp_path / "tsa.pem", tsa)

    text = openssl_text(tmp_path / "tsa.pem")
    extended_key_usage = extension(tsa, x509.ExtendedKeyUsage)
    key_usage = extension(tsa, x509.KeyUsage)

    assert "X509v3 Extended Key Usage: critical\n                Time Stamping\n" in text
    assert extended_key_usage.critical
    assert list(extended_key_usage.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    assert key_usage.value.digital_signature


def test_root_ca_profile(root):
    certificate = root.certificate

    basic_constraints = extension(certificate, x509.BasicConstraints)
    key_usage = extension(certificate, x509.KeyUsage)
    assert certificate.issuer == certificate.subject
    assert root.private_key.key_size == 3072
    assert basic_constraints.critical
    assert basic_constraints.value.ca
    assert basic_constraints.value.path_length is None
    assert key_usage.critical
    assert key_usage.value.key_cert_sign
    assert key_usage.value.crl_sign
    assert not key_usage.value.digital_signature
    assert certificate.signature_hash_algorithm.name == "sha256"


def test_issuing_ca_path_length_zero(root, issuing):
    basic_constraints = extension(issuing.certificate, x509.BasicConstraints)

    assert basic_constraints.critical
    assert basic_constraints.value.ca
    assert basic_constraints.value.path_length == 0
    assert issuing.certificate.issuer == root.certificate.subject


def test_serial_number_positive_within_159_bits(issuing):
    leaf = demo_pki.issue_signing_certificate(issuing, rsa_public_key_der(), OFFICIAL)

    assert leaf.serial_number > 0
    assert leaf.serial_number.bit_length() <= 159


def test_leaf_validity_capped_at_issuer(issuing):
    leaf = demo_pki.issue_signing_certificate(
        issuing, rsa_public_key_der(), OFFICIAL, validity_days=100 * 365
    )

    assert leaf.not_valid_after_utc == issuing.certificate.not_valid_after_utc


def test_unsupported_key_type_rejected(issuing):
    ed25519_key_der = public_key_der(ed25519.Ed25519PrivateKey.generate())

    with pytest.raises(ValueError, match="expected an RSA or EC key"):
        demo_pki.issue_signing_certificate(issuing, ed25519_key_der, OFFICIAL)


def test_garbage_public_key_rejected(issuing):
    with pytest.raises(ValueError, match="SubjectPublicKeyInfo"):
        demo_pki.issue_signing_certificate(issuing, b"not a key", OFFICIAL)


def test_invalid_country_rejected():
    with pytest.raises(ValueError, match="two-letter"):
        SubjectSpec(common_name="Lê Văn Bình", organization="UBND", country="VNM")


def test_private_key_file_mode_0600(tmp_path, root):
    path = tmp_path / "root.key"

    demo_pki.write_private_key(path, root.private_key)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_private_key_overwrite_keeps_0600(tmp_path, root):
    path = tmp_path / "root.key"
    path.write_bytes(b"old")
    path.chmod(0o644)

    demo_pki.write_private_key(path, root.private_key)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]


def test_private_key_round_trip(tmp_path, root):
    path = tmp_path / "root.key"
    demo_pki.write_private_key(path, root.private_key)

    loaded = demo_pki.load_private_key(path)

    assert loaded.private_numbers() == root.private_key.private_numbers()


def test_certificate_bundle_round_trip(tmp_path, root, issuing):
    path = tmp_path / "chain.pem"
    demo_pki.write_pem(path, issuing.certificate, root.certificate)

    certificates = demo_pki.load_certificates(path)

    assert certificates == [issuing.certificate, root.certificate]


def test_load_certificate_rejects_bundle(tmp_path, root, issuing):
    path = tmp_path / "chain.pem"
    demo_pki.write_pem(path, issuing.certificate, root.certificate)

    with pytest.raises(ValueError, match="contains 2 certificates"):
        demo_pki.load_certificate(path)


def test_load_certificate_reads_der(tmp_path, root):
    path = tmp_path / "root.cer"
    path.write_bytes(root.certificate.public_bytes(serialization.Encoding.DER))

    assert demo_pki.load_certificate(path) == root.certificate
