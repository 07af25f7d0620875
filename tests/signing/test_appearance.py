"""Tests for the signature and seal appearances, the PNG checks, and placement by anchor text or signed field.

Rendered pages come from poppler's pdftoppm and text positions from
pdftotext and pdfsig, which share no code with pyHanko or pdfminer.
"""

from __future__ import annotations

import hashlib
import html
import io
import random
import re
import struct
import subprocess
import time
import unicodedata
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from pyhanko.pdf_utils.reader import PdfFileReader

from signserver.demo_images import seal_png, signature_png
from signserver.errors import InvalidInput
from signserver.pades_backend import PadesChecker
from signserver.signing.anchor import AnchorPlacement, box_below_anchor, find_anchor
from signserver.signing.appearance import (
    MAX_IMAGE_BYTES,
    check_png,
    mm_to_points,
    seal_box_over_field,
    square_centred_in,
)
from signserver.signing.errors import PdfStampOutsidePage
from signserver.signing.pades import sign_pdf
from signserver.signing.placement import StampBox, resolve_stamp_box
from signserver.signing.sample import SAMPLE_STAMP_BOX, generate_sample_pdf
from signserver.signing.stamp import StampSpec
from tests.signing.conftest import AGENCY, SIGNER_NAME, SIGNER_TITLE
from tests.signing.documents import write_with_empty_field
from tests.verifiers import pdfsig_signatures, pdftotext_area, pyhanko_validate, qpdf_check

A4_HEIGHT = 841.89
BOX = (320.0, 60.0, 560.0, 150.0)
DPI = 144
PIXELS_PER_POINT = DPI / 72
SEAL_DIAMETER_MM = 36.0
GREEN = (0, 200, 0)


# Images


def _png(image: Image.Image) -> bytes:
    output = io.BytesIO()
    image.save(output, format="PNG")
    return output.getvalue()


def _green_image(size: tuple[int, int], opaque_fraction: float = 1.0) -> bytes:
    """An RGBA image, green and opaque in its left ``opaque_fraction``, transparent black elsewhere."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle([0, 0, round(size[0] * opaque_fraction) - 1, size[1] - 1], fill=GREEN + (255,))
    return _png(image)


def _red_disc(size: int = 400) -> bytes:
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse([0, 0, size - 1, size - 1], fill=(220, 0, 0, 255))
    return _png(image)


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` 8-bit grey pixels, followed by a tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) \
        + chunk(b"IEND", b"")


# Rendering with poppler


def _render(pdf: Path, page: int = 1) -> Image.Image:
    result = subprocess.run(["pdftoppm", "-r", str(DPI), "-f", str(page), "-l", str(page), "-png", str(pdf)],
                            capture_output=True, check=True)
    return Image.open(io.BytesIO(result.stdout)).convert("RGB")


def _pixel_box(box: tuple[float, float, float, float], page_height: float = A4_HEIGHT) -> tuple[int, int, int, int]:
    """Return (left, top, right, bottom) pixels of a PDF box on a page rendered at DPI, origin top left."""
    x1, y1, x2, y2 = box
    return (round(x1 * PIXELS_PER_POINT), round((page_height - y2) * PIXELS_PER_POINT),
            round(x2 * PIXELS_PER_POINT), round((page_height - y1) * PIXELS_PER_POINT))


def _pixels(image: Image.Image, area: tuple[int, int, int, int], matches) -> list[tuple[int, int]]:
    left, top, right, bottom = area
    pixels = image.load()
    return [(x, y) for y in range(max(top, 0), min(bottom, image.height))
            for x in range(max(left, 0), min(right, image.width)) if matches(pixels[x, y])]


def _is_red(pixel: tuple[int, int, int]) -> bool:
    red, green, blue = pixel
    return red > 150 and green < 110 and blue < 110


def _is_dark(pixel: tuple[int, int, int]) -> bool:
    return sum(pixel) < 300


def _is_green(pixel: tuple[int, int, int]) -> bool:
    red, green, blue = pixel
    return green > 150 and red < 80 and blue < 80


def _extent(points: list[tuple[int, int]]) -> tuple[int, int, int, int]:
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    return min(xs), min(ys), max(xs), max(ys)


# Text positions with pdftotext


def _word_boxes(pdf: Path, page: int, page_height: float) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Return pdftotext's words of ``page`` with their boxes in PDF points, origin bottom left."""
    output = subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), "-bbox", str(pdf), "-"],
                            capture_output=True, text=True, check=True).stdout
    pattern = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>')
    return [(unicodedata.normalize("NFC", html.unescape(m[5])),
             (float(m[1]), page_height - float(m[4]), float(m[3]), page_height - float(m[2])))
            for m in pattern.finditer(output)]


def _phrase_boxes(pdf: Path, page: int, phrase: str, page_height: float) -> list[tuple[float, float, float, float]]:
    """Return the union boxes of each run of pdftotext words that spell ``phrase``, in pdftotext's order."""
    words = _word_boxes(pdf, page, page_height)
    wanted = phrase.split()
    boxes = []
    for start in range(len(words) - len(wanted) + 1):
        run = words[start:start + len(wanted)]
        if [word.rstrip(",.") for word, _ in run] == wanted:
            boxes.append((min(b[0] for _, b in run), min(b[1] for _, b in run),
                          max(b[2] for _, b in run), max(b[3] for _, b in run)))
    return boxes


async def _sign(source: Path, output: Path, key, timestamper, stamp: StampSpec | None):
    return await sign_pdf(source, output, key=key, timestamper=timestamper, reason="Phê duyệt", location="Mẫu Sơn",
                          stamp=stamp)


def _signature_stamp(image: bytes, box=BOX, page: int = 1, signature_text: bool = False) -> StampSpec:
    return StampSpec(page=page, box=box, signer_name=SIGNER_NAME, signer_title=SIGNER_TITLE, agency=AGENCY,
                     appearance="signature", image_png=image, signature_text=signature_text)


def _seal_stamp(image: bytes, box, page: int = 1) -> StampSpec:
    return StampSpec(page=page, box=box, signer_name=AGENCY, signer_title="", agency=AGENCY, appearance="seal",
                     image_png=image)


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("sample") / "giay-xac-nhan.pdf")


# PNG validation


def test_check_png_accepts_rgba():
    data = _green_image((300, 120), 0.5)

    info = check_png(data, "signature_image")

    assert (info.width, info.height) == (300, 120)
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()


def _rejection(data: bytes) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check_png(data, "seal_image")
    assert caught.value.code == "appearance_image_invalid"
    assert caught.value.params["image"] == "seal_image"
    return caught.value


def test_check_png_rejects_jpeg():
    output = io.BytesIO()
    Image.new("RGB", (100, 100), "red").save(output, format="JPEG")

    error = _rejection(output.getvalue())

    assert "not a PNG" in error.params["reason"]


def test_check_png_rejects_too_many_bytes():
    # Noise does not compress, so 700 x 700 RGBA pixels take about 2 MB.
    data = _png(Image.frombytes("RGBA", (700, 700), random.Random(1).randbytes(700 * 700 * 4)))
    assert len(data) > MAX_IMAGE_BYTES

    error = _rejection(data)

    assert "more than" in error.params["reason"]


@pytest.mark.parametrize("size", [(2500, 100), (100, 2001), (8, 8)])
def test_check_png_rejects_dimensions(size):
    error = _rejection(_png(Image.new("L", size)))

    assert "pixels" in error.params["reason"]


def test_check_png_rejects_bomb_header_fast():
    started = time.monotonic()

    error = _rejection(_png_with_header(40000, 40000))

    assert "40000 x 40000" in error.params["reason"]
    assert time.monotonic() - started < 1.0


def test_check_png_rejects_truncated():
    data = _png(Image.frombytes("RGB", (200, 200), bytes(range(256)) * 468 + bytes(192)))

    error = _rejection(data[: len(data) // 2])

    assert "cannot be decoded" in error.params["reason"]


def test_check_png_rejects_16_bit_grey():
    error = _rejection(_png(Image.new("I;16", (40, 40))))

    assert "I;16" in error.params["reason"]


# Geometry


def test_seal_box_over_field_left_third():
    box = seal_box_over_field((300.0, 100.0, 510.0, 200.0), 102.0)

    assert box == (268.0, 99.0, 370.0, 201.0)


def test_square_centred_in_keeps_centre():
    assert square_centred_in((100.0, 100.0, 300.0, 200.0), 50.0) == (175.0, 125.0, 225.0, 175.0)


def test_box_below_anchor_centred_and_offset():
    box = box_below_anchor((100.0, 500.0, 200.0, 512.0), (120.0, 60.0), (10.0, -4.0))

    assert box == (100.0, 436.0, 220.0, 496.0)


def test_mm_to_points():
    assert mm_to_points(25.4) == pytest.approx(72.0)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"appearance": "stamp", "image_png": b"x"}, "appearance must be one of"),
     ({"appearance": "seal"}, "needs image_png")],
)
def test_stamp_spec_rejects_appearance(changes, reason):
    with pytest.raises(InvalidInput) as caught:
        StampSpec(page=1, box=BOX, signer_name=SIGNER_NAME, signer_title="", agency=AGENCY, **changes)

    assert caught.value.code == "pdf_stamp_invalid"
    assert reason in caught.value.params["reason"]


# The signature appearance


async def test_signature_appearance_rendered(pki, timestamper, one_page_pdf, nss_dir, tmp_path):
    output = tmp_path / "signed.pdf"

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper, _signature_stamp(signature_png(SIGNER_NAME)))

    signatures = pdfsig_signatures(output, nss_dir)
    assert len(signatures) == 1
    assert signatures[0].signature_valid, signatures[0].raw
    assert signatures[0].certificate_trusted, signatures[0].raw
    ok, report = qpdf_check(output)
    assert ok, report

    # The title and the name are the document's own text, so only the image and the time are drawn.
    text = pdftotext_area(output, 1, BOX)
    assert SIGNER_TITLE.upper() not in text
    assert SIGNER_NAME not in text
    assert "Thời gian ký:" in text
    assert "(+07:00)" in text


async def test_signature_appearance_with_text(pki, timestamper, one_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper,
                _signature_stamp(signature_png(SIGNER_NAME), signature_text=True))

    text = pdftotext_area(output, 1, BOX)
    assert SIGNER_TITLE.upper() in text
    assert SIGNER_NAME in text
    assert "Thời gian ký:" in text
    assert len(_pixels(_render(output), _pixel_box(BOX), _is_dark)) > 500

    page = _render(output)
    left, top, right, bottom = _pixel_box(BOX)
    margin = round(10 * PIXELS_PER_POINT)
    dark_inside = _pixels(page, (left, top, right, bottom), _is_dark)
    dark_with_margin = _pixels(page, (left - margin, top - margin, right + margin, bottom + margin), _is_dark)
    assert len(dark_inside) > 500
    assert len(dark_with_margin) == len(dark_inside)


async def test_signature_image_keeps_aspect_ratio(pki, timestamper, one_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper, _signature_stamp(_green_image((400, 100))))

    green = _pixels(_render(output), _pixel_box(BOX), _is_green)
    left, top, right, bottom = _extent(green)
    assert (right - left + 1) / (bottom - top + 1) == pytest.approx(4.0, rel=0.05)


async def test_signature_image_keeps_transparency(pki, timestamper, one_page_pdf, tmp_path):
    opaque_output = tmp_path / "opaque.pdf"
    half_output = tmp_path / "half.pdf"

    await _sign(one_page_pdf, opaque_output, pki.rsa_signer, timestamper, _signature_stamp(_green_image((400, 100))))
    await _sign(one_page_pdf, half_output, pki.rsa_signer, timestamper,
                _signature_stamp(_green_image((400, 100), opaque_fraction=0.5)))

    opaque_left, opaque_top, opaque_right, opaque_bottom = _extent(
        _pixels(_render(opaque_output), _pixel_box(BOX), _is_green))
    half_page = _render(half_output)
    half_left, _, half_right, _ = _extent(_pixels(half_page, _pixel_box(BOX), _is_green))
    assert half_left == pytest.approx(opaque_left, abs=1)
    assert half_right - half_left == pytest.approx((opaque_right - opaque_left) / 2, abs=2)
    # Where the PNG is transparent the page stays white; without the soft mask it would be black.
    transparent_part = (half_right + 3, opaque_top + 2, opaque_right - 1, opaque_bottom - 2)
    assert not _pixels(half_page, transparent_part, _is_dark)
    assert _pixels(half_page, transparent_part, lambda pixel: min(pixel) > 240)


async def test_signature_image_has_soft_mask(pki, timestamper, one_page_pdf, tmp_path):
    output = tmp_path / "signed.pdf"

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper,
                _signature_stamp(_green_image((400, 100), opaque_fraction=0.5)))

    with output.open("rb") as stream:
        appearance = PdfFileReader(stream).embedded_signatures[0].sig_field["/AP"]["/N"]
        images = [xobject.get_object() for xobject in appearance["/Resources"]["/XObject"].values()]
        assert [image["/Subtype"] for image in images] == ["/Image"]
        assert "/SMask" in images[0]


# The seal appearance


async def test_seal_drawn_at_real_size(pki, timestamper, one_page_pdf, tmp_path):
    output = tmp_path / "sealed.pdf"
    diameter = mm_to_points(SEAL_DIAMETER_MM)
    box = square_centred_in(BOX, diameter)

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper, _seal_stamp(_red_disc(), box))

    x1, y1, x2, y2 = box
    search = (x1 - 20, y1 - 20, x2 + 20, y2 + 20)
    red = _pixels(_render(output), _pixel_box(search), _is_red)
    left, top, right, bottom = _extent(red)
    assert (right - left + 1) / PIXELS_PER_POINT == pytest.approx(diameter, abs=1.0)
    assert (bottom - top + 1) / PIXELS_PER_POINT == pytest.approx(diameter, abs=1.0)
    assert (left / PIXELS_PER_POINT) == pytest.approx(box[0], abs=1.0)


async def test_seal_matrix_width_is_diameter(pki, timestamper, one_page_pdf, tmp_path):
    output = tmp_path / "sealed.pdf"
    diameter = mm_to_points(SEAL_DIAMETER_MM)

    await _sign(one_page_pdf, output, pki.rsa_signer, timestamper, _seal_stamp(_red_disc(), square_centred_in(BOX, diameter)))

    with output.open("rb") as stream:
        field = PdfFileReader(stream).embedded_signatures[0].sig_field
        rect_width = float(field["/Rect"][2]) - float(field["/Rect"][0])
        appearance = field["/AP"]["/N"]
        bbox_width = float(appearance["/BBox"][2]) - float(appearance["/BBox"][0])
        content = appearance.data.decode("latin-1")
    # The viewer maps the appearance's BBox onto the widget's Rect (ISO 32000-1 section 12.5.5).
    matrix = re.search(r"q ([\d.]+) 0 0 ([\d.]+) [\d.]+ [\d.]+ cm /Seal Do Q", content)
    assert matrix is not None, content
    assert float(matrix[1]) * rect_width / bbox_width == pytest.approx(diameter, abs=1.0)


async def test_seal_over_signed_field_keeps_first_signature(pki, timestamper, sample_pdf, nss_dir, tmp_path):
    signed = tmp_path / "signed.pdf"
    sealed = tmp_path / "sealed.pdf"
    side = mm_to_points(SEAL_DIAMETER_MM)
    await _sign(sample_pdf, signed, pki.rsa_signer, timestamper,
                _signature_stamp(signature_png(SIGNER_NAME), box=SAMPLE_STAMP_BOX))

    found = resolve_stamp_box(signed, None, StampBox(page=1, box=BOX), anchor=None, anchor_page=None,
                              over_field="Signature1", seal_side=side, tolerance=1.0)
    await _sign(signed, sealed, pki.ec_signer, timestamper,
                _seal_stamp(seal_png(AGENCY, "Tỉnh Thử Nghiệm"), found.box, page=found.page))

    assert found.page == 1
    assert found.box == seal_box_over_field(SAMPLE_STAMP_BOX, side)
    signatures = pdfsig_signatures(sealed, nss_dir)
    assert [signature.field_name for signature in signatures] == ["Signature1", "Signature2"]
    for signature in signatures:
        assert signature.signature_valid, signature.raw
        assert signature.certificate_trusted, signature.raw
    first = pyhanko_validate(sealed, pki.root_pem)[0]
    assert first["intact"]
    assert first["valid"]
    assert first["trusted"]
    assert first["coverage"] == "ENTIRE_REVISION"
    # Adding a signature field and its widget counts as form filling, which the first signature allows.
    assert first["docmdp_ok"] is True
    assert first["modification_level"] == "FORM_FILLING"

    x1, y1, x2, y2 = SAMPLE_STAMP_BOX
    left_third = (x1, y1, x1 + (x2 - x1) / 3, y2)
    assert len(_pixels(_render(sealed), _pixel_box(left_third), _is_red)) > 500


async def test_over_field_unknown_name(pki, timestamper, one_page_pdf, tmp_path):
    with pytest.raises(InvalidInput) as caught:
        resolve_stamp_box(one_page_pdf, None, StampBox(page=1, box=BOX), anchor=None, anchor_page=None,
                          over_field="Signature9", seal_side=100.0, tolerance=1.0)

    assert caught.value.code == "pdf_field_not_found"


async def test_over_field_not_signed(pki, timestamper, one_page_pdf, tmp_path):
    with_field = write_with_empty_field(one_page_pdf, tmp_path / "field.pdf", "Signature1", BOX)

    with pytest.raises(InvalidInput) as caught:
        resolve_stamp_box(with_field, None, StampBox(page=1, box=BOX), anchor=None, anchor_page=None,
                          over_field="Signature1", seal_side=100.0, tolerance=1.0)

    assert caught.value.code == "pdf_field_not_found"
    assert "not signed" in caught.value.params["reason"]


async def test_over_field_invisible_signature(pki, timestamper, one_page_pdf, tmp_path):
    signed = tmp_path / "invisible.pdf"
    await _sign(one_page_pdf, signed, pki.rsa_signer, timestamper, None)

    with pytest.raises(InvalidInput) as caught:
        resolve_stamp_box(signed, None, StampBox(page=1, box=BOX), anchor=None, anchor_page=None,
                          over_field="Signature1", seal_side=100.0, tolerance=1.0)

    assert caught.value.code == "pdf_field_not_found"
    assert "invisible" in caught.value.params["reason"]


# Placement by anchor text


def _close(found, expected, *, left=1.0, bottom=2.0, right=8.0, top=3.0) -> bool:
    """pdfminer and poppler agree on a word's left edge; glyph heights and the last advance differ a little."""
    return (abs(found[0] - expected[0]) <= left and abs(found[1] - expected[1]) <= bottom
            and abs(found[2] - expected[2]) <= right and abs(found[3] - expected[3]) <= top)


def test_anchor_matches_pdftotext(sample_pdf):
    match = find_anchor(sample_pdf, None, "PHÓ CHỦ TỊCH")

    (expected,) = _phrase_boxes(sample_pdf, 1, "PHÓ CHỦ TỊCH", A4_HEIGHT)
    assert match.page == 1
    assert _close(match.box, expected), (match.box, expected)


def test_anchor_decomposed_text_found(sample_pdf):
    decomposed = unicodedata.normalize("NFD", "Nơi nhận:")
    assert decomposed != "Nơi nhận:"

    match = find_anchor(sample_pdf, None, decomposed)

    (expected,) = _phrase_boxes(sample_pdf, 1, "Nơi nhận:", A4_HEIGHT)
    assert _close(match.box, expected), (match.box, expected)


def test_anchor_ignores_spaces(sample_pdf):
    assert find_anchor(sample_pdf, None, " PHÓCHỦ   TỊCH ") == find_anchor(sample_pdf, None, "PHÓ CHỦ TỊCH")


def test_anchor_case_sensitive(sample_pdf):
    capitals = find_anchor(sample_pdf, None, "CHỦ TỊCH", occurrence=1)
    lower = find_anchor(sample_pdf, None, "Chủ tịch", occurrence=1)

    # "Chủ tịch UBND huyện" in the recipients list, not "KT. CHỦ TỊCH" of the signature block.
    (expected,) = _phrase_boxes(sample_pdf, 1, "Chủ tịch", A4_HEIGHT)
    assert _close(lower.box, expected), (lower.box, expected)
    assert capitals.box[0] > 300


@pytest.mark.parametrize(("occurrence", "index"), [(1, 0), (2, 1), (3, 2), (-1, 3), (-4, 0)])
def test_anchor_occurrences_in_reading_order(sample_pdf, occurrence, index):
    match = find_anchor(sample_pdf, None, "Mẫu Sơn", occurrence=occurrence)

    # The third occurrence runs over a line break, so its box spans both lines.
    expected = _phrase_boxes(sample_pdf, 1, "Mẫu Sơn", A4_HEIGHT)
    assert len(expected) == 4
    assert _close(match.box, expected[index]), (match.box, expected[index])


def test_anchor_occurrence_beyond_count(sample_pdf):
    with pytest.raises(InvalidInput) as caught:
        find_anchor(sample_pdf, None, "Mẫu Sơn", occurrence=5)

    assert caught.value.code == "anchor_not_found"
    assert caught.value.params["found"] == 4


def test_anchor_not_found_code(sample_pdf):
    with pytest.raises(InvalidInput) as caught:
        find_anchor(sample_pdf, None, "GIÁM ĐỐC")

    assert caught.value.code == "anchor_not_found"
    assert caught.value.params["anchor"] == "GIÁM ĐỐC"


def test_anchor_limited_to_page(tmp_path):
    three_pages = generate_sample_pdf(tmp_path / "three.pdf", pages=3)

    match = find_anchor(three_pages, None, "Phụ lục 1", page=2)
    with pytest.raises(InvalidInput) as caught:
        find_anchor(three_pages, None, "Phụ lục 1", page=3)

    assert match.page == 2
    assert caught.value.code == "anchor_not_found"


def _handwritten_pdf(path: Path, rotate: int) -> Path:
    """Write a one-page PDF with MediaBox [100 200 712 992], /Rotate ``rotate`` and "ANCHOR TEXT" drawn at (250, 600)."""
    content = b"BT /F1 20 Tf 250 600 Td (ANCHOR TEXT) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [100 200 712 992] /Rotate %d "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>" % rotate,
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    output = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(output))
        output += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(output)
    output += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    output += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    output += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(output))
    return path


def test_anchor_in_default_user_space(tmp_path):
    boxes = {rotate: find_anchor(_handwritten_pdf(tmp_path / f"rotate-{rotate}.pdf", rotate), None,
                                 "ANCHOR TEXT").box
             for rotate in (0, 90, 180, 270)}

    x1, y1, x2, y2 = boxes[0]
    assert x1 == pytest.approx(250.0, abs=0.5)
    # Helvetica's descender reaches 4.1 points below the baseline at 20 points.
    assert 590.0 < y1 < 600.0
    assert x2 > 370.0
    for rotate in (90, 180, 270):
        assert boxes[rotate] == pytest.approx(boxes[0], abs=0.01), rotate


def test_anchor_corpus_last_occurrence(corpus_file):
    pdf = corpus_file("pypdf-pdflatex-4-pages.pdf")

    match = find_anchor(pdf, None, "Huardest gefburn")

    # pdftotext keeps the quotation mark before the word: “Huardest
    words = [box for word, box in _word_boxes(pdf, 4, A4_HEIGHT) if "Huardest" in word]
    assert match.page == 4
    assert words, "pdftotext finds no Huardest on page 4"
    opening_quote_width = 6.0
    assert match.box[0] - words[-1][0] == pytest.approx(opening_quote_width / 2, abs=opening_quote_width / 2 + 1)
    assert match.box[1] == pytest.approx(words[-1][1], abs=2.0)


def test_anchor_corpus_encrypted(corpus_file):
    pdf = corpus_file("pyhanko-minimal-aes256.pdf")

    match = find_anchor(pdf, "usersecret", "Hello")

    assert match.page == 1
    assert match.box[0] == pytest.approx(0.0, abs=1.0)


def test_anchor_corpus_split_words(corpus_file):
    pdf = corpus_file("pdf20-simple.pdf")

    match = find_anchor(pdf, None, "Hello World")

    (expected,) = _phrase_boxes(pdf, 1, "Hello World", 396.0)
    assert _close(match.box, expected), (match.box, expected)


# PadesChecker at submission


async def test_checker_places_box_under_anchor(sample_pdf):
    anchor = AnchorPlacement(text="PHÓ CHỦ TỊCH", offset=(0.0, -2.0), size=(200.0, 110.0))

    checked = await PadesChecker().check(sample_pdf, None, None, None, anchor=anchor)

    (words,) = _phrase_boxes(sample_pdf, 1, "PHÓ CHỦ TỊCH", A4_HEIGHT)
    x1, y1, x2, y2 = checked.stamp_box
    assert checked.stamp_page == 1
    assert (x2 - x1, y2 - y1) == pytest.approx((200.0, 110.0))
    assert (x1 + x2) / 2 == pytest.approx((words[0] + words[2]) / 2, abs=4.0)
    assert y2 == pytest.approx(words[1] - 2.0, abs=2.0)
    assert checked.anchor_box is not None


async def test_checker_seal_square_in_rect(one_page_pdf):
    side = mm_to_points(SEAL_DIAMETER_MM)

    checked = await PadesChecker().check(one_page_pdf, None, None, BOX, seal_side=side)

    assert checked.stamp_box == square_centred_in(BOX, side)


async def test_checker_anchor_box_outside_page(sample_pdf):
    anchor = AnchorPlacement(text="PHÓ CHỦ TỊCH", offset=(300.0, 0.0), size=(200.0, 110.0))

    with pytest.raises(PdfStampOutsidePage):
        await PadesChecker().check(sample_pdf, None, None, None, anchor=anchor)


async def test_sign_in_anchor_box(pki, timestamper, sample_pdf, nss_dir, tmp_path):
    output = tmp_path / "signed.pdf"
    anchor = AnchorPlacement(text="PHÓ CHỦ TỊCH", size=(200.0, 110.0))
    checked = await PadesChecker().check(sample_pdf, None, None, None, anchor=anchor)

    await _sign(sample_pdf, output, pki.rsa_signer, timestamper,
                _signature_stamp(signature_png(SIGNER_NAME), box=checked.stamp_box))

    assert "Thời gian ký:" in pdftotext_area(output, 1, checked.stamp_box)
    assert pdfsig_signatures(output, nss_dir)[0].signature_valid
    assert len(_pixels(_render(output), _pixel_box(checked.stamp_box), _is_dark)) > 500
