"""``signserver officials`` and ``signserver apps``: a security officer enrols accounts on the server host.

The first password and TOTP seed of an official, and the API key of an
application, are printed once for the officer to hand over. The store keeps
only their hash, or the seed wrapped by the HSM.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from signserver.admin_cli import add_person_arguments, run_as_person
from signserver.cli_output import exit_on_error, say
from signserver.config import Settings
from signserver.core import enrolment
from signserver.core.context import CoreContext
from signserver.core.roles import AUDITOR, SECURITY_OFFICER, SIGNING_ROLES
from signserver.store.records import Official

__all__ = ["add_enrolment_parsers", "ENROLMENT_HANDLERS"]


def _officials(settings: Settings, args: argparse.Namespace) -> int:
    if args.officials_command == "list":
        async def listing(ctx: CoreContext, _person: Official) -> list[Official]:
            async with ctx.store.transaction() as tx:
                return await tx.officials()

        for person in run_as_person(settings, args, (SECURITY_OFFICER, AUDITOR), listing):
            state = "" if person.enabled else "  (đã khóa / disabled)"
            print(f"{person.id:<28} {person.username:<16} {','.join(sorted(person.role_set)):<28} "
                  f"{person.full_name} — {person.agency}{state}")
        return 0

    async def add(ctx: CoreContext, officer: Official) -> enrolment.EnrolledOfficial:
        return await enrolment.enrol_official(ctx, officer, official_id=args.id, username=args.username,
                                              full_name=args.full_name, title=args.title or "", agency=args.agency,
                                              roles=args.role or ["official"])

    enrolled = run_as_person(settings, args, (SECURITY_OFFICER,), add)
    if args.json:
        print(json.dumps({"id": enrolled.official.id, "username": enrolled.official.username,
                          "password": enrolled.password, "totp_secret": enrolled.totp_secret,
                          "totp_uri": enrolled.totp_uri}, ensure_ascii=False))
        return 0
    say(f"Đã đăng ký cán bộ {enrolled.official.full_name} ({enrolled.official.id}); đã ghi vào nhật ký. "
        "Trao tận tay mật khẩu đầu tiên và mã bí mật TOTP dưới đây; chúng chỉ hiện một lần.",
        f"Enrolled official {enrolled.official.full_name} ({enrolled.official.id}); recorded in the audit trail. "
        "Hand over the first password and TOTP secret below in person; they are shown only once.")
    print(f"  username: {enrolled.official.username}\n  password: {enrolled.password}\n"
          f"  totp_secret: {enrolled.totp_secret}\n  totp_uri: {enrolled.totp_uri}")
    return 0


def _apps(settings: Settings, args: argparse.Namespace) -> int:
    if args.apps_command == "list":
        async def listing(ctx: CoreContext, _person: Official) -> list[Any]:
            async with ctx.store.transaction() as tx:
                return await tx.applications()

        for application in run_as_person(settings, args, (SECURITY_OFFICER, AUDITOR), listing):
            webhook = f"  webhook: {application.webhook_url}" if application.webhook_url else ""
            print(f"{application.id:<28} {application.name} — {application.agency}{webhook}")
        return 0

    async def add(ctx: CoreContext, officer: Official) -> enrolment.EnrolledApplication:
        return await enrolment.enrol_application(ctx, officer, application_id=args.id, name=args.name,
                                                 agency=args.agency, webhook_url=args.webhook_url)

    enrolled = run_as_person(settings, args, (SECURITY_OFFICER,), add)
    if args.json:
        print(json.dumps({"id": enrolled.application.id, "api_key": enrolled.api_key,
                          "webhook_url": enrolled.application.webhook_url,
                          "webhook_secret": enrolled.webhook_secret}))
        return 0
    say(f"Đã đăng ký hệ thống {enrolled.application.name} ({enrolled.application.id}). Khóa API dưới đây chỉ hiện "
        "một lần. Hệ thống chưa dùng được khóa ký nào cho đến khi một phiên bản chính sách cho phép.",
        f"Enrolled application {enrolled.application.name} ({enrolled.application.id}). The API key below is "
        "shown only once. It can use no signing key until a policy version grants one.")
    print(f"  api_key: {enrolled.api_key}")
    if enrolled.webhook_secret is not None:
        say(f"Webhook: {enrolled.application.webhook_url}. Khóa ký webhook dưới đây cũng chỉ hiện một lần.",
            f"Webhook: {enrolled.application.webhook_url}. The webhook signing key below is also shown only once.")
        print(f"  webhook_secret: {enrolled.webhook_secret}")
    return 0


def add_enrolment_parsers(commands: Any) -> None:
    officials = commands.add_parser("officials", help="tài khoản cán bộ / official accounts (security officers)")
    official_commands = officials.add_subparsers(dest="officials_command", required=True)
    listing = official_commands.add_parser("list", help="liệt kê / list")
    add_person_arguments(listing)
    add = official_commands.add_parser("add", help="đăng ký cán bộ hoặc văn thư / enrol an official or seal holder")
    add.add_argument("--id", required=True, help="e.g. off-le-thi-hoa")
    add.add_argument("--username", required=True, help="e.g. hoa.lt")
    add.add_argument("--full-name", required=True, help="họ và tên, e.g. Lê Thị Hoa")
    add.add_argument("--title", help="chức vụ / position title")
    add.add_argument("--agency", required=True, help="cơ quan / agency")
    add.add_argument("--role", action="append", choices=sorted(SIGNING_ROLES),
                     help="official (default) or seal_holder; repeat for both")
    add.add_argument("--json", action="store_true", help="print JSON")
    add_person_arguments(add)

    apps = commands.add_parser("apps", help="hệ thống một cửa điện tử / one-stop applications (security officers)")
    app_commands = apps.add_subparsers(dest="apps_command", required=True)
    listing = app_commands.add_parser("list", help="liệt kê / list")
    add_person_arguments(listing)
    add = app_commands.add_parser("add", help="đăng ký hệ thống / enrol an application")
    add.add_argument("--id", required=True, help="e.g. app-motcua-xa-an-phu")
    add.add_argument("--name", required=True, help="tên hệ thống / name")
    add.add_argument("--agency", required=True, help="cơ quan / agency")
    add.add_argument("--webhook-url", help="URL nhận thông báo / absolute http:// or https:// URL for webhooks")
    add.add_argument("--json", action="store_true", help="print JSON")
    add_person_arguments(add)


ENROLMENT_HANDLERS = {"officials": exit_on_error(_officials), "apps": exit_on_error(_apps)}
