"""Tests for the sample administrative document, checked with qpdf and poppler."""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

from signserver.signing.sample import (
    DEFAULT_DOSSIER_CODE,
    SAMPLE_PAGE_SIZE,
    SAMPLE_STAMP_BOX,
    generate_sample_pdf,
)


def run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return result.stdout


def page_count(pdf: Path) -> int:
    match = re.search(r"^Pages:\s+(\d+)$", run("pdfinfo", str(pdf)), re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def page_text(pdf: Path, page: int) -> str:
    text = run("pdftotext", "-f", str(page), "-l", str(page), str(pdf), "-")
    return unicodedata.normalize("NFC", text)


def area_text(pdf: Path, page: int, box: tuple[float, float, float, float]) -> str:
    """Extract the text inside ``box`` (PDF points, origin bottom left) of an A4 page."""
    x1, y1, x2, y2 = box
    page_height = SAMPLE_PAGE_SIZE[1]
    return run(
        "pdftotext", "-r", "72",
        "-f", str(page), "-l", str(page),
        "-x", str(int(x1)), "-y", str(int(page_height - y2)),
        "-W", str(int(x2 - x1)), "-H", str(int(y2 - y1)),
        str(pdf), "-",
    )


@pytest.fixture(scope="module")
def one_page(tmp_path_factory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("sample") / "one.pdf")


@pytest.fixture(scope="module")
def five_pages(tmp_path_factory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("sample") / "five.pdf", pages=5)


def test_sample_passes_qpdf_check(one_page, five_pages):
    for pdf in (one_page, five_pages):
        result = subprocess.run(["qpdf", "--check", str(pdf)], capture_output=True, text=True)

        assert result.returncode == 0, result.stdout + result.stderr
        assert "No syntax or stream encoding errors found" in result.stdout


def test_sample_national_title_extracts_exactly(one_page):
    lines = page_text(one_page, 1).splitlines()

    assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in lines
    assert "Độc lập - Tự do - Hạnh phúc" in lines
    assert "ỦY BAN NHÂN DÂN HUYỆN MẪU SƠN" in lines
    assert "VĂN PHÒNG HĐND VÀ UBND" in lines
    assert "GIẤY XÁC NHẬN" in lines


def test_sample_text_is_nfc(one_page):
    raw = run("pdftotext", str(one_page), "-")

    assert unicodedata.is_normalized("NFC", raw)


def test_sample_mentions_dossier_code(tmp_path):
    pdf = generate_sample_pdf(tmp_path / "code.pdf", dossier_code="000.00.01.H01-261231-0042")

    assert "000.00.01.H01-261231-0042" in page_text(pdf, 1)


def test_sample_default_dossier_code(one_page):
    assert DEFAULT_DOSSIER_CODE in page_text(one_page, 1)


@pytest.mark.parametrize("pages", [1, 2, 5, 100])
def test_sample_page_count(tmp_path, pages):
    pdf = generate_sample_pdf(tmp_path / f"sample-{pages}.pdf", pages=pages)

    assert page_count(pdf) == pages


def test_sample_fonts_embedded(five_pages):
    output = run("pdffonts", str(five_pages))
    font_rows = output.splitlines()[2:]

    assert font_rows
    for row in font_rows:
        columns = row.split()
        # Columns from the right: object id, generation, uni, sub, emb.
        assert columns[-5] == "yes", row
        assert columns[-3] == "yes", row
        assert columns[0].split("+")[-1].startswith("LiberationSerif"), row


def test_sample_page_is_a4(one_page):
    output = run("pdfinfo", str(one_page))

    assert "595.276 x 841.89 pts (A4)" in output


def test_sample_stamp_box_is_empty(one_page, five_pages):
    for pdf, last_page in ((one_page, 1), (five_pages, 5)):
        assert area_text(pdf, last_page, SAMPLE_STAMP_BOX).strip() == ""


def test_sample_signature_area_around_stamp_box(five_pages):
    x1, y1, x2, y2 = SAMPLE_STAMP_BOX
    above = (x1, y2, x2, y2 + 40)
    below = (x1, y1 - 30, x2, y1)

    above_text = unicodedata.normalize("NFC", area_text(five_pages, 5, above))
    below_text = unicodedata.normalize("NFC", area_text(five_pages, 5, below))

    assert "KT. CHỦ TỊCH" in above_text
    assert "PHÓ CHỦ TỊCH" in above_text
    assert below_text.strip() != ""


def test_sample_stamp_box_inside_page():
    x1, y1, x2, y2 = SAMPLE_STAMP_BOX
    width, height = SAMPLE_PAGE_SIZE

    assert 0 < x1 < x2 <= width
    assert 0 < y1 < y2 <= height


def test_sample_annex_pages_numbered(five_pages):
    for page in range(2, 6):
        first_line = page_text(five_pages, page).splitlines()[0]

        assert first_line == str(page)


def test_sample_signature_only_on_last_page(five_pages):
    for page in range(1, 5):
        assert "PHÓ CHỦ TỊCH" not in page_text(five_pages, page)
    assert "PHÓ CHỦ TỊCH" in page_text(five_pages, 5)


def test_sample_output_reproducible(tmp_path):
    first = generate_sample_pdf(tmp_path / "first.pdf", pages=3)
    second = generate_sample_pdf(tmp_path / "second.pdf", pages=3)

    assert first.read_bytes() == second.read_bytes()


def test_sample_decomposed_dossier_code_normalized(tmp_path):
    decomposed = unicodedata.normalize("NFD", "HỒ-SƠ-001")

    pdf = generate_sample_pdf(tmp_path / "nfd.pdf", dossier_code=decomposed)

    assert "HỒ-SƠ-001" in page_text(pdf, 1)


def test_sample_markup_in_dossier_code_kept_literal(tmp_path):
    pdf = generate_sample_pdf(tmp_path / "markup.pdf", dossier_code="A<b>&amp;B")

    assert "A<b>&amp;B" in page_text(pdf, 1)


@pytest.mark.parametrize("pages", [0, -1, 1.5, True])
def test_sample_invalid_pages_rejected(tmp_path, pages):
    with pytest.raises(ValueError, match="pages must be an integer"):
        generate_sample_pdf(tmp_path / "bad.pdf", pages=pages)


@pytest.mark.parametrize("dossier_code", ["", "   ", "line\nbreak"])
def test_sample_invalid_dossier_code_rejected(tmp_path, dossier_code):
    with pytest.raises(ValueError, match="dossier_code"):
        generate_sample_pdf(tmp_path / "bad.pdf", dossier_code=dossier_code)
