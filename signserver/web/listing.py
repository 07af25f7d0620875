"""The rows of the inbox's pending list: names looked up once, then filtered, sorted and counted.

Filtering and sorting apply to the official's pending requests as the core
returns them. They only choose what the page shows: which requests an
official may see and decide is the core's rule.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from signserver.core.context import CoreContext
from signserver.store.inbox_sessions import application_names, credential_names
from signserver.store.records import SignRequest

__all__ = ["InboxRow", "ListingFilter", "SORTS", "rows_for", "filter_and_sort", "expiring_soon", "media_type_of"]

# Sort keys of the pending list, by GET parameter value: (attribute, newest or latest first).
SORTS = {
    "received_desc": ("created_at", True),
    "received_asc": ("created_at", False),
    "expiry_asc": ("expires_at", False),
    "expiry_desc": ("expires_at", True),
}
DEFAULT_SORT = "received_desc"
EXPIRING_SOON = timedelta(hours=24)
MAX_QUERY_LENGTH = 200


@dataclass(frozen=True)
class InboxRow:
    request: SignRequest
    application_name: str
    signer_name: str
    time_left: timedelta

    @property
    def expiring_soon(self) -> bool:
        return self.time_left <= EXPIRING_SOON


@dataclass(frozen=True)
class ListingFilter:
    """The GET parameters of the pending list: text, application id, signer credential id and sort."""

    text: str = ""
    application_id: str = ""
    credential_id: str = ""
    sort: str = DEFAULT_SORT

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "ListingFilter":
        sort = query.get("sort", DEFAULT_SORT)
        return cls(
            text=query.get("q", "").strip()[:MAX_QUERY_LENGTH],
            application_id=query.get("application", "").strip()[:64],
            credential_id=query.get("signer", "").strip()[:64],
            sort=sort if sort in SORTS else DEFAULT_SORT,
        )


async def rows_for(ctx: CoreContext, requests: Iterable[SignRequest], now: datetime) -> list[InboxRow]:
    """Return a row per request with its application's name and its signer key's display name."""
    requests = list(requests)
    async with ctx.store.read_only() as tx:
        applications = await application_names(tx, {request.application_id for request in requests})
        signers = await credential_names(tx, {request.credential_id for request in requests})
    return [
        InboxRow(request, applications.get(request.application_id, request.application_id),
                 signers.get(request.credential_id, request.credential_id), _time_left(request.expires_at, now))
        for request in requests
    ]


def filter_and_sort(rows: list[InboxRow], chosen: ListingFilter) -> list[InboxRow]:
    """Return the rows matching ``chosen``, in its order. The text matches dossier code or title, any case."""
    text = chosen.text.casefold()
    kept = [
        row for row in rows
        if (not text or text in row.request.dossier_code.casefold() or text in row.request.title.casefold())
        and (not chosen.application_id or row.request.application_id == chosen.application_id)
        and (not chosen.credential_id or row.request.credential_id == chosen.credential_id)
    ]
    attribute, descending = SORTS[chosen.sort]
    return sorted(kept, key=lambda row: (getattr(row.request, attribute), row.request.id), reverse=descending)


def expiring_soon(rows: Iterable[InboxRow]) -> int:
    return sum(1 for row in rows if row.expiring_soon)


def media_type_of(request: SignRequest) -> str:
    """Return the media type guessed from the document's file name, or application/octet-stream."""
    guessed, _encoding = mimetypes.guess_type(request.document_name)
    return guessed or "application/octet-stream"


def _time_left(expires_at: datetime, now: datetime) -> timedelta:
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=now.tzinfo)
    return max(expires_at - now, timedelta(0))
