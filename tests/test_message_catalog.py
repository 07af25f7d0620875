"""The bilingual message catalog: Vietnamese messages name states and times in Vietnamese terms."""

from __future__ import annotations

from signserver.i18n import message


def test_vietnamese_state_named_in_vietnamese() -> None:
    text = message("request_already_decided", "vi", {"request_id": "req_1", "state": "rejected"})
    assert "trạng thái: đã từ chối – rejected" in text


def test_vietnamese_time_in_vietnam_zone() -> None:
    text = message("request_expired", "vi", {"request_id": "req_1", "expired_at": "2026-12-05T11:35:07+00:00"})
    assert "lúc 05/12/2026 18:35:07 (UTC+07:00)" in text


def test_english_time_iso_in_vietnam_offset() -> None:
    text = message("request_expired", "en", {"request_id": "req_1", "expired_at": "2026-12-05T11:35:07+00:00"})
    assert "expired at 2026-12-05T18:35:07+07:00" in text
