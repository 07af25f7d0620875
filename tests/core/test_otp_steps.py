"""TOTP matching against the RFC 6238 appendix B vectors, truncated to six digits."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

from signserver.core.otp import _matching_step

# RFC 6238 appendix B: SHA-1 seed "12345678901234567890"; at T=59 the 8-digit code is 94287082,
# at T=1111111109 it is 07081804. A 6-digit TOTP is the same value modulo 10^6.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def test_rfc6238_vector_t59_matches() -> None:
    assert _matching_step(RFC_SECRET, "287082", at(59)) == 1


def test_rfc6238_vector_t1111111109_matches() -> None:
    assert _matching_step(RFC_SECRET, "081804", at(1111111109)) == 1111111109 // 30


def test_previous_step_accepted() -> None:
    assert _matching_step(RFC_SECRET, "287082", at(59 + 30)) == 1


def test_next_step_accepted() -> None:
    assert _matching_step(RFC_SECRET, "287082", at(59 - 30)) == 1


def test_two_steps_away_rejected() -> None:
    assert _matching_step(RFC_SECRET, "287082", at(59 + 60)) is None


def test_wrong_code_rejected() -> None:
    assert _matching_step(RFC_SECRET, "287083", at(59)) is None
