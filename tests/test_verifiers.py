"""Tests for the independent verifiers, on PDFs signed here with pyHanko's SimpleSigner."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from asn1crypto import algos, keys, tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko_certvalidator.registry import SimpleCertificateStore
from reportlab.pdfgen.canvas import Canvas

from signserver import demo_pki
from signserver.demo_pki import SubjectSpec
from tests.verifiers import (
    make_nss_trust_db,
    openssl_ts_verify,
    pdfsig_signatures,
    pdftotext_area,
    pyhanko_validate,
    qpdf_check,
)

SIGNER_NAME = "Phạm Thị Thu Hương"
# Text drawn at a known place: baseline at (100, 500), 12 pt Helvetica.
KNOWN_TEXT = "Known text 2026"
KNOWN_TEXT_BOX = (95.0, 495.0, 220.0, 515.0)


class Pki:
    """A demo hierarchy with one signer and one TSA, as asn1crypto objects for pyHanko."""

    def __init__(self, directory: Path) -> None:
        self.root = demo_pki.create_root_ca("CA gốc kiểm thử", "Tổ chức kiểm thử")
        self.issuing = demo_pki.create_issuing_ca(self.root, "CA cấp dưới kiểm thử", "Tổ chức kiểm thử")

        self.signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signer_certificate = demo_pki.issue_signing_certificate(
            self.issuing,
            _public_key_der(self.signer_key),
            SubjectSpec(common_name=SIGNER_NAME, organization="UBND huyện Mẫu Sơn"),
        )
        self.tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tsa_certificate = demo_pki.issue_tsa_certificate(
            self.issuing,
            _public_key_der(self.tsa_key),
            SubjectSpec(common_name="TSA kiểm thử", organization="Tổ chức kiểm thử"),
        )

        self.root_pem = directory / "root.pem"
        self.issuing_pem = directory / "issuing.pem"
        demo_pki.write_pem(self.root_pem, self.root.certificate)
        demo_pki.write_pem(self.issuing_pem, self.issuing.certificate)

    def signer(self) -> signers.SimpleSigner:
        return signers.SimpleSigner(
            signing_cert=_asn1_certificate(self.signer_certificate),
            signing_key=_asn1_private_key(self.signer_key),
            cert_registry=SimpleCertificateStore.from_certs([_asn1_certificate(self.issuing.certificate)]),
        )

    def timestamper(self) -> DummyTimeStamper:
        return DummyTimeStamper(
            tsa_cert=_asn1_certificate(self.tsa_certificate),
            tsa_key=_asn1_private_key(self.tsa_key),
            certs_to_embed=[_asn1_certificate(self.issuing.certificate)],
        )


def _public_key_der(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _asn1_certificate(certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def _asn1_private_key(private_key: rsa.RSAPrivateKey) -> keys.PrivateKeyInfo:
    der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return keys.PrivateKeyInfo.load(der)


def _make_pdf(path: Path) -> Path:
    canvas = Canvas(str(path), invariant=True)
    canvas.setFont("Helvetica", 12)
    canvas.drawString(100, 500, KNOWN_TEXT)
    canvas.drawString(100, 300, "Other text far away")
    canvas.showPage()
    canvas.save()
    return path


def _sign(source: Path, target: Path, signer, field_name: str, timestamper=None) -> Path:
    with source.open("rb") as input_file, target.open("wb") as output_file:
        writer = IncrementalPdfFileWriter(input_file)
        signers.sign_pdf(
            writer,
            signers.PdfSignatureMetadata(field_name=field_name),
            signer=signer,
            timestamper=timestamper,
            output=output_file,
        )
    return target


def _flip_byte_in_signed_range(source: Path, target: Path) -> Path:
    data = bytearray(source.read_bytes())
    # The producer string lies in the first signed range and is not parsed as syntax.
    offset = data.find(b"ReportLab")
    assert offset > 0
    data[offset] ^= 0x20
    target.write_bytes(bytes(data))
    return target


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def trusted_nss(pki, tmp_path_factory) -> Path:
    return make_nss_trust_db(tmp_path_factory.mktemp("nss") / "trusted", pki.root_pem)


@pytest.fixture(scope="module")
def signed_pdf(pki, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("signed")
    source = _make_pdf(directory / "unsigned.pdf")
    return _sign(source, directory / "signed.pdf", pki.signer(), "Signature1")


@pytest.fixture(scope="module")
def twice_signed_pdf(pki, signed_pdf, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("twice") / "twice.pdf"
    return _sign(signed_pdf, target, pki.signer(), "Signature2", timestamper=pki.timestamper())


def test_pdfsig_valid_and_trusted(signed_pdf, trusted_nss):
    signatures = pdfsig_signatures(signed_pdf, trusted_nss)

    assert len(signatures) == 1
    signature = signatures[0]
    assert signature.index == 1
    assert signature.signature_valid, signature.raw
    assert signature.certificate_trusted, signature.raw
    assert signature.signer_common_name == SIGNER_NAME
    assert signature.field_name == "Signature1"
    assert signature.total_document_signed


def test_pdfsig_signed_ranges_cover_file(signed_pdf, trusted_nss):
    signature = pdfsig_signatures(signed_pdf, trusted_nss)[0]

    assert len(signature.signed_ranges) == 2
    assert signature.signed_ranges[0][0] == 0
    assert signature.signed_ranges[1][1] == signed_pdf.stat().st_size


def test_pdfsig_untrusted_root(pki, signed_pdf, tmp_path):
    other_root = demo_pki.create_root_ca("CA gốc khác", "Tổ chức khác")
    other_root_pem = tmp_path / "other-root.pem"
    demo_pki.write_pem(other_root_pem, other_root.certificate)
    untrusted_nss = make_nss_trust_db(tmp_path / "untrusted", other_root_pem)

    signature = pdfsig_signatures(signed_pdf, untrusted_nss)[0]

    assert signature.signature_valid, signature.raw
    assert not signature.certificate_trusted
    assert signature.certificate_validation != "Certificate is Trusted."


def test_pdfsig_tampered_signature_invalid(signed_pdf, trusted_nss, tmp_path):
    tampered = _flip_byte_in_signed_range(signed_pdf, tmp_path / "tampered.pdf")

    signature = pdfsig_signatures(tampered, trusted_nss)[0]

    assert not signature.signature_valid
    assert signature.signature_validation == "Digest Mismatch."
    assert not signature.certificate_trusted


def test_pdfsig_two_signatures(twice_signed_pdf, trusted_nss):
    signatures = pdfsig_signatures(twice_signed_pdf, trusted_nss)

    assert [signature.index for signature in signatures] == [1, 2]
    assert [signature.field_name for signature in signatures] == ["Signature1", "Signature2"]
    for signature in signatures:
        assert signature.signature_valid, signature.raw
        assert signature.certificate_trusted, signature.raw
    assert not signatures[0].total_document_signed
    assert signatures[1].total_document_signed


def test_pdfsig_unsigned_pdf_empty(tmp_path, trusted_nss):
    unsigned = _make_pdf(tmp_path / "unsigned.pdf")

    assert pdfsig_signatures(unsigned, trusted_nss) == []


def test_pdfsig_missing_file_raises(tmp_path, trusted_nss):
    with pytest.raises(RuntimeError, match="pdfsig failed"):
        pdfsig_signatures(tmp_path / "missing.pdf", trusted_nss)


def test_qpdf_check_signed_ok(signed_pdf):
    ok, output = qpdf_check(signed_pdf)

    assert ok, output
    assert "No syntax or stream encoding errors found" in output


def test_qpdf_check_garbage_fails(tmp_path):
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"this is not a PDF file\n")

    ok, _ = qpdf_check(garbage)

    assert not ok


def test_qpdf_check_warnings_policy(signed_pdf, tmp_path):
    # Cutting the startxref offset makes qpdf rebuild the cross-reference
    # table, which it reports as a warning (exit code 3).
    damaged = tmp_path / "damaged.pdf"
    data = signed_pdf.read_bytes()
    position = data.rindex(b"startxref")
    damaged.write_bytes(data[:position] + b"startxref\n1\n%%EOF\n")

    strict_ok, output = qpdf_check(damaged)
    lenient_ok, _ = qpdf_check(damaged, allow_warnings=True)

    assert "WARNING" in output
    assert not strict_ok
    assert lenient_ok


def test_qpdf_check_password(tmp_path):
    plain = _make_pdf(tmp_path / "plain.pdf")
    encrypted = tmp_path / "encrypted.pdf"
    subprocess.run(
        ["qpdf", "--encrypt", "user-secret", "owner-secret", "256", "--", str(plain), str(encrypted)],
        check=True,
    )

    ok_with_password, output = qpdf_check(encrypted, password="user-secret")
    ok_without_password, _ = qpdf_check(encrypted)

    assert ok_with_password, output
    assert not ok_without_password


def test_pdftotext_area_known_box(signed_pdf):
    assert pdftotext_area(signed_pdf, 1, KNOWN_TEXT_BOX) == KNOWN_TEXT


def test_pdftotext_area_excludes_outside_text(signed_pdf):
    text = pdftotext_area(signed_pdf, 1, (95.0, 520.0, 400.0, 600.0))

    assert text == ""


def test_pdftotext_area_rotated_page(tmp_path):
    plain = _make_pdf(tmp_path / "plain.pdf")
    for angle in (90, 180, 270):
        rotated = tmp_path / f"rotated-{angle}.pdf"
        subprocess.run(["qpdf", f"--rotate=+{angle}", str(plain), str(rotated)], check=True)

        assert pdftotext_area(rotated, 1, KNOWN_TEXT_BOX) == KNOWN_TEXT, angle


def test_pdftotext_area_shifted_media_box(tmp_path):
    # The text sits at (100, 500) in user space, and the MediaBox origin is
    # at (50, 100). qpdf writes the cross-reference table left out here.
    content = f"BT /F1 12 Tf 100 500 Td ({KNOWN_TEXT}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [50 100 645 942] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    body = b"%PDF-1.4\n" + b"".join(
        b"%d 0 obj\n%s\nendobj\n" % (number, obj) for number, obj in enumerate(objects, start=1)
    )
    handmade = tmp_path / "handmade.pdf"
    handmade.write_bytes(body + b"trailer\n<< /Root 1 0 R /Size 6 >>\n%%EOF\n")
    shifted = tmp_path / "shifted.pdf"
    # qpdf exits with 3 because it warns about the missing table it rebuilds.
    subprocess.run(["qpdf", str(handmade), str(shifted)], check=False)

    assert pdftotext_area(shifted, 1, KNOWN_TEXT_BOX) == KNOWN_TEXT


def test_pdftotext_area_encrypted(tmp_path):
    plain = _make_pdf(tmp_path / "plain.pdf")
    encrypted = tmp_path / "encrypted.pdf"
    subprocess.run(
        ["qpdf", "--encrypt", "user-secret", "owner-secret", "256", "--", str(plain), str(encrypted)],
        check=True,
    )

    assert pdftotext_area(encrypted, 1, KNOWN_TEXT_BOX, password="user-secret") == KNOWN_TEXT


def test_pdftotext_area_invalid_box(signed_pdf):
    with pytest.raises(ValueError, match="x1 < x2"):
        pdftotext_area(signed_pdf, 1, (200.0, 500.0, 100.0, 600.0))


def test_pyhanko_validate_signed(pki, signed_pdf):
    results = pyhanko_validate(signed_pdf, pki.root_pem)

    assert len(results) == 1
    result = results[0]
    assert result["field"] == "Signature1"
    assert result["kind"] == "signature"
    assert result["intact"]
    assert result["valid"]
    assert result["trusted"], result["summary"]
    assert result["timestamp_valid"] is None
    assert result["coverage"] == "ENTIRE_FILE"
    assert result["signer_common_name"] == SIGNER_NAME


def test_pyhanko_validate_timestamped(pki, twice_signed_pdf):
    results = pyhanko_validate(twice_signed_pdf, pki.root_pem)

    assert [result["field"] for result in results] == ["Signature1", "Signature2"]
    first, second = results
    assert first["coverage"] == "ENTIRE_REVISION"
    assert first["trusted"], first["summary"]
    assert first["modification_level"] == "FORM_FILLING"
    assert second["timestamp_valid"] is True
    assert second["timestamp_time"] is not None
    assert second["bottom_line"], second["summary"]


def test_pyhanko_validate_untrusted_root(signed_pdf, tmp_path):
    other_root = demo_pki.create_root_ca("CA gốc khác", "Tổ chức khác")
    other_root_pem = tmp_path / "other-root.pem"
    demo_pki.write_pem(other_root_pem, other_root.certificate)

    result = pyhanko_validate(signed_pdf, other_root_pem)[0]

    assert result["intact"]
    assert not result["trusted"]


def test_pyhanko_validate_tampered(pki, signed_pdf, tmp_path):
    tampered = _flip_byte_in_signed_range(signed_pdf, tmp_path / "tampered.pdf")

    result = pyhanko_validate(tampered, pki.root_pem)[0]

    assert not result["intact"]
    assert not result["bottom_line"]


async def test_pyhanko_validate_inside_event_loop(pki, signed_pdf):
    results = pyhanko_validate(signed_pdf, pki.root_pem)

    assert results[0]["trusted"]


def test_openssl_ts_verify_response(pki, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes("Văn bản cần gắn dấu thời gian".encode("utf-8"))
    response_path = tmp_path / "response.tsr"
    response_path.write_bytes(_timestamp_response(pki, data.read_bytes()).dump())

    ok, output = openssl_ts_verify(response_path, pki.root_pem, data=data, untrusted=pki.issuing_pem)

    assert ok, output


def test_openssl_ts_verify_digest_and_token(pki, tmp_path):
    payload = b"message imprint only"
    response = _timestamp_response(pki, payload)
    token_path = tmp_path / "token.tst"
    token_path.write_bytes(response["time_stamp_token"].dump())

    ok, output = openssl_ts_verify(
        token_path,
        pki.root_pem,
        digest_hex=hashlib.sha256(payload).hexdigest(),
        untrusted=pki.issuing_pem,
        token_only=True,
    )

    assert ok, output


def test_openssl_ts_verify_wrong_data(pki, tmp_path):
    response_path = tmp_path / "response.tsr"
    response_path.write_bytes(_timestamp_response(pki, b"original").dump())
    other = tmp_path / "other.bin"
    other.write_bytes(b"something else")

    ok, _ = openssl_ts_verify(response_path, pki.root_pem, data=other, untrusted=pki.issuing_pem)

    assert not ok


def test_openssl_ts_verify_needs_one_input(pki, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        openssl_ts_verify(tmp_path / "response.tsr", pki.root_pem)


def _timestamp_response(pki: Pki, payload: bytes) -> tsp.TimeStampResp:
    request = tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": tsp.MessageImprint(
                {
                    "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                    "hashed_message": hashlib.sha256(payload).digest(),
                }
            ),
            "nonce": 0x1234_5678,
            "cert_req": True,
        }
    )
    return pki.timestamper().request_tsa_response(request)
