"""``signserver keys``: the security officer's key lifecycle on the server host.

Each command signs the officer in with ``admin_cli.run_as_person``, from
the session in ``SIGNSERVER_SESSION`` or with password and TOTP code. It
opens the store and the HSM of ``SIGNSERVER_HOME`` as the server does and
calls one function of ``signserver.core.keys``, which checks the role and
writes the audit record.
``keys destroy`` only records a request that a second officer must approve
(``policy_commands``).

Output is Vietnamese first, then English, or JSON with ``--json``. Exit
codes: 0 on success, 1 when the service rejected the operation, 2 for a
file that cannot be read or written.
NOTE: ``keys destroy`` runs in ``policy_commands`` and exits with 2 when the
service rejects it, like the other four-eyes commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from signserver.api.serialize import hsm_key_json, officer_credential_json
from signserver.admin_cli import add_person_arguments, run_as_person
from signserver.cli_output import print_json, say, say_error, say_file_error
from signserver.config import Settings
from signserver.core import keys
from signserver.core.context import CoreContext
from signserver.core.roles import SECURITY_OFFICER
from signserver.errors import SignserverError
from signserver.store.records import Credential, HsmKey, Official

__all__ = ["add_keys_parser", "run_keys_command"]

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_FILE_ERROR = 2


def add_keys_parser(commands: Any) -> None:
    """Register ``keys list|generate|csr|import|enable|disable|rotate|destroy``."""
    from signserver.policy_commands import add_key_destroy_parser

    keys_parser = commands.add_parser(
        "keys", help="khóa trong HSM (cán bộ quản trị an ninh) / HSM keys (security officers)")
    key_commands = keys_parser.add_subparsers(dest="keys_command", required=True)

    listing = key_commands.add_parser("list", help="liệt kê khóa, không mở token / list keys from the inventory")
    listing.add_argument("--state", action="append", choices=keys.KEY_STATES,
                         help="only keys in this state (repeat for several)")
    _common(listing)

    generate = key_commands.add_parser("generate", help="sinh cặp khóa trong HSM / generate a key pair in the HSM")
    generate.add_argument("--type", dest="key_type", required=True, choices=sorted(keys.KEY_SIZES),
                          help="RSA or EC")
    generate.add_argument("--size", dest="key_size", required=True, type=int,
                          help="RSA modulus bits (2048, 3072, 4096), or EC curve bits (256 for P-256, 384 for P-384)")
    generate.add_argument("--label", help="CKA_LABEL (default: derived from the type, size and CKA_ID)")
    _common(generate)

    csr = key_commands.add_parser("csr", help="tạo yêu cầu cấp chứng thư số (CSR) / create a PKCS#10 CSR")
    csr.add_argument("key_id", help="key id or CKA_ID (hex) from `signserver keys list`")
    csr.add_argument("--cn", required=True, help="CN: họ và tên, or the agency's name for a seal")
    csr.add_argument("--o", required=True, help="O: cơ quan, tổ chức")
    csr.add_argument("--ou", help="OU: đơn vị")
    csr.add_argument("--l", help="L: quận, huyện")
    csr.add_argument("--st", help="ST: tỉnh, thành phố")
    csr.add_argument("--c", default="VN", help="C: two-letter country code (default VN)")
    csr.add_argument("--title", help="title: chức vụ")
    csr.add_argument("--uid", action="append", default=[],
                     help="UID: CCCD:<12 digits>, CMND:<9 or 12 digits>, HC:<passport> or MST:<tax code> (repeatable)")
    csr.add_argument("--out", type=Path, required=True, help="file to write the PEM CSR to")
    _common(csr)

    imports = key_commands.add_parser(
        "import", help="nhập chứng thư số đã cấp cho khóa / import the certificate issued for a key")
    imports.add_argument("key_id", help="key id or CKA_ID (hex) of a key in state generated")
    imports.add_argument("--certificate", type=Path, required=True,
                         help="the certificate, PEM or DER (further PEM certificates in the file count as its chain)")
    imports.add_argument("--chain", type=Path, help="PEM file of the issuing CA certificates")
    imports.add_argument("--rotate", metavar="CREDENTIAL_ID",
                         help="switch this existing credential to the key, retiring its previous key")
    imports.add_argument("--credential-id", help="id of the new credential, e.g. cred-nguyen-thi-hang")
    imports.add_argument("--kind", choices=["personal", "seal"], help="new credential: personal or agency seal")
    imports.add_argument("--owner", help="new personal credential: the official who owns and approves it")
    imports.add_argument("--approver", help="new seal credential: the văn thư (role seal_holder) who approves it")
    imports.add_argument("--display-name", help="new credential: the signer's name as signatures show it")
    imports.add_argument("--signer-title", default="", help="new credential: chức vụ shown in signatures")
    imports.add_argument("--agency", default="", help="new credential: cơ quan shown in signatures")
    _common(imports)

    for name, vietnamese, english in (("enable", "bật lại", "enable"), ("disable", "vô hiệu hóa", "disable")):
        switch = key_commands.add_parser(
            name, help=f"{vietnamese} chứng thư số dùng để ký / {english} a signing credential")
        switch.add_argument("credential_id", help="credential id, e.g. cred-tran-thi-bich-ngoc")
        _common(switch)

    rotate = key_commands.add_parser(
        "rotate", help="sinh khóa mới và CSR để thay khóa / generate the next key and its CSR")
    rotate.add_argument("credential_id", help="credential whose key is replaced")
    rotate.add_argument("--out", type=Path, required=True, help="file to write the PEM CSR to")
    _common(rotate)

    add_key_destroy_parser(key_commands)


def run_keys_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``keys`` command and return its exit code."""
    if args.keys_command == "destroy":
        from signserver.policy_commands import KEY_DESTROY_HANDLER

        return KEY_DESTROY_HANDLER(settings, args)
    handler = _HANDLERS[args.keys_command]
    try:
        return handler(settings, args)
    except SignserverError as exc:
        say_error(exc)
        return EXIT_REJECTED
    except BrokenPipeError:
        raise  # the reader of the output went away, which main() handles for every command
    except OSError as exc:
        say_file_error(exc)
        return EXIT_FILE_ERROR


# Handlers


def _list(settings: Settings, args: argparse.Namespace) -> int:
    async def action(ctx: CoreContext, officer: Official) -> list[HsmKey]:
        return await keys.list_keys(ctx, officer, args.state)

    found = run_as_person(settings, args, (SECURITY_OFFICER,), action)
    if args.json:
        print_json([hsm_key_json(key) for key in found])
        return EXIT_OK
    print(f"{'mã / id':<26} {'CKA_ID':<34} {'loại / type':<11} {'trạng thái / state':<19} "
          f"{'chứng thư / credential':<28} nhãn / label")
    for key in found:
        print(f"{key.id:<26} {key.key_id_hex:<34} {key.key_type + ' ' + str(key.key_size):<11} {key.state:<19} "
              f"{key.credential_id or '-':<28} {key.key_label}")
    if not found:
        say("Không có khóa nào.", "No keys.")
    return EXIT_OK


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    async def action(ctx: CoreContext, officer: Official) -> HsmKey:
        return await keys.generate_key(ctx, officer, args.key_type, args.key_size, args.label)

    key = run_as_person(settings, args, (SECURITY_OFFICER,), action)
    if args.json:
        print_json(hsm_key_json(key))
        return EXIT_OK
    say(f"Đã sinh cặp khóa {key.key_type} {key.key_size} trong HSM: mã {key.id}, CKA_ID {key.key_id_hex}, "
        f"nhãn {key.key_label}. Tiếp theo: tạo CSR bằng `signserver keys csr {key.id}`.",
        f"Generated an {key.key_type} {key.key_size} key pair in the HSM: id {key.id}, CKA_ID {key.key_id_hex}, "
        f"label {key.key_label}. Next: create a CSR with `signserver keys csr {key.id}`.")
    return EXIT_OK


def _csr(settings: Settings, args: argparse.Namespace) -> int:
    subject = keys.CsrSubject(common_name=args.cn, organization=args.o, organizational_unit=args.ou,
                              locality=args.l, state=args.st, country=args.c, title=args.title,
                              identifiers=tuple(args.uid))

    async def action(ctx: CoreContext, officer: Official) -> bytes:
        return await keys.create_csr(ctx, officer, args.key_id, subject)

    request = run_as_person(settings, args, (SECURITY_OFFICER,), action)
    args.out.write_bytes(request)
    if args.json:
        print_json({"key_id": args.key_id, "csr_file": str(args.out), "subject": subject.as_dict()})
        return EXIT_OK
    say(f"Đã ghi CSR của khóa {args.key_id} vào {args.out}. Gửi tệp này cho tổ chức cung cấp dịch vụ chứng thực "
        f"chữ ký số, rồi nhập chứng thư số được cấp bằng `signserver keys import`.",
        f"Wrote the CSR of key {args.key_id} to {args.out}. Send it to the certification authority, then import "
        f"the issued certificate with `signserver keys import`.")
    return EXIT_OK


def _import(settings: Settings, args: argparse.Namespace) -> int:
    certificate = args.certificate.read_bytes()
    chain = args.chain.read_bytes() if args.chain else None
    new_credential = None
    if args.credential_id is not None:
        new_credential = keys.NewCredential(
            id=args.credential_id, kind=args.kind or "", display_name=args.display_name or "",
            owner_official_id=args.owner, approver_official_id=args.approver, signer_title=args.signer_title,
            agency=args.agency,
        )

    async def action(ctx: CoreContext, officer: Official) -> Credential:
        return await keys.import_certificate(ctx, officer, args.key_id, certificate, chain,
                                             new_credential=new_credential, rotate_credential_id=args.rotate)

    credential = run_as_person(settings, args, (SECURITY_OFFICER,), action)
    if args.json:
        print_json(officer_credential_json(credential))
        return EXIT_OK
    if args.rotate:
        say(f"Đã thay khóa cho chứng thư số {credential.id}: từ nay ký bằng khóa CKA_ID {credential.key_id_hex} "
            f"(số hiệu chứng thư {credential.cert_serial_hex}); khóa cũ chuyển sang trạng thái retired.",
            f"Rotated the key of credential {credential.id}: it now signs with key CKA_ID {credential.key_id_hex} "
            f"(certificate serial {credential.cert_serial_hex}); the previous key is retired.")
        return EXIT_OK
    say(f"Đã nhập chứng thư số và tạo {credential.id} ({credential.kind}, số hiệu {credential.cert_serial_hex}). "
        f"Chính sách khóa cần cho phép hệ thống một cửa dùng khóa này.",
        f"Imported the certificate and created {credential.id} ({credential.kind}, serial "
        f"{credential.cert_serial_hex}). A key policy must allow one-stop applications to use it.")
    return EXIT_OK


def _switch(settings: Settings, args: argparse.Namespace) -> int:
    enabled = args.keys_command == "enable"

    async def action(ctx: CoreContext, officer: Official) -> Credential:
        return await keys.set_credential_enabled(ctx, officer, args.credential_id, enabled)

    credential = run_as_person(settings, args, (SECURITY_OFFICER,), action)
    if args.json:
        print_json(officer_credential_json(credential))
        return EXIT_OK
    if enabled:
        say(f"Chứng thư số {credential.id} đang hoạt động và dùng để ký được.",
            f"Credential {credential.id} is enabled and can sign.")
    else:
        say(f"Chứng thư số {credential.id} đã bị vô hiệu hóa: mọi yêu cầu ký bằng khóa này bị từ chối.",
            f"Credential {credential.id} is disabled: every sign request for this key is rejected.")
    return EXIT_OK


def _rotate(settings: Settings, args: argparse.Namespace) -> int:
    async def action(ctx: CoreContext, officer: Official) -> tuple[HsmKey, bytes]:
        return await keys.start_rotation(ctx, officer, args.credential_id)

    key, request = run_as_person(settings, args, (SECURITY_OFFICER,), action)
    args.out.write_bytes(request)
    if args.json:
        print_json({**hsm_key_json(key), "csr_file": str(args.out)})
        return EXIT_OK
    say(f"Đã sinh khóa mới {key.id} (CKA_ID {key.key_id_hex}) cho {args.credential_id} và ghi CSR vào {args.out}. "
        f"Chứng thư số vẫn ký bằng khóa cũ cho đến khi nhập chứng thư mới bằng "
        f"`signserver keys import {key.id} --rotate {args.credential_id}`.",
        f"Generated the new key {key.id} (CKA_ID {key.key_id_hex}) for {args.credential_id} and wrote its CSR "
        f"to {args.out}. The credential signs with its current key until the new certificate is imported with "
        f"`signserver keys import {key.id} --rotate {args.credential_id}`.")
    return EXIT_OK


_HANDLERS = {
    "list": _list,
    "generate": _generate,
    "csr": _csr,
    "import": _import,
    "enable": _switch,
    "disable": _switch,
    "rotate": _rotate,
}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_person_arguments(parser)

