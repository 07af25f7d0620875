"""Build hostile and damaged PDF files at test time, for the parser's limits.

Each builder returns the file's bytes, and ``write_hostile_set`` writes them
all into a directory, so no binary file is kept in the repository. Most
files take a few KB on disk and the largest, ``many-objects``, about 45 MB.
They aim at the parser's weak points: truncation, deep nesting, cycles,
huge object counts and streams that inflate far beyond their size.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["HOSTILE_BUILDERS", "build_pdf", "valid_pdf", "write_hostile_set"]

HEADER = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
MEDIA_BOX = b"[0 0 595 842]"
PAGE_CONTENT = b"0.5 w 72 72 m 523 770 l S\n"
GIB = 1024 * 1024 * 1024
DEEP_NESTING_LEVELS = 100_000
DEEP_PAGE_TREE_LEVELS = 5_000
MANY_OBJECTS = 1_000_000
XREF_STREAM_ENTRIES = 3_000_000
MANY_PAGES = 20_000
CLAIMED_OBJECTS = 2_000_000_000
HUGE_PAGE_COUNT = 2_147_483_647
_ZERO_BLOCK = bytes(1024 * 1024)


def build_pdf(objects: Iterable[tuple[int, bytes]], *, root: int = 1, trailer_extra: bytes = b"",
              header: bytes = HEADER, newline: bytes = b"\n") -> bytes:
    """Return a PDF of ``objects`` (number, body) with a correct xref table, trailer and ``%%EOF``.

    ``newline`` separates the parts of each object, while the xref table and trailer always use LF.
    """
    parts = [header]
    offset = len(header)
    offsets: dict[int, int] = {}
    for number, body in objects:
        chunk = b"%d 0 obj" % number + newline + body + newline + b"endobj" + newline
        offsets[number] = offset
        parts.append(chunk)
        offset += len(chunk)

    size = max(offsets) + 1
    xref = [b"xref\n0 %d\n" % size, b"0000000000 65535 f\r\n"]
    for number in range(1, size):
        if number in offsets:
            xref.append(b"%010d 00000 n\r\n" % offsets[number])
        else:
            xref.append(b"0000000000 00000 f\r\n")
    parts.extend(xref)
    parts.append(b"trailer\n<< /Size %d /Root %d 0 R " % (size, root) + trailer_extra + b">>\n")
    parts.append(b"startxref\n%d\n%%%%EOF\n" % offset)
    return b"".join(parts)


def _stream(dictionary: bytes, data: bytes) -> bytes:
    return b"<< " + dictionary + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def _one_page_objects(catalog_extra: bytes = b"", page_extra: bytes = b"") -> list[tuple[int, bytes]]:
    return [
        (1, b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b">>"),
        (2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        (3, b"<< /Type /Page /Parent 2 0 R /MediaBox " + MEDIA_BOX + b" /Contents 4 0 R " + page_extra + b">>"),
        (4, _stream(b"", PAGE_CONTENT)),
    ]


def valid_pdf() -> bytes:
    """Return a well-formed one-page PDF, the control that every check must sign."""
    return build_pdf(_one_page_objects())


def _cut_at(marker: bytes, extra: int) -> bytes:
    data = valid_pdf()
    return data[: data.index(marker) + extra]


def empty_file() -> bytes:
    return b""


def not_a_pdf() -> bytes:
    return b"PK\x03\x04" + b"Gi\xe1\xba\xa5y x\xc3\xa1c nh\xe1\xba\xadn h\xe1\xbb\x93 s\xc6\xa1\n" * 200


def truncated_in_header() -> bytes:
    return valid_pdf()[:5]


def truncated_in_object() -> bytes:
    return _cut_at(b"/Type /Page ", 4)


def truncated_in_stream() -> bytes:
    return _cut_at(b"stream\n", 12)


def truncated_in_xref() -> bytes:
    return _cut_at(b"xref\n", 30)


def truncated_in_trailer() -> bytes:
    return _cut_at(b"trailer\n", 14)


def truncated_in_startxref() -> bytes:
    return _cut_at(b"startxref\n", 12)


def no_eof_marker() -> bytes:
    data = valid_pdf()
    return data[: data.rindex(b"%%EOF")]


def deep_array() -> bytes:
    nested = b"[" * DEEP_NESTING_LEVELS + b"]" * DEEP_NESTING_LEVELS
    return build_pdf(_one_page_objects(catalog_extra=b"/Deep " + nested + b" "))


def deep_dictionary() -> bytes:
    nested = b"<< /A " * DEEP_NESTING_LEVELS + b"0" + b" >>" * DEEP_NESTING_LEVELS
    return build_pdf(_one_page_objects(catalog_extra=b"/Deep " + nested + b" "))


def deep_unclosed_array() -> bytes:
    return build_pdf(_one_page_objects(catalog_extra=b"/Deep " + b"[" * DEEP_NESTING_LEVELS + b" "))


def deep_array_in_page() -> bytes:
    nested = b"[" * DEEP_NESTING_LEVELS + b"]" * DEEP_NESTING_LEVELS
    return build_pdf(_one_page_objects(page_extra=b"/Deep " + nested + b" "))


def deep_page_tree() -> bytes:
    """A chain of ``DEEP_PAGE_TREE_LEVELS`` /Pages nodes, each the only kid of the one above, ending in one page."""
    objects: list[tuple[int, bytes]] = [(1, b"<< /Type /Catalog /Pages 2 0 R >>")]
    first_node = 2
    last_node = first_node + DEEP_PAGE_TREE_LEVELS - 1
    page = last_node + 1
    content = page + 1
    for number in range(first_node, last_node + 1):
        kid = number + 1
        parent = b" /Parent %d 0 R" % (number - 1) if number > first_node else b""
        objects.append((number, b"<< /Type /Pages /Kids [%d 0 R] /Count 1%s >>" % (kid, parent)))
    objects.append((page, b"<< /Type /Page /Parent %d 0 R /MediaBox %s /Contents %d 0 R >>"
                    % (last_node, MEDIA_BOX, content)))
    objects.append((content, _stream(b"", PAGE_CONTENT)))
    return build_pdf(objects)


def page_tree_cycle() -> bytes:
    """A page tree whose second kid is a /Pages node listing the root again."""
    return build_pdf([
        (1, b"<< /Type /Catalog /Pages 2 0 R >>"),
        (2, b"<< /Type /Pages /Kids [3 0 R 5 0 R] /Count 3 >>"),
        (3, b"<< /Type /Page /Parent 2 0 R /MediaBox " + MEDIA_BOX + b" /Contents 4 0 R >>"),
        (4, _stream(b"", PAGE_CONTENT)),
        (5, b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 2 >>"),
    ])


def page_tree_cycle_only() -> bytes:
    """A page tree without a page: two /Pages nodes listing each other."""
    return build_pdf([
        (1, b"<< /Type /Catalog /Pages 2 0 R >>"),
        (2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        (3, b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>"),
    ])


def page_parent_cycle() -> bytes:
    """A page whose /Parent chain loops (two nodes naming each other), without a /MediaBox to stop the search."""
    return build_pdf([
        (1, b"<< /Type /Catalog /Pages 2 0 R >>"),
        (2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 /Parent 5 0 R >>"),
        (3, b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>"),
        (4, _stream(b"", PAGE_CONTENT)),
        (5, b"<< /Type /Pages /Kids [2 0 R] /Count 1 /Parent 2 0 R >>"),
    ])


def self_reference_pages() -> bytes:
    """The catalog's /Pages is an object whose whole body is a reference to itself."""
    return build_pdf([(1, b"<< /Type /Catalog /Pages 2 0 R >>"), (2, b"2 0 R")])


def self_reference_contents() -> bytes:
    objects = _one_page_objects()
    objects[3] = (4, b"4 0 R")
    return build_pdf(objects)


def reference_chain_loop() -> bytes:
    """The page's /Contents goes through references that end where they began: 4 → 5 → 4."""
    objects = _one_page_objects()
    objects[3] = (4, b"5 0 R")
    objects.append((5, b"4 0 R"))
    return build_pdf(objects)


def _two_revisions(first_prev: Callable[[int, int], int], second_prev: Callable[[int, int], int]) -> bytes:
    """Return a file with two xref sections, whose /Prev entries the callables compute from both sections' offsets."""
    original = valid_pdf()
    first_body = original[: original.index(b"trailer")]
    first_xref = first_body.index(b"xref\n")
    updated_page = b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>\nendobj\n"

    def assemble(first_prev_value: int, second_prev_value: int) -> tuple[bytes, int]:
        # The first /Prev has a fixed width, so no offset depends on the /Prev values.
        data = first_body + b"trailer\n<< /Size 5 /Root 1 0 R /Prev %010d >>\n" % first_prev_value
        data += b"startxref\n%d\n%%%%EOF\n" % first_xref
        page_offset = len(data)
        data += updated_page
        second_xref = len(data)
        data += b"xref\n3 1\n%010d 00000 n\r\n" % page_offset
        data += b"trailer\n<< /Size 5 /Root 1 0 R /Prev %d >>\n" % second_prev_value
        data += b"startxref\n%d\n%%%%EOF\n" % second_xref
        return data, second_xref

    _, second_xref = assemble(0, 0)
    data, _ = assemble(first_prev(first_xref, second_xref), second_prev(first_xref, second_xref))
    return data


def xref_prev_loop() -> bytes:
    """Two xref sections whose /Prev entries point at each other."""
    return _two_revisions(lambda _first, second: second, lambda first, _second: first)


def xref_prev_self() -> bytes:
    """An xref section whose /Prev points at itself."""
    return _two_revisions(lambda first, _second: first, lambda _first, second: second)


def many_objects() -> bytes:
    """``MANY_OBJECTS`` tiny ``null`` objects, each with its own xref entry, and a valid page tree beside them."""
    objects = _one_page_objects()
    objects.extend((number, b"null") for number in range(5, 5 + MANY_OBJECTS))
    return build_pdf(objects, newline=b" ")


def _flat_page_tree(page_count: int, declared_count: int) -> bytes:
    """Return a file whose root /Pages node lists ``page_count`` pages that share one content stream."""
    first_page = 5
    kids = b" ".join(b"%d 0 R" % number for number in range(first_page, first_page + page_count))
    objects: list[tuple[int, bytes]] = [
        (1, b"<< /Type /Catalog /Pages 2 0 R >>"),
        (2, b"<< /Type /Pages /Kids [" + kids + b"] /Count %d /MediaBox %s >>" % (declared_count, MEDIA_BOX)),
        (4, _stream(b"", PAGE_CONTENT)),
    ]
    objects.extend((number, b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>")
                   for number in range(first_page, first_page + page_count))
    return build_pdf(objects)


def many_pages() -> bytes:
    """A flat page tree of ``MANY_PAGES`` pages, with a true /Count."""
    return _flat_page_tree(MANY_PAGES, MANY_PAGES)


def page_count_lies() -> bytes:
    """A flat page tree of ``MANY_PAGES`` pages whose /Count claims a single page."""
    return _flat_page_tree(MANY_PAGES, 1)


def xref_claims_millions() -> bytes:
    """A valid file whose xref subsection header and /Size claim ``CLAIMED_OBJECTS`` entries."""
    data = valid_pdf()
    return data.replace(b"xref\n0 5\n", b"xref\n0 %d\n" % CLAIMED_OBJECTS).replace(
        b"/Size 5 ", b"/Size %d " % CLAIMED_OBJECTS)


def xref_stream_millions() -> bytes:
    """A cross-reference stream of about 10 KB with ``XREF_STREAM_ENTRIES`` entries, all free after the first five.

    Each entry takes 3 bytes (``/W [1 2 0]``) and the stream contains no more
    than its ``/Size`` announces, so pyHanko's decode limits let it through.
    """
    body, offsets = _objects_body(_one_page_objects())
    xref_number = 5
    offsets[xref_number] = len(body)
    rows = [b"\x00\x00\x00"]
    rows.extend(b"\x01" + offsets[number].to_bytes(2, "big") for number in range(1, xref_number + 1))
    free_rows = bytes(3 * (XREF_STREAM_ENTRIES - len(rows)))
    data = zlib.compress(b"".join(rows) + free_rows, 9)
    dictionary = b"/Type /XRef /Size %d /W [1 2 0] /Root 1 0 R /Filter /FlateDecode" % XREF_STREAM_ENTRIES
    xref_stream = b"%d 0 obj\n" % xref_number + _stream(dictionary, data) + b"\nendobj\n"
    return body + xref_stream + b"startxref\n%d\n%%%%EOF\n" % offsets[xref_number]


def huge_page_count() -> bytes:
    objects = _one_page_objects()
    objects[1] = (2, b"<< /Type /Pages /Kids [3 0 R] /Count %d >>" % HUGE_PAGE_COUNT)
    return build_pdf(objects)


def lying_length() -> bytes:
    """A content stream whose /Length claims a million bytes more than it has."""
    objects = _one_page_objects()
    objects[3] = (4, b"<< /Length 1000000 >>\nstream\n" + PAGE_CONTENT + b"\nendstream")
    return build_pdf(objects)


def negative_length() -> bytes:
    objects = _one_page_objects()
    objects[3] = (4, b"<< /Length -40 >>\nstream\n" + PAGE_CONTENT + b"\nendstream")
    return build_pdf(objects)


def broken_hex_strings() -> bytes:
    """Hex strings with a stray letter, an odd digit count and no closing bracket."""
    catalog_extra = b"/Lang <4E6F7X> /Odd <ABC> /Open <41424344 "
    return build_pdf(_one_page_objects(catalog_extra=catalog_extra))


def mixed_line_endings() -> bytes:
    """A valid file whose objects end lines with CR, LF and CR LF in turn."""
    objects = _one_page_objects()
    parts = [HEADER]
    offsets = []
    for (number, body), newline in zip(objects, (b"\r", b"\n", b"\r\n", b"\r")):
        offsets.append(sum(len(part) for part in parts))
        parts.append(b"%d 0 obj" % number + newline + body + newline + b"endobj" + newline)
    xref_offset = sum(len(part) for part in parts)
    parts.append(b"xref\r0 5\r\n0000000000 65535 f\r\n")
    parts.extend(b"%010d 00000 n\r\n" % offset for offset in offsets)
    parts.append(b"trailer\r<< /Size 5 /Root 1 0 R >>\rstartxref\r\n%d\r%%%%EOF\r" % xref_offset)
    return b"".join(parts)


def encrypted_unknown_password() -> bytes:
    """An AES-256 file (standard security handler, revision 6) opened only by a password the test never sends."""
    from io import BytesIO

    from pyhanko.pdf_utils.crypt import StandardSecurityHandler
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.pdf_utils.writer import copy_into_new_writer

    writer = copy_into_new_writer(PdfFileReader(BytesIO(valid_pdf())))
    writer.security_handler = StandardSecurityHandler.build_from_pw("mat-khau-chu-so-huu", "mat-khau-nguoi-dung")
    writer._encrypt = writer.add_object(writer.security_handler.as_pdf_object())
    output = BytesIO()
    writer.write(output)
    return output.getvalue()


def _deflate_zeros(size: int, layers: int = 1, prefix: bytes = b"") -> bytes:
    """Return ``prefix`` and then ``size`` zero bytes (a multiple of 1 MiB) compressed ``layers`` times in zlib format.

    Compressing gigabytes with zlib takes seconds, so the Deflate data is
    assembled instead: after a full flush the compressor starts afresh, so
    every further MiB of zeros compresses to the same block, which is
    repeated. An empty final block and the Adler-32 of the whole data close
    the stream.
    """
    block_count, rest = divmod(size, len(_ZERO_BLOCK))
    if rest or block_count < 1:
        raise ValueError(f"size must be a positive multiple of {len(_ZERO_BLOCK)} bytes, got {size}")
    compressor = zlib.compressobj(9)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    zero_block = compressor.compress(_ZERO_BLOCK) + compressor.flush(zlib.Z_FULL_FLUSH)

    # Zero bytes leave Adler-32's first sum unchanged and add it to the second sum once per byte.
    checksum = zlib.adler32(prefix)
    low, high = checksum & 0xFFFF, checksum >> 16
    high = (high + low * size) % 65521
    final_block = b"\x03\x00"  # BFINAL=1, fixed Huffman codes, end-of-block code only.
    data = head + zero_block * block_count + final_block + ((high << 16) | low).to_bytes(4, "big")
    for _ in range(layers - 1):
        data = zlib.compress(data, 9)
    return data


def _flate_filters(layers: int) -> bytes:
    return b"/Filter [" + b" /FlateDecode" * layers + b" ]"


def bomb_content_stream() -> bytes:
    """A page content stream of a few KB, in two Flate layers, that inflates to 2 GiB of zero bytes."""
    objects = _one_page_objects()
    objects[3] = (4, _stream(_flate_filters(2), _deflate_zeros(2 * GIB, layers=2)))
    return build_pdf(objects)


def bomb_content_stream_single_layer() -> bytes:
    """A content stream in one Flate layer that inflates 1 GiB from about 1 MiB, within the Deflate ratio."""
    objects = _one_page_objects()
    objects[3] = (4, _stream(b"/Filter /FlateDecode", _deflate_zeros(GIB)))
    return build_pdf(objects)


def bomb_image() -> bytes:
    """A 32768 x 32768 RGB image of 3 GiB, two Flate layers, drawn on the page."""
    side = 32768
    image = _stream(b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
                    b"/BitsPerComponent 8 " % (side, side) + _flate_filters(2), _deflate_zeros(3 * GIB, layers=2))
    objects = _one_page_objects(page_extra=b"/Resources << /XObject << /Im1 5 0 R >> >> ")
    objects[3] = (4, _stream(b"", b"q 595 0 0 842 0 0 cm /Im1 Do Q\n"))
    objects.append((5, image))
    return build_pdf(objects)


def bomb_object_stream() -> bytes:
    """The page tree lives in an object stream that inflates to 1 GiB: a valid header, then zero bytes."""
    pages = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox " + MEDIA_BOX + b" /Contents 4 0 R >>"
    index = b"2 0 3 %d " % (len(pages) + 1)
    header_and_objects = index + pages + b" " + page + b" "
    data = _deflate_zeros(GIB, layers=2, prefix=header_and_objects)
    object_stream = _stream(b"/Type /ObjStm /N 2 /First %d " % len(index) + _flate_filters(2), data)

    # A cross-reference stream is needed to say that objects 2 and 3 are in object stream 5.
    objects = [
        (1, b"<< /Type /Catalog /Pages 2 0 R >>"),
        (4, _stream(b"", PAGE_CONTENT)),
        (5, object_stream),
    ]
    return _build_with_xref_stream(objects, compressed={2: (5, 0), 3: (5, 1)})


def bomb_xref_stream() -> bytes:
    """A cross-reference stream of a few KB whose data inflates to 1 GiB."""
    objects = _one_page_objects()
    body, offsets = _objects_body(objects)
    xref_offset = len(body)
    data = _deflate_zeros(GIB, layers=2)
    xref_stream = b"6 0 obj\n" + _stream(b"/Type /XRef /Size 7 /W [1 4 2] /Root 1 0 R " + _flate_filters(2), data)
    return body + xref_stream + b"\nendobj\nstartxref\n%d\n%%%%EOF\n" % xref_offset


def _objects_body(objects: list[tuple[int, bytes]]) -> tuple[bytes, dict[int, int]]:
    parts = [HEADER]
    offset = len(HEADER)
    offsets = {}
    for number, body in objects:
        chunk = b"%d 0 obj\n" % number + body + b"\nendobj\n"
        offsets[number] = offset
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts), offsets


def _build_with_xref_stream(objects: list[tuple[int, bytes]], compressed: dict[int, tuple[int, int]]) -> bytes:
    """Return a file whose cross-reference stream lists ``objects`` and the ``compressed`` ones.

    ``compressed`` maps an object number to its object stream's number and its index in that stream.
    """
    body, offsets = _objects_body(objects)
    xref_number = max([*offsets, *compressed]) + 1
    offsets[xref_number] = len(body)
    rows = [b"\x00\x00\x00\x00\x00\xff\xff"]
    for number in range(1, xref_number + 1):
        if number in offsets:
            rows.append(b"\x01" + offsets[number].to_bytes(4, "big") + b"\x00\x00")
        elif number in compressed:
            stream_number, index = compressed[number]
            rows.append(b"\x02" + stream_number.to_bytes(4, "big") + index.to_bytes(2, "big"))
        else:
            rows.append(b"\x00\x00\x00\x00\x00\x00\x00")
    data = zlib.compress(b"".join(rows))
    dictionary = b"/Type /XRef /Size %d /W [1 4 2] /Root 1 0 R /Filter /FlateDecode" % (xref_number + 1)
    xref_stream = b"%d 0 obj\n" % xref_number + _stream(dictionary, data) + b"\nendobj\n"
    return body + xref_stream + b"startxref\n%d\n%%%%EOF\n" % offsets[xref_number]


HOSTILE_BUILDERS: dict[str, Callable[[], bytes]] = {
    "empty": empty_file,
    "not-a-pdf": not_a_pdf,
    "truncated-in-header": truncated_in_header,
    "truncated-in-object": truncated_in_object,
    "truncated-in-stream": truncated_in_stream,
    "truncated-in-xref": truncated_in_xref,
    "truncated-in-trailer": truncated_in_trailer,
    "truncated-in-startxref": truncated_in_startxref,
    "no-eof-marker": no_eof_marker,
    "deep-array": deep_array,
    "deep-dictionary": deep_dictionary,
    "deep-unclosed-array": deep_unclosed_array,
    "deep-array-in-page": deep_array_in_page,
    "deep-page-tree": deep_page_tree,
    "page-tree-cycle": page_tree_cycle,
    "page-tree-cycle-only": page_tree_cycle_only,
    "page-parent-cycle": page_parent_cycle,
    "self-reference-pages": self_reference_pages,
    "self-reference-contents": self_reference_contents,
    "reference-chain-loop": reference_chain_loop,
    "xref-prev-loop": xref_prev_loop,
    "xref-prev-self": xref_prev_self,
    "many-objects": many_objects,
    "many-pages": many_pages,
    "page-count-lies": page_count_lies,
    "xref-claims-millions": xref_claims_millions,
    "xref-stream-millions": xref_stream_millions,
    "huge-page-count": huge_page_count,
    "lying-length": lying_length,
    "negative-length": negative_length,
    "broken-hex-strings": broken_hex_strings,
    "mixed-line-endings": mixed_line_endings,
    "encrypted-unknown-password": encrypted_unknown_password,
    "bomb-content-stream": bomb_content_stream,
    "bomb-content-stream-single-layer": bomb_content_stream_single_layer,
    "bomb-image": bomb_image,
    "bomb-object-stream": bomb_object_stream,
    "bomb-xref-stream": bomb_xref_stream,
}


def write_hostile_set(directory: Path, names: Iterable[str] | None = None) -> dict[str, Path]:
    """Write the files of ``names`` (all of ``HOSTILE_BUILDERS`` by default) as ``NAME.pdf`` and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names if names is not None else HOSTILE_BUILDERS:
        path = directory / f"{name}.pdf"
        path.write_bytes(HOSTILE_BUILDERS[name]())
        paths[name] = path
    return paths
