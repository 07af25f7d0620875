"""The content of a four-eyes change, for the second officer to review before approving it.

A policy change lists each file with the SHA-256 of its UTF-8 text, so the
approver can compare it with ``sha256sum`` of the requester's files, and a
unified diff of each file against the version in force. The approval
replaces the whole policy set, so a file of the version in force that the
change leaves out is shown as removed. A key destruction shows the key as
the inventory records it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from signserver.store.db import Transaction
from signserver.store.records import AdminChange, Official

from .changes import KEY_DESTROY, POLICY_APPLY, ChangeNotFound
from .context import CoreContext
from .keys import find_key
from .roles import SECURITY_OFFICER, require_role

__all__ = ["ChangeDetails", "PolicyFile", "FileDiff", "PolicyChangeDetails", "KeyDestructionDetails",
           "describe_change"]

ADDED, REMOVED, CHANGED, UNCHANGED = "added", "removed", "changed", "unchanged"


@dataclass(frozen=True)
class PolicyFile:
    name: str
    text: str
    sha256: str  # of the UTF-8 text, as ``sha256sum`` prints it for the same file


@dataclass(frozen=True)
class FileDiff:
    """One file's difference between the version in force and the change. ``diff`` is empty when unchanged."""

    name: str
    status: str  # added | removed | changed | unchanged
    diff: str


@dataclass(frozen=True)
class PolicyChangeDetails:
    base_version: int | None  # None for a change requested before base versions were recorded
    version_in_force: int  # 0 before any version exists
    documents: tuple[PolicyFile, ...]
    diffs: tuple[FileDiff, ...]

    @property
    def outdated(self) -> bool:
        return self.base_version != self.version_in_force

    def to_json(self) -> dict[str, Any]:
        return {
            "base_version": self.base_version, "version_in_force": self.version_in_force,
            "outdated": self.outdated,
            "documents": [{"name": d.name, "text": d.text, "sha256": d.sha256} for d in self.documents],
            "diffs": [{"name": d.name, "status": d.status, "diff": d.diff} for d in self.diffs],
        }


@dataclass(frozen=True)
class KeyDestructionDetails:
    key_id: str
    key_label: str
    key_id_hex: str  # CKA_ID
    state: str
    credential_id: str | None
    cert_serial_hex: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.key_id, "label": self.key_label, "key_id": self.key_id_hex, "state": self.state,
                "credential_id": self.credential_id, "certificate_serial": self.cert_serial_hex}


@dataclass(frozen=True)
class ChangeDetails:
    """A change with the names of its officers, and what it would do (``policy`` or ``key``, by its kind)."""

    change: AdminChange
    requested_by_name: str
    decided_by_name: str | None
    policy: PolicyChangeDetails | None
    key: KeyDestructionDetails | None


async def describe_change(ctx: CoreContext, officer: Official, change_id: str) -> ChangeDetails:
    """Return a change in any state with what it would do, read from the store without changing it."""
    require_role(officer, SECURITY_OFFICER)
    async with ctx.store.transaction() as tx:
        change = await tx.admin_change(change_id)
        if change is None:
            raise ChangeNotFound(change_id=change_id)
        requested_by_name = await _full_name(tx, change.requested_by)
        decided_by_name = await _full_name(tx, change.decided_by) if change.decided_by else None
        payload = json.loads(change.payload_json)
        policy = await _policy_details(tx, change, payload) if change.kind == POLICY_APPLY else None
        key = await _key_details(tx, payload) if change.kind == KEY_DESTROY else None
    return ChangeDetails(change=change, requested_by_name=requested_by_name, decided_by_name=decided_by_name,
                         policy=policy, key=key)


async def _full_name(tx: Transaction, person_id: str) -> str:
    person = await tx.official(person_id)
    return person.full_name if person else person_id


async def _policy_details(tx: Transaction, change: AdminChange, payload: dict[str, Any]) -> PolicyChangeDetails:
    in_force = await tx.current_policy_number() or 0
    stored = await tx.policy_version(in_force) if in_force else None
    old = {item["name"]: item["text"] for item in json.loads(stored.documents_json)} if stored else {}
    new = {item["name"]: item["text"] for item in payload["documents"]}
    documents = tuple(PolicyFile(name=name, text=text, sha256=hashlib.sha256(text.encode()).hexdigest())
                      for name, text in new.items())
    names = list(new) + sorted(set(old) - set(new))
    diffs = tuple(_file_diff(name, old.get(name), new.get(name), f"v{in_force}", change.id) for name in names)
    return PolicyChangeDetails(base_version=payload.get("base_version"), version_in_force=in_force,
                               documents=documents, diffs=diffs)


async def _key_details(tx: Transaction, payload: dict[str, Any]) -> KeyDestructionDetails:
    key = await find_key(tx, payload["key_id"])
    return KeyDestructionDetails(key_id=key.id, key_label=key.key_label, key_id_hex=key.key_id_hex, state=key.state,
                                 credential_id=key.credential_id, cert_serial_hex=key.cert_serial_hex)


def _file_diff(name: str, old: str | None, new: str | None, old_label: str, new_label: str) -> FileDiff:
    if old == new:
        return FileDiff(name=name, status=UNCHANGED, diff="")
    if old is None:
        status = ADDED
    elif new is None:
        status = REMOVED
    else:
        status = CHANGED
    lines = difflib.unified_diff(_lines(old), _lines(new),
                                 fromfile=f"{old_label}/{name}" if old is not None else "/dev/null",
                                 tofile=f"{new_label}/{name}" if new is not None else "/dev/null")
    return FileDiff(name=name, status=status, diff="".join(_mark_missing_newlines(lines)))


def _lines(text: str | None) -> list[str]:
    """Split at "\\n" only, keeping it, so that a changed carriage return or final newline shows in the diff."""
    if not text:
        return []
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _mark_missing_newlines(lines: Iterator[str]) -> Iterator[str]:
    """End every diff line, marking a last line without a newline as GNU diff does, so that ``patch`` reads it."""
    for line in lines:
        if line.endswith("\n"):
            yield line
        else:
            yield line + "\n\\ No newline at end of file\n"
