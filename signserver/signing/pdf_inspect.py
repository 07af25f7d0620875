"""Open untrusted PDF files and check that they can take a new signature.

pyHanko reads the file in non-strict mode, so it repairs what it can (hybrid
cross-reference files, bad xref offsets, some broken object streams) and
applies its decode limits for untrusted input. Every parse failure becomes
``PdfInvalid`` with a short reason, and no raw parser exception reaches the
caller. Encryption follows ISO 32000-2 section 7.6: only the standard
password security handler is supported.

A file that would make the parser work without bound is rejected with
``PdfTooComplex`` before that work is done. The limits are on
cross-reference entries, pages, page tree nodes and page tree depth.
pyHanko bounds the decoded size of streams itself (``DecodeLimits``).
Nesting deeper than Python's recursion limit ends in RecursionError, which
becomes ``PdfInvalid``.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.crypt.api import AuthResult, AuthStatus, PdfMacStatus
from pyhanko.pdf_utils.crypt.permissions import StandardPermissions
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.xref import XRefEntry, XRefSectionData
from pyhanko.sign.fields import enumerate_sig_fields

from signserver.signing.errors import (
    PdfCertifiedNoChanges,
    PdfEncryptionUnsupported,
    PdfInvalid,
    PdfPasswordInvalid,
    PdfPasswordRequired,
    PdfSigningNotPermitted,
    PdfTooComplex,
)
from signserver.signing import pdf_speedups

# Every PDF the service reads goes through this module; signature contents are read much faster so.
pdf_speedups.install()

__all__ = [
    "MAX_PAGES",
    "MAX_PAGE_TREE_DEPTH",
    "MAX_PAGE_TREE_NODES",
    "MAX_XREF_ENTRIES",
    "PDF_PARSE_ERRORS",
    "PdfInfo",
    "inspect_pdf",
    "open_pdf_reader",
    "read_pdf_info",
    "pdf_parse_errors",
]

# Exceptions that a damaged or hostile file can make pyHanko, zlib or the
# struct module raise while parsing. MemoryError, OSError (except EINVAL, see
# pdf_parse_errors) and SignserverError are left out, because they do not
# come from the document's content.
PDF_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    PdfError,
    ValueError,
    LookupError,
    TypeError,
    AttributeError,
    AssertionError,
    ArithmeticError,
    RecursionError,
    NotImplementedError,
    EOFError,
    zlib.error,
    struct.error,
)

_MAX_REASON_LENGTH = 200

# Limits on one document, so that reading it takes seconds, not minutes.
# With pyHanko 0.38 on a shared 2-core machine under load, reading 200,000
# cross-reference entries took 5 s (table) to 9 s (stream), and counting
# 2,000 pages took under 1 s (measured with tests/hostile_pdfs.py). A
# 3 million entry stream took 82 s and 718 MB without the limit.
# NOTE: the limits are estimates for administrative documents, not taken
# from a standard, and not yet settings. A larger genuine document is
# rejected with pdf_too_complex.
MAX_XREF_ENTRIES = 200_000
MAX_PAGES = 2_000
# Pages plus the intermediate /Pages nodes above them.
MAX_PAGE_TREE_NODES = MAX_PAGES + MAX_PAGES // 2
# A balanced tree of MAX_PAGES pages is a few levels deep. pyHanko looks up
# pages and inherited attributes recursively, so a deep chain of nodes costs
# a Python stack frame per level.
MAX_PAGE_TREE_DEPTH = 64

# ISO 32000-2 section 12.8.2.2: a DocMDP transform without /P means P=2.
_DEFAULT_DOCMDP_PERMISSION = 2


class _XrefEntryBudget:
    """Cross-reference entries that the reader of one document may still read."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.remaining = limit


# The budget of the document that open_pdf_reader is opening in this thread or task, if any.
_xref_entry_budget: ContextVar[_XrefEntryBudget | None] = ContextVar("xref_entry_budget", default=None)
_pyhanko_process_entries = XRefSectionData.process_entries


def _count_xref_entries(entries: Iterator[XRefEntry]) -> Iterator[XRefEntry]:
    """Pass ``entries`` on, raising PdfTooComplex once the document's budget is spent.

    Outside ``open_pdf_reader``, each cross-reference section gets a budget of its own.
    """
    budget = _xref_entry_budget.get() or _XrefEntryBudget(MAX_XREF_ENTRIES)
    for entry in entries:
        budget.remaining -= 1
        if budget.remaining < 0:
            raise PdfTooComplex(reason=f"more than {budget.limit} cross-reference entries")
        yield entry


def _process_entries_within_budget(self: XRefSectionData, entries: Iterator[XRefEntry], strict: bool) -> int:
    return _pyhanko_process_entries(self, _count_xref_entries(entries), strict)


# pyHanko 0.38 passes the entries of every cross-reference table and stream
# through this method while it opens the file, so counting them here stops
# the reading early. The trailer's /Size may understate the entries, so it
# cannot bound them.
XRefSectionData.process_entries = _process_entries_within_budget  # type: ignore[method-assign]


@dataclass(frozen=True)
class PdfInfo:
    """Facts about a PDF file that decide whether and how it can be signed."""

    page_count: int
    encrypted: bool
    # "major.minor", from the catalog /Version if present, else the header.
    pdf_version: str
    has_signatures: bool
    # DocMDP P value (2 or 3) of a certification signature, or None if the
    # document is not certified. P=1 is rejected, so it never appears here.
    certification_level: int | None


@contextmanager
def pdf_parse_errors() -> Iterator[None]:
    """Turn any parser exception raised inside the block into ``PdfInvalid``."""
    try:
        yield
    except PDF_PARSE_ERRORS as exc:
        raise PdfInvalid(reason=_describe(exc)) from exc
    except OSError as exc:
        # A seek to a negative offset read from the file fails with EINVAL.
        # Other OS errors concern the disk, not the document.
        if exc.errno != errno.EINVAL:
            raise
        raise PdfInvalid(reason=_describe(exc)) from exc


def inspect_pdf(path: Path, password: str | None) -> PdfInfo:
    """Open the PDF at ``path`` and return its ``PdfInfo``.

    Raises PdfInvalid, PdfTooComplex (a limit of this module exceeded),
    PdfPasswordRequired, PdfPasswordInvalid, PdfEncryptionUnsupported,
    PdfSigningNotPermitted (user password without form filling permission),
    or PdfCertifiedNoChanges because a document certified with P=1 cannot
    take another signature.
    """
    with Path(path).open("rb") as stream:
        reader = open_pdf_reader(stream, password)
        return read_pdf_info(reader)


def open_pdf_reader(
    stream: BinaryIO, password: str | None, *, require_signing_permission: bool = True
) -> PdfFileReader:
    """Parse ``stream`` in non-strict mode and decrypt it if it is encrypted.

    Without a password, an encrypted file is tried with the empty user
    password, which opens files that only set an owner password. A file
    with more than ``MAX_XREF_ENTRIES`` cross-reference entries raises
    PdfTooComplex. With
    ``require_signing_permission``, a file opened with its user password must
    permit filling in form fields, else PdfSigningNotPermitted is raised.
    """
    budget_token = _xref_entry_budget.set(_XrefEntryBudget(MAX_XREF_ENTRIES))
    try:
        with pdf_parse_errors():
            reader = PdfFileReader(stream, strict=False)
            encrypt_dict = reader.encrypt_dict
    finally:
        _xref_entry_budget.reset(budget_token)
    if encrypt_dict is None:
        return reader

    auth_result = _decrypt(reader, encrypt_dict, password)
    if require_signing_permission and auth_result.status == AuthStatus.USER and not _permits_signing(auth_result):
        # A certification with P=1 is the more precise reason, so it wins.
        with pdf_parse_errors():
            certification_level = _read_certification_level(reader)
        if certification_level == 1:
            raise PdfCertifiedNoChanges()
        raise PdfSigningNotPermitted()
    return reader


def read_pdf_info(reader: PdfFileReader) -> PdfInfo:
    """Read the page count, version, signatures and certification of an opened file.

    Raises PdfTooComplex when the page tree exceeds ``MAX_PAGES``,
    ``MAX_PAGE_TREE_NODES`` or ``MAX_PAGE_TREE_DEPTH``.
    """
    with pdf_parse_errors():
        page_count = _count_pages_of_file(reader)
        major, minor = reader.input_version
        has_signatures = next(enumerate_sig_fields(reader, filled_status=True), None) is not None
        certification_level = _read_certification_level(reader)

    if page_count == 0:
        # pyHanko attaches even an invisible signature's widget to a page.
        raise PdfInvalid(reason="the page tree contains no readable page")
    if certification_level == 1:
        raise PdfCertifiedNoChanges()

    return PdfInfo(
        page_count=page_count,
        encrypted=reader.encrypted,
        pdf_version=f"{major}.{minor}",
        has_signatures=has_signatures,
        certification_level=certification_level,
    )


def _decrypt(
    reader: PdfFileReader, encrypt_dict: generic.DictionaryObject, password: str | None
) -> AuthResult:
    with pdf_parse_errors():
        handler_name = str(encrypt_dict.get("/Filter", "/Standard"))
    if handler_name != "/Standard":
        raise PdfEncryptionUnsupported(handler=handler_name)

    try:
        # Building the handler validates the rest of the encryption dictionary.
        reader.security_handler
    except PDF_PARSE_ERRORS as exc:
        raise PdfEncryptionUnsupported(handler=handler_name, reason=_describe(exc)) from exc

    with pdf_parse_errors():
        result = reader.decrypt(password if password is not None else "")

    if result.mac_status == PdfMacStatus.FAILED:
        raise PdfInvalid(reason=f"PDF MAC validation failed: {result.mac_failure_reason}")
    if result.status == AuthStatus.FAILED:
        if password is None:
            raise PdfPasswordRequired()
        raise PdfPasswordInvalid()
    return result


def _permits_signing(auth_result: AuthResult) -> bool:
    """Apply the user access permissions of ISO 32000-2 Table 22 to signing.

    Bit 9 allows filling in existing fields, signature fields included, and
    bit 6 allows filling in form fields in general.
    """
    # NOTE: strictly, creating a new signature field needs bits 4 and 6, but
    # this follows the common reading that either bit 6 or bit 9 allows signing.
    permissions = auth_result.permission_flags
    if permissions is None:
        return True
    allowing = StandardPermissions.ALLOW_FORM_FILLING | StandardPermissions.ALLOW_ANNOTS_FORM_FILLING
    return bool(permissions & allowing)


# Page counts of files read before, by (device, inode, size, modification time).
_page_counts: dict[tuple[int, int, int, int], int] = {}
MAX_REMEMBERED_PAGE_COUNTS = 256


def _count_pages_of_file(reader: PdfFileReader) -> int:
    """Count the pages as :func:`_count_pages` does, once per stored file.

    Counting walks every page object, about 1 ms each: a request's document
    is read at submission and again when it is signed, and is never changed
    in between, so the second count comes from here.
    """
    try:
        status = os.fstat(reader.stream.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return _count_pages(reader)
    key = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
    known = _page_counts.get(key)
    if known is None:
        known = _count_pages(reader)
        if len(_page_counts) >= MAX_REMEMBERED_PAGE_COUNTS:
            _page_counts.clear()
        _page_counts[key] = known
    return known


def _count_pages(reader: PdfFileReader) -> int:
    """Count the page objects reachable in the page tree.

    A node met a second time (a cycle, or a node with two parents) is skipped,
    and so is a kid that is not a dictionary. The file is not rejected for
    them, because pyHanko signs it as long as the pages it needs come first.
    A tree whose root declares more than ``MAX_PAGES`` pages, or that has more
    pages, nodes or levels than the limits, raises PdfTooComplex.
    """
    # NOTE: pyHanko finds page N by the /Count entries of the tree nodes. Where
    # they disagree with the pages counted here, a stamp page within this count
    # can still be unreachable for pyHanko, and signing then fails with PdfInvalid.
    root_ref = reader.root.raw_get("/Pages")
    if not isinstance(root_ref, generic.IndirectObject):
        raise PdfInvalid(reason="the catalog /Pages entry is not an indirect reference")
    _check_declared_page_count(root_ref.get_object())

    page_count = 0
    seen: set[generic.Reference] = set()
    # Each entry is a node and its depth, 1 for the root.
    stack: list[tuple[generic.IndirectObject, int]] = [(root_ref, 1)]
    while stack:
        node_ref, depth = stack.pop()
        if node_ref.reference in seen:
            continue
        seen.add(node_ref.reference)
        if len(seen) > MAX_PAGE_TREE_NODES:
            raise PdfTooComplex(reason=f"the page tree has more than {MAX_PAGE_TREE_NODES} nodes")
        if depth > MAX_PAGE_TREE_DEPTH:
            raise PdfTooComplex(reason=f"the page tree is more than {MAX_PAGE_TREE_DEPTH} levels deep")

        node = node_ref.get_object()
        if not isinstance(node, generic.DictionaryObject):
            continue
        if node.get("/Type") == "/Page":
            page_count += 1
            if page_count > MAX_PAGES:
                raise PdfTooComplex(reason=f"the page tree has more than {MAX_PAGES} pages")
            continue
        try:
            kids = node["/Kids"]
        except KeyError:
            continue
        if isinstance(kids, generic.ArrayObject):
            # Reversed, so that the stack pops the kids in document order.
            stack.extend((kid, depth + 1) for kid in reversed(kids) if isinstance(kid, generic.IndirectObject))
    return page_count


def _check_declared_page_count(root: generic.PdfObject) -> None:
    """Reject a page tree whose root /Count exceeds ``MAX_PAGES``, before any page is read.

    pyHanko finds a page by these counts, so a tree that declares more pages
    than it has is rejected as well.
    """
    if not isinstance(root, generic.DictionaryObject):
        return
    declared = root.get("/Count")
    if isinstance(declared, int) and declared > MAX_PAGES:
        raise PdfTooComplex(reason=f"the page tree declares {declared} pages, more than the limit of {MAX_PAGES}")


def _read_certification_level(reader: PdfFileReader) -> int | None:
    try:
        certification_signature = reader.root["/Perms"]["/DocMDP"]
    except KeyError:
        return None

    try:
        references = certification_signature["/Reference"]
    except KeyError:
        return None

    for reference in references:
        reference = reference.get_object()
        if reference.get("/TransformMethod") != "/DocMDP":
            continue
        try:
            permission = reference["/TransformParams"]["/P"]
        except KeyError:
            permission = _DEFAULT_DOCMDP_PERMISSION
        if permission not in (1, 2, 3):
            raise PdfInvalid(reason=f"the DocMDP permission /P is {permission}, expected 1, 2 or 3")
        return int(permission)
    return None


def _describe(exc: BaseException) -> str:
    """Return a one-line, length-limited description of a parser exception.

    The message may quote bytes from the document, so control characters are
    replaced and the text is cut to a fixed length.
    """
    text = f"{type(exc).__name__}: {exc}"
    printable = "".join(character if character.isprintable() else "?" for character in text)
    return printable[:_MAX_REASON_LENGTH]
