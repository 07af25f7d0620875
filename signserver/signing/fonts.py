"""The font of the visible signature stamp, and Unicode normalisation of its text.

The 14 standard PDF fonts use single-byte encodings without the Vietnamese
letters, so the stamp embeds a TrueType font instead. Liberation Serif has
the metrics of Times New Roman, the usual face of Vietnamese administrative
documents, and covers the Vietnamese alphabet.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from signserver.signing.errors import StampFontMissing

__all__ = ["STAMP_FONT_ENV_VAR", "DEFAULT_STAMP_FONT", "stamp_font_path", "nfc"]

STAMP_FONT_ENV_VAR = "SIGNSERVER_STAMP_FONT"
DEFAULT_STAMP_FONT = Path("/usr/share/fonts/truetype/liberation2/LiberationSerif-Regular.ttf")


def stamp_font_path() -> Path:
    """Return the TrueType or OpenType font file for the stamp.

    ``SIGNSERVER_STAMP_FONT`` overrides the default Liberation Serif Regular.
    Raises StampFontMissing when the file does not exist.
    """
    configured = os.environ.get(STAMP_FONT_ENV_VAR)
    path = Path(configured) if configured else DEFAULT_STAMP_FONT
    if not path.is_file():
        raise StampFontMissing(path=str(path), env_var=STAMP_FONT_ENV_VAR)
    return path


def nfc(text: str) -> str:
    """Return ``text`` in Unicode normalisation form C.

    Vietnamese text typed on some keyboards arrives decomposed (a base letter
    followed by combining marks). The font shapes both forms, but text
    extracted from the PDF and names compared with certificates must match
    byte for byte, so every stamp string is composed first.
    """
    return unicodedata.normalize("NFC", text)
