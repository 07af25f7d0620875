"""The key policy in force: the newest version applied through four-eyes control, read from the store.

Every replica reads the current version number from the database on each
decision, so a version applied anywhere takes effect everywhere at once.
Parsed versions are cached by number, and a version is parsed in a worker
thread because a large one takes seconds. A data directory from before stored
policies gets its first version from the policy directory at start-up.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from signserver.store.db import Transaction
from signserver.store.records import PolicyVersion

from .audit import append_audit
from .policy import (
    KnownCredential,
    KnownNames,
    PolicySet,
    documents_digest,
    parse_policy_documents,
    read_policy_dir,
)

__all__ = ["PolicySource", "known_names", "insert_policy_version", "bootstrap_policy", "BOOTSTRAP_ACTOR",
           "parse_off_loop"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# One thread of its own parses policies: parallel checks of large policies then queue behind each other instead
# of filling the default executor, which the HSM calls and PDF checks use.
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-parse")


async def parse_off_loop(function: Callable[..., T], *args: Any) -> T:
    """Run a policy parse in the policy thread, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_PARSER, functools.partial(function, *args))


# Author and approver of a first version taken from the policy directory at initialisation.
BOOTSTRAP_ACTOR = "signserver-init"


async def known_names(tx: Transaction) -> KnownNames:
    """Return the names in the store that a policy may use: credentials, applications and officials."""
    credentials = {
        credential.id: KnownCredential(kind=credential.kind, owner_official_id=credential.owner_official_id,
                                       agency=credential.agency)
        for credential in await tx.credentials()
    }
    return KnownNames(
        credentials=credentials,
        applications=frozenset(await tx.application_ids()),
        officials=frozenset(await tx.official_ids()),
    )


def _parse_stored(version: PolicyVersion) -> PolicySet:
    documents = [(item["name"], item["text"]) for item in json.loads(version.documents_json)]
    return parse_policy_documents(documents).with_version(f"v{version.version}")


class PolicySource:
    """The source of the policy in force, which is an empty policy denying every request before any version exists."""

    def __init__(self) -> None:
        self._cache: dict[int, PolicySet] = {}

    async def current(self, tx: Transaction) -> PolicySet:
        number = await tx.current_policy_number()
        if number is None:
            return parse_policy_documents([]).with_version("v0")
        cached = self._cache.get(number)
        if cached is None:
            # NOTE: on SQLite the caller's transaction holds the write lock during this parse, which takes seconds
            # for a policy set near MAX_POLICY_SET_BYTES. It happens once per version and process.
            stored = await tx.policy_version(number)
            assert stored is not None
            cached = self._cache[number] = await parse_off_loop(_parse_stored, stored)
        return cached


async def insert_policy_version(tx: Transaction, documents: Sequence[tuple[str, str]], *, author_id: str,
                                approver_id: str, change_id: str | None, now: datetime) -> int:
    """Store ``documents`` as the next version and return its number.

    The caller validates them first with ``parse_policy_documents`` and the store's ``known_names``.
    """
    number = (await tx.current_policy_number() or 0) + 1
    digest = documents_digest(documents)
    await tx.insert_policy_version(
        version=number,
        documents_json=json.dumps([{"name": name, "text": text} for name, text in documents], ensure_ascii=False),
        digest=digest, author_id=author_id, approver_id=approver_id, change_id=change_id, applied_at=now,
    )
    return number


async def bootstrap_policy(tx: Transaction, directory: Path, now: datetime) -> int | None:
    """Store the policy directory's files as version 1 when no version exists yet, and return the new number."""
    if await tx.current_policy_number() is not None:
        return None
    documents = read_policy_dir(directory)
    parse_policy_documents(documents, await known_names(tx))
    number = await insert_policy_version(tx, documents, author_id=BOOTSTRAP_ACTOR, approver_id=BOOTSTRAP_ACTOR,
                                         change_id=None, now=now)
    await append_audit(tx, action="policy_applied", actor_type="system", actor_id=BOOTSTRAP_ACTOR, details={
        "version": number, "digest": documents_digest(documents), "files": [name for name, _ in documents],
        "author": BOOTSTRAP_ACTOR, "approver": BOOTSTRAP_ACTOR, "source": str(directory),
    }, now=now)
    log.info("policy.bootstrapped", version=number, directory=str(directory))
    return number
