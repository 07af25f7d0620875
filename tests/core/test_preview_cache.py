"""Pruning of the inbox's cached page images on a real store: decided and unknown requests go, pending ones stay."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signserver.store.db import Store
from signserver.web.preview import PRUNE_MIN_AGE_SECONDS, prune_preview_cache
from tests.core.store_helpers import new_request, open_seeded_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_seeded_store(tmp_path)
    yield store
    await store.close()


def cached_pages(cache_root: Path, request_id: str, age_seconds: float) -> Path:
    """Write a cached page of ``request_id`` as the preview does, with every time ``age_seconds`` in the past."""
    directory = cache_root / request_id / ("a" * 32)
    directory.mkdir(parents=True)
    (directory / "page-1.png").write_bytes(b"\x89PNG")
    stamp = time.time() - age_seconds
    for path in (directory / "page-1.png", directory, directory.parent):
        os.utime(path, (stamp, stamp))
    return directory.parent


async def test_prune_keeps_only_pending(store: Store, tmp_path: Path) -> None:
    cache_root = tmp_path / "cache"
    old = PRUNE_MIN_AGE_SECONDS + 60
    await new_request(store, "req-pending")
    await new_request(store, "req-signed", state="signed")
    await new_request(store, "req-rejected", state="rejected")
    await new_request(store, "req-recent", state="signed")
    pending = cached_pages(cache_root, "req-pending", old)
    signed = cached_pages(cache_root, "req-signed", old)
    rejected = cached_pages(cache_root, "req-rejected", old)
    unknown = cached_pages(cache_root, "req-unknown", old)
    # A page rendered a minute ago may still be in use by a view of the request.
    recent = cached_pages(cache_root, "req-recent", 60)

    removed = await prune_preview_cache(store, cache_root)

    assert removed == 3
    assert pending.is_dir()
    assert recent.is_dir()
    assert not signed.exists()
    assert not rejected.exists()
    assert not unknown.exists()


async def test_prune_without_cache_directory(store: Store, tmp_path: Path) -> None:
    assert await prune_preview_cache(store, tmp_path / "never-created") == 0
