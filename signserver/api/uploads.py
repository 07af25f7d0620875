"""Streaming of multipart uploads to disk, hashing as the bytes arrive.

The document is never held in memory whole: each chunk is hashed and written
to a temporary file under the data directory, and the body-size limit is
enforced while reading, so an oversized upload stops early with 413.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from signserver.core.submission import UploadedDocument
from signserver.errors import InvalidInput, PayloadTooLarge
from signserver.json_text import LoneSurrogate, loads_text_json

__all__ = [
    "StoredPart",
    "check_multipart_request",
    "parse_metadata_json",
    "read_sign_request_upload",
    "stream_part_to_file",
]

CHUNK_SIZE = 256 * 1024
MAX_METADATA_BYTES = 64 * 1024


def check_multipart_request(request: web.Request, limit: int, *, expected: str) -> None:
    """Reject a request before its body is read, unless it is multipart and may fit ``limit``.

    Raises PayloadTooLarge when the declared Content-Length exceeds ``limit``
    plus room for the small parts, and InvalidInput unsupported_media_type,
    naming the ``expected`` parts, for another media type.
    """
    declared = request.content_length
    if declared is not None and declared > limit + MAX_METADATA_BYTES:
        raise PayloadTooLarge(limit=limit)
    if not request.content_type.startswith("multipart/"):
        raise InvalidInput("unsupported_media_type", content_type=request.content_type, expected=expected)


@dataclass(frozen=True)
class StoredPart:
    """A multipart part written to disk, with its SHA-256 (hex) and its size in bytes."""

    path: Path
    sha256: str
    size: int


async def stream_part_to_file(part: BodyPartReader, directory: Path, *, max_bytes: int, limit: int) -> StoredPart:
    """Write ``part`` to a new file in ``directory``, hashing it as the chunks arrive.

    Raises PayloadTooLarge, naming ``limit`` (the body-size limit), as soon
    as the part grows beyond ``max_bytes``. The file is removed on any error.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{secrets.token_hex(12)}.upload"
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("wb") as handle:
            while chunk := await part.read_chunk(CHUNK_SIZE):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(limit=limit)
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return StoredPart(path=path, sha256=digest.hexdigest(), size=size)


def parse_metadata_json(raw: bytes) -> Any:
    """Parse a metadata part, raising InvalidInput ``metadata_invalid`` unless it is UTF-8 JSON."""
    try:
        return loads_text_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, LoneSurrogate) as exc:
        raise InvalidInput("metadata_invalid", reason=f"not valid UTF-8 JSON ({exc})") from None
    except (ValueError, RecursionError):
        # CPython refuses integers of more than 4300 digits, and very deep nesting exhausts its stack.
        raise InvalidInput("metadata_invalid", reason="JSON nested too deeply or with a number too long") from None


async def _read_metadata(part: BodyPartReader) -> Any:
    raw = await part.read(decode=True)
    if len(raw) > MAX_METADATA_BYTES:
        raise InvalidInput("metadata_invalid", reason=f"larger than {MAX_METADATA_BYTES} bytes")
    return parse_metadata_json(raw)


async def _stream_document(part: BodyPartReader, directory: Path, limit: int) -> UploadedDocument:
    stored = await stream_part_to_file(part, directory, max_bytes=limit, limit=limit)
    name = os.path.basename(part.filename or "document.pdf")[:255] or "document.pdf"
    return UploadedDocument(path=stored.path, name=name, sha256=stored.sha256, size=stored.size)


async def read_sign_request_upload(
    request: web.Request, incoming_dir: Path, limit: int
) -> tuple[Any, UploadedDocument | None]:
    """Read a multipart body with a ``metadata`` JSON part and a ``document`` file part, in any order.

    The document is None when the body has no document part, as for a
    request that sends only a digest. The core decides whether that is allowed.
    """
    check_multipart_request(request, limit, expected="multipart/form-data (metadata + document)")

    metadata: Any = None
    document: UploadedDocument | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "metadata":
                metadata = await _read_metadata(part)
            elif part.name == "document":
                if document is not None:
                    raise InvalidInput("invalid_request", reason="more than one document part")
                document = await _stream_document(part, incoming_dir, limit)
            else:
                await part.release()
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        if document is not None:
            document.path.unlink(missing_ok=True)
        raise InvalidInput("invalid_request", reason=f"malformed multipart body ({exc})") from None
    except BaseException:
        if document is not None:
            document.path.unlink(missing_ok=True)
        raise

    if metadata is None:
        if document is not None:
            document.path.unlink(missing_ok=True)
        raise InvalidInput("field_missing", field="metadata")
    return metadata, document
