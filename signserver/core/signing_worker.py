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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from signserver.errors import DatabaseUnavailable, SignserverError, Unavailable
from signserver.store.records import SignRequest

from .audit import append_audit
from .context import CoreContext
from .errors import RequestAlreadyDecided
from .key_access import evaluate_key_use
from .policy import PolicyQuery
from .states import APPROVED, FAILED, SIGNED, SIGNING, transition

__all__ = ["sign_approved_request", "fail_interrupted_request", "SigningQueue"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Seconds before a request whose claim met a database outage is tried again.
DATABASE_RETRY_SECONDS = 5.0



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


async def sign_approved_request(ctx: CoreContext, request_id: str, instance_id: str | None = None) -> str:
    """Sign one approved request; returns the final state (``signed`` or ``failed``).

    ``instance_id`` names this process in ``service_instances``: it is
    recorded with the claim, so that another process fails the request if
    this one dies while signing.
    """
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
            # A request put back in line after an outage was counted at its first claim.
            refusal = (await evaluate_key_use(tx, ctx, credential, query, now, signer_name=credential.id,
                                              consume=request.signing_attempts == 0)).error
        await transition(tx, request, SIGNING, now, signing_instance=instance_id,
                         signing_attempts=request.signing_attempts + 1)
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
        output_path.unlink(missing_ok=True)
        if isinstance(exc, Unavailable) and request.signing_attempts < ctx.settings.signing_attempts:
            if await _until_stored(lambda: _put_back(ctx, request, code)):
                return APPROVED
        log.error("sign_request.signing_failed", request_id=request.id, dossier_code=request.dossier_code,
                  code=code, error=str(exc)[:300], exc_info=not isinstance(exc, SignserverError))
        params = exc.params if isinstance(exc, SignserverError) else {}
        await _until_stored(lambda: _mark_failed(ctx, request_id, code, params))
        return FAILED

    finished = ctx.clock()
    try:
        await _until_stored(lambda: _record_signed(ctx, request, credential, output_path, signed, finished))
    except RequestAlreadyDecided as exc:
        # Another process took this one for dead and failed the request meanwhile: the signature is never released.
        output_path.unlink(missing_ok=True)
        log.warning("sign_request.claim_lost", request_id=request.id, state=exc.params.get("state"))
        return str(exc.params.get("state", FAILED))
    log.info("sign_request.signed", request_id=request.id, dossier_code=request.dossier_code,
             credential_id=credential.id, level=signed.level)
    return SIGNED


async def _until_stored(step: Callable[[], Awaitable[T]]) -> T:
    """Run a transaction that ends a signing, again and again while the database is unreachable.

    The request is in ``signing`` and the claim is this process's: giving
    up would leave it there while this process still beats. If the process
    stops first, the request is failed as interrupted by the next one.
    """
    delay = 1.0
    while True:
        try:
            return await step()
        except DatabaseUnavailable:
            log.warning("sign_request.store_unavailable", retry_in_seconds=delay)
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)


async def _record_signed(ctx: CoreContext, request: SignRequest, credential: Any, output_path: Path, signed: Any,
                         finished: Any) -> None:
    async with ctx.store.transaction() as tx:
        current = await tx.sign_request(request.id, for_update=True)
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


async def _put_back(ctx: CoreContext, request: SignRequest, code: str) -> bool:
    """Return a request whose signing met an outage to ``approved``, to be tried again later."""
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        current = await tx.sign_request(request.id, for_update=True)
        if current is None or current.state != SIGNING:
            return False
        await transition(tx, current, APPROVED, now, signing_instance=None)
        await append_audit(
            tx, action="signing_postponed", actor_type="system", actor_id="signserver", request_id=request.id,
            dossier_code=request.dossier_code, document_sha256=request.document_sha256,
            details={"reason": code, "attempt": request.signing_attempts}, now=now,
        )
    log.warning("sign_request.signing_postponed", request_id=request.id, code=code, attempt=request.signing_attempts)
    return True


def retry_delay(attempt: int) -> float:
    """Seconds before the next try of a request put back after ``attempt`` claims: 5, 10, 20, 40, then 60."""
    return min(60.0, 5.0 * 2 ** max(0, attempt - 1))


async def _mark_failed(ctx: CoreContext, request_id: str, code: str, params: dict[str, Any] | None = None) -> bool:
    """Move the request to ``failed`` with ``code``, and audit it with the error's ``params`` (time, reason...).

    Returns False when the request was already in another final state.
    """
    now = ctx.clock()
    async with ctx.store.transaction() as tx:
        request = await tx.sign_request(request_id, for_update=True)
        if request is None:
            return False
        try:
            await transition(tx, request, FAILED, now, state_reason=code)
        except RequestAlreadyDecided:
            return False
        await append_audit(
            tx, action="signing_failed", actor_type="system", actor_id="signserver", request_id=request.id,
            dossier_code=request.dossier_code, document_sha256=request.document_sha256,
            details={"reason": code, **({"params": _json_safe(params)} if params else {})}, now=now,
        )
    return True


async def fail_interrupted_request(ctx: CoreContext, request_id: str, instance_id: str) -> None:
    """Fail a request whose signing process died, and remove what it may have written."""
    async with ctx.store.read_only() as tx:
        request = await tx.sign_request(request_id)
    if request is None or request.state != SIGNING:
        return
    if await _mark_failed(ctx, request_id, "signing_interrupted",
                          {"instance_id": instance_id} if instance_id else None):
        # Only now: a slow process taken for dead may have recorded its signature meanwhile.
        _output_path(request).unlink(missing_ok=True)


class SigningQueue:
    """In-process queue of approved requests, drained by a fixed number of worker tasks."""

    def __init__(self, ctx: CoreContext, workers: int = 2) -> None:
        self.ctx = ctx
        # This process's row in service_instances, set once it is registered.
        self.instance_id: str | None = None
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.worker_count = workers
        self.tasks: list[asyncio.Task[None]] = []
        # Requests queued here or waiting for a retry timer: another process's leftovers are taken up only if absent.
        self.pending: set[str] = set()

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._run(), name=f"signing-worker-{n}") for n in range(self.worker_count)]

    def submit(self, request_id: str) -> None:
        self.pending.add(request_id)
        self.queue.put_nowait(request_id)

    def take_up(self, request_id: str) -> None:
        """Queue a request that another process left approved, unless this one already has it queued or waiting for a retry."""
        if request_id not in self.pending:
            self.submit(request_id)

    def _retry_later(self, request_id: str, delay: float) -> None:
        self.pending.add(request_id)
        asyncio.get_running_loop().call_later(delay, self.submit, request_id)

    async def _run(self) -> None:
        while True:
            request_id = await self.queue.get()
            retrying = False
            try:
                if await sign_approved_request(self.ctx, request_id, self.instance_id) == APPROVED:
                    async with self.ctx.store.read_only() as tx:
                        request = await tx.sign_request(request_id)
                    attempt = request.signing_attempts if request else 1
                    self._retry_later(request_id, retry_delay(attempt))
                    retrying = True
            except DatabaseUnavailable:
                # Not claimed: the request is still approved, so it is tried again once the database is back.
                log.warning("signing_worker.store_unavailable", request_id=request_id,
                            retry_in_seconds=DATABASE_RETRY_SECONDS)
                self._retry_later(request_id, DATABASE_RETRY_SECONDS)
                retrying = True
            except Exception:  # noqa: BLE001 - keep the worker alive; the request stays approved for a retry
                log.exception("signing_worker.error", request_id=request_id)
            finally:
                if not retrying:
                    self.pending.discard(request_id)
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
