"""Store queries of the officials' web inbox: its sessions' activity time, and the names its pages show."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from . import tables as t
from .db import Transaction

__all__ = ["touch_session", "application_names", "credential_names"]


async def touch_session(tx: Transaction, token_sha256: str, now: datetime) -> None:
    """Set the session's ``last_seen_at`` to ``now``, which restarts its idle timeout."""
    await tx.connection.execute(
        update(t.official_sessions).where(t.official_sessions.c.token_sha256 == token_sha256).values(last_seen_at=now)
    )


async def application_names(tx: Transaction, application_ids: set[str]) -> dict[str, str]:
    """Return the name of each application in ``application_ids`` that exists, by id."""
    if not application_ids:
        return {}
    statement = select(t.applications.c.id, t.applications.c.name).where(t.applications.c.id.in_(application_ids))
    return {row.id: row.name for row in await tx.connection.execute(statement)}


async def credential_names(tx: Transaction, credential_ids: set[str]) -> dict[str, str]:
    """Return the display name of each credential in ``credential_ids`` that exists, by id."""
    if not credential_ids:
        return {}
    statement = select(t.credentials.c.id, t.credentials.c.display_name).where(t.credentials.c.id.in_(credential_ids))
    return {row.id: row.display_name for row in await tx.connection.execute(statement)}
