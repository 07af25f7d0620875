"""Four-eyes control: changes one security officer requests and a second one must approve.

Applying a key policy and destroying a key are such changes. The request is
checked when it is made, so a policy with an error is rejected then and
nothing is stored. It waits as ``pending`` and takes effect only when another
security officer approves it, because the requester cannot approve their own
change. Both names are in the audit records of the request and of the
approval, and a stored policy version keeps its author and its approver.

A policy change replaces the whole policy set, so it records the version in
force when it was requested (``base_version``). Approving it after another
version took effect would silently drop that version's content, so such an
approval fails with ChangeOutdated and the files must be applied again.
Policy files are parsed in a worker thread, outside any transaction, because
a large policy set takes seconds to parse.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NoReturn

import structlog

from signserver.errors import Conflict, Forbidden, InvalidInput, NotFound
from signserver.store.db import Transaction
from signserver.store.records import AdminChange, Official

from .audit import append_audit
from .context import CoreContext, new_id
from .keys import check_destroyable, destroy_key, find_key
from .policy import PolicySet, documents_digest, parse_policy_documents
from .policy_files import check_policy_input
from .policy_versions import insert_policy_version, known_names, parse_off_loop
from .refusals import commit_four_eyes_refusal
from .roles import SECURITY_OFFICER, require_role

__all__ = [
    "POLICY_APPLY",
    "KEY_DESTROY",
    "CHANGE_TTL",
    "CHANGE_STATES",
    "version_label",
    "check_policy_change",
    "request_policy_change",
    "request_key_destruction",
    "approve_change",
    "reject_change",
    "list_changes",
    "ChangeNotFound",
    "ChangeNotPending",
    "ChangeOutdated",
    "ChangePendingExists",
    "FourEyesRequired",
]

log = structlog.get_logger(__name__)

POLICY_APPLY = "policy_apply"
KEY_DESTROY = "key_destroy"
PENDING, APPLIED, REJECTED, EXPIRED, FAILED = "pending", "applied", "rejected", "expired", "failed"
# A key destruction between its approval and the end of the HSM call.
CARRYING_OUT = "carrying_out"
CHANGE_STATES = (PENDING, CARRYING_OUT, APPLIED, REJECTED, EXPIRED, FAILED)
# A change that no officer approves within this time expires, and the requester may request it again.
CHANGE_TTL = timedelta(days=7)


class ChangeNotFound(NotFound):
    code = "change_not_found"


class ChangeNotPending(Conflict):
    code = "change_not_pending"


class FourEyesRequired(Forbidden):
    code = "four_eyes_required"


class ChangeOutdated(Conflict):
    """Another policy version took effect after the change was requested.

    ``params``: ``change_id``, ``base_version`` and ``current_version``, as labels such as ``v2``.
    """

    code = "change_outdated"


class ChangePendingExists(Conflict):
    """The key already has a destruction request. ``params``: ``key_id``, ``change_id`` and ``state``."""

    code = "change_pending_exists"


def version_label(number: int | None) -> str:
    """Return a policy version number as people read it (``v2``), or ``unknown`` for a change that recorded none."""
    return f"v{number}" if number is not None else "unknown"


async def _person_names(tx: Transaction, *ids: str) -> dict[str, str]:
    names = {}
    for person_id in ids:
        person = await tx.official(person_id)
        names[person_id] = person.full_name if person else person_id
    return names


async def _validate_policy(ctx: CoreContext, documents: list[tuple[str, str]]) -> tuple[PolicySet, int]:
    """Validate policy documents against the store, and return them parsed with the number of the version in force.

    Raises InvalidInput for a bad file name or count, PolicyTooLarge and PolicyFileInvalid.
    """
    check_policy_input(documents)
    async with ctx.store.transaction() as tx:
        known = await known_names(tx)
        in_force = await tx.current_policy_number() or 0
    parsed = await parse_off_loop(parse_policy_documents, documents, known)
    return parsed, in_force


async def check_policy_change(ctx: CoreContext, officer: Official,
                              documents: Sequence[tuple[str, str]]) -> PolicySet:
    """Validate policy documents as ``request_policy_change`` does, and store nothing."""
    require_role(officer, SECURITY_OFFICER)
    parsed, _in_force = await _validate_policy(ctx, list(documents))
    return parsed


async def request_policy_change(ctx: CoreContext, officer: Official,
                                documents: Sequence[tuple[str, str]]) -> AdminChange:
    """Record a policy change for a second officer to approve. A policy with an error is rejected here."""
    require_role(officer, SECURITY_OFFICER)
    documents = [(name, text) for name, text in documents]
    parsed, base_version = await _validate_policy(ctx, documents)
    digest = documents_digest(documents)
    now = ctx.clock()
    change_id = new_id("chg")
    summary = f"policy {digest[:12]}: {', '.join(name for name, _ in documents)}"
    payload = {"documents": [{"name": n, "text": t} for n, t in documents], "digest": digest,
               "base_version": base_version}
    async with ctx.store.transaction() as tx:
        await tx.insert_admin_change(
            id=change_id, kind=POLICY_APPLY, summary=summary, payload_json=json.dumps(payload, ensure_ascii=False),
            requested_by=officer.id, requested_at=now, expires_at=now + CHANGE_TTL, state=PENDING,
        )
        await append_audit(tx, action="policy_change_requested", actor_type="security_officer", actor_id=officer.id,
                           details={"change_id": change_id, "digest": digest, "base_version": base_version,
                                    "files": [name for name, _ in documents], "requested_by": officer.id,
                                    "requested_by_name": officer.full_name,
                                    "credentials": sorted(parsed.credential_ids())}, now=now)
        change = await tx.admin_change(change_id)
    assert change is not None
    log.info("admin_change.requested", change_id=change_id, kind=POLICY_APPLY, officer_id=officer.id,
             base_version=base_version)
    return change


async def _pending_destruction(tx: Transaction, ctx: CoreContext, key_id: str) -> AdminChange | None:
    """Return the destruction of the key ``key_id`` (row id) that waits for approval or is being carried out."""
    now = ctx.clock()
    # NOTE: only the newest 1000 undecided changes are compared. Lapsed ones are skipped, as approval rejects them.
    for change in await tx.admin_changes(states=[PENDING, CARRYING_OUT], limit=1000):
        if change.kind != KEY_DESTROY or (change.state == PENDING and change.expires_at <= now):
            continue
        if json.loads(change.payload_json).get("key_id") == key_id:
            return change
    return None


async def request_key_destruction(ctx: CoreContext, officer: Official, key_id: str) -> AdminChange:
    """Record the destruction of a key for a second officer to approve.

    A key in use is rejected here, and so is a key that already has a destruction request (ChangePendingExists).
    """
    require_role(officer, SECURITY_OFFICER)
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        # Locked, so that two requests at the same moment cannot both find no earlier request.
        key = await find_key(tx, key_id, for_update=True)
        credential = await tx.credential(key.credential_id) if key.credential_id else None
        check_destroyable(key, credential)
        earlier = await _pending_destruction(tx, ctx, key.id)
        if earlier is not None:
            raise ChangePendingExists(key_id=key.id, change_id=earlier.id, state=earlier.state)
        change_id = new_id("chg")
        await tx.insert_admin_change(
            id=change_id, kind=KEY_DESTROY, summary=f"destroy key {key.id} ({key.key_label})",
            payload_json=json.dumps({"key_id": key.id}), requested_by=officer.id, requested_at=now,
            expires_at=now + CHANGE_TTL, state=PENDING,
        )
        await append_audit(tx, action="key_destruction_requested", actor_type="security_officer",
                           actor_id=officer.id, key_id_hex=key.key_id_hex, cert_serial_hex=key.cert_serial_hex,
                           details={"change_id": change_id, "key_id": key.id, "requested_by": officer.id,
                                    "requested_by_name": officer.full_name},
                           now=now)
        change = await tx.admin_change(change_id)
    assert change is not None
    log.info("admin_change.requested", change_id=change_id, kind=KEY_DESTROY, officer_id=officer.id)
    return change


async def _expire_if_due(ctx: CoreContext, change_id: str) -> None:
    """Record a pending change whose time has run out as ``expired``.

    It runs in its own transaction because the caller then raises
    ChangeNotPending, which rolls the caller's transaction back.
    """
    async with ctx.store.transaction() as tx:
        change = await tx.admin_change(change_id, for_update=True)
        if change is not None and change.state == PENDING and change.expires_at <= ctx.clock():
            await tx.update_admin_change(change.id, PENDING, state=EXPIRED)
            log.info("admin_change.expired", change_id=change.id, kind=change.kind)


async def _pending_change(tx: Transaction, ctx: CoreContext, change_id: str) -> AdminChange:
    change = await tx.admin_change(change_id, for_update=True)
    if change is None:
        raise ChangeNotFound(change_id=change_id)
    if change.state == PENDING and change.expires_at <= ctx.clock():
        raise ChangeNotPending(change_id=change_id, state=EXPIRED)
    if change.state != PENDING:
        raise ChangeNotPending(change_id=change_id, state=change.state)
    return change


async def approve_change(ctx: CoreContext, officer: Official, change_id: str) -> AdminChange:
    """Approve another officer's pending change and carry it out."""
    require_role(officer, SECURITY_OFFICER)
    await _expire_if_due(ctx, change_id)
    async with ctx.store.transaction() as tx:
        change = await _pending_change(tx, ctx, change_id)
        if change.requested_by == officer.id:
            await commit_four_eyes_refusal(tx, change, officer, ctx.clock())
            raise FourEyesRequired(change_id=change_id)
        names = await _person_names(tx, change.requested_by, officer.id)
    both = {"change_id": change.id, "requested_by": change.requested_by,
            "requested_by_name": names[change.requested_by], "approved_by": officer.id,
            "approved_by_name": names[officer.id]}

    if change.kind == POLICY_APPLY:
        await _apply_policy_change(ctx, officer, change, both)
    elif change.kind == KEY_DESTROY:
        await _destroy_key_change(ctx, officer, change, both)
    else:
        raise ChangeNotPending(change_id=change_id, state=f"unknown kind {change.kind}")

    async with ctx.store.transaction() as tx:
        applied = await tx.admin_change(change.id)
    assert applied is not None
    return applied


async def _apply_policy_change(ctx: CoreContext, officer: Official, change: AdminChange,
                               both: dict[str, Any]) -> None:
    payload = json.loads(change.payload_json)
    documents = [(item["name"], item["text"]) for item in payload["documents"]]
    # A change requested before base versions were recorded has none, so it counts as outdated.
    base_version = payload.get("base_version")
    async with ctx.store.transaction() as tx:
        known = await known_names(tx)
        in_force = await tx.current_policy_number() or 0
    if in_force != base_version:
        await _fail_outdated(ctx, officer, change, both, base_version, in_force)

    # Validated again, because a credential or application that the policy names may be gone by now.
    await parse_off_loop(parse_policy_documents, documents, known)
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        await _pending_change(tx, ctx, change.id)
        in_force = await tx.current_policy_number() or 0
        if in_force == base_version:
            version = await insert_policy_version(tx, documents, author_id=change.requested_by,
                                                  approver_id=officer.id, change_id=change.id, now=now)
            await tx.update_admin_change(change.id, PENDING, state=APPLIED, decided_by=officer.id, decided_at=now)
            await append_audit(tx, action="policy_applied", actor_type="security_officer", actor_id=officer.id,
                               details={**both, "version": version, "digest": payload["digest"],
                                        "files": [name for name, _ in documents]}, now=now)
            log.info("policy.applied", version=version, change_id=change.id, author=change.requested_by,
                     approver=officer.id)
            return
    # Another policy change took effect while this one was parsed.
    await _fail_outdated(ctx, officer, change, both, base_version, in_force)


async def _fail_outdated(ctx: CoreContext, officer: Official, change: AdminChange, both: dict[str, Any],
                         base_version: int | None, in_force: int) -> NoReturn:
    """Record a policy change based on another version than the one in force as ``failed``, and raise ChangeOutdated.

    It runs in its own transaction, so that the failure stays stored when the error rolls the caller's back.
    """
    base, current = version_label(base_version), version_label(in_force)
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        if not await tx.update_admin_change(change.id, PENDING, state=FAILED, decided_by=officer.id, decided_at=now,
                                            decision_note=f"outdated: based on {base}, {current} in force"):
            raise ChangeNotPending(change_id=change.id, state="decided by another officer")
        await append_audit(tx, action="admin_change_failed", actor_type="security_officer", actor_id=officer.id,
                           details={**both, "reason": ChangeOutdated.code, "base_version": base_version,
                                    "version_in_force": in_force}, now=now)
    log.info("admin_change.outdated", change_id=change.id, base_version=base_version, version_in_force=in_force,
             officer_id=officer.id)
    raise ChangeOutdated(change_id=change.id, base_version=base, current_version=current)


async def _destroy_key_change(ctx: CoreContext, officer: Official, change: AdminChange,
                              both: dict[str, Any]) -> None:
    payload = json.loads(change.payload_json)
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        await _pending_change(tx, ctx, change.id)
        # Claimed here, so that a second approval at the same moment finds it no longer pending, and a crash
        # during the HSM call leaves it visibly in progress rather than pending again.
        if not await tx.update_admin_change(change.id, PENDING, state=CARRYING_OUT, decided_by=officer.id,
                                            decided_at=now):
            raise ChangeNotPending(change_id=change.id, state="being approved by another officer")

    # The HSM call cannot share the database transaction, so the key is destroyed first and the outcome
    # recorded after.
    try:
        await destroy_key(ctx, change.requested_by, officer, payload["key_id"])
    except Exception as exc:
        async with ctx.store.transaction() as tx:
            await tx.update_admin_change(change.id, CARRYING_OUT, state=FAILED, decision_note=str(exc)[:300])
            await append_audit(tx, action="admin_change_failed", actor_type="security_officer",
                               actor_id=officer.id, details={**both, "reason": getattr(exc, "code", "error")},
                               now=ctx.clock())
        raise
    async with ctx.store.transaction() as tx:
        await tx.update_admin_change(change.id, CARRYING_OUT, state=APPLIED)


async def reject_change(ctx: CoreContext, officer: Official, change_id: str, note: str) -> AdminChange:
    """Reject a pending change, or withdraw it when ``officer`` requested it. A rejected change never takes effect."""
    require_role(officer, SECURITY_OFFICER)
    note = (note or "").strip()[:1000]
    if not note:
        raise InvalidInput("field_missing", field="note")
    await _expire_if_due(ctx, change_id)
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        change = await _pending_change(tx, ctx, change_id)
        await tx.update_admin_change(change.id, PENDING, state=REJECTED, decided_by=officer.id, decided_at=now,
                                     decision_note=note)
        names = await _person_names(tx, change.requested_by, officer.id)
        await append_audit(tx, action="admin_change_rejected", actor_type="security_officer", actor_id=officer.id,
                           details={"change_id": change.id, "kind": change.kind, "note": note,
                                    "requested_by": change.requested_by,
                                    "requested_by_name": names[change.requested_by],
                                    "rejected_by": officer.id, "rejected_by_name": names[officer.id]}, now=now)
        rejected = await tx.admin_change(change.id)
    assert rejected is not None
    return rejected


async def list_changes(ctx: CoreContext, officer: Official, states: Sequence[str] | None = None) -> list[AdminChange]:
    """Return the newest 100 changes, newest first, or only those in ``states``.

    NOTE: a change is marked ``expired`` only when an officer tries to approve
    or reject it, so until then a lapsed change is listed as ``pending``.
    """
    require_role(officer, SECURITY_OFFICER)
    for state in states or ():
        if state not in CHANGE_STATES:
            raise InvalidInput("field_invalid", field="state", reason=f"use one of {', '.join(CHANGE_STATES)}")
    async with ctx.store.transaction() as tx:
        return await tx.admin_changes(states=states)
