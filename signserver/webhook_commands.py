"""``signserver webhooks``: a security officer sets an application's webhook and looks after the outbox.

``set`` prints the new signing key once. ``events`` lists outbox events with
every attempt (auditors may list too), and ``requeue`` queues an abandoned
event again for a new series of attempts.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from signserver.admin_cli import add_person_arguments, run_as_person
from signserver.cli_output import exit_on_error, print_json, say
from signserver.config import Settings
from signserver.core import webhook_registration
from signserver.core.context import CoreContext
from signserver.core.roles import AUDITOR, SECURITY_OFFICER
from signserver.signing.stamp import VIETNAM_TIME_ZONE
from signserver.store.records import Official
from signserver.store.webhooks import WebhookEvent

__all__ = ["add_webhook_parser", "run_webhooks_command"]

_STATUS_LABELS = {
    "pending": "đang chờ gửi / pending",
    "abandoned": "đã bỏ gửi / abandoned",
    "delivered": "đã gửi / delivered",
}


def _time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(VIETNAM_TIME_ZONE).strftime("%d/%m/%Y %H:%M:%S")


def _status(event: WebhookEvent) -> str:
    if event.delivered_at is not None:
        return "delivered"
    return "abandoned" if event.abandoned_at is not None else "pending"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _event_json(item: webhook_registration.EventWithAttempts) -> dict[str, Any]:
    event = item.event
    next_attempt = event.next_attempt_at if _status(event) == "pending" else None
    return {
        "id": event.id, "event_type": event.event_type, "application_id": event.application_id,
        "request_id": event.request_id, "status": _status(event), "created_at": _iso(event.created_at),
        "next_attempt_at": _iso(next_attempt), "attempts_in_series": event.attempts,
        "delivered_at": _iso(event.delivered_at), "abandoned_at": _iso(event.abandoned_at),
        "last_error": event.last_error,
        "attempts": [{"attempt": attempt.attempt, "started_at": _iso(attempt.started_at),
                      "duration_ms": attempt.duration_ms, "status_code": attempt.status_code,
                      "error": attempt.error, "instance": attempt.instance} for attempt in item.attempts],
    }


def _print_events(items: list[webhook_registration.EventWithAttempts], status: str) -> None:
    if not items:
        say(f"Không có sự kiện webhook nào với trạng thái {status}.", f"No webhook events with status {status}.")
        return
    for item in items:
        event = item.event
        status_of_event = _status(event)
        when = ""
        if status_of_event == "pending":
            when = f"  lần gửi tới / next attempt {_time(event.next_attempt_at)}"
        print(f"{event.id}  {event.event_type:<22} {event.request_id or '-':<26} {event.application_id}  "
              f"{_STATUS_LABELS[status_of_event]}{when}")
        for attempt in item.attempts:
            outcome = f"HTTP {attempt.status_code}" if attempt.status_code is not None else \
                (attempt.error or "đang gửi / in progress")
            if attempt.status_code is not None and attempt.error and not attempt.error.startswith("HTTP"):
                outcome += f" ({attempt.error})"
            print(f"    #{attempt.attempt:<3} {_time(attempt.started_at)}  {outcome}  {attempt.duration_ms} ms  "
                  f"{attempt.instance or '-'}")
        if event.last_error and status_of_event != "delivered":
            print(f"    lỗi gần nhất / last error: {event.last_error}")


def run_webhooks_command(settings: Settings, args: argparse.Namespace) -> int:
    return exit_on_error(_run)(settings, args)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    command = args.webhooks_command
    if command == "set":
        async def set_webhook(ctx: CoreContext, officer: Official) -> webhook_registration.RegisteredWebhook:
            return await webhook_registration.set_webhook(ctx, officer, args.application_id, args.url)

        registered = run_as_person(settings, args, (SECURITY_OFFICER,), set_webhook)
        if args.json:
            print_json({"application_id": registered.application.id,
                        "webhook_url": registered.application.webhook_url, "webhook_secret": registered.secret})
            return 0
        say(f"Đã đặt webhook của hệ thống {registered.application.id}: {registered.application.webhook_url}; "
            "đã ghi vào nhật ký. Khóa ký webhook dưới đây chỉ hiện một lần; khóa cũ (nếu có) không còn dùng.",
            f"Set the webhook of application {registered.application.id}: {registered.application.webhook_url}; "
            "recorded in the audit trail. The webhook signing key below is shown only once; any earlier key "
            "no longer signs.")
        print(f"  webhook_secret: {registered.secret}")
        return 0

    if command == "remove":
        async def remove_webhook(ctx: CoreContext, officer: Official) -> Any:
            return await webhook_registration.remove_webhook(ctx, officer, args.application_id)

        application = run_as_person(settings, args, (SECURITY_OFFICER,), remove_webhook)
        say(f"Đã gỡ webhook của hệ thống {application.id}; đã ghi vào nhật ký. Các sự kiện chưa gửi sẽ bị bỏ gửi.",
            f"Removed the webhook of application {application.id}; recorded in the audit trail. Events not yet "
            "delivered will be abandoned.")
        return 0

    if command == "requeue":
        async def requeue(ctx: CoreContext, officer: Official) -> WebhookEvent:
            return await webhook_registration.requeue_event(ctx, officer, args.event_id)

        event = run_as_person(settings, args, (SECURITY_OFFICER,), requeue)
        say(f"Đã xếp lại sự kiện {event.id} ({event.event_type}) để gửi ngay, với {settings.webhook_max_attempts} "
            "lần thử mới; đã ghi vào nhật ký.",
            f"Queued event {event.id} ({event.event_type}) again for delivery now, with "
            f"{settings.webhook_max_attempts} new attempts; recorded in the audit trail.")
        return 0

    async def listing(ctx: CoreContext, person: Official) -> list[webhook_registration.EventWithAttempts]:
        return await webhook_registration.list_webhook_events(ctx, person, args.status, application_id=args.app,
                                                              request_id=args.request, limit=args.limit)

    items = run_as_person(settings, args, (SECURITY_OFFICER, AUDITOR), listing)
    if args.json:
        print_json([_event_json(item) for item in items])
    else:
        _print_events(items, args.status)
    return 0


def add_webhook_parser(commands: Any) -> None:
    webhooks = commands.add_parser(
        "webhooks", help="thông báo qua webhook cho hệ thống một cửa / webhooks to one-stop applications")
    webhook_commands = webhooks.add_subparsers(dest="webhooks_command", required=True)

    set_parser = webhook_commands.add_parser(
        "set", help="đặt hoặc thay URL webhook, kèm khóa ký mới / set or replace the webhook URL, with a new key")
    set_parser.add_argument("application_id", help="e.g. app-motcua-demo")
    set_parser.add_argument("--url", required=True, help="absolute http:// or https:// URL of the receiver")
    set_parser.add_argument("--json", action="store_true", help="print JSON")

    remove = webhook_commands.add_parser("remove", help="gỡ webhook / remove the webhook")
    remove.add_argument("application_id", help="e.g. app-motcua-demo")

    events = webhook_commands.add_parser(
        "events", help="liệt kê sự kiện và các lần gửi / list events with their attempts")
    events.add_argument("--status", choices=webhook_registration.EVENT_STATUSES, default="pending",
                        help="pending (default: not yet delivered), abandoned, delivered or all")
    events.add_argument("--app", help="only events of this application id")
    events.add_argument("--request", help="only events of this sign request id")
    events.add_argument("--limit", type=int, default=100, help="most events listed, oldest first (default 100)")
    events.add_argument("--json", action="store_true", help="print JSON")

    requeue = webhook_commands.add_parser(
        "requeue", help="gửi lại một sự kiện đã bị bỏ gửi / queue an abandoned event again")
    requeue.add_argument("event_id", help="e.g. evt_0123456789abcdef0123")

    for parser in (set_parser, remove, events, requeue):
        add_person_arguments(parser)
