"""The visible signature stamp: its placement, its Vietnamese text and its style.

``StampSpec`` also names the appearance: the text-only box built here, or an
official's signature image or an agency seal image (see ``appearance``). The
text box lists the signer, title, agency, signing time in Vietnam time and
reason, one item per line, in an embedded TrueType font (see ``fonts``).
pyHanko lays the text out with HarfBuzz and writes a /ToUnicode map, so text
extraction returns the same Unicode strings.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from asn1crypto import x509
from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.stamp import TextStampStyle

from signserver.signing.errors import PdfStampInvalid
from signserver.signing.fonts import nfc

__all__ = [
    "APPEARANCE_TEXT",
    "APPEARANCE_SIGNATURE",
    "APPEARANCE_SEAL",
    "APPEARANCES",
    "VIETNAM_TIME_ZONE",
    "StampSpec",
    "format_signing_time",
    "stamp_lines",
    "stamp_style",
    "stamp_text_params",
    "single_line",
]

VIETNAM_TIME_ZONE = ZoneInfo("Asia/Ho_Chi_Minh")

# A text-only box (used for copies), an official's signature image (between the
# position title and the name typed in the document), or an agency seal image at real size.
APPEARANCE_TEXT = "text"
APPEARANCE_SIGNATURE = "signature"
APPEARANCE_SEAL = "seal"
APPEARANCES = (APPEARANCE_SIGNATURE, APPEARANCE_SEAL, APPEARANCE_TEXT)

STAMP_FONT_SIZE = 9
STAMP_BORDER_WIDTH = 1

# pyHanko shrinks a stamp's text to fit its box but does not wrap it, so long
# values are wrapped here and the reason is shortened. The full reason stays in
# the signature dictionary's /Reason.
STAMP_LINE_CHARACTERS = 52
STAMP_REASON_CHARACTERS = 150

# Each line is a %-template over ``stamp_text_params``. Values are substituted
# once, so a '%' inside a name or reason is printed as is.
_LINE_TEMPLATES = (
    ("signer_name", "Người ký: %(signer_name)s"),
    ("signer_title", "%(signer_title)s"),
    ("agency", "Cơ quan: %(agency)s"),
    ("signing_time", "Thời gian ký: %(signing_time)s"),
    ("reason", "Lý do: %(reason)s"),
)


@dataclass(frozen=True)
class StampSpec:
    """Placement and wording of a visible signature stamp.

    ``page`` is 1-based. ``box`` is (x1, y1, x2, y2) in PDF user-space points
    with the origin at the bottom left of the page. The texts are stored in
    NFC on one line (see ``single_line``). ``image_png`` is the signature or
    seal PNG, required by those appearances and unused by "text". Raises
    PdfStampInvalid when a value cannot be used.
    """

    page: int
    box: tuple[float, float, float, float]
    signer_name: str
    signer_title: str
    agency: str
    appearance: str = APPEARANCE_TEXT
    image_png: bytes | None = field(default=None, repr=False)
    # With the signature appearance, also draw the position title above the image and the name below it.
    signature_text: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.page, bool) or not isinstance(self.page, int) or self.page < 1:
            raise PdfStampInvalid(reason=f"page must be an integer of at least 1, got {self.page!r}")

        if len(self.box) != 4 or not all(_is_finite_number(value) for value in self.box):
            raise PdfStampInvalid(reason=f"box must be four finite numbers (x1, y1, x2, y2), got {self.box!r}")
        x1, y1, x2, y2 = self.box
        if x2 <= x1 or y2 <= y1:
            raise PdfStampInvalid(reason=f"box must have x1 < x2 and y1 < y2, got {self.box!r}")
        object.__setattr__(self, "box", (float(x1), float(y1), float(x2), float(y2)))

        for name in ("signer_name", "signer_title", "agency"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise PdfStampInvalid(reason=f"{name} must be a string, got {type(value).__name__}")
            object.__setattr__(self, name, single_line(name, value))
        if not self.signer_name:
            raise PdfStampInvalid(reason="signer_name is empty, set it to the signer's full name")

        if self.appearance not in APPEARANCES:
            raise PdfStampInvalid(reason=f"appearance must be one of {', '.join(APPEARANCES)}, got {self.appearance!r}")
        if self.appearance != APPEARANCE_TEXT and not self.image_png:
            raise PdfStampInvalid(reason=f"the {self.appearance} appearance needs image_png")


def format_signing_time(signing_time: datetime) -> str:
    """Format an aware datetime as Vietnam time, e.g. ``05/03/2025 14:30:00 (+07:00)``."""
    local_time = signing_time.astimezone(VIETNAM_TIME_ZONE)
    offset = local_time.strftime("%z")
    return f"{local_time:%d/%m/%Y %H:%M:%S} ({offset[:3]}:{offset[3:]})"


def stamp_text_params(
    stamp: StampSpec | None, certificate: x509.Certificate, *, reason: str, signing_time: datetime
) -> dict[str, str]:
    """Return the values of the stamp lines, all in NFC.

    Without a ``StampSpec`` (an invisible signature, or an existing field that
    brings its own box) the signer name and agency come from the certificate's
    common name and organization.
    """
    reason = single_line("reason", reason)
    if stamp is not None:
        signer_name, signer_title, agency = stamp.signer_name, stamp.signer_title, stamp.agency
    else:
        subject = certificate.subject.native
        signer_name = _first_value(subject.get("common_name")) or certificate.subject.human_friendly
        signer_title = ""
        agency = _first_value(subject.get("organization_name"))

    return {
        "signer_name": nfc(signer_name),
        "signer_title": _wrap(nfc(signer_title)),
        "agency": _wrap(nfc(agency)),
        "signing_time": format_signing_time(signing_time),
        "reason": _wrap(textwrap.shorten(reason, STAMP_REASON_CHARACTERS, placeholder=" …")),
    }


def _wrap(value: str) -> str:
    return "\n".join(textwrap.wrap(value, STAMP_LINE_CHARACTERS)) if value else value


def stamp_lines(text_params: dict[str, str]) -> list[str]:
    """Return the stamp's lines as rendered, leaving out the empty items."""
    return [template % text_params for key, template in _LINE_TEMPLATES if text_params.get(key)]


def stamp_style(font_path: Path, text_params: dict[str, str]) -> TextStampStyle:
    """Build the pyHanko stamp style, with the font embedded and subset by pyHanko.

    pyHanko shrinks the text to fit the box and never enlarges it.
    """
    template = "\n".join(template for key, template in _LINE_TEMPLATES if text_params.get(key))
    font = GlyphAccumulatorFactory(font_file=str(font_path), font_size=STAMP_FONT_SIZE)
    return TextStampStyle(
        stamp_text=template,
        text_box_style=TextBoxStyle(font=font, font_size=STAMP_FONT_SIZE),
        border_width=STAMP_BORDER_WIDTH,
        background=None,
    )


def single_line(name: str, value: str) -> str:
    """Return ``value`` in NFC on one line, with each run of whitespace made one space.

    Raises PdfStampInvalid if a control character other than whitespace remains.
    """
    collapsed = " ".join(value.split())
    if not collapsed.isprintable():
        raise PdfStampInvalid(reason=f"{name} contains a control character")
    return nfc(collapsed)


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _first_value(value: str | list[str] | None) -> str:
    if isinstance(value, list):
        return value[0] if value else ""
    return value or ""
