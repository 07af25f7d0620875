"""`changes show` escapes what a terminal would act on, so the approving officer can read every character."""

from __future__ import annotations

from signserver.policy_commands import _visible


def test_escape_sequence_shown_escaped() -> None:
    assert _visible("ok\x1b[2K\rđã duyệt") == "ok\\u001b[2K\\u000dđã duyệt"


def test_bidirectional_override_shown_escaped() -> None:
    assert _visible("# \u202egnihton") == "# \\u202egnihton"


def test_diff_keeps_line_feeds_and_flags_carriage_returns() -> None:
    assert _visible("+a: 1\r\n+b: 2\n", keep_newlines=True) == "+a: 1\\u000d\n+b: 2\n"


def test_vietnamese_and_tabs_unchanged() -> None:
    text = "Ủy ban nhân dân huyện Mẫu Sơn\tvăn thư"
    assert _visible(text) == text
