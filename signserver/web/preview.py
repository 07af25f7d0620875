"""Page images of a sign request's PDF, rendered from the exact stored bytes whose digest the official approves.

Before anything is rendered, the stored document is hashed and compared with
the request's ``document_sha256``. A PAdES request with a visible signature
is shown as it will look when signed. The planned stamp, whose appearance
and box were resolved at submission (see ``core.stamp_plan``), is drawn onto
a copy in an incremental update, and the stored original is never written. Pages are
rendered one at a time with poppler's ``pdftoppm`` and cached under the data
directory, in a directory named by the request and its digest. The expiry
sweeper removes, every ``PRUNE_INTERVAL_SECONDS``, the cached pages of
requests that no longer wait for approval.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import structlog
from asn1crypto import x509
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.layout import BoxConstraints

from signserver.config import Settings
from signserver.core.states import PENDING_APPROVAL
from signserver.errors import SignserverError
from signserver.signing.appearance import appearance_style
from signserver.signing.files import READ_CHUNK_BYTES, write_atomically
from signserver.signing.fonts import stamp_font_path
from signserver.signing.pdf_inspect import open_pdf_reader, pdf_parse_errors
from signserver.signing.placement import stamp_from_placement
from signserver.signing.stamp import StampSpec, stamp_text_params
from signserver.store.db import Store
from signserver.store.records import Credential, SignRequest

__all__ = ["PreviewUnavailable", "renders_pages", "document_digest_matches", "page_image", "preview_cache_root",
           "prune_preview_cache", "PRUNE_INTERVAL_SECONDS"]

log = structlog.get_logger(__name__)

PDFTOPPM = "pdftoppm"
# Width in pixels of a rendered page: readable on a laptop screen, and scaled down by the page's CSS.
PAGE_IMAGE_WIDTH = 1100
PDFTOPPM_TIMEOUT_SECONDS = 60
# The maximum number of pdftoppm processes that one serving process runs at once, so that the pages of a
# long document wait in turn instead of taking every core from the signing work.
RENDER_PROCESSES = 2
# Seconds between two prunings of the cache by the expiry sweeper.
PRUNE_INTERVAL_SECONDS = 600
# A request's directory changed more recently than this is kept, so that a page being rendered is not removed.
PRUNE_MIN_AGE_SECONDS = 600


class PreviewUnavailable(Exception):
    """The pages of a request cannot be shown. ``reason`` is a stable code for the page's message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def preview_cache_root(settings: Settings) -> Path:
    """Return the directory of cached page images, one subdirectory per request."""
    return settings.home / "cache" / "inbox-preview"


def renders_pages(request: SignRequest) -> bool:
    """Return whether the inbox shows the request's pages: a PAdES request, whose document is a PDF."""
    return request.signature_format == "pades"


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


async def document_digest_matches(request: SignRequest) -> bool:
    """Hash the stored document and return whether it is the one whose digest the request records."""
    loop = asyncio.get_running_loop()
    try:
        actual = await loop.run_in_executor(None, _sha256_of_file, Path(request.document_path))
    except FileNotFoundError:
        return False
    return actual == request.document_sha256


async def page_image(request: SignRequest, credential: Credential | None, page: int, cache_root: Path) -> Path:
    """Return the PNG of page ``page`` (1-based) as it will look when signed, rendering it if not cached.

    Raises PreviewUnavailable: ``document_changed`` when the stored bytes no
    longer match ``document_sha256``, ``pdf_encrypted`` for a PDF that needs
    a password, ``page_out_of_range``, and ``render_failed``.
    """
    if request.pdf_password_wrapped is not None:
        # NOTE: pdftoppm would need the password on its command line, visible to other local users.
        raise PreviewUnavailable("pdf_encrypted")
    if request.page_count is not None and not 1 <= page <= request.page_count:
        raise PreviewUnavailable("page_out_of_range")

    # The expiry sweeper removes the directory once the request is decided and the directory has been untouched
    # for PRUNE_MIN_AGE_SECONDS (prune_preview_cache). A later view renders the pages again.
    directory = cache_root / request.id / request.document_sha256[:32]
    image = directory / f"page-{page}.png"
    if image.is_file():
        return image
    directory.mkdir(parents=True, exist_ok=True)
    shown_pdf = await _document_as_signed(request, credential, directory)
    await _render_page(shown_pdf, page, image)
    return image


async def _document_as_signed(request: SignRequest, credential: Credential | None, directory: Path) -> Path:
    """Return the cached PDF to render: the verified original with the planned stamp drawn on a copy."""
    preview_pdf = directory / "as-signed.pdf"
    if preview_pdf.is_file():
        return preview_pdf
    loop = asyncio.get_running_loop()
    data = await loop.run_in_executor(None, Path(request.document_path).read_bytes)
    if hashlib.sha256(data).hexdigest() != request.document_sha256:
        log.warning("inbox.preview_digest_mismatch", request_id=request.id)
        raise PreviewUnavailable("document_changed")

    if credential is not None:
        try:
            data = await _with_planned_stamp(request, credential, data)
        except SignserverError as error:
            # The stamp's image missing or changed since submission, or a PDF that pyHanko cannot update.
            log.warning("inbox.preview_stamp_failed", request_id=request.id, code=error.code)
            raise PreviewUnavailable("render_failed") from error
    await loop.run_in_executor(None, write_atomically, preview_pdf, data)
    return preview_pdf


async def _with_planned_stamp(request: SignRequest, credential: Credential, data: bytes) -> bytes:
    """Return ``data`` with the request's planned stamp drawn, or unchanged for an invisible signature."""
    placement = json.loads(request.placement_json or "{}")
    stamp = stamp_from_placement(placement, Path(request.document_path), signer_name=credential.display_name,
                                 signer_title=credential.signer_title, agency=credential.agency)
    if stamp is None:
        return data
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _draw_stamp, data, stamp, credential, request.reason or request.title)


def _draw_stamp(data: bytes, stamp: StampSpec, credential: Credential, reason: str) -> bytes:
    """Return ``data`` with ``stamp`` drawn on its page in an incremental update, as the signer will draw it.

    The signing time on the stamp is the time of the preview, since the real one is not known yet.
    """
    certificate = x509.Certificate.load(credential.certificate_der)
    text_params = stamp_text_params(stamp, certificate, reason=reason,
                                    signing_time=datetime.now(timezone.utc).replace(microsecond=0))
    with pdf_parse_errors():
        reader = open_pdf_reader(io.BytesIO(data), None, require_signing_permission=False)
        writer = IncrementalPdfFileWriter.from_reader(reader)
        x1, y1, x2, y2 = stamp.box
        style = appearance_style(stamp, stamp_font_path(), text_params)
        drawn = style.create_stamp(writer, BoxConstraints(width=x2 - x1, height=y2 - y1), text_params)
        drawn.apply(stamp.page - 1, x1, y1)
        output = io.BytesIO()
        writer.write(output)
    return output.getvalue()


_render_slots: asyncio.Semaphore | None = None


async def _render_page(pdf: Path, page: int, image: Path) -> None:
    """Render one page of ``pdf`` to ``image`` with pdftoppm, at most ``RENDER_PROCESSES`` at a time."""
    global _render_slots
    if _render_slots is None:
        _render_slots = asyncio.Semaphore(RENDER_PROCESSES)
    async with _render_slots:
        await _run_pdftoppm(pdf, page, image)


async def _run_pdftoppm(pdf: Path, page: int, image: Path) -> None:
    """Run pdftoppm for one page, writing through a temporary directory beside ``image``."""
    if shutil.which(PDFTOPPM) is None:
        raise PreviewUnavailable("render_failed")
    with tempfile.TemporaryDirectory(dir=image.parent, prefix=".render-") as work:
        prefix = Path(work) / "page"
        process = await asyncio.create_subprocess_exec(
            PDFTOPPM, "-png", "-f", str(page), "-l", str(page), "-singlefile", "-scale-to-x", str(PAGE_IMAGE_WIDTH),
            "-scale-to-y", "-1", str(pdf), str(prefix),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), PDFTOPPM_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            log.warning("inbox.preview_timed_out", pdf=str(pdf), page=page)
            raise PreviewUnavailable("render_failed") from None
        rendered = prefix.with_suffix(".png")
        if process.returncode != 0 or not rendered.is_file():
            log.warning("inbox.preview_failed", pdf=str(pdf), page=page, returncode=process.returncode,
                        error=stderr.decode(errors="replace")[:200])
            raise PreviewUnavailable("render_failed")
        rendered.replace(image)


async def prune_preview_cache(store: Store, cache_root: Path) -> int:
    """Remove the cached pages of requests that no longer wait for approval, or no longer exist.

    Returns the number of request directories removed.
    """
    loop = asyncio.get_running_loop()
    candidates = await loop.run_in_executor(None, _directories_unchanged_since, cache_root,
                                            time.time() - PRUNE_MIN_AGE_SECONDS)
    if not candidates:
        return 0
    async with store.read_only() as tx:
        states = await tx.sign_request_states(list(candidates))
    stale = [path for request_id, path in candidates.items() if states.get(request_id) != PENDING_APPROVAL]
    await loop.run_in_executor(None, _remove_directories, stale)
    if stale:
        log.info("inbox.preview_cache_pruned", removed=len(stale), kept=len(candidates) - len(stale))
    return len(stale)


def _directories_unchanged_since(cache_root: Path, before: float) -> dict[str, Path]:
    """Return the request directories under ``cache_root`` whose newest entry was modified before ``before``."""
    found: dict[str, Path] = {}
    try:
        entries = list(os.scandir(cache_root))
    except FileNotFoundError:
        return found
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            # Pages are written inside the digest subdirectories, so their times count too.
            newest = max([entry.stat().st_mtime] + [child.stat().st_mtime for child in os.scandir(entry.path)])
        except FileNotFoundError:
            continue  # Removed meanwhile by another process of this node.
        if newest < before:
            found[entry.name] = Path(entry.path)
    return found


def _remove_directories(paths: list[Path]) -> None:
    for path in paths:
        # Another process of the same node may prune the same directory at the same time.
        shutil.rmtree(path, ignore_errors=True)
