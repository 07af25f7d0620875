"""A sample Vietnamese administrative document for demos, tests and benchmarks.

The PDF follows the layout that Nghị định 30/2020/NĐ-CP (Decree 30/2020 on
administrative correspondence) sets for an administrative document. The page
is A4 portrait. The issuing agency is at the top left with the number and
symbol under it, and the national title and motto are at the top right with
the place and date under them. The title and the body follow. The signature
area at the bottom right has the signer's title above an empty space for the
signature and the seal, where the service puts its visible signature stamp
(``SAMPLE_STAMP_BOX`` on the last page).

The agency, the people and the addresses are fictional.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib.enums import TA_JUSTIFY
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph

__all__ = ["SAMPLE_STAMP_BOX", "SAMPLE_PAGE_SIZE", "DEFAULT_DOSSIER_CODE", "generate_sample_pdf"]

SAMPLE_PAGE_SIZE = A4
DEFAULT_DOSSIER_CODE = "000.00.01.H01-261204-0001"

# Liberation Serif has the metrics of Times New Roman, the face that
# Decree 30/2020 prescribes. Only version 2 covers the Vietnamese alphabet:
# Debian's fonts-liberation (1.07, in .../liberation) lacks letters such as
# "Ủ" and "ệ", so the fonts come from fonts-liberation2.
FONT_DIRECTORY = Path("/usr/share/fonts/truetype/liberation2")
# Letters that a font without Vietnamese coverage is missing.
VIETNAMESE_PROBE = "ĂÂĐÊÔƠƯăâđêôơưẠẢẤẦẨẪẬỦỨỪỬỮỰỲỴỶỸạảấầẩẫậủứừửữựỳỵỷỹệễ"
FONT_FILES = {
    "SampleSerif": "LiberationSerif-Regular.ttf",
    "SampleSerif-Bold": "LiberationSerif-Bold.ttf",
    "SampleSerif-Italic": "LiberationSerif-Italic.ttf",
    "SampleSerif-BoldItalic": "LiberationSerif-BoldItalic.ttf",
}
REGULAR = "SampleSerif"
BOLD = "SampleSerif-Bold"
ITALIC = "SampleSerif-Italic"
BOLD_ITALIC = "SampleSerif-BoldItalic"

PAGE_WIDTH, PAGE_HEIGHT = A4
# Decree 30/2020 margins: top and bottom 20-25 mm, left 30-35 mm, right 15-20 mm.
LEFT_MARGIN = 30 * mm
RIGHT_MARGIN = 20 * mm
TOP_MARGIN = 20 * mm
BOTTOM_MARGIN = 20 * mm
TEXT_LEFT = LEFT_MARGIN
TEXT_RIGHT = PAGE_WIDTH - RIGHT_MARGIN
TEXT_WIDTH = TEXT_RIGHT - TEXT_LEFT

# Centre lines of the two header columns. The agency line and the national
# title together are wider than the text width at 12 pt, so the agency column
# reaches into the left margin, as it does in many issued documents. The
# signature block shares the right column.
LEFT_COLUMN_CENTER = 58 * mm
RIGHT_COLUMN_CENTER = TEXT_RIGHT - 45 * mm

# The signature block has a fixed position on the last page so that the stamp
# box is a constant. Body text on the last page must end above it.
SIGNATURE_TOP = 300.0
BODY_FLOOR = SIGNATURE_TOP + 14
STAMP_WIDTH = 200.0
STAMP_HEIGHT = 100.0
_STAMP_TOP = SIGNATURE_TOP - 2 * 16 - 4

SAMPLE_STAMP_BOX: tuple[float, float, float, float] = (
    RIGHT_COLUMN_CENTER - STAMP_WIDTH / 2,
    _STAMP_TOP - STAMP_HEIGHT,
    RIGHT_COLUMN_CENTER + STAMP_WIDTH / 2,
    _STAMP_TOP,
)
"""Empty signature area on the last page: (x1, y1, x2, y2) in PDF points, origin bottom left."""

BODY_STYLE = ParagraphStyle(
    "SampleBody",
    fontName=REGULAR,
    fontSize=13,
    leading=17,
    alignment=TA_JUSTIFY,
    firstLineIndent=12 * mm,
    spaceAfter=5,
)
HEADING_STYLE = ParagraphStyle(
    "SampleHeading", parent=BODY_STYLE, fontName=BOLD, firstLineIndent=0, spaceAfter=4
)

SIGNER_NAME = "Trần Thị Bích Ngọc"  # the first demo official, who signs it in `signserver demo`
APPLICANT_NAME = "Lê Thị Minh Thư"


def generate_sample_pdf(
    path: Path, *, pages: int = 1, dossier_code: str = DEFAULT_DOSSIER_CODE
) -> Path:
    """Write the sample confirmation letter (giấy xác nhận) to ``path`` and return the path.

    ``pages`` above 1 inserts annex pages of body text between the first page
    and the last one, so benchmarks can sign long documents. The output is
    byte-for-byte reproducible for equal arguments.
    """
    if not isinstance(pages, int) or isinstance(pages, bool) or pages < 1:
        raise ValueError(f"pages must be an integer of at least 1, got {pages!r}")
    dossier_code = unicodedata.normalize("NFC", dossier_code).strip()
    if not dossier_code or not dossier_code.isprintable():
        raise ValueError(f"dossier_code must be non-empty printable text, got {dossier_code!r}")
    # Paragraph text is markup, so "<" or "&" in the code must be escaped.
    dossier_markup = escape(dossier_code)

    _register_fonts()
    path = Path(path)
    canvas = Canvas(
        str(path),
        pagesize=A4,
        invariant=True,
        pageCompression=1,
        # Without an initial font reportlab references Helvetica, which is not embedded.
        initialFontName=REGULAR,
        initialFontSize=13,
    )
    canvas.setTitle("Giấy xác nhận tiếp nhận và giải quyết hồ sơ")
    canvas.setAuthor("Văn phòng HĐND và UBND huyện Mẫu Sơn (mẫu, hư cấu)")
    canvas.setSubject(f"Mã hồ sơ {dossier_code}")

    cursor = _draw_first_page_top(canvas)
    cursor = _draw_paragraphs(canvas, _introduction(dossier_markup), cursor)

    # Page 1 and the last page frame the annex pages 2 .. pages-1.
    for annex_number in range(1, pages - 1):
        canvas.showPage()
        _draw_page_number(canvas, annex_number + 1)
        _draw_annex_page(canvas, annex_number, dossier_markup)

    if pages > 1:
        canvas.showPage()
        _draw_page_number(canvas, pages)
        cursor = PAGE_HEIGHT - TOP_MARGIN - 10

    cursor = _draw_paragraphs(canvas, _closing(dossier_markup), cursor)
    if cursor < BODY_FLOOR:
        raise RuntimeError(f"sample body text ends at y={cursor:.0f}, inside the signature area")
    _draw_signature_area(canvas)

    canvas.showPage()
    canvas.save()
    return path


def _register_fonts() -> None:
    registered = set(pdfmetrics.getRegisteredFontNames())
    for name, file_name in FONT_FILES.items():
        if name in registered:
            continue
        font_path = FONT_DIRECTORY / file_name
        if not font_path.is_file():
            raise FileNotFoundError(
                f"font {font_path} not found. Install the Liberation 2 fonts (Debian: fonts-liberation2)"
            )
        font = TTFont(name, str(font_path))
        missing = [letter for letter in VIETNAMESE_PROBE if ord(letter) not in font.face.charToGlyph]
        if missing:
            raise ValueError(
                f"font {font_path} has no glyphs for {''.join(missing)!r}. "
                "Install a version with Vietnamese coverage (Debian: fonts-liberation2)"
            )
        pdfmetrics.registerFont(font)
    pdfmetrics.registerFontFamily(REGULAR, normal=REGULAR, bold=BOLD, italic=ITALIC, boldItalic=BOLD_ITALIC)


def _draw_first_page_top(canvas: Canvas) -> float:
    """Draw the header, number, date and title of page 1 and return the y where the body starts."""
    top = PAGE_HEIGHT - TOP_MARGIN - 12

    # Issuing agency: the parent body in regular capitals, the agency itself in
    # bold capitals with a short rule under it.
    _centered(canvas, "ỦY BAN NHÂN DÂN HUYỆN MẪU SƠN", LEFT_COLUMN_CENTER, top, REGULAR, 12)
    _centered(canvas, "VĂN PHÒNG HĐND VÀ UBND", LEFT_COLUMN_CENTER, top - 15, BOLD, 12)
    _rule(canvas, LEFT_COLUMN_CENTER, top - 20, 22 * mm)

    # National title and motto; the motto is underlined across its full width.
    _centered(canvas, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", RIGHT_COLUMN_CENTER, top, BOLD, 12)
    motto = "Độc lập - Tự do - Hạnh phúc"
    _centered(canvas, motto, RIGHT_COLUMN_CENTER, top - 15, BOLD, 13.5)
    _rule(canvas, RIGHT_COLUMN_CENTER, top - 20, pdfmetrics.stringWidth(motto, BOLD, 13.5))

    _centered(canvas, "Số: .../GXN-UBND", LEFT_COLUMN_CENTER, top - 40, REGULAR, 13)
    _centered(
        canvas, "Mẫu Sơn, ngày ... tháng ... năm 2026", RIGHT_COLUMN_CENTER, top - 40, ITALIC, 13
    )

    title_y = top - 85
    _centered(canvas, "GIẤY XÁC NHẬN", TEXT_LEFT + TEXT_WIDTH / 2, title_y, BOLD, 14)
    _centered(
        canvas,
        "Về việc tiếp nhận và giải quyết hồ sơ thủ tục hành chính",
        TEXT_LEFT + TEXT_WIDTH / 2,
        title_y - 17,
        BOLD,
        13,
    )
    _rule(canvas, TEXT_LEFT + TEXT_WIDTH / 2, title_y - 23, 40 * mm)
    return title_y - 40


def _draw_annex_page(canvas: Canvas, annex_number: int, dossier_markup: str) -> None:
    cursor = PAGE_HEIGHT - TOP_MARGIN - 10
    heading = f"Phụ lục {annex_number}. Nội dung giải quyết hồ sơ {dossier_markup} (tiếp theo)"
    cursor = _draw_paragraphs(canvas, [(heading, HEADING_STYLE)], cursor)
    cursor = _draw_paragraphs(canvas, _annex_paragraphs(annex_number), cursor)
    if cursor < BOTTOM_MARGIN:
        raise RuntimeError(f"annex page {annex_number} overflows the bottom margin (y={cursor:.0f})")


def _draw_signature_area(canvas: Canvas) -> None:
    """Draw the recipients list at the left and the signer's title and name at the right.

    "KT. CHỦ TỊCH" (ký thay, signing on behalf of the chairman) over "PHÓ CHỦ
    TỊCH" is the form a vice-chairman signs with. The stamp box between the
    title and the name stays empty.
    """
    top = SIGNATURE_TOP
    _centered(canvas, "KT. CHỦ TỊCH", RIGHT_COLUMN_CENTER, top, BOLD, 13)
    _centered(canvas, "PHÓ CHỦ TỊCH", RIGHT_COLUMN_CENTER, top - 16, BOLD, 13)
    _centered(canvas, SIGNER_NAME, RIGHT_COLUMN_CENTER, SAMPLE_STAMP_BOX[1] - 14, BOLD, 13)

    canvas.setFont(BOLD_ITALIC, 12)
    canvas.drawString(TEXT_LEFT, top, "Nơi nhận:")
    canvas.setFont(REGULAR, 11)
    recipients = ["- Như trên;", "- Chủ tịch UBND huyện (để b/c);", "- Bộ phận Một cửa huyện;", "- Lưu: VT."]
    for index, line in enumerate(recipients, start=1):
        canvas.drawString(TEXT_LEFT, top - 2 - 13 * index, line)


def _draw_page_number(canvas: Canvas, page_number: int) -> None:
    # Decree 30/2020 numbers pages from page 2, centred in the top margin.
    _centered(canvas, str(page_number), PAGE_WIDTH / 2, PAGE_HEIGHT - 12 * mm, REGULAR, 13)


def _draw_paragraphs(
    canvas: Canvas, paragraphs: list[tuple[str, ParagraphStyle]], top: float
) -> float:
    """Draw paragraphs across the text width from ``top`` down and return the y below the last one."""
    cursor = top
    for text, style in paragraphs:
        paragraph = Paragraph(unicodedata.normalize("NFC", text), style)
        _, height = paragraph.wrap(TEXT_WIDTH, PAGE_HEIGHT)
        paragraph.drawOn(canvas, TEXT_LEFT, cursor - height)
        cursor -= height + style.spaceAfter
    return cursor


def _centered(canvas: Canvas, text: str, center_x: float, y: float, font: str, size: float) -> None:
    canvas.setFont(font, size)
    canvas.drawCentredString(center_x, y, unicodedata.normalize("NFC", text))


def _rule(canvas: Canvas, center_x: float, y: float, width: float) -> None:
    canvas.setLineWidth(0.6)
    canvas.line(center_x - width / 2, y, center_x + width / 2, y)


def _introduction(dossier_markup: str) -> list[tuple[str, ParagraphStyle]]:
    return [
        (
            "Căn cứ Nghị định số 61/2018/NĐ-CP ngày 23 tháng 4 năm 2018 của Chính phủ về thực hiện "
            "cơ chế một cửa, một cửa liên thông trong giải quyết thủ tục hành chính;",
            BODY_STYLE,
        ),
        ("Văn phòng HĐND và UBND huyện Mẫu Sơn xác nhận:", BODY_STYLE),
        (
            f"Bà {APPLICANT_NAME}, thường trú tại thôn Đồng Tâm, xã Tân Lập, huyện Mẫu Sơn, đã nộp "
            "hồ sơ đề nghị giải quyết thủ tục hành chính tại Bộ phận Một cửa huyện Mẫu Sơn. "
            f"Mã hồ sơ: <b>{dossier_markup}</b>.",
            BODY_STYLE,
        ),
        (
            "Hồ sơ gồm đủ thành phần theo quy định, đã được tiếp nhận, thẩm định và giải quyết "
            "đúng thời hạn. Kết quả giải quyết được trả cho người nộp hồ sơ trực tiếp hoặc qua "
            "dịch vụ bưu chính công ích.",
            BODY_STYLE,
        ),
    ]


def _closing(dossier_markup: str) -> list[tuple[str, ParagraphStyle]]:
    return [
        (
            "Người nộp hồ sơ tra cứu tình trạng giải quyết trên Cổng Dịch vụ công bằng mã hồ sơ "
            f"{dossier_markup}. Giấy xác nhận này được ký số và có giá trị như bản giấy.",
            BODY_STYLE,
        ),
    ]


def _annex_paragraphs(annex_number: int) -> list[tuple[str, ParagraphStyle]]:
    """Return enough body text to fill most of one annex page."""
    return [
        (
            f"{annex_number}.1. Bước tiếp nhận: công chức Bộ phận Một cửa kiểm tra tính đầy đủ, "
            "hợp lệ của thành phần hồ sơ, cập nhật thông tin vào Hệ thống thông tin giải quyết thủ "
            "tục hành chính, cấp mã hồ sơ và in giấy tiếp nhận, hẹn trả kết quả cho người nộp.",
            BODY_STYLE,
        ),
        (
            f"{annex_number}.2. Bước thẩm định: chuyên viên phòng chuyên môn xem xét nội dung hồ sơ, "
            "đối chiếu với quy định hiện hành, lập tờ trình và dự thảo văn bản kết quả; trường hợp "
            "hồ sơ cần bổ sung, thông báo một lần bằng văn bản nêu rõ lý do và nội dung cần bổ sung.",
            BODY_STYLE,
        ),
        (
            f"{annex_number}.3. Bước phê duyệt: lãnh đạo phòng chuyên môn kiểm tra dự thảo, trình "
            "lãnh đạo Ủy ban nhân dân huyện ký duyệt bằng chữ ký số; văn bản điện tử được ký số có "
            "giá trị pháp lý như văn bản giấy có chữ ký và đóng dấu.",
            BODY_STYLE,
        ),
        (
            f"{annex_number}.4. Bước trả kết quả: Bộ phận Một cửa nhận kết quả từ phòng chuyên môn, "
            "cập nhật trạng thái hồ sơ trên Hệ thống, thông báo cho người nộp qua tin nhắn và thư "
            "điện tử, trả kết quả và thu lại giấy tiếp nhận, hẹn trả kết quả.",
            BODY_STYLE,
        ),
        (
            f"{annex_number}.5. Lưu trữ: hồ sơ điện tử và văn bản kết quả được lưu trong Hệ thống "
            "theo thời hạn bảo quản quy định; bản giấy, nếu có, được lập hồ sơ và nộp lưu vào lưu "
            "trữ cơ quan theo quy định về công tác văn thư.",
            BODY_STYLE,
        ),
        (
            f"{annex_number}.6. Đánh giá: người nộp hồ sơ có thể đánh giá mức độ hài lòng về việc "
            "giải quyết thủ tục hành chính trên Cổng Dịch vụ công; kết quả đánh giá được tổng hợp "
            "hằng quý để cải thiện chất lượng phục vụ của cơ quan.",
            BODY_STYLE,
        ),
    ]
