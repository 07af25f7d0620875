"""Wiring: open the HSM and the store, build the core, and assemble the aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web
from asn1crypto import pem, x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.sign.timestamps import TimeStamper

import hsm
from signserver.api import demo_ca as demo_ca_routes
from signserver.api import admin, officials, operations, sign_requests
from signserver.api.validations import setup_validations
from signserver.web import setup_inbox
from signserver.web.preview import PRUNE_INTERVAL_SECONDS, preview_cache_root, prune_preview_cache
from signserver.api.problems import error_middleware
from signserver.api import webhooks as webhook_routes
from signserver.cli_output import say
from signserver.config import Settings
from signserver.csc import routes as csc_routes
from signserver.core.auth import Authenticator
from signserver.core.context import CoreContext
from signserver.core.decisions import expire_due_requests
from signserver.core.policy_versions import PolicySource, bootstrap_policy
from signserver.core.context import utc_now
from signserver.core.instances import ServiceInstance
from signserver.core.signing_worker import SigningQueue, fail_interrupted_request
from signserver.demo_ca import DemoCa, has_demo_ca
from signserver.demo_pki import load_certificates
from signserver.hsm_bridge import HsmKeyVault, HsmSecretBox, keep_hsm_alive, signing_key_for
from signserver.pades_backend import PadesChecker, DocumentSigner
from signserver.signing.fonts import stamp_font_path
from signserver.signing.revocation import RevocationFetcher
from signserver.signing.tsa import InProcessTimeStamper, TimeStampAuthority
from signserver.signing.tsa_client import FailoverTimeStamper
from signserver.store.db import Store
from signserver.store.migrate import upgrade_to_head
from signserver.webhook_sender import WebhookSender
from signserver.workers import WorkerRole

__all__ = ["build_app", "build_core_context", "open_hsm", "load_trust_roots", "run", "run_serving"]

log = structlog.get_logger(__name__)


def policy_source_for(_settings: Settings) -> PolicySource:
    """Return the source of the policy in force, which is the store's newest version.

    Settings only name the directory that the first version is read from.
    """
    return PolicySource()


def open_hsm(settings: Settings) -> hsm.Hsm:
    import os

    os.environ.setdefault("SOFTHSM2_CONF", str(settings.softhsm_conf))
    token = hsm.Hsm(hsm.HsmConfig(
        module_path=settings.pkcs11_module,
        token_label=settings.token_label,
        user_pin=settings.user_pin(),
        pool_size=settings.hsm_pool_size,
    ))
    token.open()
    return token


# Suffixes of the trust anchor files that are read. Other files, such as a README, are ignored.
TRUST_ANCHOR_SUFFIXES = (".pem", ".crt", ".cer", ".der")


def load_trust_roots(path: Path, anchors_dir: Path | None = None) -> list[x509.Certificate]:
    """Load the demo root from ``path`` (PEM), plus every certificate in ``anchors_dir``.

    ``anchors_dir`` (``SIGNSERVER_TRUST_ANCHORS``) contains PEM or DER files,
    for example the Vietnamese national root certificates. A file that is
    not a certificate stops start-up, naming the file.
    """
    roots = [x509.Certificate.load(der) for _t, _h, der in pem.unarmor(path.read_bytes(), multiple=True)]
    if anchors_dir is None:
        return roots
    if not anchors_dir.is_dir():
        raise SystemExit(f"SIGNSERVER_TRUST_ANCHORS={anchors_dir} không phải là thư mục / is not a directory")
    for file in sorted(anchors_dir.iterdir()):
        if not file.is_file() or file.suffix.lower() not in TRUST_ANCHOR_SUFFIXES:
            continue
        try:
            certificates = load_certificates(file)
        except ValueError as exc:
            raise SystemExit(f"Tệp chứng thư số gốc không hợp lệ / invalid trust anchor file {file}: {exc}") from None
        roots.extend(x509.Certificate.load(certificate.public_bytes(Encoding.DER)) for certificate in certificates)
    log.info("trust_anchors.loaded", directory=str(anchors_dir), count=len(roots))
    return roots


async def _tsa_for(store: Store, token: hsm.Hsm, settings: Settings) -> TimeStampAuthority:
    async with store.transaction() as tx:
        tsa_credentials = await tx.credentials(kind="tsa")
    if not tsa_credentials:
        raise SystemExit("no TSA credential in the store; run `signserver init` first")

    async def next_serial() -> int:
        from signserver.core.context import utc_now

        async with store.transaction() as tx:
            return await tx.next_tsa_serial(utc_now())

    return TimeStampAuthority(
        signing_key_for(token, tsa_credentials[0]), policy_oid=settings.tsa_policy_oid, serial_source=next_serial
    )


async def _expiry_sweeper(ctx: CoreContext) -> None:
    """Expire requests past their deadline, and now and then prune the inbox's cached page images."""
    cache_root = preview_cache_root(ctx.settings)
    next_prune = 0.0
    while True:
        try:
            await expire_due_requests(ctx)
        except Exception:  # noqa: BLE001 - the sweeper must outlive a failed round
            log.exception("expiry_sweeper.error")
        if time.monotonic() >= next_prune:
            next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
            try:
                await prune_preview_cache(ctx.store, cache_root)
            except Exception:  # noqa: BLE001 - a failed pruning is tried again at the next interval
                log.exception("preview_cache.prune_error", cache_root=str(cache_root))
        await asyncio.sleep(ctx.settings.expiry_sweep_seconds)


def _demo_ca(settings: Settings) -> DemoCa:
    """Load the demo CA, warning when its certificates name a URL this server does not listen on."""
    demo_ca = DemoCa.load(settings.pki_dir)
    listening = {f"http://{host}:{settings.port}/demo-ca" for host in ("127.0.0.1", "localhost", settings.host)}
    if demo_ca.urls.base_url.startswith(("http://127.0.0.1:", "http://localhost:")) and \
            demo_ca.urls.base_url not in listening:
        log.warning("demo_ca.url_not_served_here", base_url=demo_ca.urls.base_url, port=settings.port,
                    hint="certificates name this URL; serve on its port or OCSP and CRL checks fail")
    else:
        log.info("demo_ca.serving", base_url=demo_ca.urls.base_url)
    return demo_ca


def _signature_timestamper(settings: Settings, tsa: TimeStampAuthority) -> TimeStamper:
    if settings.tsa_urls:
        log.info("tsa.external", urls=list(settings.tsa_urls))
        return FailoverTimeStamper(settings.tsa_urls, timeout_seconds=settings.tsa_timeout_seconds)
    return InProcessTimeStamper(tsa)


def build_core_context(settings: Settings, token: hsm.Hsm, store: Store, trust_roots: list[x509.Certificate],
                       timestamper: TimeStamper | None, revocation: RevocationFetcher) -> CoreContext:
    """Build the core over an open HSM token and store, for the server and for the administrative commands.

    ``timestamper`` may be None where nothing is signed with a time-stamp, as in the administrative commands.
    """
    return CoreContext(
        store=store,
        settings=settings,
        policies=policy_source_for(settings),
        secret_box=HsmSecretBox(token),
        pdf_checker=PadesChecker(),
        document_signer=DocumentSigner(token, timestamper, trust_roots, revocation=revocation),
        key_vault=HsmKeyVault(token),
        trust_roots=trust_roots,
    )


async def build_app(settings: Settings, role: WorkerRole | None = None) -> web.Application:
    # A missing or unusable stamp font would fail every visible signature: stop here instead.
    stamp_font_path()
    loop = asyncio.get_running_loop()
    role = role or WorkerRole()
    if role.recover:
        # Several workers: the supervisor upgraded the database before starting any of them.
        await loop.run_in_executor(None, upgrade_to_head, settings.database_url)
    token = await loop.run_in_executor(None, open_hsm, settings)
    store = Store(settings.database_url)
    trust_roots = load_trust_roots(settings.trust_roots_file, settings.trust_anchors_dir)
    tsa = await _tsa_for(store, token, settings)
    # One fetcher for the whole process, so every signature shares its cache of OCSP responses and CRLs.
    revocation = RevocationFetcher.from_settings(settings)
    ctx = build_core_context(settings, token, store, trust_roots, _signature_timestamper(settings, tsa), revocation)
    async with store.transaction() as tx:
        # A data directory initialised before policies were stored takes its first version from the directory.
        await bootstrap_policy(tx, settings.policies_dir, utc_now())

    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes + 65536)
    app["settings"] = settings
    app["worker_role"] = role
    app["hsm"] = token
    app["store"] = store
    app["core"] = ctx
    app["tsa"] = tsa
    app["revocation"] = revocation
    app["trust_roots"] = trust_roots
    app["authenticator"] = Authenticator(store, settings.official_session_ttl, ctx.secret_box, ctx.otp_policy)
    app["signing_queue"] = SigningQueue(ctx)
    app.add_routes(sign_requests.routes)
    app.add_routes(officials.routes)
    app.add_routes(admin.routes)
    app.add_routes(webhook_routes.routes)
    app.add_routes(operations.routes)
    app.add_routes(csc_routes.routes)
    setup_validations(app, settings)
    setup_inbox(app, settings)
    if has_demo_ca(settings.pki_dir):
        app["demo_ca"] = _demo_ca(settings)
        app.add_routes(demo_ca_routes.routes)
    app.cleanup_ctx.append(_background_tasks)
    return app


async def _background_tasks(app: web.Application) -> AsyncIterator[None]:
    ctx: CoreContext = app["core"]
    role: WorkerRole = app["worker_role"]
    queue: SigningQueue = app["signing_queue"]
    waiting: list[str] = []
    instance = ServiceInstance(ctx, functools.partial(fail_interrupted_request, ctx), queue.take_up)
    if role.recover:
        failed, waiting = await instance.recover_own_node()
        if failed:
            log.warning("startup.interrupted_requests_failed", count=failed)
    else:
        await instance.register()
    queue.instance_id = instance.id
    heartbeat = asyncio.create_task(instance.run(recover_others=role.sweep), name="instance-heartbeat")
    queue.start()
    for request_id in waiting:
        queue.submit(request_id)
    sweeper = asyncio.create_task(_expiry_sweeper(ctx), name="expiry-sweeper") if role.sweep else None
    keepalive = asyncio.create_task(keep_hsm_alive(app["hsm"], ctx.settings.hsm_probe_seconds), name="hsm-keepalive")
    webhook_sender = WebhookSender(ctx, instance.id)
    webhooks = asyncio.create_task(webhook_sender.run(), name="webhook-sender")
    log.info("signserver.started", host=ctx.settings.host, port=ctx.settings.port, resumed=len(waiting),
             worker=role.index, pid=os.getpid())
    if role.ready_fd is not None:
        os.write(role.ready_fd, b"1")
        os.close(role.ready_fd)
    yield
    log.info("signserver.stopping")
    if sweeper is not None:
        sweeper.cancel()
    keepalive.cancel()
    # Posts under way end within their timeout; their events are recorded before the store closes.
    webhook_sender.stop()
    try:
        await asyncio.wait_for(webhooks, timeout=ctx.settings.webhook_timeout_seconds + 5)
    except asyncio.TimeoutError:
        log.warning("webhook_sender.stop_timed_out")
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(queue.drain(), timeout=60)
    await queue.stop()
    heartbeat.cancel()
    try:
        await instance.deregister()
    except Exception as exc:  # noqa: BLE001 - a stale row only delays others' recovery by one lease
        log.warning("instance.deregister_failed", error=str(exc)[:200])
    await app["revocation"].close()
    await ctx.store.close()
    app["hsm"].close()
    log.info("signserver.stopped")


def run(settings: Settings, role: WorkerRole | None = None, sock: socket.socket | None = None) -> None:
    """Serve until SIGTERM or SIGINT: on ``sock`` when given (a worker), else on the configured host and port."""
    async def make() -> web.Application:
        return await build_app(settings, role)

    if sock is not None:
        # One connection per accept call: see signserver.workers.SharedListener.
        web.run_app(make(), sock=sock, backlog=1, print=None, access_log=None, shutdown_timeout=60)
    else:
        web.run_app(make(), host=settings.host, port=settings.port, print=None, access_log=None,
                    shutdown_timeout=60)


def run_serving(settings: Settings, role: WorkerRole | None = None, sock: socket.socket | None = None) -> int:
    """Serve as :func:`run` does; return the exit code, 1 with a bilingual message when the service cannot start."""
    try:
        run(settings, role, sock)
    except hsm.AmbiguousTokenError as exc:
        say(f"Không khởi động: token HSM có các đối tượng trùng nhãn hoặc trùng CKA_ID, không biết dùng khóa nào. "
            f"Hãy xóa hoặc đổi nhãn các đối tượng thừa rồi chạy lại.\n  {exc}",
            "Not started: the HSM token has objects sharing a label or CKA_ID, so a key lookup would be "
            "ambiguous. Remove or relabel the extra objects, then start again.", stream=sys.stderr)
        return 1
    except OSError as exc:
        say_port_taken(settings, exc)
        return 1
    return 0


def say_port_taken(settings: Settings, exc: OSError) -> None:
    say(f"Không mở được cổng {settings.host}:{settings.port}: {exc}. Hãy đặt SIGNSERVER_PORT khác.",
        f"Cannot listen on {settings.host}:{settings.port}: {exc}. Set another SIGNSERVER_PORT.", stream=sys.stderr)
