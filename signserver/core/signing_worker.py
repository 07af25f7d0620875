"""Signing of approved requests, and recovery of requests a crash left behind.

A request is claimed by moving it ``approved → signing`` in one transaction,
so only one worker in any process signs it. The signed file is written
beside the original, validated by the document signer, and only then is the
request moved to ``signed``. A request found in ``signing`` at start-up was
interrupted: it is failed, never signed a second time, and its partial output
is removed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import structlog

from signserver.errors import SignserverError
from signserver.store.records import SignRequest

from .audit import append_audit
from .context import CoreContext
from .errors import RequestAlreadyDecided
from .key_access import evaluate_key_use
from .policy import PolicyQuery
from .states import APPROVED, FAILED, SIGNED, SIGNING, transition

__all__ = ["sign_approved_request", "recover_interrupted_requests", "SigningQueue"]

log = structlog.get_logger(__name__)


def _output_path(request: SignRequest) -> Path:
    """Return where the signed file goes: signed.pdf for PAdES, signed.p7m or signed.p7s for CAdES.

    A raw signature value goes to signature.bin.
    """
    if request.signature_format == "raw":
        return Path(request.document_path).with_name("signature.bin")
    if request.signature_format == "cades":
        packaging = json.loads(request.placement_json or "{}").get("packaging")
        name = "signed.p7m" if packaging == "attached" else "signed.p7s"
    else:
        name = "signed.pdf"
    return Path(request.document_path).with_name(name)


async def sign_approved_request(ctx: CoreContext, request_id: str) -> str:
    """Sign one approved request; returns the final state (``signed`` or ``failed``)."""
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        request = await tx.sign_request(request_id, for_update=True)
        if request is None or request.state != APPROVED:
            return request.state if request else "missing"
        credential = await tx.credential(request.credential_id)
        refusal: Exception | None = None
        if credential is not None:
            # The policy, the key's state and the quotas are checked again, and the signature counted, now:
            # they may have changed while the request waited for its approval.
            query = PolicyQuery(application_id=request.application_id, credential_id=credential.id,
                                signature_format=request.signature_format, signature_level=request.signature_level,
                                document_type=request.document_type)
            refusal = (await evaluate_key_use(tx, ctx, credential, query, now, signer_name=credential.id,
                                              consume=True)).error
        await transition(tx, request, SIGNING, now)
        await append_audit(
            tx, action="signing_started", actor_type="system", actor_id="signserver", request_id=request.id,
            dossier_code=request.dossier_code, document_sha256=request.document_sha256,
            key_id_hex=credential.key_id_hex if credential else None,
            cert_serial_hex=credential.cert_serial_hex if credential else None, now=now,
        )
        request = await tx.sign_request(request_id)
    assert request is not None

    output_path = _output_path(request)
    try:
        if credential is None:
            raise SignserverError("credential_unavailable", credential_id=request.credential_id)
        if refusal is not None:
            raise refusal
        password = None
        if request.pdf_password_wrapped is not None:
            password = (await ctx.secret_box.open(request.pdf_password_wrapped)).decode()
        signed = await ctx.document_signer.sign(request, credential, output_path, password)
    except Exception as exc:  # noqa: BLE001 - any failure must end in the failed state, never stuck in signing
        code = exc.code if isinstance(exc, SignserverError) else "signing_error"
        log.error("sign_request.signing_failed", request_id=request.id, dossier_code=request.dossier_code,
                  code=code, error=str(exc)[:300], exc_info=not isinstance(exc, SignserverError))
        output_path.unlink(missing_ok=True)
        params = exc.params if isinstance(exc, SignserverError) else {}
        await _mark_failed(ctx, request_id, code, params)
        return FAILED

    finished = ctx.clock()
    async with ctx.store.transaction() as tx:
        current = await tx.sign_request(request_id, for_update=True)
        assert current is not None
        await transition(tx, current, SIGNED, finished, signed_path=str(output_path), signed_sha256=signed.sha256,
                         signed_at=finished)
        await append_audit(
            tx, action="signed", actor_type="system", actor_id="signserver", request_id=request.id,
            dossier_code=request.dossier_code, document_sha256=request.document_sha256,
            key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex,
            details={"signed_sha256": signed.sha256, "level": signed.level, "format": request.signature_format,
                     "signing_time": signed.signing_time.isoformat(), "approval_id": request.approval_id},
            now=finished,
        )
    log.info("sign_request.signed", request_id=request.id, dossier_code=request.dossier_code,
             credential_id=credential.id, level=signed.level)
    return SIGNED


async def _mark_failed(ctx: CoreContext, request_id: str, code: str, params: dict[str, Any] | None = None) -> None:
    """Move the request to ``failed`` with ``code``, and audit it with the error's ``params`` (time, reason...)."""
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        request = await tx.sign_request(request_id, for_update=True)
        if request is None:
            return
        try:
            await transition(tx, request, FAILED, now, state_reason=code)
        except RequestAlreadyDecided:
            return
        await append_audit(
            tx, action="signing_failed", actor_type="system", actor_id="signserver", request_id=request.id,
            dossier_code=request.dossier_code, document_sha256=request.document_sha256,
            details={"reason": code, **({"params": _json_safe(params)} if params else {})}, now=now,
        )


async def recover_interrupted_requests(ctx: CoreContext) -> tuple[int, list[str]]:
    """Fail requests left in ``signing``; return their count and the ids still ``approved``."""
    async with ctx.store.transaction() as tx:
        interrupted = await tx.sign_requests(states=[SIGNING], limit=10_000)
        waiting = await tx.sign_requests(states=[APPROVED], limit=10_000)
    for request in interrupted:
        _output_path(request).unlink(missing_ok=True)
        await _mark_failed(ctx, request.id, "signing_interrupted")
        log.warning("sign_request.recovered_as_failed", request_id=request.id, dossier_code=request.dossier_code)
    return len(interrupted), [request.id for request in waiting]


class SigningQueue:
    """In-process queue of approved requests, drained by a fixed number of worker tasks."""

    def __init__(self, ctx: CoreContext, workers: int = 2) -> None:
        self.ctx = ctx
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.worker_count = workers
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._run(), name=f"signing-worker-{n}") for n in range(self.worker_count)]

    def submit(self, request_id: str) -> None:
        self.queue.put_nowait(request_id)

    async def _run(self) -> None:
        while True:
            request_id = await self.queue.get()
            try:
                await sign_approved_request(self.ctx, request_id)
            except Exception:  # noqa: BLE001 - keep the worker alive; the request stays approved for a retry
                log.exception("signing_worker.error", request_id=request_id)
            finally:
                self.queue.task_done()

    async def drain(self) -> None:
        """Finish every queued signature (graceful stop)."""
        await self.queue.join()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    """Return ``params`` with values that JSON cannot hold (datetimes, lists of objects) as strings."""
    safe: dict[str, Any] = {}
    for name, value in params.items():
        safe[name] = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
    return safe
