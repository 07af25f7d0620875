"""Placement of a visible signature relative to a text in the PDF, such as "CHỦ TỊCH" or "Nơi nhận:".

pdfminer.six extracts each character with its bounding box. The anchor and
the page text are compared in Unicode NFC with all whitespace removed. PDF
producers split words into separate text runs and draw spaces as gaps
instead of space characters, and some write Vietnamese letters as a base
letter followed by combining marks. The comparison is case-sensitive, so
"CHỦ TỊCH" in a signature block does not match "Chủ tịch" in the body text.

Occurrences are ordered by page, then top to bottom, then left to right, in
the page's default user space: the space of a signature field's /Rect,
before /Rotate turns the page for display. Only horizontal text is matched.
Text in annotations, such as earlier signature stamps, is not searched.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import structlog
from pdfminer.converter import PDFPageAggregator
from pdfminer.layout import LTChar, LTContainer
from pdfminer.pdfdocument import PDFDocument
from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
from pdfminer.pdfpage import PDFPage
from pdfminer.pdfparser import PDFParser
from pdfminer.psparser import PSException

from signserver.signing.errors import AnchorNotFound

__all__ = ["MAX_ANCHOR_LENGTH", "MAX_SEARCH_PAGES", "AnchorPlacement", "AnchorMatch", "find_anchor",
           "box_below_anchor", "normalise_anchor"]

log = structlog.get_logger(__name__)

MAX_ANCHOR_LENGTH = 200
# Pages searched at most, from the end for a negative occurrence and from the
# start otherwise. The search runs at submission while the client waits: a
# text page of the generated sample takes about 45 ms (measured on a 2-core
# machine), so 200 pages take about 9 s.
MAX_SEARCH_PAGES = 200

# pdfminer raises its own exceptions for syntax errors, and the built-in ones
# below for other damage it meets while interpreting content streams.
_EXTRACTION_ERRORS = (PSException, ValueError, LookupError, TypeError, AttributeError, AssertionError,
                      ArithmeticError, RecursionError, NotImplementedError, EOFError)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class AnchorPlacement:
    """A stamp box placed under a text of the PDF instead of at fixed coordinates."""

    text: str
    # 1-based from the start of the document, or negative from its end (-1: the last occurrence).
    occurrence: int = -1
    # (dx, dy) in points from the position centred under the text, x to the right and y upwards.
    offset: tuple[float, float] = (0.0, 0.0)
    # (width, height) in points; None lets the caller's default apply.
    size: tuple[float, float] | None = None


@dataclass(frozen=True)
class AnchorMatch:
    """One occurrence of the anchor text."""

    page: int  # 1-based
    # Bounding box of the matched characters, (x1, y1, x2, y2) in default user space.
    box: Box


def normalise_anchor(text: str) -> str:
    """Return ``text`` as it is compared: NFC, without whitespace."""
    return "".join(unicodedata.normalize("NFC", text).split())


def find_anchor(
    path: Path, password: str | None, anchor: str, *, occurrence: int = -1, page: int | None = None,
) -> AnchorMatch:
    """Find the ``occurrence``-th appearance of ``anchor`` in the PDF at ``path``.

    ``occurrence`` counts from 1 at the start of the document, or from -1 at
    its end (the default: the last occurrence). With ``page`` (1-based), only
    that page is searched. Raises AnchorNotFound when the anchor occurs fewer
    times than asked in the pages searched, or when the text cannot be
    extracted.
    """
    needle = normalise_anchor(anchor)
    if not needle or len(needle) > MAX_ANCHOR_LENGTH or occurrence == 0:
        raise ValueError(f"anchor must have 1 to {MAX_ANCHOR_LENGTH} characters and occurrence must not be 0")

    found = 0
    try:
        with Path(path).open("rb") as stream:
            document = PDFDocument(PDFParser(stream), password=password or "")
            pages = list(PDFPage.create_pages(document))
            numbers = [page] if page is not None else list(range(1, len(pages) + 1))
            if occurrence < 0:
                numbers.reverse()

            interpreter, device = _interpreter()
            for number in numbers[:MAX_SEARCH_PAGES]:
                if number > len(pages):
                    break
                interpreter.process_page(pages[number - 1])
                matches = _page_matches(device.get_result(), pages[number - 1], needle)
                if occurrence < 0:
                    matches.reverse()
                remaining = abs(occurrence) - found
                if remaining <= len(matches):
                    return AnchorMatch(page=number, box=matches[remaining - 1])
                found += len(matches)
    except _EXTRACTION_ERRORS as exc:
        log.warning("pdf_anchor.extraction_failed", error=f"{type(exc).__name__}: {exc}"[:200])
        raise AnchorNotFound(anchor=anchor, occurrence=occurrence, found=found,
                             reason=f"the text of the PDF cannot be extracted ({type(exc).__name__})") from None

    searched_count = min(len(numbers), MAX_SEARCH_PAGES)
    searched = f"page {page}" if page is not None else f"{searched_count} page(s) searched"
    raise AnchorNotFound(anchor=anchor, occurrence=occurrence, found=found,
                         reason=f"it occurs {found} times in {searched}")


def box_below_anchor(anchor_box: Box, size: tuple[float, float], offset: tuple[float, float]) -> Box:
    """Return a box of ``size`` (width, height) centred under ``anchor_box``, moved by ``offset``.

    Without an offset the box's top edge touches the bottom of the anchor
    text. ``offset`` is (dx, dy) in points, x to the right and y upwards.
    """
    x1, y1, x2, _ = anchor_box
    width, height = size
    dx, dy = offset
    centre_x = (x1 + x2) / 2 + dx
    top = y1 + dy
    return tuple(round(value, 3) for value in (centre_x - width / 2, top - height, centre_x + width / 2, top))  # type: ignore[return-value]


def _interpreter() -> tuple[PDFPageInterpreter, PDFPageAggregator]:
    # Without layout parameters pdfminer returns the characters in content-stream order, ungrouped.
    resources = PDFResourceManager(caching=True)
    device = PDFPageAggregator(resources, laparams=None)
    return PDFPageInterpreter(resources, device), device


def _page_matches(layout: LTContainer, page: PDFPage, needle: str) -> list[Box]:
    """Return the boxes of every occurrence of ``needle`` on one page, in reading order."""
    glyphs: list[tuple[str, Box]] = []
    for character in _characters(layout):
        _append_glyph(glyphs, character.get_text(), _to_user_space(character.bbox, page))

    # The page text without whitespace, and for each of its characters the glyph it came from.
    text_parts: list[str] = []
    owners: list[int] = []
    for index in _reading_order(glyphs):
        normalised = "".join(unicodedata.normalize("NFC", glyphs[index][0]).split())
        text_parts.append(normalised)
        owners.extend([index] * len(normalised))
    haystack = "".join(text_parts)

    boxes = []
    start = haystack.find(needle)
    while start >= 0:
        covered = [glyphs[index][1] for index in sorted(set(owners[start:start + len(needle)]))]
        boxes.append((min(b[0] for b in covered), min(b[1] for b in covered),
                      max(b[2] for b in covered), max(b[3] for b in covered)))
        start = haystack.find(needle, start + 1)
    return boxes


def _characters(container: LTContainer) -> list[LTChar]:
    """Return the characters of a page and of the form XObjects it draws, in content-stream order."""
    characters = []
    for item in container:
        if isinstance(item, LTChar):
            characters.append(item)
        elif isinstance(item, LTContainer):
            characters.extend(_characters(item))
    return characters


def _reading_order(glyphs: list[tuple[str, Box]]) -> list[int]:
    """Return glyph indexes line by line, top to bottom and left to right in user space.

    Consecutive glyphs of the content stream form a line while they share a
    baseline and move right. The lines are then sorted by height and left edge.
    """
    lines: list[list[int]] = []
    for index, (_, box) in enumerate(glyphs):
        if lines:
            _, previous = glyphs[lines[-1][-1]]
            height = max(box[3] - box[1], previous[3] - previous[1], 1.0)
            if abs(box[1] - previous[1]) <= 0.3 * height and box[0] >= previous[0] - 0.5 * height:
                lines[-1].append(index)
                continue
        lines.append([index])
    lines.sort(key=lambda line: (-round(glyphs[line[0]][1][1]), glyphs[line[0]][1][0]))
    return [index for line in lines for index in line]


def _append_glyph(glyphs: list[tuple[str, Box]], text: str, box: Box) -> None:
    """Append a glyph, joining a combining mark drawn as its own glyph to the letter before it."""
    if glyphs and text and unicodedata.combining(text[0]):
        previous_text, previous_box = glyphs[-1]
        glyphs[-1] = (previous_text + text, (min(previous_box[0], box[0]), min(previous_box[1], box[1]),
                                             max(previous_box[2], box[2]), max(previous_box[3], box[3])))
        return
    glyphs.append((text, box))


def _to_user_space(box: Box, page: PDFPage) -> Box:
    """Undo the transformation pdfminer applies for the MediaBox origin and /Rotate."""
    media_x1, media_y1, media_x2, media_y2 = page.mediabox
    x1, y1, x2, y2 = box

    def point(x: float, y: float) -> tuple[float, float]:
        # Inverse of the initial matrix of pdfminer's PDFPageInterpreter.process_page.
        if page.rotate == 90:
            return media_x2 - y, x + media_y1
        if page.rotate == 180:
            return media_x2 - x, media_y2 - y
        if page.rotate == 270:
            return y + media_x1, media_y2 - x
        return x + media_x1, y + media_y1

    corners = [point(x1, y1), point(x2, y2)]
    xs = [corner[0] for corner in corners]
    ys = [corner[1] for corner in corners]
    return (round(min(xs), 3), round(min(ys), 3), round(max(xs), 3), round(max(ys), 3))
