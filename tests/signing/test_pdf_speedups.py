"""The fast hex-string reader gives what pyHanko's own reader gives, on the same streams."""

from __future__ import annotations

import io
import os
import random

import pytest
from pyhanko.pdf_utils.misc import PdfStreamError

from signserver.signing import pdf_speedups

PYHANKO_READER = pdf_speedups._pyhanko_reader


def both_readers(data: bytes) -> tuple[object, int, object, int]:
    """Read ``data`` with both readers; return each result (or exception class) and the position after it."""
    outcomes: list[object] = []
    for reader in (PYHANKO_READER, pdf_speedups.read_hex_string):
        stream = io.BytesIO(data)
        try:
            result: object = reader(stream)
        except PdfStreamError as exc:
            result = type(exc)
        outcomes.extend([result, stream.tell()])
    return outcomes[0], outcomes[1], outcomes[2], outcomes[3]  # type: ignore[return-value]


CASES = [
    b"<>",
    b"<48656C6C6F> rest",
    b"<48 65 6c\n6c\r\n6f\t>",
    b"<abc>",  # odd length: a trailing 0 is implied
    b"<4\x008>",
    b"<41G2>",  # not a hex digit
    b"<4142",  # never closed
    b"<41 % a comment > still a comment\n42>",
    b"<" + b"0" * 200_000 + b">trailer",  # longer than one block
]


@pytest.mark.parametrize("data", CASES, ids=range(len(CASES)))
def test_same_result_and_position(data: bytes) -> None:
    slow, slow_end, fast, fast_end = both_readers(data)
    assert fast == slow
    if slow is not PdfStreamError:
        assert fast_end == slow_end


def test_random_signature_contents() -> None:
    generator = random.Random(20261205)
    for _ in range(50):
        payload = os.urandom(generator.randint(0, 20_000)).hex()
        spaced = "".join(char + (" " if generator.random() < 0.01 else "") for char in payload)
        data = ("<" + spaced.upper() if generator.random() < 0.5 else "<" + spaced).encode() + b"> /Type /Sig"
        slow, slow_end, fast, fast_end = both_readers(data)
        assert (fast, fast_end) == (slow, slow_end)


def test_installed_for_pdf_reading() -> None:
    from pyhanko.pdf_utils import generic

    import signserver.signing.pdf_inspect  # noqa: F401 - installs the reader

    assert generic.read_hex_string_from_stream is pdf_speedups.read_hex_string
