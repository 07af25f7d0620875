"""Files of the signing service: hashing an input in chunks, and replacing an output atomically.

An input is read in chunks, so a large document is never held in memory
whole. An output is written to a temporary file beside its target, synced
to disk and renamed over the target, so that no reader sees it half
written. These functions block, so async code runs them in an executor.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["READ_CHUNK_BYTES", "atomic_output", "digest_of_file", "write_atomically"]

READ_CHUNK_BYTES = 1024 * 1024


def digest_of_file(path: Path, digest_algorithm: str) -> bytes:
    """Return the ``digest_algorithm`` hash (a hashlib name) of the file at ``path``, read in chunks."""
    digest = hashlib.new(digest_algorithm)
    with Path(path).open("rb") as stream:
        while chunk := stream.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.digest()


@contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file beside ``path`` that replaces ``path`` only if the block succeeds.

    The file is open for reading too, so the block can read back what it wrote.
    """
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary_path = Path(name)
    try:
        with os.fdopen(descriptor, "w+b") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> str:
    """Write ``data`` over the file at ``path`` with ``atomic_output``, and return its SHA-256 in hex."""
    with atomic_output(Path(path)) as file:
        file.write(data)
    return hashlib.sha256(data).hexdigest()
