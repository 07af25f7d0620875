"""A faster reader of PDF hex strings for pyHanko.

pyHanko 0.38 reads a hex string one byte at a time through Python calls. A
signature's /Contents is such a string of 32,768 hex digits here, so each
time a signed PDF was opened to check or validate its signatures, reading it
cost about 130 ms of CPU, more than the whole signature. ``install`` replaces
pyHanko's reader with one that finds the closing ``>`` in blocks and decodes
with ``binascii``, giving the same result and raising the same error class.
A hex string containing ``%`` (a comment, which pyHanko skips) is left to
pyHanko's own reader.
"""

from __future__ import annotations

import binascii
import os
from typing import Any, BinaryIO

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.misc import PDF_WHITESPACE, PdfStreamError

__all__ = ["install", "read_hex_string"]

BLOCK_BYTES = 64 * 1024
HEX_DIGITS = b"0123456789abcdefABCDEF"

_pyhanko_reader = generic.read_hex_string_from_stream


def read_hex_string(stream: BinaryIO) -> Any:
    """Read ``<...>`` at the stream's position and return the PDF string object, as pyHanko's reader does."""
    opening = stream.tell()
    stream.read(1)
    blocks = []
    while True:
        block = stream.read(BLOCK_BYTES)
        if not block:
            raise PdfStreamError("Stream ended prematurely")
        end = block.find(b">")
        if end >= 0:
            blocks.append(block[:end])
            stream.seek(end + 1 - len(block), os.SEEK_CUR)
            break
        blocks.append(block)
    text = b"".join(blocks)
    if b"%" in text:
        stream.seek(opening)
        return _pyhanko_reader(stream)
    digits = text.translate(None, PDF_WHITESPACE)
    stray = digits.translate(None, HEX_DIGITS)
    if stray:
        raise PdfStreamError("Unexpected token in hex string: " + repr(stray[:1]))
    if len(digits) % 2:
        digits += b"0"
    return generic.pdf_string(binascii.unhexlify(digits))


def install() -> None:
    """Make pyHanko's object reader use :func:`read_hex_string` (idempotent)."""
    generic.read_hex_string_from_stream = read_hex_string
