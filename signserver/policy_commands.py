"""The security officers' and auditors' commands: policies, four-eyes changes, key destruction, audit trail.

``policy check`` changes nothing and needs no sign-in. Every other command
signs the person in (password + TOTP, see ``admin_cli``) and checks the role
through the same core functions as the API.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from signserver.admin_cli import add_person_arguments, run_as_person
from signserver.api.serialize import change_details_json, change_json
from signserver.cli_output import exit_on_error, print_json, say
from signserver.config import Settings
from signserver.core import changes
from signserver.core.audit import verify_audit_chain
from signserver.core.change_details import ChangeDetails, describe_change
from signserver.core.context import CoreContext
from signserver.core.key_access import explain_key_use
from signserver.core.policy import Explanation, PolicyQuery, parse_policy_documents
from signserver.core.policy_files import check_policy_input
from signserver.core.policy_versions import known_names
from signserver.core.roles import AUDITOR, SECURITY_OFFICER
from signserver.errors import SignserverError
from signserver.signing.stamp import VIETNAM_TIME_ZONE
from signserver.store.records import AdminChange, Official

__all__ = ["add_policy_parsers", "POLICY_HANDLERS"]


def _read_documents(paths: list[str]) -> list[tuple[str, str]]:
    """Read the YAML files named, or every ``*.yaml`` in a named directory, as (file name, text) pairs.

    The bytes are decoded without newline translation, so the SHA-256 that ``changes show`` prints for a
    file equals what ``sha256sum`` prints for it.
    """
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    documents = []
    for path in files:
        try:
            documents.append((path.name, path.read_bytes().decode("utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise SignserverError("policy_file_unreadable", file=str(path), reason=str(exc)) from None
    if not documents:
        raise SignserverError("policy_file_unreadable", file=", ".join(paths), reason="no .yaml file found")
    return documents


def _when(change: AdminChange) -> str:
    return change.requested_at.astimezone(VIETNAM_TIME_ZONE).strftime("%d/%m/%Y %H:%M")


# policy check / apply / explain / versions


def _cmd_policy(settings: Settings, args: argparse.Namespace) -> int:
    if args.policy_command == "check":
        return _policy_check(settings, args)
    if args.policy_command == "apply":
        return _policy_apply(settings, args)
    if args.policy_command == "explain":
        return _policy_explain(settings, args)
    return _policy_versions(settings, args)


def _policy_check(settings: Settings, args: argparse.Namespace) -> int:
    documents = _read_documents(args.paths)
    check_policy_input(documents)
    known = None
    if settings.initialized_marker.exists():
        from signserver.store.db import Store

        async def read_names() -> Any:
            store = Store(settings.database_url)
            try:
                async with store.transaction() as tx:
                    return await known_names(tx)
            finally:
                await store.close()

        known = asyncio.run(read_names())
    parsed = parse_policy_documents(documents, known)
    against = "đối chiếu với dữ liệu của dịch vụ" if known else "chưa đối chiếu với dữ liệu (chưa khởi tạo)"
    against_en = "checked against the service's data" if known else "not checked against data (not initialised)"
    say(f"Chính sách hợp lệ: {len(documents)} tệp, {len(parsed.credential_ids())} khóa; {against}.",
        f"Policy valid: files {len(documents)}, keys {len(parsed.credential_ids())}; {against_en}.")
    return 0


def _policy_apply(settings: Settings, args: argparse.Namespace) -> int:
    documents = _read_documents(args.paths)

    async def apply(ctx: CoreContext, officer: Official) -> AdminChange:
        return await changes.request_policy_change(ctx, officer, documents)

    change = run_as_person(settings, args, (SECURITY_OFFICER,), apply)
    if args.json:
        print_json(change_json(change))
        return 0
    say(f"Đã ghi đề nghị thay đổi chính sách {change.id}. Chính sách CHƯA có hiệu lực: cần một cán bộ quản trị "
        f"an ninh khác phê duyệt bằng `signserver changes approve {change.id}`.",
        f"Recorded policy change request {change.id}. The policy is NOT in force yet: another security officer "
        f"must approve it with `signserver changes approve {change.id}`.")
    return 0


def _policy_explain(settings: Settings, args: argparse.Namespace) -> int:
    query = PolicyQuery(application_id=args.app, credential_id=args.key, signature_format=args.format,
                        signature_level=args.level if args.level.lower() == "none" else args.level.upper(),
                        document_type=args.doc_type)

    async def explain(ctx: CoreContext, person: Official) -> Explanation:
        return await explain_key_use(ctx, person, query)

    explanation = run_as_person(settings, args, (SECURITY_OFFICER, AUDITOR), explain)
    if args.json:
        print_json(explanation.to_json())
        return 0
    for line in explanation.lines("vi"):
        print(line)
    print()
    for line in explanation.lines("en"):
        print(f"  ({line})")
    return 0


def _policy_versions(settings: Settings, args: argparse.Namespace) -> int:
    async def versions(ctx: CoreContext, _person: Official) -> Any:
        async with ctx.store.transaction() as tx:
            return await tx.policy_versions()

    found = run_as_person(settings, args, (SECURITY_OFFICER, AUDITOR), versions)
    print("phiên bản / version  áp dụng lúc / applied (+07:00)  soạn / author  duyệt / approver  digest")
    for version in found:
        when = version.applied_at.astimezone(VIETNAM_TIME_ZONE).strftime("%d/%m/%Y %H:%M:%S")
        print(f"v{version.version:<19} {when:<31} {version.author_id:<14} {version.approver_id:<17} "
              f"{version.digest[:16]}")
    return 0


# changes list / show / approve / reject; keys destroy


def _cmd_changes(settings: Settings, args: argparse.Namespace) -> int:
    if args.changes_command == "list":
        return _changes_list(settings, args)
    if args.changes_command == "show":
        return _changes_show(settings, args)
    if args.changes_command == "approve":
        return _changes_approve(settings, args)
    return _changes_reject(settings, args)


def _changes_list(settings: Settings, args: argparse.Namespace) -> int:
    states = [args.state] if args.state else None

    async def listing(ctx: CoreContext, officer: Official) -> list[AdminChange]:
        return await changes.list_changes(ctx, officer, states)

    found = run_as_person(settings, args, (SECURITY_OFFICER,), listing)
    print("mã / id                    loại / kind    trạng thái / state  đề nghị / requested by  lúc / at")
    for change in found:
        print(f"{change.id:<26} {change.kind:<14} {change.state:<19} {change.requested_by:<23} "
              f"{_when(change)}  {change.summary}")
    if not found:
        say("Không có đề nghị thay đổi nào.", "No change requests.")
    return 0


def _changes_show(settings: Settings, args: argparse.Namespace) -> int:
    async def show(ctx: CoreContext, officer: Official) -> ChangeDetails:
        return await describe_change(ctx, officer, args.change_id)

    details = run_as_person(settings, args, (SECURITY_OFFICER,), show)
    if args.json:
        print_json(change_details_json(details))
        return 0
    change = details.change
    print(f"Đề nghị thay đổi (change request): {change.id}")
    print(f"Loại (kind): {_KIND_NAMES.get(change.kind, change.kind)} ({change.kind})")
    print(f"Trạng thái (state): {change.state}")
    print(f"Người đề nghị (requested by): {change.requested_by} — {details.requested_by_name}, "
          f"{_when(change)} (+07:00)")
    print(f"Hết hạn (expires): {_local_time(change.expires_at)} (+07:00)")
    if change.decided_by:
        print(f"Người quyết định (decided by): {change.decided_by} — {details.decided_by_name}")
    if change.decision_note:
        print(f"Ghi chú (note): {_visible(change.decision_note)}")
    if details.policy is not None:
        _print_policy_change(details)
    if details.key is not None:
        key = details.key
        print(f"Khóa (key): {key.key_id}")
        print(f"Nhãn (label): {key.key_label}")
        print(f"CKA_ID: {key.key_id_hex}")
        print(f"Trạng thái khóa (key state): {key.state}")
        print(f"Chứng thư số (credential): {key.credential_id or '-'}")
        print(f"Số sê-ri chứng thư số (certificate serial): {key.cert_serial_hex or '-'}")
    return 0


_KIND_NAMES = {changes.POLICY_APPLY: "áp dụng chính sách khóa", changes.KEY_DESTROY: "hủy khóa"}


def _local_time(value: datetime) -> str:
    return value.astimezone(VIETNAM_TIME_ZONE).strftime("%d/%m/%Y %H:%M")


def _print_policy_change(details: ChangeDetails) -> None:
    policy = details.policy
    assert policy is not None
    base = changes.version_label(policy.base_version)
    in_force = changes.version_label(policy.version_in_force)
    print(f"Soạn trên phiên bản (based on): {base}")
    print(f"Phiên bản đang có hiệu lực (in force): {in_force}")
    if policy.outdated and details.change.state == "pending":
        say(f"Chính sách đã thay đổi kể từ khi lập đề nghị này, nên phê duyệt sẽ thất bại (change_outdated). "
            f"Người đề nghị cần áp dụng lại các tệp sau khi đối chiếu với {in_force}.",
            f"The policy changed since this request, so approving it will fail (change_outdated). The requester "
            f"must apply the files again against {in_force}.")
    print()
    say("SHA-256 của văn bản UTF-8 từng tệp, cùng dạng với `sha256sum`. Hãy so với `sha256sum` các tệp của người "
        "đề nghị trước khi phê duyệt:",
        "SHA-256 of each file's UTF-8 text, in the format of `sha256sum`. Compare it with `sha256sum` of the "
        "requester's files before approving:")
    for document in policy.documents:
        print(f"{document.sha256}  {document.name}")
    print()
    say(f"Khác biệt so với phiên bản đang có hiệu lực ({in_force}), từng tệp. Khi được phê duyệt, các tệp này thay "
        "thế toàn bộ chính sách, nên tệp không có trong đề nghị sẽ bị bỏ:",
        f"Differences from the version in force ({in_force}), file by file. Once approved, these files replace the "
        "whole policy, so a file left out of the request is removed:")
    for diff in policy.diffs:
        print(f"{diff.name}: {_DIFF_STATUS_NAMES[diff.status]} ({diff.status})")
        if diff.diff:
            sys.stdout.write(_visible(diff.diff, keep_newlines=True))


def _visible(text: str, *, keep_newlines: bool = False) -> str:
    """Return ``text`` with control and bidirectional characters escaped, so that a terminal shows every one."""
    def escape(character: str) -> str:
        if keep_newlines and character == "\n":
            return character
        if character == "\t" or (unicodedata.category(character) not in ("Cc", "Cf") and character.isprintable()):
            return character
        return f"\\u{ord(character):04x}"

    return "".join(escape(character) for character in text)


_DIFF_STATUS_NAMES = {"added": "thêm mới", "removed": "bị bỏ", "changed": "thay đổi", "unchanged": "không đổi"}


def _changes_approve(settings: Settings, args: argparse.Namespace) -> int:
    async def approve(ctx: CoreContext, officer: Official) -> AdminChange:
        return await changes.approve_change(ctx, officer, args.change_id)

    change = run_as_person(settings, args, (SECURITY_OFFICER,), approve)
    say(f"Đã phê duyệt và thực hiện {change.id} ({change.kind}); người đề nghị {change.requested_by}, "
        f"người phê duyệt {change.decided_by}. Đã ghi vào nhật ký.",
        f"Approved and carried out {change.id} ({change.kind}); requested by {change.requested_by}, "
        f"approved by {change.decided_by}. Recorded in the audit trail.")
    return 0


def _changes_reject(settings: Settings, args: argparse.Namespace) -> int:
    async def reject(ctx: CoreContext, officer: Official) -> AdminChange:
        return await changes.reject_change(ctx, officer, args.change_id, args.note)

    change = run_as_person(settings, args, (SECURITY_OFFICER,), reject)
    say(f"Đã từ chối {change.id}; thay đổi không được thực hiện.",
        f"Rejected {change.id}; the change was not carried out.")
    return 0


def _cmd_key_destroy(settings: Settings, args: argparse.Namespace) -> int:
    async def request(ctx: CoreContext, officer: Official) -> AdminChange:
        return await changes.request_key_destruction(ctx, officer, args.key_id)

    change = run_as_person(settings, args, (SECURITY_OFFICER,), request)
    if args.json:
        print_json(change_json(change))
        return 0
    say(f"Đã ghi đề nghị hủy khóa {args.key_id}: {change.id}. Khóa CHƯA bị hủy: cần một cán bộ quản trị an ninh "
        f"khác phê duyệt bằng `signserver changes approve {change.id}`.",
        f"Recorded the request to destroy key {args.key_id}: {change.id}. The key is NOT destroyed yet: another "
        f"security officer must approve it with `signserver changes approve {change.id}`.")
    return 0


# audit verify / list


def _cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from signserver.api.serialize import audit_record_json

    async def verify(ctx: CoreContext, _auditor: Official) -> int:
        result = await verify_audit_chain(ctx.store)
        if result.ok:
            say(f"Nhật ký toàn vẹn: {result.records_checked} bản ghi, chuỗi băm khớp.",
                f"Audit trail intact: {result.records_checked} records, hash chain verified.")
            return 0
        where_vi = f" tại bản ghi {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        where_en = f" at record {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        say(f"Nhật ký đã bị can thiệp: {result.problem}{where_vi} "
            f"(đã kiểm tra {result.records_checked} bản ghi trước đó).",
            f"Audit trail tampered: {result.problem}{where_en} "
            f"({result.records_checked} records before it verified).", stream=sys.stderr)
        return 1

    async def listing(ctx: CoreContext, _auditor: Official) -> int:
        dossier = unicodedata.normalize("NFC", args.dossier) if args.dossier else None
        async with ctx.store.transaction() as tx:
            records = await tx.audit_records(dossier_code=dossier, request_id=args.request)
        if args.json:
            print_json([audit_record_json(r) for r in records])
            return 0
        print(f"{'#':>6}  {'time (+07:00)':<19}  {'hành động / action':<26} {'chủ thể / actor':<36} "
              f"{'yêu cầu / request':<26} mã hồ sơ / dossier  chi tiết / details")
        for record in records:
            when = record.recorded_at.astimezone(VIETNAM_TIME_ZONE).strftime("%d/%m/%Y %H:%M:%S")
            actor = f"{record.actor_type}:{record.actor_id}"
            print(f"{record.seq:>6}  {when:<19}  {record.action:<26} {actor:<36} "
                  f"{record.request_id or '-':<26} {record.dossier_code or '-'}  {record.details_json}")
        if not records:
            say("Không có bản ghi nào.", "No records.")
        return 0

    try:
        return run_as_person(settings, args, (AUDITOR,), verify if args.audit_command == "verify" else listing)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc))[:200]
        say(f"Không đọc được nhật ký từ {settings.database_url}: {reason}",
            f"Cannot read the audit trail from {settings.database_url}: {reason}", stream=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (for example `head`) closed the pipe, so there is nothing more to print.
        sys.stderr.close()
        return 0


def _cmd_login(settings: Settings, args: argparse.Namespace) -> int:
    from signserver.admin_cli import open_session

    token, person = open_session(settings, args)
    say(f"Đã đăng nhập: {person.full_name} ({', '.join(sorted(person.role_set))}). Đặt SIGNSERVER_SESSION bằng "
        f"mã phiên dưới đây cho các lệnh tiếp theo; phiên hết hạn sau {settings.official_session_ttl}.",
        f"Signed in: {person.full_name}. Set SIGNSERVER_SESSION to the session token below for the next commands; "
        f"it expires after {settings.official_session_ttl}.", stream=sys.stderr)
    print(token)
    return 0


def add_policy_parsers(commands: Any) -> None:
    """Register ``policy``, ``changes`` and ``audit`` (and ``keys destroy`` through ``add_key_destroy_parser``)."""
    login = commands.add_parser(
        "login", help="đăng nhập, in mã phiên cho SIGNSERVER_SESSION / sign in, print a session token")
    add_person_arguments(login)

    policy = commands.add_parser("policy", help="chính sách khóa / key policies")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="kiểm tra tệp chính sách / validate policy files")
    check.add_argument("paths", nargs="+", help="policy .yaml files or directories")
    apply = policy_commands.add_parser(
        "apply", help="đề nghị áp dụng chính sách (cần người thứ hai duyệt) / request a policy change (four-eyes)")
    apply.add_argument("paths", nargs="+", help="policy .yaml files or directories")
    apply.add_argument("--json", action="store_true", help="print the change as JSON")
    add_person_arguments(apply)
    explain = policy_commands.add_parser("explain", help="giải thích quyết định / explain a decision")
    explain.add_argument("--app", required=True, help="application id, e.g. app-motcua-demo")
    explain.add_argument("--key", required=True, help="credential id, e.g. cred-seal-ubnd-mau-son")
    explain.add_argument("--doc-type", help="document type code the application would send")
    explain.add_argument("--format", default="pades", choices=["pades", "cades", "raw"])
    explain.add_argument("--level", default="B-T", help="B-B, B-T, B-LT, B-LTA (none for raw)")
    explain.add_argument("--json", action="store_true", help="print JSON")
    add_person_arguments(explain)
    versions = policy_commands.add_parser("versions", help="các phiên bản đã áp dụng / applied versions")
    add_person_arguments(versions)

    change_parser = commands.add_parser("changes", help="thay đổi cần hai người duyệt / four-eyes changes")
    change_commands = change_parser.add_subparsers(dest="changes_command", required=True)
    listing = change_commands.add_parser("list", help="liệt kê / list")
    listing.add_argument("--state", choices=changes.CHANGE_STATES)
    add_person_arguments(listing)
    show = change_commands.add_parser(
        "show", help="xem nội dung và khác biệt trước khi duyệt / show the content and the diff before approving")
    show.add_argument("change_id")
    show.add_argument("--json", action="store_true", help="print the change and its content as JSON")
    add_person_arguments(show)
    approve = change_commands.add_parser("approve", help="phê duyệt và thực hiện / approve and carry out")
    approve.add_argument("change_id")
    add_person_arguments(approve)
    reject = change_commands.add_parser("reject", help="từ chối / reject")
    reject.add_argument("change_id")
    reject.add_argument("--note", required=True, help="lý do / reason")
    add_person_arguments(reject)

    audit = commands.add_parser("audit", help="nhật ký (thanh tra) / audit trail (auditors)")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="kiểm tra chuỗi băm / verify the hash chain")
    add_person_arguments(verify)
    listing = audit_commands.add_parser("list", help="liệt kê bản ghi / list records")
    listing.add_argument("--dossier", help="only records of this dossier code (mã hồ sơ)")
    listing.add_argument("--request", help="only records of this sign request id")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_person_arguments(listing)


def add_key_destroy_parser(key_commands: Any) -> None:
    destroy = key_commands.add_parser(
        "destroy", help="đề nghị hủy khóa (cần người thứ hai duyệt) / request key destruction (four-eyes)")
    destroy.add_argument("key_id", help="key id from `signserver keys list`")
    destroy.add_argument("--json", action="store_true", help="print the change as JSON")
    add_person_arguments(destroy)


POLICY_HANDLERS = {"login": exit_on_error(_cmd_login), "policy": exit_on_error(_cmd_policy),
                   "changes": exit_on_error(_cmd_changes), "audit": exit_on_error(_cmd_audit)}
KEY_DESTROY_HANDLER = exit_on_error(_cmd_key_destroy)
