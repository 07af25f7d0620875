"""The ``signserver`` command: init, serve, demo, demo-ca and credentials here, the others from their own modules.

Output for people is Vietnamese first, then English.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from signserver.admin_cli import add_person_arguments
from signserver.cli_output import say as _say
from signserver.cli_output import say_error, say_file_error
from signserver.config import Settings
from signserver.enrolment_commands import ENROLMENT_HANDLERS, add_enrolment_parsers
from signserver.errors import SignserverError
from signserver.key_commands import add_keys_parser, run_keys_command
from signserver.logging import configure_logging
from signserver.policy_commands import POLICY_HANDLERS, add_policy_parsers
from signserver.validate_command import add_validate_parser, run_validate
from signserver.webhook_commands import add_webhook_parser, run_webhooks_command

__all__ = ["main"]

DEFAULT_DOSSIER_CODE = "000.00.01.H01-261204-0001"


def _cmd_init(settings: Settings, _args: argparse.Namespace) -> int:
    from signserver.provision import InitializationError, initialize

    try:
        initialize(settings)
    except InitializationError as exc:
        if settings.initialized_marker.exists():
            _say(f"Thư mục dữ liệu {settings.home} đã được khởi tạo; giữ nguyên.",
                 f"Data directory {settings.home} is already initialised; left as it is.")
            return 0
        _say(f"Không khởi tạo được: {exc}", f"Initialisation failed: {exc}", stream=sys.stderr)
        return 1
    _say(f"Đã khởi tạo thư mục dữ liệu {settings.home}: token SoftHSM, PKI thử nghiệm, tài khoản demo.",
         f"Initialised {settings.home}: SoftHSM token, demo PKI, demo accounts.")
    return 0


def _cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    from signserver.app import run_serving
    from signserver.workers import DataDirectoryBusy, lock_data_directory

    if not settings.initialized_marker.exists():
        _say("Chưa khởi tạo; hãy chạy `signserver init` trước.", "Not initialised; run `signserver init` first.",
             stream=sys.stderr)
        return 1
    try:
        lock_descriptor = lock_data_directory(settings)
    except DataDirectoryBusy as busy:
        if settings.database_url.startswith("sqlite"):
            _say(f"Không khởi động: một dịch vụ signserver khác (PID {busy.holder}) đang dùng thư mục dữ liệu "
                 f"{settings.home}. Hãy dừng dịch vụ đó, hoặc đặt SIGNSERVER_HOME khác.",
                 f"Not started: another signserver service (PID {busy.holder}) is using the data directory "
                 f"{settings.home}. Stop it, or set another SIGNSERVER_HOME.", stream=sys.stderr)
        else:
            # Replicas on PostgreSQL may share the directory, one per node name.
            _say(f"Không khởi động: một dịch vụ signserver khác (PID {busy.holder}) đang chạy với tên nút "
                 f"{settings.run_dir.name} trên thư mục dữ liệu {settings.home}. Hãy dừng dịch vụ đó, hoặc đặt "
                 f"SIGNSERVER_NODE_NAME khác cho bản sao này.",
                 f"Not started: another signserver service (PID {busy.holder}) runs as node {settings.run_dir.name} "
                 f"on the data directory {settings.home}. Stop it, or give this replica another "
                 f"SIGNSERVER_NODE_NAME.", stream=sys.stderr)
        return 1
    url = f"http://{settings.host}:{settings.port}"
    if settings.log_format == "json":
        # Keep standard output free of prose when the logs are machine-read.
        structlog.get_logger(__name__).info("signserver.serving", url=url,
                                            demo_credentials=str(settings.credentials_file))
    else:
        print(
            f"signserver đang chạy tại / is serving at {url}\n"
            f"  Thông tin demo (khóa API, mật khẩu, mã bí mật TOTP) / demo credentials: {settings.credentials_file}\n"
            f"  Chứng thư gốc thử nghiệm / demo root certificate: {settings.demo_root_file}\n"
            f"  Thử ký / try it:  .venv/bin/signserver demo --server {url} --output /tmp/signed.pdf\n"
            f"  API: {url}/openapi.json   Dừng / stop: Ctrl+C",
            flush=True,
        )
    if settings.workers > 1:
        from signserver.workers import serve_with_workers

        return serve_with_workers(settings, lock_descriptor)
    return run_serving(settings)


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from signserver.demo_client import DemoFailed, run_demo
    from signserver.signing.sample import SAMPLE_STAMP_BOX, generate_sample_pdf

    credentials_path = Path(args.credentials or settings.credentials_file)
    try:
        credentials = json.loads(credentials_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        _say(f"Không đọc được tệp thông tin demo {credentials_path}: {exc}",
             f"Cannot read the demo credentials file {credentials_path}: {exc}", stream=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch:
        placement = None
        if args.input:
            input_path = Path(args.input)
        else:
            input_path = generate_sample_pdf(Path(scratch) / "giay-xac-nhan-mau.pdf", dossier_code=args.dossier_code)
            # The generated document leaves this box empty for the signature.
            placement = {"rect": list(SAMPLE_STAMP_BOX)}
        if not input_path.is_file():
            _say(f"Không tìm thấy tệp {input_path}.", f"File {input_path} not found.", stream=sys.stderr)
            return 2
        try:
            result = asyncio.run(run_demo(
                args.server, credentials, input_path, Path(args.output), password=args.password,
                signer_id=args.signer, dossier_code=args.dossier_code, language=args.lang, placement=placement,
            ))
        except DemoFailed as exc:
            print(f"LỖI / ERROR {exc.code}" + (f" (HTTP {exc.status})" if exc.status else "") + f": {exc.detail}",
                  file=sys.stderr)
            return 1
        except OSError as exc:
            _say(f"Không kết nối được tới {args.server}: {exc}", f"Cannot reach {args.server}: {exc}",
                 stream=sys.stderr)
            return 1
    _say(f"Đã ký: yêu cầu {result.request_id}, hồ sơ {result.dossier_code}, người ký {result.signer_name}.",
         f"Signed: request {result.request_id}, dossier {result.dossier_code}, signer {result.signer_name}.")
    print(f"  {result.output}  sha256={result.signed_sha256}")
    return 0


def _cmd_demo_ca(settings: Settings, args: argparse.Namespace) -> int:
    from signserver.demo_ca_commands import DemoCaCommandError, reissue_credential, revoke_credential

    if _say_database_missing(settings):
        return 2
    # The demo CA changes what credentials may sign (revoke) or their certificates (reissue): a security officer's work.
    try:
        officer = _signed_in_officer(settings, args)
    except SignserverError as exc:
        say_error(exc)
        return 2
    if args.demo_ca_command == "issue":
        return _demo_ca_issue(settings, args, officer.id)
    try:
        if args.demo_ca_command == "revoke":
            result = asyncio.run(revoke_credential(settings, args.credential_id, args.reason, actor_id=officer.id))
            entry = result.entry
            if not result.newly_revoked:
                _say(f"Chứng thư số của {args.credential_id} (số hiệu {entry.serial_number:x}) đã bị thu hồi "
                     f"từ trước, lúc {entry.revoked_at.isoformat()}; giữ nguyên.",
                     f"The certificate of {args.credential_id} (serial {entry.serial_number:x}) was already "
                     f"revoked at {entry.revoked_at.isoformat()}; left as it is.")
                return 0
            _say(f"Đã thu hồi chứng thư số của {args.credential_id} (số hiệu {entry.serial_number:x}, "
                 f"lý do {entry.reason}) tại CA thử nghiệm. OCSP và CRL của CA báo ngay tình trạng này; "
                 f"dịch vụ đang chạy ngừng ký bằng chứng thư này chậm nhất sau "
                 f"{settings.revocation_cache_max_age.total_seconds():.0f} giây "
                 f"(SIGNSERVER_REVOCATION_CACHE_MAX_SECONDS).",
                 f"Revoked the certificate of {args.credential_id} (serial {entry.serial_number:x}, "
                 f"reason {entry.reason}) at the demo CA. The CA's OCSP and CRL report it at once; a running "
                 f"service stops signing with it within {settings.revocation_cache_max_age.total_seconds():.0f} s "
                 f"(SIGNSERVER_REVOCATION_CACHE_MAX_SECONDS).")
            return 0
        certificate = asyncio.run(reissue_credential(
            settings, args.credential_id, actor_id=officer.id, not_before=args.not_before, not_after=args.not_after))
    except DemoCaCommandError as exc:
        _say(exc.vietnamese, exc.english, stream=sys.stderr)
        return 1
    valid_from = certificate.not_valid_before_utc.isoformat()
    valid_to = certificate.not_valid_after_utc.isoformat()
    _say(f"Đã cấp lại chứng thư số cho {args.credential_id}: số hiệu {certificate.serial_number:x}, "
         f"hiệu lực từ {valid_from} đến {valid_to}.",
         f"Reissued the certificate of {args.credential_id}: serial {certificate.serial_number:x}, "
         f"valid from {valid_from} to {valid_to}.")
    return 0


def _signed_in_officer(settings: Settings, args: argparse.Namespace) -> Any:
    from signserver.admin_cli import run_as_person
    from signserver.core.roles import SECURITY_OFFICER

    async def whoami(_ctx: Any, person: Any) -> Any:
        return person

    return run_as_person(settings, args, (SECURITY_OFFICER,), whoami)


def _demo_ca_issue(settings: Settings, args: argparse.Namespace, officer_id: str) -> int:
    from cryptography.hazmat.primitives.serialization import Encoding

    from signserver.demo_ca_commands import DemoCaCommandError, issue_for_csr

    try:
        issued = asyncio.run(issue_for_csr(settings, args.csr.read_bytes(), args.kind, args.days, actor_id=officer_id))
        args.out.write_bytes(issued.certificate.public_bytes(Encoding.PEM))
        if args.chain_out is not None:
            args.chain_out.write_bytes(b"".join(item.public_bytes(Encoding.PEM) for item in issued.chain))
    except DemoCaCommandError as exc:
        _say(exc.vietnamese, exc.english, stream=sys.stderr)
        return 1
    except OSError as exc:
        say_file_error(exc)
        return 2
    certificate = issued.certificate
    valid_to = certificate.not_valid_after_utc.isoformat()
    kind_vi = "cá nhân" if args.kind == "personal" else "của cơ quan (con dấu)"
    _say(f"CA thử nghiệm đã cấp chứng thư số {kind_vi} số hiệu {certificate.serial_number:x}, hiệu lực đến "
         f"{valid_to}, ghi vào {args.out}. Nhập bằng `signserver keys import`.",
         f"The demo CA issued a {'personal' if args.kind == 'personal' else 'agency seal'} certificate, serial {certificate.serial_number:x}, valid to "
         f"{valid_to}, written to {args.out}. Import it with `signserver keys import`.")
    return 0


def _utc_datetime(value: str) -> datetime:
    """Parse an ISO 8601 date or date-time for argparse; a value without offset is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date such as 2020-01-01") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _cmd_credentials(settings: Settings, args: argparse.Namespace) -> int:
    from signserver.admin_cli import run_as_person
    from signserver.appearance_commands import appearance_change, set_appearance
    from signserver.core.roles import SECURITY_OFFICER

    if _say_database_missing(settings):
        return 2
    try:
        change = appearance_change(signature_image=args.signature_image, seal_image=args.seal_image,
                                   seal_diameter_mm=args.seal_diameter_mm, default=args.default)
        summary = run_as_person(settings, args, (SECURITY_OFFICER,),
                                lambda ctx, officer: set_appearance(ctx, officer, args.credential_id, change))
    except SignserverError as exc:
        say_error(exc)
        return 2

    def image(sha256: str | None, vietnamese: bool) -> str:
        if sha256 is None:
            return "chưa có" if vietnamese else "none"
        return f"SHA-256 {sha256}"

    rule_vi = "" if summary.default_is_explicit else " (tự chọn theo ảnh đã có)"
    rule_en = "" if summary.default_is_explicit else " (chosen from the images set)"
    _say(f"Đã cập nhật hình thức hiển thị chữ ký của {summary.credential_id}; đã ghi vào nhật ký.\n"
         f"  Ảnh chữ ký: {image(summary.signature_image_sha256, True)}\n"
         f"  Ảnh con dấu: {image(summary.seal_image_sha256, True)}, đường kính {summary.seal_diameter_mm:g} mm\n"
         f"  Hình thức mặc định: {summary.default_appearance}{rule_vi}",
         f"Updated the signature appearance of {summary.credential_id}; recorded in the audit trail.\n"
         f"  Signature image: {image(summary.signature_image_sha256, False)}\n"
         f"  Seal image: {image(summary.seal_image_sha256, False)}, diameter {summary.seal_diameter_mm:g} mm\n"
         f"  Default appearance: {summary.default_appearance}{rule_en}")
    return 0


def _say_database_missing(settings: Settings) -> bool:
    """Tell the user to run `signserver init` and return True when the store's SQLite file does not exist."""
    if not _database_missing(settings):
        return False
    _say(f"Không tìm thấy cơ sở dữ liệu {settings.database_url}; hãy chạy `signserver init` trước.",
         f"Database {settings.database_url} not found; run `signserver init` first.", stream=sys.stderr)
    return True


def _database_missing(settings: Settings) -> bool:
    """True when the SQLite file of the store does not exist, so that reading it would create it empty."""
    prefix = "sqlite+aiosqlite:///"
    return settings.database_url.startswith(prefix) and not Path(settings.database_url[len(prefix):]).is_file()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signserver", description="Dịch vụ ký số tập trung / remote signing service")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="khởi tạo thư mục dữ liệu / initialise the data directory ($SIGNSERVER_HOME)")
    commands.add_parser("serve", help="chạy dịch vụ / run the service on $SIGNSERVER_HOST:$SIGNSERVER_PORT")

    demo = commands.add_parser("demo", help="chạy thử quy trình ký qua API / run the main job through the HTTP API")
    demo.add_argument("--server", default=None, help="service URL (default http://127.0.0.1:$SIGNSERVER_PORT)")
    demo.add_argument("--input", help="PDF to sign (default: a generated sample Vietnamese document)")
    demo.add_argument("--output", required=True, help="where to write the signed PDF")
    demo.add_argument("--password", help="password of an encrypted input PDF")
    demo.add_argument("--signer", help="official id to approve and sign (default: the first demo official)")
    demo.add_argument("--dossier-code", default=DEFAULT_DOSSIER_CODE, help="mã hồ sơ (dossier code)")
    demo.add_argument("--credentials", help="demo credentials file (default $SIGNSERVER_HOME/demo-credentials.json)")
    demo.add_argument("--lang", choices=["vi", "en"], default="vi", help="language of server messages")

    demo_ca = commands.add_parser(
        "demo-ca", help="CA thử nghiệm, chỉ dùng để thử / the demo CA, for tests and demos only")
    demo_ca_commands = demo_ca.add_subparsers(dest="demo_ca_command", required=True)
    revoke = demo_ca_commands.add_parser(
        "revoke", help="thu hồi chứng thư số của khóa ký / revoke a credential's certificate")
    revoke.add_argument("credential_id", help="credential id, e.g. cred-nguyen-van-an")
    revoke.add_argument("--reason", default="unspecified",
                        help="RFC 5280 reason: unspecified (default), keyCompromise, cACompromise, "
                             "affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn")
    reissue = demo_ca_commands.add_parser(
        "reissue", help="cấp lại chứng thư số cho cùng khóa / issue a new certificate for the credential's key")
    reissue.add_argument("credential_id", help="credential id, e.g. cred-tran-thi-bich-ngoc")
    reissue.add_argument("--not-before", type=_utc_datetime, help="start of validity, ISO 8601 (default: one hour ago, or, with "
                         "--not-after, the earlier of that and a year before --not-after)")
    reissue.add_argument("--not-after", type=_utc_datetime,
                         help="end of validity, ISO 8601, e.g. 2020-01-01 for an expired certificate "
                              "(default: two years after the start)")
    issue = demo_ca_commands.add_parser(
        "issue", help="cấp chứng thư số theo CSR / issue a signing certificate for a CSR")
    issue.add_argument("--csr", type=Path, required=True, help="the PKCS#10 CSR, PEM or DER")
    issue.add_argument("--out", type=Path, required=True, help="file to write the PEM certificate to")
    issue.add_argument("--chain-out", type=Path, help="file to write the issuing CA and root certificates to (PEM)")
    issue.add_argument("--kind", choices=["personal", "seal"], default="personal",
                       help="personal (default): the subject needs a UID CCCD:, CMND: or HC:; seal: a UID MST:")
    issue.add_argument("--days", type=int, default=730, help="validity in days from now, 1 to 3650 (default 730)")
    for demo_ca_parser in (revoke, reissue, issue):
        add_person_arguments(demo_ca_parser)

    credentials = commands.add_parser("credentials", help="chứng thư số dùng để ký / signing credentials")
    credentials_commands = credentials.add_subparsers(dest="credentials_command", required=True)
    appearance = credentials_commands.add_parser(
        "set-appearance",
        help="đặt hình thức hiển thị chữ ký (cán bộ quản trị an ninh) / set the visible signature appearance")
    appearance.add_argument("credential_id", help="credential id, e.g. cred-tran-thi-bich-ngoc")
    appearance.add_argument("--signature-image", type=Path, metavar="FILE.png",
                            help="the official's signature image: PNG, at most 1 MiB and 2000 x 2000 pixels")
    appearance.add_argument("--seal-image", type=Path, metavar="FILE.png",
                            help="the agency seal image: PNG, square, the ring touching its edges")
    appearance.add_argument("--seal-diameter-mm", type=float, metavar="MM",
                            help="the seal's real diameter in millimetres, 20 to 60 (default 36)")
    appearance.add_argument("--default", choices=["signature", "seal", "text"],
                            help="appearance of requests that name none (default: the key's image, else text)")
    add_person_arguments(appearance)

    add_validate_parser(commands)

    add_policy_parsers(commands)
    add_enrolment_parsers(commands)
    add_keys_parser(commands)
    add_webhook_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    # Commands other than serve and init print their own bilingual output; their info logs would only bury it.
    quiet = args.command not in ("serve", "init")
    configure_logging(settings.log_format, logging.WARNING if quiet else logging.INFO)
    if args.command == "demo" and args.server is None:
        args.server = f"http://127.0.0.1:{settings.port}"
    handlers = {"init": _cmd_init, "serve": _cmd_serve, "demo": _cmd_demo, "demo-ca": _cmd_demo_ca,
                "credentials": _cmd_credentials, "validate": run_validate, "keys": run_keys_command,
                "webhooks": run_webhooks_command,
                **POLICY_HANDLERS, **ENROLMENT_HANDLERS}
    try:
        return handlers[args.command](settings, args)
    except BrokenPipeError:
        # The reader of the output (for example `head`) closed the pipe: stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
