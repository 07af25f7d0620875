"""Commands that people with a role run on the server host: sign-in, then one core operation.

A security officer's or auditor's command opens the store and the HSM as
the server does. It checks the person's password and TOTP code with the
same core function as the API's login, or takes the session that
``signserver login`` opened from ``SIGNSERVER_SESSION``. Then it checks the
role and runs the operation as that person. The password comes from ``SIGNSERVER_PASSWORD`` or a prompt,
never from the command line, where other users of the host could read it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from signserver.config import Settings
from signserver.core.auth import Authenticator
from signserver.core.context import CoreContext, utc_now
from signserver.core.refusals import require_role_audited
from signserver.errors import SignserverError
from signserver.store.records import Official

__all__ = ["add_person_arguments", "run_as_person", "open_session", "open_admin_context", "CommandInputMissing"]

T = TypeVar("T")


class CommandInputMissing(SignserverError):
    code = "cli_input_missing"


def add_person_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", default=os.environ.get("SIGNSERVER_USER"),
                        help="tên đăng nhập / username (or SIGNSERVER_USER)")
    parser.add_argument("--otp", help="mã OTP từ ứng dụng xác thực / TOTP code (asked for when missing)")


def _ask(vietnamese: str, english: str, *, secret: bool) -> str:
    """Read a value from the terminal; without one (a script, a pipe), raise naming the missing value."""
    if not sys.stdin.isatty():
        raise CommandInputMissing(what_vi=vietnamese, what_en=english)
    prompt = f"{vietnamese} / {english}: "
    return getpass.getpass(prompt) if secret else input(prompt)


def _person_input(args: argparse.Namespace) -> tuple[str, str, str]:
    username = args.user or _ask("Tên đăng nhập", "username", secret=False)
    password = os.environ.get("SIGNSERVER_PASSWORD") or _ask("Mật khẩu", "password", secret=True)
    otp = args.otp or _ask("Mã OTP", "TOTP code", secret=False)
    return username, password, otp


async def open_admin_context(settings: Settings) -> tuple[CoreContext, Callable[[], Awaitable[None]]]:
    """Open the store and the HSM, and build a core context for administrative operations.

    Returns the context and a coroutine function that closes both.
    """
    from signserver.app import build_core_context, load_trust_roots, open_hsm
    from signserver.signing.revocation import RevocationFetcher
    from signserver.store.db import Store

    loop = asyncio.get_running_loop()
    token = await loop.run_in_executor(None, open_hsm, settings)
    store = Store(settings.database_url)
    trust_roots = load_trust_roots(settings.trust_roots_file, settings.trust_anchors_dir)
    ctx = build_core_context(settings, token, store, trust_roots, None, RevocationFetcher.from_settings(settings))

    async def close() -> None:
        await store.close()
        await loop.run_in_executor(None, token.close)

    return ctx, close


def _require_initialised(settings: Settings) -> None:
    if not settings.initialized_marker.exists():
        raise SignserverError("service_not_initialised", home=str(settings.home))


def _run_in_admin_context(settings: Settings, work: Callable[[CoreContext, Authenticator], Awaitable[T]]) -> T:
    """Open the store and the HSM, run ``work`` with them and an authenticator, and close them again."""

    async def run() -> T:
        ctx, close = await open_admin_context(settings)
        try:
            authenticator = Authenticator(ctx.store, settings.official_session_ttl, ctx.secret_box, ctx.otp_policy)
            return await work(ctx, authenticator)
        finally:
            await close()

    return asyncio.run(run())


def run_as_person(settings: Settings, args: argparse.Namespace, roles: tuple[str, ...],
                  action: Callable[[CoreContext, Official], Awaitable[T]]) -> T:
    """Identify the person, check ``roles``, and run ``action`` as them.

    The person is the one of the session in ``SIGNSERVER_SESSION`` (from
    ``signserver login``), else is signed in with password and TOTP code now.
    A person without the role is refused with RoleRequired and an
    ``access_denied`` audit record.
    """
    _require_initialised(settings)
    session_token = os.environ.get("SIGNSERVER_SESSION")
    credentials = None if session_token else _person_input(args)

    async def run(ctx: CoreContext, authenticator: Authenticator) -> T:
        if session_token:
            person = await authenticator.official_by_session(session_token, utc_now())
        else:
            assert credentials is not None
            username, password, otp = credentials
            person = await authenticator.authenticate_person(username, password, utc_now(), otp=otp, channel="cli")
        await require_role_audited(ctx.store, person, roles, operation=_command_name(args), channel="cli",
                                   now=utc_now())
        return await action(ctx, person)

    return _run_in_admin_context(settings, run)


def _command_name(args: argparse.Namespace) -> str:
    """Return the command as typed without its arguments, for example "keys disable"."""
    command = getattr(args, "command", None) or "unknown"
    subcommand = getattr(args, f"{command.replace('-', '_')}_command", None)
    return f"{command} {subcommand}" if subcommand else command


def open_session(settings: Settings, args: argparse.Namespace) -> tuple[str, Official]:
    """Sign in with password and TOTP code and return a session token for the following commands."""
    _require_initialised(settings)
    username, password, otp = _person_input(args)

    async def run(_ctx: CoreContext, authenticator: Authenticator) -> tuple[str, Official]:
        session = await authenticator.login_official(username, password, utc_now(), otp=otp, channel="cli")
        return session.token, session.official

    return _run_in_admin_context(settings, run)
