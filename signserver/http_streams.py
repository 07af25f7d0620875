"""Reading a whole HTTP body up to a limit.

aiohttp's ``StreamReader.read(n)`` returns what has arrived so far, at most
``n`` bytes, not ``n`` bytes: a body that comes in several TCP segments needs
a loop until the end of the stream.
"""

from __future__ import annotations

from aiohttp import StreamReader

__all__ = ["read_at_most"]

CHUNK_BYTES = 64 * 1024


async def read_at_most(stream: StreamReader, limit: int) -> bytes:
    """Return the stream's bytes up to its end, or ``limit + 1`` bytes when it is longer than ``limit``."""
    chunks = []
    received = 0
    while received <= limit:
        chunk = await stream.read(min(CHUNK_BYTES, limit + 1 - received))
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)
