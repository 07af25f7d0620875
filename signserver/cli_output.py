"""Output of the ``signserver`` commands for people: Vietnamese first, then English.

Errors go to standard error, with the vi/en text of the error's stable code
from the message catalogs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from signserver.config import Settings
from signserver.errors import SignserverError
from signserver.i18n import message

__all__ = ["say", "say_error", "say_file_error", "print_json", "exit_on_error"]

Handler = Callable[[Settings, argparse.Namespace], int]


def say(vietnamese: str, english: str, *, stream: TextIO | None = None) -> None:
    """Print the Vietnamese text, then the English one indented and in brackets (standard output by default)."""
    print(f"{vietnamese}\n  ({english})", file=stream or sys.stdout)


def say_error(exc: SignserverError) -> None:
    """Print the catalog message of ``exc`` in both languages on standard error."""
    say(message(exc.code, "vi", exc.params), message(exc.code, "en", exc.params), stream=sys.stderr)


def say_file_error(exc: OSError) -> None:
    """Print on standard error which file could not be read or written, and why."""
    say(f"Không đọc hoặc ghi được tệp {exc.filename}: {exc.strerror}.",
        f"Cannot read or write file {exc.filename}: {exc.strerror}.", stream=sys.stderr)


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def exit_on_error(handler: Handler, exit_code: int = 2) -> Handler:
    """Wrap a command handler so that a SignserverError prints its message and returns ``exit_code``."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        try:
            return handler(settings, args)
        except SignserverError as exc:
            say_error(exc)
            return exit_code

    return run
