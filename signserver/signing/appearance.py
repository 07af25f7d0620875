"""Visible signature appearances in Vietnamese practice: signature image, agency seal, or text box.

Decree 30/2020/NĐ-CP on administrative correspondence (Appendix I) lays out
the signing place of a document: the position title (chức vụ) in capitals,
the signature under it, then the signer's full name. In an electronic
document the title and the name are part of the document's text, and the
signature image (blue, transparent PNG) goes centred between them. The agency
seal, red and at its real size, overlaps about the left third of the
signature. The "signature" appearance therefore draws the image with a small
signing-time line under it. It draws the title and name too when the request
sets ``signature_text``, for documents without a typed signing place. The
"seal" appearance draws the seal image at the box's size, and the box is sized
from the seal's real diameter. Copies (bản sao điện tử) carry the text-only box of ``stamp``.

The images are PNG files from the credential's profile. ``check_png``
validates an upload before it is stored. The stamps embed the image as an
image XObject, whose alpha channel pyHanko writes as a soft mask (/SMask), so
transparent parts of the image leave the page visible.
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.content import ResourceType
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.images import pil_image
from pyhanko.pdf_utils.layout import AxisAlignment, BoxConstraints, Margins, SimpleBoxLayoutRule
from pyhanko.pdf_utils.misc import FormFillingError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.text import TextBox, TextBoxStyle
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.stamp import BaseStamp, BaseStampStyle

from signserver.signing.errors import AppearanceImageInvalid, PdfFieldNotFound
from signserver.signing.pdf_inspect import pdf_parse_errors
from signserver.signing.stamp import APPEARANCE_SEAL, APPEARANCE_TEXT, StampSpec, stamp_style

__all__ = [
    "DEFAULT_SEAL_DIAMETER_MM",
    "SEAL_DIAMETER_RANGE_MM",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_SIDE_PIXELS",
    "PngInfo",
    "check_png",
    "open_png",
    "mm_to_points",
    "square_centred_in",
    "seal_box_over_field",
    "signed_field_box",
    "appearance_style",
    "SignatureStampStyle",
    "SealStampStyle",
]

# Round seals of agencies measure about 35 to 42 mm. The range admits oval and
# small seals while catching a value typed in points or centimetres.
DEFAULT_SEAL_DIAMETER_MM = 36.0
SEAL_DIAMETER_RANGE_MM = (20.0, 60.0)
POINTS_PER_MM = 72 / 25.4

# Limits of an uploaded image. 2000 pixels are 170 mm at 300 dpi, larger than
# any seal or signature, and 2000 x 2000 RGBA decodes to 16 MB at most.
MAX_IMAGE_BYTES = 1024 * 1024
MAX_IMAGE_SIDE_PIXELS = 2000
MIN_IMAGE_SIDE_PIXELS = 16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow modes that convert to RGBA without losing precision that matters here.
_SUPPORTED_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa"}
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)

# Rows of the signature appearance, as fractions of the box height with a cap in points.
_TITLE_ROW = (0.15, 14.0)
_NAME_ROW = (0.15, 14.0)
_TIME_ROW = (0.10, 9.0)
_ROW_FONT_SIZES = {"title": 10, "name": 10, "time": 7}
_PADDING = 2.0
_CENTRED = SimpleBoxLayoutRule(x_align=AxisAlignment.ALIGN_MID, y_align=AxisAlignment.ALIGN_MID, margins=Margins())


@dataclass(frozen=True)
class PngInfo:
    """Facts about a validated PNG upload."""

    width: int
    height: int
    size: int
    # Lower-case hex SHA-256 of the file as uploaded.
    sha256: str


def check_png(data: bytes, image: str) -> PngInfo:
    """Validate a PNG upload and return its dimensions and digest.

    The file must start with the PNG signature, be at most ``MAX_IMAGE_BYTES``
    long, measure 16 to ``MAX_IMAGE_SIDE_PIXELS`` pixels a side, and decode
    completely. The dimensions are read from the IHDR chunk before Pillow
    opens the file, so a small file that claims a huge image is rejected
    without allocating it. ``image`` names the upload in the error
    (AppearanceImageInvalid).
    """
    if not isinstance(data, bytes):
        raise AppearanceImageInvalid(image=image, reason=f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_IMAGE_BYTES:
        raise AppearanceImageInvalid(image=image, reason=f"the file has {len(data)} bytes, more than {MAX_IMAGE_BYTES}")
    if not data.startswith(PNG_SIGNATURE):
        raise AppearanceImageInvalid(image=image, reason="the file is not a PNG image (no PNG signature)")
    # PNG (ISO/IEC 15948) requires IHDR as the first chunk: length 13, then width and height.
    if len(data) < 24 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise AppearanceImageInvalid(image=image, reason="the PNG does not start with an IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    _check_dimensions(image, width, height)

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as header:
            if getattr(header, "is_animated", False):
                raise AppearanceImageInvalid(image=image, reason="animated PNG images are not supported")
            if header.mode not in _SUPPORTED_MODES:
                raise AppearanceImageInvalid(
                    image=image, reason=f"pixel mode {header.mode} is not supported, save it as 8-bit RGBA"
                )
            # verify() checks the chunk CRCs, load() decodes every pixel.
            header.verify()
        with Image.open(io.BytesIO(data), formats=["PNG"]) as decoded:
            decoded.load()
    except _IMAGE_ERRORS as exc:
        raise AppearanceImageInvalid(image=image, reason=f"the PNG cannot be decoded ({exc})"[:200]) from None

    return PngInfo(width=width, height=height, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def _check_dimensions(image: str, width: int, height: int) -> None:
    low, high = MIN_IMAGE_SIDE_PIXELS, MAX_IMAGE_SIDE_PIXELS
    if not (low <= width <= high and low <= height <= high):
        raise AppearanceImageInvalid(
            image=image, reason=f"the image is {width} x {height} pixels, each side must be {low} to {high}"
        )


def open_png(data: bytes, image: str = "image") -> Image.Image:
    """Validate ``data`` with ``check_png`` and return it decoded as an RGBA image.

    A key's image is the same for each of its signatures, so the last few
    decoded images are kept. The caller gets a copy it may change.
    """
    return _decoded_png(data, image).copy()


@functools.lru_cache(maxsize=16)
def _decoded_png(data: bytes, image: str) -> Image.Image:
    check_png(data, image)
    with Image.open(io.BytesIO(data), formats=["PNG"]) as decoded:
        return decoded.convert("RGBA")


def mm_to_points(millimetres: float) -> float:
    """Convert millimetres to PDF points (1/72 inch)."""
    return millimetres * POINTS_PER_MM


def square_centred_in(
    box: tuple[float, float, float, float], side: float
) -> tuple[float, float, float, float]:
    """Return the square of ``side`` points with the same centre as ``box``."""
    x1, y1, x2, y2 = box
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    half = side / 2
    return _rounded((centre_x - half, centre_y - half, centre_x + half, centre_y + half))


def seal_box_over_field(
    field_box: tuple[float, float, float, float], side: float
) -> tuple[float, float, float, float]:
    """Return the seal's square box that covers the left third of a signature field's box.

    The seal's right edge is at one third of the field's width and its centre
    at the field's vertical centre, so most of the seal lies left of the
    signature, as a seal stamped over a signed paper document does.
    """
    x1, y1, x2, y2 = field_box
    right = x1 + (x2 - x1) / 3
    centre_y = (y1 + y2) / 2
    return _rounded((right - side, centre_y - side / 2, right, centre_y + side / 2))


def _rounded(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    return tuple(round(value, 3) for value in box)  # type: ignore[return-value]


def signed_field_box(
    reader: PdfFileReader, field_name: str, page_count: int
) -> tuple[int, tuple[float, float, float, float]]:
    """Return the 1-based page and the box of the signed signature field ``field_name``.

    Raises PdfFieldNotFound when no signature field has that name, when it is
    not signed yet, or when its widget has no visible box on a page.
    """
    with pdf_parse_errors():
        try:
            matches = list(enumerate_sig_fields(reader, with_name=field_name))
        except FormFillingError:
            raise PdfFieldNotFound(field_name=field_name, reason="the field is not a signature field") from None
        if not matches:
            raise PdfFieldNotFound(field_name=field_name, reason="the document has no signature field of that name")
        _, value, field_ref = matches[0]
        if not value:
            raise PdfFieldNotFound(field_name=field_name, reason="the field is not signed yet")

        widget_ref = _widget_of(field_ref)
        if widget_ref is None:
            raise PdfFieldNotFound(field_name=field_name, reason="the field has no widget with a /Rect")
        x1, y1, x2, y2 = (float(coordinate) for coordinate in widget_ref.get_object()["/Rect"])
        box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise PdfFieldNotFound(field_name=field_name, reason="the signature is invisible (its box has no area)")

        page = _page_of_widget(reader, widget_ref, page_count)
    if page is None:
        raise PdfFieldNotFound(field_name=field_name, reason="the field's widget is on no page")
    return page, box


def _widget_of(field_ref: generic.IndirectObject) -> generic.IndirectObject | None:
    """Return the field's widget annotation: the field itself when merged with it, else its first kid with a /Rect."""
    field = field_ref.get_object()
    if "/Rect" in field:
        return field_ref
    kids = field.get("/Kids")
    if not isinstance(kids, generic.ArrayObject):
        return None
    for kid in kids:
        if isinstance(kid, generic.IndirectObject) and "/Rect" in kid.get_object():
            return kid
    return None


def _page_of_widget(reader: PdfFileReader, widget_ref: generic.IndirectObject, page_count: int) -> int | None:
    target = (widget_ref.idnum, widget_ref.generation)
    for index in range(page_count):
        page_ref, _ = reader.find_page_for_modification(index)
        annotations = page_ref.get_object().get("/Annots")
        if isinstance(annotations, generic.IndirectObject):
            annotations = annotations.get_object()
        if not isinstance(annotations, generic.ArrayObject):
            continue
        for annotation in annotations:
            if isinstance(annotation, generic.IndirectObject) and (annotation.idnum, annotation.generation) == target:
                return index + 1
    return None


def appearance_style(stamp: StampSpec | None, font_path: Path, text_params: dict[str, str]) -> BaseStampStyle:
    """Build the pyHanko stamp style of ``stamp``'s appearance.

    Without a stamp, or for the "text" appearance, this is the text box of
    ``stamp_style``. Raises AppearanceImageInvalid if the stored image no
    longer decodes.
    """
    if stamp is None or stamp.appearance == APPEARANCE_TEXT:
        return stamp_style(font_path, text_params)

    assert stamp.image_png is not None  # StampSpec requires an image for these appearances
    if stamp.appearance == APPEARANCE_SEAL:
        return SealStampStyle(image=open_png(stamp.image_png, "seal_image"))
    return SignatureStampStyle(
        image=open_png(stamp.image_png, "signature_image"),
        title=stamp.signer_title.upper() if stamp.signature_text else "",
        signer_name=stamp.signer_name if stamp.signature_text else "",
        font_path=str(font_path),
        bold_font_path=str(_bold_variant(font_path)),
    )


def _bold_variant(font_path: Path) -> Path:
    """Return the bold face beside a TeX Gyre regular font, else the font itself.

    TeX Gyre fonts all have 1000 units per em, which pyHanko needs (see ``fonts``).
    """
    if font_path.name.startswith("texgyre") and "-regular." in font_path.name:
        bold = font_path.with_name(font_path.name.replace("-regular.", "-bold."))
        if bold.is_file():
            return bold
    return font_path


@dataclass(frozen=True)
class SealStampStyle(BaseStampStyle):
    """The agency seal image, fitted into the stamp box with its aspect ratio kept.

    The box is made square with the seal's real diameter as its side, so a
    square image is drawn at real size.
    """

    image: Image.Image | None = None
    border_width: int = 0

    def create_stamp(self, writer: BasePdfFileWriter, box: BoxConstraints, text_params: dict) -> BaseStamp:
        return _SealStamp(writer, self, box)


@dataclass(frozen=True)
class SignatureStampStyle(BaseStampStyle):
    """Signature image, centred, with a small signing-time line below, and optional title above and name below.

    The title and name use the bold face of the stamp font where it has one.
    """

    image: Image.Image | None = None
    title: str = ""
    signer_name: str = ""
    font_path: str = ""
    bold_font_path: str = ""
    border_width: int = 0

    def create_stamp(self, writer: BasePdfFileWriter, box: BoxConstraints, text_params: dict) -> BaseStamp:
        return _SignatureStamp(writer, self, box, text_params.get("signing_time", ""))


class _SealStamp(BaseStamp):
    def _render_inner_content(self) -> list[bytes]:
        style: SealStampStyle = self.style
        assert style.image is not None
        area = (0.0, 0.0, float(self.box.width), float(self.box.height))
        return [_draw_image(self, style.image, area, "Seal")]


class _SignatureStamp(BaseStamp):
    def __init__(self, writer: BasePdfFileWriter, style: SignatureStampStyle, box: BoxConstraints,
                 signing_time: str) -> None:
        super().__init__(writer=writer, style=style, box=box)
        self.signing_time = signing_time

    def _render_inner_content(self) -> list[bytes]:
        style: SignatureStampStyle = self.style
        assert style.image is not None
        width, height = float(self.box.width), float(self.box.height)
        inner_width = width - 2 * _PADDING

        def row_height(row: tuple[float, float]) -> float:
            fraction, cap = row
            return min(height * fraction, cap)

        # Rows from the top: title, image, name, signing time.
        title_height = row_height(_TITLE_ROW) if style.title else 0.0
        name_height = row_height(_NAME_ROW) if style.signer_name else 0.0
        time_height = row_height(_TIME_ROW) if self.signing_time else 0.0
        top = height - _PADDING
        image_top = top - title_height
        time_bottom = _PADDING
        name_bottom = time_bottom + time_height
        image_bottom = name_bottom + name_height

        commands = []
        regular = GlyphAccumulatorFactory(font_file=style.font_path)
        bold = GlyphAccumulatorFactory(font_file=style.bold_font_path)
        if style.title:
            commands.append(self._text_row(style.title, (_PADDING, image_top, inner_width, title_height),
                                           bold, _ROW_FONT_SIZES["title"], "F1"))
        image_area = (_PADDING, image_bottom, inner_width, max(image_top - image_bottom, 1.0))
        commands.append(_draw_image(self, style.image, image_area, "Signature"))
        if style.signer_name:
            commands.append(self._text_row(style.signer_name, (_PADDING, name_bottom, inner_width, name_height),
                                           bold, _ROW_FONT_SIZES["name"], "F2"))
        if self.signing_time:
            commands.append(self._text_row(f"Thời gian ký: {self.signing_time}",
                                           (_PADDING, time_bottom, inner_width, time_height),
                                           regular, _ROW_FONT_SIZES["time"], "F3"))
        return commands

    def _text_row(self, text: str, area: tuple[float, float, float, float], font: GlyphAccumulatorFactory,
                  font_size: int, resource_name: str) -> bytes:
        """Draw one line of text centred in ``area`` (x, y, width, height), shrunk to fit if needed."""
        x, y, width, height = area
        text_box = TextBox(
            TextBoxStyle(font=font, font_size=font_size, box_layout_rule=_CENTRED),
            writer=self.writer,
            resources=self.resources,
            box=BoxConstraints(width=max(width, 1.0), height=max(height, 1.0)),
            font_name=resource_name,
        )
        text_box.content = text
        return b"q 1 0 0 1 %s %s cm %s Q" % (_number(x), _number(y), text_box.render())


def _draw_image(stamp: BaseStamp, image: Image.Image, area: tuple[float, float, float, float], name: str) -> bytes:
    """Draw ``image`` as large as fits in ``area`` (x, y, width, height), centred, with its aspect ratio kept."""
    x, y, width, height = area
    scale = min(width / image.width, height / image.height)
    drawn_width, drawn_height = image.width * scale, image.height * scale
    left = x + (width - drawn_width) / 2
    bottom = y + (height - drawn_height) / 2

    stamp.set_resource(category=ResourceType.XOBJECT, name=generic.pdf_name(f"/{name}"),
                       value=pil_image(image, stamp.writer))
    matrix = b" ".join(_number(value) for value in (drawn_width, 0, 0, drawn_height, left, bottom))
    return b"q %s cm /%s Do Q" % (matrix, name.encode("ascii"))


def _number(value: float) -> bytes:
    """Format a number for a content stream: fixed point, since PDF has no exponent notation."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return b"0" if text in ("", "-0") else text.encode("ascii")
