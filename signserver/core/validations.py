"""The audit record of a signature validation requested through the API.

The record contains the caller, the SHA-256 of the file (and of the
detached content, if any) and the verdict. The file itself is neither stored nor
written to the trail.
"""

from __future__ import annotations

from .audit import append_audit
from .context import CoreContext

__all__ = ["record_document_validation"]


async def record_document_validation(
    ctx: CoreContext,
    *,
    actor_type: str,
    actor_id: str,
    document_sha256: str,
    document_kind: str,
    indication: str,
    counts: dict[str, int],
    content_sha256: str | None = None,
) -> int:
    """Append a ``document_validated`` record and return its sequence number."""
    details: dict[str, object] = {"kind": document_kind, "indication": indication, "signatures": dict(counts)}
    if content_sha256 is not None:
        details["content_sha256"] = content_sha256
    async with ctx.store.transaction() as tx:
        return await append_audit(
            tx, action="document_validated", actor_type=actor_type, actor_id=actor_id,
            document_sha256=document_sha256, details=details, now=ctx.clock(),
        )
