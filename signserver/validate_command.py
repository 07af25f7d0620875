"""``signserver validate FILE``: the signature validation report of a local PDF or CMS file.

The report is the one ``POST /api/v1/validations`` returns, made in this
process against the trust anchors of ``$SIGNSERVER_HOME`` (the demo root
and ``SIGNSERVER_TRUST_ANCHORS``), with OCSP and CRL fetching within
``SIGNSERVER_REVOCATION_TIMEOUT_SECONDS`` per request and
``SIGNSERVER_VALIDATION_TIMEOUT_SECONDS`` in all. It prints Vietnamese,
then English, or JSON with ``--json``.

Exit codes:

- 0 when every signature is TOTAL-PASSED;
- 1 when a signature failed or is indeterminate, when the file has no
  signature, or when the validation timed out;
- 2 on bad input: a missing or unreadable file, or a wrong option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from signserver.config import Settings
from signserver.errors import SignserverError
from signserver.i18n import message

__all__ = ["add_validate_parser", "run_validate", "EXIT_PASSED", "EXIT_NOT_PASSED", "EXIT_BAD_INPUT"]

EXIT_PASSED = 0
EXIT_NOT_PASSED = 1
EXIT_BAD_INPUT = 2


def add_validate_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    validate = commands.add_parser(
        "validate", help="kiểm tra chữ ký số của tệp PDF hoặc CMS / validate the signatures of a PDF or CMS file")
    validate.add_argument("file", type=Path, help="PDF, or CMS signature (.p7s, .p7m) in DER or PEM")
    content = validate.add_mutually_exclusive_group()
    content.add_argument("--content", type=Path, metavar="ORIGINAL",
                         help="the original file of a detached CMS signature")
    content.add_argument("--digest", metavar="HEX", help="the hex digest of the original file, instead of --content")
    validate.add_argument("--digest-algorithm", default="sha256",
                          help="algorithm of --digest: sha256 (default), sha384, sha512, sha3_256, sha3_384, sha3_512")
    validate.add_argument("--password", help="password of an encrypted PDF")
    validate.add_argument("--json", action="store_true", help="print the report as JSON")


def run_validate(settings: Settings, args: argparse.Namespace) -> int:
    from signserver.signing.report import normalise_digest_algorithm, validate_document
    from signserver.signing.report_indication import TOTAL_PASSED
    from signserver.signing.report_text import render_report
    from signserver.signing.report_trust import TrustSetup, fetching_context_factory

    problem = _input_problem(args)
    if problem is not None:
        _say(*problem)
        return EXIT_BAD_INPUT
    trust_roots = _trust_roots(settings)
    if trust_roots is None:
        return EXIT_BAD_INPUT

    digest = bytes.fromhex(args.digest) if args.digest else None
    context_factory = fetching_context_factory(timeout_seconds=settings.revocation_timeout_seconds)
    trust = TrustSetup(tuple(trust_roots), context_factory)

    async def validate():
        return await asyncio.wait_for(
            validate_document(args.file, trust=trust, content_path=args.content, digest=digest,
                              digest_algorithm=normalise_digest_algorithm(args.digest_algorithm) if digest else None,
                              password=args.password),
            timeout=settings.validation_timeout_seconds,
        )

    try:
        report = asyncio.run(validate())
    except SignserverError as exc:
        if exc.code == "pdf_password_required":
            _say("Tệp PDF được mã hóa; hãy cho mật khẩu bằng --password.",
                 "The PDF is encrypted; give its password with --password.")
        else:
            _say(message(exc.code, "vi", exc.params), message(exc.code, "en", exc.params))
        return EXIT_BAD_INPUT
    except asyncio.TimeoutError:
        seconds = settings.validation_timeout_seconds
        _say(message("validation_timed_out", "vi", {"seconds": seconds}),
             message("validation_timed_out", "en", {"seconds": seconds}))
        return EXIT_NOT_PASSED

    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        print(render_report(report, "vi", str(args.file)))
        print()
        print(render_report(report, "en", str(args.file)))
    return EXIT_PASSED if report.indication == TOTAL_PASSED else EXIT_NOT_PASSED


def _input_problem(args: argparse.Namespace) -> tuple[str, str] | None:
    """Return (Vietnamese, English) messages about a bad argument, or None."""
    if not args.file.is_file():
        return f"Không tìm thấy tệp {args.file}.", f"File {args.file} not found."
    if args.content is not None and not args.content.is_file():
        return f"Không tìm thấy tệp gốc {args.content}.", f"Original file {args.content} not found."
    if args.digest is not None:
        try:
            bytes.fromhex(args.digest)
        except ValueError:
            return (f"--digest phải là chuỗi thập lục phân, không phải {args.digest!r}.",
                    f"--digest must be hexadecimal, got {args.digest!r}.")
    return None


def _trust_roots(settings: Settings) -> list | None:
    from signserver.app import load_trust_roots

    if not settings.trust_roots_file.is_file():
        _say(f"Không tìm thấy chứng thư gốc tin cậy {settings.trust_roots_file}; hãy chạy `signserver init` "
             f"hoặc đặt SIGNSERVER_HOME.",
             f"Trust anchor file {settings.trust_roots_file} not found; run `signserver init` or set SIGNSERVER_HOME.")
        return None
    try:
        return load_trust_roots(settings.trust_roots_file, settings.trust_anchors_dir)
    except SystemExit as exc:
        # load_trust_roots stops the service on a bad anchor file with a bilingual message.
        print(exc, file=sys.stderr)
        return None
    except ValueError as exc:
        _say(f"Không đọc được chứng thư gốc tin cậy {settings.trust_roots_file}: {exc}",
             f"Cannot read the trust anchors in {settings.trust_roots_file}: {exc}")
        return None


def _say(vietnamese: str, english: str) -> None:
    print(f"{vietnamese}\n  ({english})", file=sys.stderr)
