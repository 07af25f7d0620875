"""PDF documents of the benchmark, generated at run time: text pages, and one large file.

The large PDF is written by hand (ISO 32000-1, sections 7.5 and 7.11.4): one
text page, and an embedded file stream of random bytes that makes up the
size, so no compression can shrink it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

__all__ = ["text_pdf", "write_large_pdf"]

LINES_PER_PAGE = 40
RANDOM_CHUNK_BYTES = 1024 * 1024


def text_pdf(pages: int) -> bytes:
    """Return an A4 PDF of ``pages`` pages, each with a title and lines of text."""
    buffer = io.BytesIO()
    document = canvas.Canvas(buffer, pagesize=A4, invariant=True)
    document.setTitle(f"signserver benchmark, {pages} page(s)")
    width, height = A4
    for page in range(1, pages + 1):
        document.setFont("Helvetica-Bold", 14)
        document.drawString(72, height - 72, f"Benchmark document, page {page} of {pages}")
        document.setFont("Helvetica", 10)
        for line in range(LINES_PER_PAGE):
            document.drawString(72, height - 100 - 15 * line,
                                f"Line {line + 1}: receipt of dossier 000.00.01.H01-261204-{page:04d}, "
                                "text that fills the page like a real administrative document.")
        document.showPage()
    document.save()
    return buffer.getvalue()


def write_large_pdf(path: Path, total_bytes: int) -> int:
    """Write a one-page PDF of about ``total_bytes`` bytes to ``path``; return its exact size.

    The bulk is an embedded file of random bytes, streamed to disk in chunks.
    """
    content = b"BT /F1 14 Tf 72 770 Td (Benchmark: a large PDF whose bulk is an embedded file) Tj ET"
    objects_before_bulk = [
        b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names [(bulk.bin) 5 0 R] >> >> >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 6 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Filespec /F (bulk.bin) /UF (bulk.bin) /EF << /F 7 0 R >> >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    header = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"

    def layout(bulk_size: int) -> tuple[bytes, bytes, int]:
        """Return the bytes before the bulk, the bytes after it, and the offset of the bulk object."""
        before = bytearray(header)
        offsets = []
        for number, body in enumerate(objects_before_bulk, start=1):
            offsets.append(len(before))
            before += b"%d 0 obj\n" % number + body + b"\nendobj\n"
        offsets.append(len(before))
        before += b"7 0 obj\n<< /Type /EmbeddedFile /Length %d >>\nstream\n" % bulk_size
        bulk_end = len(before) + bulk_size
        after = bytearray(b"\nendstream\nendobj\n")
        xref_offset = bulk_end + len(after)
        after += b"xref\n0 8\n0000000000 65535 f \n"
        after += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
        after += b"trailer\n<< /Size 8 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref_offset
        return bytes(before), bytes(after), bulk_end

    # The framing depends on the number of digits of the sizes, so it is computed twice.
    before, after, _end = layout(total_bytes)
    bulk_size = max(1, total_bytes - len(before) - len(after))
    before, after, _end = layout(bulk_size)

    with path.open("wb") as output:
        output.write(before)
        remaining = bulk_size
        while remaining > 0:
            chunk = os.urandom(min(RANDOM_CHUNK_BYTES, remaining))
            output.write(chunk)
            remaining -= len(chunk)
        output.write(after)
    return path.stat().st_size
