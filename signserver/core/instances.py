"""Serving processes as database rows with heartbeats, and recovery of what a dead one was signing.

Several replicas share one PostgreSQL database, each with several worker
processes. Every process registers a row in ``service_instances`` and
updates its heartbeat every few seconds. A request in ``signing`` names the
instance that claimed it. When that instance has not beaten for the lease,
another process fails the request as ``signing_interrupted``: the signature
may have been made in the HSM, but it was never released, so the request is
never signed a second time. A process that restarts on the same node fails
at once what the node's earlier processes left, since the data-directory
lock guarantees that none of them still runs.

Any other process picks up, after the lease, the requests that a dead
process left ``approved``. The claim ``approved → signing`` is a
compare-and-set, so only one process signs each.

The lease compares clocks of different nodes: they must be kept in time
(NTP), well within the lease.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from datetime import timedelta

import structlog

from .context import CoreContext, new_id
from .metrics import INTERRUPTED_REQUESTS

__all__ = ["ServiceInstance", "node_name"]

log = structlog.get_logger(__name__)


def node_name(ctx: CoreContext) -> str:
    return ctx.settings.node_name or f"{socket.gethostname()}:{ctx.settings.home}"


class ServiceInstance:
    """This process's row: registration, heartbeats, and recovery of dead instances' requests."""

    def __init__(self, ctx: CoreContext, fail_request: Callable[[str, str], object],
                 resubmit: Callable[[str], None]) -> None:
        self.ctx = ctx
        self.id = new_id("inst")
        self.node = node_name(ctx)
        self._fail_request = fail_request
        self._resubmit = resubmit
        self._heartbeat = timedelta(seconds=ctx.settings.instance_heartbeat_seconds)
        self._lease = timedelta(seconds=ctx.settings.instance_lease_seconds)
        # Start of this process's unbroken run of heartbeats. It judges others only after a full lease of its
        # own, so that after a database outage it does not take every live instance for dead.
        self._beating_since = None
        # Approved requests this process took up from others, and when: each is queued again only after a lease.
        self._taken_up: dict[str, float] = {}

    async def register(self) -> None:
        now = self.ctx.clock()
        async with self.ctx.store.transaction() as tx:
            await tx.insert_service_instance(id=self.id, node=self.node, pid=os.getpid(), started_at=now,
                                             heartbeat_at=now)
        self._beating_since = now
        log.info("instance.registered", instance_id=self.id, node=self.node)

    async def recover_own_node(self) -> tuple[int, list[str]]:
        """Fail the requests the node's earlier processes were signing; return their count and the waiting ids.

        Only for the first process of a ``signserver serve``, under its
        data-directory lock, before any of its processes signs.
        """
        now = self.ctx.clock()
        async with self.ctx.store.transaction() as tx:
            interrupted = await tx.interrupted_sign_requests(now - self._lease, dead_node=self.node)
            waiting = await tx.approved_request_ids()
        failed = await self._fail_all(interrupted)
        async with self.ctx.store.transaction() as tx:
            await tx.delete_service_instances(node=self.node)
            await tx.insert_service_instance(id=self.id, node=self.node, pid=os.getpid(), started_at=now,
                                             heartbeat_at=now)
        return failed, waiting

    async def run(self, *, recover_others: bool) -> None:
        """Beat until cancelled; with ``recover_others``, also recover dead instances' requests."""
        while True:
            await asyncio.sleep(self._heartbeat.total_seconds())
            try:
                await self._beat()
                if recover_others:
                    await self.recover_dead_instances()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the heartbeat must outlive a database outage
                self._beating_since = None
                log.warning("instance.heartbeat_failed", instance_id=self.id, error=str(exc)[:200])

    async def _beat(self) -> None:
        now = self.ctx.clock()
        async with self.ctx.store.transaction() as tx:
            present = await tx.beat_service_instance(self.id, now)
            if not present:
                # Another process took this one for dead (a pause longer than the lease); come back as new.
                await tx.insert_service_instance(id=self.id, node=self.node, pid=os.getpid(), started_at=now,
                                                 heartbeat_at=now)
                log.warning("instance.reregistered", instance_id=self.id)
        if self._beating_since is None:
            self._beating_since = now

    async def recover_dead_instances(self) -> int:
        now = self.ctx.clock()
        if self._beating_since is None or now - self._beating_since < self._lease:
            return 0
        async with self.ctx.store.read_only() as tx:
            interrupted = await tx.interrupted_sign_requests(now - self._lease)
            waiting = await tx.approved_request_ids(now - self._lease)
        failed = await self._fail_all(interrupted)
        if failed:
            async with self.ctx.store.transaction() as tx:
                await tx.delete_service_instances(beat_before=now - self._lease)
        moment = now.timestamp()
        self._taken_up = {request_id: at for request_id, at in self._taken_up.items()
                          if moment - at < self._lease.total_seconds()}
        for request_id in waiting:
            if request_id not in self._taken_up:
                self._taken_up[request_id] = moment
                self._resubmit(request_id)
        return failed

    async def _fail_all(self, interrupted: list) -> int:
        for request in interrupted:
            await self._fail_request(request.id, request.signing_instance or "")
            INTERRUPTED_REQUESTS.inc()
            log.warning("sign_request.recovered_as_failed", request_id=request.id,
                        dossier_code=request.dossier_code, instance_id=request.signing_instance)
        return len(interrupted)

    async def deregister(self) -> None:
        """Remove this process's row on a clean stop."""
        async with self.ctx.store.transaction() as tx:
            await tx.delete_service_instances(instance_id=self.id)
