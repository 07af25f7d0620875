"""Tests for signature validation and the release check on signed PDFs."""

from __future__ import annotations

from pathlib import Path

import pytest

from signserver import demo_pki
from signserver.errors import SignserverError
from signserver.signing.pades import sign_pdf
from signserver.signing.validate import ensure_signed_pdf_valid, validate_pdf
from tests.signing.conftest import SIGNER_NAME, to_asn1
from tests.signing.documents import write_encrypted_copy, write_pyhanko_signature


@pytest.fixture(scope="module")
def other_root():
    return to_asn1(demo_pki.create_root_ca("CA gốc khác", "Tổ chức khác").certificate)


async def _sign(source: Path, output: Path, pki, timestamper, **options) -> Path:
    await sign_pdf(
        source, output, key=pki.rsa_signer, timestamper=timestamper, reason="Phê duyệt", location="Hà Nội",
        stamp=None, **options,
    )
    return output


async def test_ensure_signed_pdf_valid_accepts_b_t(pki, timestamper, one_page_pdf, tmp_path):
    signed = await _sign(one_page_pdf, tmp_path / "signed.pdf", pki, timestamper)

    [report] = await ensure_signed_pdf_valid(signed, [pki.root])

    assert report.field_name == "Signature1"
    assert SIGNER_NAME in report.signer_subject
    assert report.level == "B-T"
    assert report.coverage == "entire_file"
    assert report.timestamp_time is not None
    assert report.error is None


async def test_ensure_signed_pdf_valid_untrusted_root(pki, timestamper, one_page_pdf, tmp_path, other_root):
    signed = await _sign(one_page_pdf, tmp_path / "signed.pdf", pki, timestamper)

    with pytest.raises(SignserverError) as caught:
        await ensure_signed_pdf_valid(signed, [other_root])

    assert caught.value.code == "signature_validation_failed"
    assert "trusted root" in caught.value.params["reason"]


async def test_ensure_signed_pdf_valid_unsigned(one_page_pdf, pki):
    with pytest.raises(SignserverError) as caught:
        await ensure_signed_pdf_valid(one_page_pdf, [pki.root])

    assert caught.value.code == "signature_validation_failed"
    assert caught.value.params["reason"] == "the document contains no signature"


async def test_ensure_signed_pdf_valid_without_timestamp(pki, one_page_pdf, tmp_path):
    signed = await write_pyhanko_signature(one_page_pdf, tmp_path / "b-b.pdf", pki.rsa_signer)

    with pytest.raises(SignserverError) as caught:
        await ensure_signed_pdf_valid(signed, [pki.root])

    assert caught.value.params["reason"] == "the signature time-stamp is missing, invalid or untrusted"
    [report] = await validate_pdf(signed, [pki.root])
    assert report.level == "B-B"
    assert report.trusted is True


async def test_ensure_signed_pdf_valid_tampered(pki, timestamper, one_page_pdf, tmp_path):
    signed = await _sign(one_page_pdf, tmp_path / "signed.pdf", pki, timestamper)
    content = signed.read_bytes()
    assert content.count(b"Test document") == 1
    signed.write_bytes(content.replace(b"Test document", b"Tost document"))

    with pytest.raises(SignserverError) as caught:
        await ensure_signed_pdf_valid(signed, [pki.root])

    assert caught.value.params["reason"] == "the document digest does not match the signed digest"


async def test_validate_pdf_encrypted(pki, timestamper, three_page_pdf, tmp_path):
    encrypted = write_encrypted_copy(
        three_page_pdf, tmp_path / "encrypted.pdf", owner_password="ownersecret", user_password="usersecret"
    )
    signed = await _sign(encrypted, tmp_path / "signed.pdf", pki, timestamper, password="usersecret")

    [report] = await ensure_signed_pdf_valid(signed, [pki.root], password="usersecret")

    assert report.valid is True


async def test_validate_pdf_foreign_signatures_reported(pki, corpus_file):
    reports = await validate_pdf(corpus_file("qpdf-digitally-signed.pdf"), [pki.root])

    assert len(reports) == 1
    assert reports[0].intact is True
    assert reports[0].trusted is False
