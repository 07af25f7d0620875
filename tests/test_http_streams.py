"""Reading whole request bodies that arrive in several pieces."""

from __future__ import annotations

import asyncio
from unittest import mock

from aiohttp import StreamReader

from signserver.http_streams import read_at_most


def stream_fed_in_pieces(pieces: list[bytes], gap: float = 0.01) -> StreamReader:
    loop = asyncio.get_running_loop()
    stream = StreamReader(mock.Mock(_reading_paused=False), 2 ** 16, loop=loop)
    for number, piece in enumerate(pieces):
        loop.call_later(gap * (number + 1), stream.feed_data, piece)
    loop.call_later(gap * (len(pieces) + 1), stream.feed_eof)
    return stream


async def test_body_in_three_pieces_is_read_whole() -> None:
    pieces = [b'{"credentialID": "cred-', b"x" * 70_000, b'"}']
    assert await read_at_most(stream_fed_in_pieces(pieces), 1_000_000) == b"".join(pieces)


async def test_body_over_limit_cut_one_byte_past() -> None:
    body = await read_at_most(stream_fed_in_pieces([b"a" * 600, b"b" * 600]), 1000)
    assert body == b"a" * 600 + b"b" * 401


async def test_body_of_exactly_the_limit_is_whole() -> None:
    assert await read_at_most(stream_fed_in_pieces([b"a" * 500, b"b" * 500]), 1000) == b"a" * 500 + b"b" * 500


async def test_empty_body() -> None:
    assert await read_at_most(stream_fed_in_pieces([]), 1000) == b""
