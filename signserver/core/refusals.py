"""Audit records of refused attempts by signed-in people: a missing role, and approving one's own change.

The caller raises the refusal right after, which rolls back the caller's
transaction. So each record here commits on its own. Requests without a
signed-in person are not audited here; the API logs them as
``api.request_refused``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import structlog

from signserver.store.db import Store, Transaction
from signserver.store.records import AdminChange, Official

from .audit import append_audit
from .errors import RoleRequired
from .roles import audit_actor_type, require_role

__all__ = ["require_role_audited", "commit_four_eyes_refusal"]

log = structlog.get_logger(__name__)


async def require_role_audited(store: Store, person: Official, roles: Iterable[str], *, operation: str,
                               channel: str, now: datetime) -> None:
    """Raise RoleRequired unless ``person`` has one of ``roles``, after recording an ``access_denied`` record.

    ``operation`` names the route or command, for example "POST /api/v1/admin/keys" or "keys disable".
    Call it outside any open transaction, because on SQLite a second transaction waits for the first.
    """
    required = tuple(roles)
    try:
        require_role(person, *required)
    except RoleRequired:
        async with store.transaction() as tx:
            await append_audit(tx, action="access_denied", actor_type=audit_actor_type(person), actor_id=person.id,
                               details={"roles": sorted(person.role_set), "required_roles": list(required),
                                        "operation": operation[:200], "channel": channel}, now=now)
        log.info("access.denied", person_id=person.id, operation=operation[:200], required_roles=list(required),
                 channel=channel)
        raise


async def commit_four_eyes_refusal(tx: Transaction, change: AdminChange, officer: Official, now: datetime) -> None:
    """Record that ``officer`` tried to approve their own ``change``, and commit ``tx`` at once.

    The caller raises FourEyesRequired next, which would roll the record back
    with the transaction. So ``tx`` must hold no change yet that should not be kept.
    """
    await append_audit(tx, action="four_eyes_refused", actor_type=audit_actor_type(officer), actor_id=officer.id,
                       details={"change_id": change.id, "kind": change.kind, "requested_by": change.requested_by,
                                "officer_id": officer.id}, now=now)
    await tx.commit()
    log.info("admin_change.four_eyes_refused", change_id=change.id, officer_id=officer.id)
