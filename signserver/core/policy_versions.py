"""The key policy in force: the newest version applied through four-eyes control, read from the store.

Every replica reads the current version number from the database on each
decision, so a version applied anywhere takes effect everywhere at once;
parsed versions are cached by number. A data directory from before stored
policies gets its first version from the policy directory at start-up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import structlog

from signserver.store.db import Transaction
from signserver.store.records import PolicyVersion

from .audit import append_audit
from .policy import KnownCredential, KnownNames, PolicySet, parse_policy_documents, read_policy_dir

__all__ = ["PolicySource", "known_names", "insert_policy_version", "bootstrap_policy", "documents_digest",
           "BOOTSTRAP_ACTOR"]

log = structlog.get_logger(__name__)

# Author and approver of a first version taken from the policy directory at initialisation.
BOOTSTRAP_ACTOR = "signserver-init"


def documents_digest(documents: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for name, text in documents:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


async def known_names(tx: Transaction) -> KnownNames:
    """What the store knows that a policy may name: credentials, applications and officials."""
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
    """Hands out the policy in force; an empty policy (every request denied) before any version exists."""

    def __init__(self) -> None:
        self._cache: dict[int, PolicySet] = {}

    async def current(self, tx: Transaction) -> PolicySet:
        number = await tx.current_policy_number()
        if number is None:
            return parse_policy_documents([]).with_version("v0")
        cached = self._cache.get(number)
        if cached is None:
            stored = await tx.policy_version(number)
            assert stored is not None
            cached = self._cache[number] = _parse_stored(stored)
        return cached


async def insert_policy_version(tx: Transaction, documents: Sequence[tuple[str, str]], *, author_id: str,
                                approver_id: str, change_id: str | None, now: datetime) -> int:
    """Validate ``documents`` against the store and store them as the next version; return its number.

    Raises PolicyFileInvalid, and then nothing is stored.
    """
    parse_policy_documents(documents, await known_names(tx))
    number = (await tx.current_policy_number() or 0) + 1
    digest = documents_digest(documents)
    await tx.insert_policy_version(
        version=number,
        documents_json=json.dumps([{"name": name, "text": text} for name, text in documents], ensure_ascii=False),
        digest=digest, author_id=author_id, approver_id=approver_id, change_id=change_id, applied_at=now,
    )
    return number


async def bootstrap_policy(tx: Transaction, directory: Path, now: datetime) -> int | None:
    """Store the policy directory's files as version 1 when no version exists yet; return the new number."""
    if await tx.current_policy_number() is not None:
        return None
    documents = read_policy_dir(directory)
    number = await insert_policy_version(tx, documents, author_id=BOOTSTRAP_ACTOR, approver_id=BOOTSTRAP_ACTOR,
                                         change_id=None, now=now)
    await append_audit(tx, action="policy_applied", actor_type="system", actor_id=BOOTSTRAP_ACTOR, details={
        "version": number, "digest": documents_digest(documents), "files": [name for name, _ in documents],
        "author": BOOTSTRAP_ACTOR, "approver": BOOTSTRAP_ACTOR, "source": str(directory),
    }, now=now)
    log.info("policy.bootstrapped", version=number, directory=str(directory))
    return number
