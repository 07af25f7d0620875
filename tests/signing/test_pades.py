"""Tests for PAdES B-T signing, checked with pdfsig, qpdf and pdftotext as well as pyHanko."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import MDPPerm
from pyhanko.sign.timestamps.common_utils import TimestampRequestError

from signserver.errors import Conflict, InvalidInput, Unavailable
from signserver.signing.pades import StampSpec, sign_pdf
from signserver.signing.tsa import InProcessTimeStamper
from signserver.signing.validate import validate_pdf
from tests.signing.conftest import AGENCY, SIGNER_NAME, SIGNER_TITLE
from tests.signing.documents import write_encrypted_copy, write_pyhanko_signature, write_with_empty_field
from tests.signing.tools import pdfsig, pdfsig_signatures, qpdf_check, text_in_box

A4_HEIGHT = 841.89
STAMP_BOX = (320.0, 60.0, 560.0, 150.0)
REASON = "Phê duyệt hồ sơ"
SIGNATURE_VALID = "Signature Validation: Signature is Valid."
CERTIFICATE_TRUSTED = "Certificate Validation: Certificate is Trusted."


def _stamp(page: int = 1) -> StampSpec:
    return StampSpec(page=page, box=STAMP_BOX, signer_name=SIGNER_NAME, signer_title=SIGNER_TITLE, agency=AGENCY)


async def _sign(source: Path, output: Path, key, timestamper, **options):
    options.setdefault("stamp", _stamp())
    return await sign_pdf(
        source, output, key=key, timestamper=timestamper, reason=REASON, location="Mẫu Sơn", **options
    )


@pytest.mark.parametrize("key_name", ["rsa_signer", "ec_signer"])
async def test_sign_pdf_verified_by_pdfsig(pki, timestamper, one_page_pdf, nss_dir, tmp_path, key_name):
    output = tmp_path / "signed.pdf"

    await _sign(one_page_pdf, output, getattr(pki, key_name), timestamper)

    report = pdfsig(output, nss_dir)
    assert SIGNATURE_VALID in report
    assert CERTIFICATE_TRUSTED in report
    assert "Signature Type: ETSI.CAdES.detached" in report
    assert "Total document signed" in report


async def test_sign_pdf_passes_qpdf_check(pki, timestamper, three_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"

    await _sign(three_page_pdf, output, pki.rsa_signer, timestamper)

    result = qpdf_check(output)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_sign_pdf_result_fields(pki, timestamper, one_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"
    signing_time = datetime(2025, 3, 5, 7, 30, tzinfo=timezone.utc)

    result = await _sign(one_page_pdf, output, pki.rsa_signer, timestamper, signing_time=signing_time)

    assert result.output_digest_sha256 == hashlib.sha256(output.read_bytes()).hexdigest()
    assert result.signing_time == signing_time
    assert result.field_name == "Signature1"
    assert result.level == "B-T"


async def test_sign_pdf_stamp_text_extracted(pki, timestamper, one_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"
    signing_time = datetime(2025, 3, 5, 7, 30, 15, tzinfo=timezone.utc)

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper, signing_time=signing_time)

    lines = text_in_box(output, 1, STAMP_BOX, A4_HEIGHT).splitlines()
    assert f"Người ký: {SIGNER_NAME}" in lines
    assert SIGNER_TITLE in lines
    assert f"Cơ quan: {AGENCY}" in lines
    assert "Thời gian ký: 05/03/2025 14:30:15 (+07:00)" in lines
    assert f"Lý do: {REASON}" in lines


async def test_sign_pdf_stamp_on_third_page(pki, timestamper, three_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"

    await _sign(three_page_pdf, output, pki.rsa_signer, timestamper, stamp=_stamp(page=3))

    assert SIGNER_NAME in text_in_box(output, 3, STAMP_BOX, A4_HEIGHT)
    assert SIGNER_NAME not in text_in_box(output, 1, STAMP_BOX, A4_HEIGHT)


async def test_sign_pdf_decomposed_name_stamped_as_nfc(pki, timestamper, one_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"
    decomposed = unicodedata.normalize("NFD", SIGNER_NAME)
    stamp = StampSpec(page=1, box=STAMP_BOX, signer_name=decomposed, signer_title="", agency=AGENCY)

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper, stamp=stamp)

    assert f"Người ký: {SIGNER_NAME}" in text_in_box(output, 1, STAMP_BOX, A4_HEIGHT).splitlines()


async def test_sign_pdf_embeds_stamp_font(pki, timestamper, one_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper)

    with output.open("rb") as stream:
        reader = PdfFileReader(stream)
        appearance = reader.embedded_signatures[0].sig_field["/AP"]["/N"]
        fonts = _collect_fonts(appearance)
        font_files = [
            set(font["/DescendantFonts"][0].get_object()["/FontDescriptor"]) & {"/FontFile2", "/FontFile3"}
            for font in fonts
        ]
    assert fonts, "the stamp appearance uses no font"
    assert all(font_files), f"fonts without an embedded font file: {font_files}"


def _collect_fonts(xobject, depth: int = 0) -> list:
    """Return the font dictionaries used by an appearance stream and its nested form XObjects."""
    resources = xobject.get("/Resources", {})
    fonts = [font.get_object() for font in resources.get("/Font", {}).values()]
    if depth < 4:
        for child in resources.get("/XObject", {}).values():
            fonts.extend(_collect_fonts(child.get_object(), depth + 1))
    return fonts


async def test_sign_pdf_cms_is_pades_b_t(pki, timestamper, one_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper)

    with output.open("rb") as stream:
        embedded = PdfFileReader(stream).embedded_signatures[0]
        signed_attr_types = {attr["type"].native for attr in embedded.signer_info["signed_attrs"]}
        unsigned_attr_types = {attr["type"].native for attr in embedded.signer_info["unsigned_attrs"]}
        certificates = {cert.chosen.sha256 for cert in embedded.signed_data["certificates"]}
        subfilter = embedded.sig_object["/SubFilter"]
    assert subfilter == "/ETSI.CAdES.detached"
    assert "signing_certificate_v2" in signed_attr_types
    assert "signing_time" not in signed_attr_types
    assert "signature_time_stamp_token" in unsigned_attr_types
    assert pki.issuing.sha256 in certificates
    assert pki.root.sha256 in certificates


async def test_sign_pdf_second_signature_keeps_first_valid(pki, timestamper, one_page_pdf, nss_dir, tmp_path):
    first = tmp_path / "first.pdf"
    second = tmp_path / "second.pdf"
    await _sign(one_page_pdf, first, pki.rsa_signer, timestamper)

    result = await _sign(first, second, pki.ec_signer, timestamper, stamp=None)

    assert result.field_name == "Signature2"
    blocks = pdfsig_signatures(pdfsig(second, nss_dir))
    assert len(blocks) == 2
    for block in blocks:
        assert SIGNATURE_VALID in block
        assert CERTIFICATE_TRUSTED in block
    reports = await validate_pdf(second, [pki.root])
    assert [report.coverage for report in reports] == ["entire_revision", "entire_file"]
    assert all(report.valid and report.trusted and report.modifications_allowed for report in reports)


async def test_sign_pdf_invisible_signature(pki, timestamper, one_page_pdf, nss_dir, tmp_path):
    output = tmp_path / "signed.pdf"

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper, stamp=None)

    assert SIGNATURE_VALID in pdfsig(output, nss_dir)


async def test_sign_pdf_page_out_of_range(pki, timestamper, three_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"

    with pytest.raises(InvalidInput) as caught:
        await _sign(three_page_pdf, output, pki.rsa_signer, timestamper, stamp=_stamp(page=4))

    assert caught.value.code == "pdf_page_out_of_range"
    assert caught.value.params == {"page": 4, "page_count": 3}
    assert not output.exists()


async def test_sign_pdf_box_outside_page_kept(pki, timestamper, one_page_pdf, nss_dir, tmp_path):
    box = (500.0, 60.0, 700.0, 150.0)
    stamp = StampSpec(page=1, box=box, signer_name=SIGNER_NAME, signer_title="", agency=AGENCY)
    output = tmp_path / "signed.pdf"

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper, stamp=stamp)

    assert SIGNATURE_VALID in pdfsig(output, nss_dir)
    with output.open("rb") as stream:
        rect = [float(value) for value in PdfFileReader(stream).embedded_signatures[0].sig_field["/Rect"]]
    assert rect == list(box)


async def test_sign_pdf_signed_field_name_conflict(pki, timestamper, one_page_pdf, tmp_path):
    first = tmp_path / "first.pdf"
    await _sign(one_page_pdf, first, pki.rsa_signer, timestamper, field_name="ChuKy")

    with pytest.raises(Conflict) as caught:
        await _sign(first, tmp_path / "second.pdf", pki.rsa_signer, timestamper, field_name="ChuKy")

    assert caught.value.code == "pdf_field_already_signed"


async def test_sign_pdf_naive_signing_time_rejected(pki, timestamper, one_page_pdf, tmp_path):
    with pytest.raises(ValueError, match="timezone-aware"):
        await _sign(one_page_pdf, tmp_path / "signed.pdf", pki.rsa_signer, timestamper, signing_time=datetime(2025, 1, 1))


class _PolicyRequestingTimeStamper(InProcessTimeStamper):
    """Requests a policy the authority does not offer, so every request is rejected."""

    def request_cms(self, message_digest, md_algorithm):
        nonce, request = super().request_cms(message_digest, md_algorithm)
        request["req_policy"] = "1.2.3.4.5"
        return nonce, request


async def test_sign_pdf_tsa_rejection_leaves_no_output(pki, authority, one_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"

    with pytest.raises(Unavailable) as caught:
        await _sign(one_page_pdf, output, pki.rsa_signer, _PolicyRequestingTimeStamper(authority))

    assert caught.value.code == "tsa_failed"
    assert isinstance(caught.value.__cause__, TimestampRequestError)
    assert list(tmp_path.iterdir()) == []


async def test_sign_pdf_leaves_no_temporary_file(pki, timestamper, one_page_pdf, tmp_path):
    await _sign(one_page_pdf, tmp_path / "signed.pdf", pki.rsa_signer, timestamper)

    assert [path.name for path in tmp_path.iterdir()] == ["signed.pdf"]


async def test_sign_pdf_encrypted_with_password(pki, timestamper, three_page_pdf, nss_dir, tmp_path):
    encrypted = write_encrypted_copy(
        three_page_pdf, tmp_path / "encrypted.pdf", owner_password="ownersecret", user_password="usersecret"
    )
    output = tmp_path / "signed.pdf"

    await _sign(encrypted, output, pki.rsa_signer, timestamper, password="usersecret")

    report = pdfsig(output, nss_dir, "-upw", "usersecret")
    assert SIGNATURE_VALID in report
    assert CERTIFICATE_TRUSTED in report
    assert qpdf_check(output, "usersecret").returncode == 0


@pytest.mark.parametrize(
    ("password", "code"), [(None, "pdf_password_required"), ("wrongsecret", "pdf_password_invalid")]
)
async def test_sign_pdf_encrypted_password_errors(pki, timestamper, three_page_pdf, tmp_path, password, code):
    encrypted = write_encrypted_copy(
        three_page_pdf, tmp_path / "encrypted.pdf", owner_password="ownersecret", user_password="usersecret"
    )

    with pytest.raises(InvalidInput) as caught:
        await _sign(encrypted, tmp_path / "signed.pdf", pki.rsa_signer, timestamper, password=password)

    assert caught.value.code == code


async def test_sign_pdf_certified_no_changes_rejected(pki, timestamper, one_page_pdf, tmp_path):
    certified = await write_pyhanko_signature(
        one_page_pdf, tmp_path / "certified.pdf", pki.rsa_signer, certify=True, docmdp=MDPPerm.NO_CHANGES
    )

    with pytest.raises(Conflict) as caught:
        await _sign(certified, tmp_path / "signed.pdf", pki.rsa_signer, timestamper)

    assert caught.value.code == "pdf_certified_no_changes"


async def test_sign_pdf_certified_invisible_accepted(pki, timestamper, one_page_pdf, nss_dir, tmp_path):
    certified = await write_pyhanko_signature(
        one_page_pdf, tmp_path / "certified.pdf", pki.rsa_signer, certify=True, docmdp=MDPPerm.FILL_FORMS
    )
    output = tmp_path / "signed.pdf"

    await _sign(certified, output, pki.rsa_signer, timestamper, stamp=None)

    reports = await validate_pdf(output, [pki.root])
    assert [report.modifications_allowed for report in reports] == [True, True]
    assert pdfsig(output, nss_dir).count(SIGNATURE_VALID) == 2


async def test_sign_pdf_certified_new_visible_field_rejected(pki, timestamper, one_page_pdf, tmp_path):
    certified = await write_pyhanko_signature(
        one_page_pdf, tmp_path / "certified.pdf", pki.rsa_signer, certify=True, docmdp=MDPPerm.ANNOTATE
    )

    with pytest.raises(Conflict) as caught:
        await _sign(certified, tmp_path / "signed.pdf", pki.rsa_signer, timestamper)

    assert caught.value.code == "pdf_certified_new_visible_field"
    assert caught.value.params == {"certification_level": 3}


async def test_sign_pdf_certified_existing_field_stamped(pki, timestamper, one_page_pdf, tmp_path):
    with_field = write_with_empty_field(one_page_pdf, tmp_path / "with-field.pdf", "ChuKy", STAMP_BOX)
    certified = await write_pyhanko_signature(
        with_field, tmp_path / "certified.pdf", pki.rsa_signer, certify=True, docmdp=MDPPerm.FILL_FORMS
    )
    output = tmp_path / "signed.pdf"

    result = await _sign(certified, output, pki.rsa_signer, timestamper, field_name="ChuKy")

    assert result.field_name == "ChuKy"
    reports = await validate_pdf(output, [pki.root])
    assert [report.modifications_allowed for report in reports] == [True, True]
    assert f"Người ký: {SIGNER_NAME}" in text_in_box(output, 1, STAMP_BOX, A4_HEIGHT).splitlines()


@pytest.mark.parametrize("name", ["pyhanko-minimal-hybrid-xref.pdf", "qpdf-hybrid-xref.pdf"])
async def test_sign_pdf_hybrid_xref(pki, timestamper, corpus_file, nss_dir, tmp_path, name):
    output = tmp_path / "signed.pdf"

    await _sign(corpus_file(name), output, pki.rsa_signer, timestamper)

    report = pdfsig(output, nss_dir)
    assert SIGNATURE_VALID in report
    assert CERTIFICATE_TRUSTED in report


async def test_sign_pdf_corpus_aes256_password(pki, timestamper, corpus_file, nss_dir, tmp_path):
    source = corpus_file("pyhanko-minimal-aes256.pdf")
    output = tmp_path / "signed.pdf"

    await _sign(source, output, pki.rsa_signer, timestamper, stamp=None, password="usersecret")

    assert SIGNATURE_VALID in pdfsig(output, nss_dir, "-upw", "usersecret")
    for password, code in ((None, "pdf_password_required"), ("wrongsecret", "pdf_password_invalid")):
        with pytest.raises(InvalidInput) as caught:
            await _sign(source, tmp_path / "refused.pdf", pki.rsa_signer, timestamper, stamp=None, password=password)
        assert caught.value.code == code


async def test_sign_pdf_without_mediabox(pki, timestamper, corpus_file, tmp_path):
    output = tmp_path / "signed.pdf"

    await _sign(corpus_file("pyhanko-no-mediabox.pdf"), output, pki.rsa_signer, timestamper)

    reports = await validate_pdf(output, [pki.root])
    assert reports[-1].valid
