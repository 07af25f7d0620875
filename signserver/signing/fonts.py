"""The font of the visible signature stamp, and Unicode normalisation of its text.

The 14 standard PDF fonts use single-byte encodings without the Vietnamese
letters, so the stamp embeds an OpenType font instead. TeX Gyre Termes
(Debian's fonts-texgyre) is a Times clone, the usual face of Vietnamese
administrative documents, and covers the whole Vietnamese alphabet.

pyHanko 0.38 writes a CID font's glyph widths (/W) and TJ adjustments in the
font's own units, while PDF reads them as thousandths of an em. A font whose
``unitsPerEm`` is not 1000 therefore renders with wrong letter spacing
(Liberation Serif, at 2048 units per em, came out spread twice as wide and
ran past the stamp box). Such fonts are rejected with a clear error.
"""

from __future__ import annotations

import os
import unicodedata
from functools import lru_cache
from pathlib import Path

from fontTools.ttLib import TTFont, TTLibError

from signserver.signing.errors import StampFontMissing, StampFontUnsupported

__all__ = ["STAMP_FONT_ENV_VAR", "DEFAULT_STAMP_FONT", "REQUIRED_UNITS_PER_EM", "stamp_font_path", "nfc"]

STAMP_FONT_ENV_VAR = "SIGNSERVER_STAMP_FONT"
DEFAULT_STAMP_FONT = Path("/usr/share/texmf/fonts/opentype/public/tex-gyre/texgyretermes-regular.otf")
REQUIRED_UNITS_PER_EM = 1000


@lru_cache(maxsize=8)
def _units_per_em(path: Path, modified: float) -> int:
    try:
        return int(TTFont(str(path), lazy=True)["head"].unitsPerEm)
    except (TTLibError, KeyError, OSError) as exc:
        raise StampFontUnsupported(path=str(path), reason=f"not a readable OpenType font ({exc})") from None


def stamp_font_path() -> Path:
    """Return the OpenType font file for the stamp.

    ``SIGNSERVER_STAMP_FONT`` overrides the default TeX Gyre Termes Regular.
    Raises StampFontMissing when the file does not exist, and
    StampFontUnsupported when its units per em are not 1000.
    """
    configured = os.environ.get(STAMP_FONT_ENV_VAR)
    path = Path(configured) if configured else DEFAULT_STAMP_FONT
    if not path.is_file():
        raise StampFontMissing(path=str(path), env_var=STAMP_FONT_ENV_VAR)
    units = _units_per_em(path, path.stat().st_mtime)
    if units != REQUIRED_UNITS_PER_EM:
        raise StampFontUnsupported(
            path=str(path), reason=f"unitsPerEm is {units}; pyHanko renders only {REQUIRED_UNITS_PER_EM} correctly"
        )
    return path


def nfc(text: str) -> str:
    """Return ``text`` in Unicode normalisation form C.

    Vietnamese text typed on some keyboards arrives decomposed (a base letter
    followed by combining marks). The font shapes both forms, but text
    extracted from the PDF and names compared with certificates must match
    byte for byte, so every stamp string is composed first.
    """
    return unicodedata.normalize("NFC", text)
