"""Tests for StampSpec validation and the stamp text."""

from __future__ import annotations

import math
import unicodedata
from datetime import datetime, timedelta, timezone

import pytest

from signserver.errors import InvalidInput
from signserver.signing.stamp import StampSpec, format_signing_time, stamp_lines, stamp_text_params
from tests.signing.conftest import AGENCY, SIGNER_NAME, SIGNER_TITLE

BOX = (320.0, 60.0, 560.0, 150.0)


def _spec(**changes) -> StampSpec:
    fields = {"page": 1, "box": BOX, "signer_name": SIGNER_NAME, "signer_title": SIGNER_TITLE, "agency": AGENCY}
    fields.update(changes)
    return StampSpec(**fields)


@pytest.mark.parametrize(
    "changes",
    [
        {"page": 0},
        {"page": True},
        {"page": 1.0},
        {"box": (10, 10, 5, 20)},
        {"box": (10, 20, 30, 20)},
        {"box": (0, 0, math.nan, 10)},
        {"box": (0, 0, 10)},
        {"signer_name": "  "},
        {"signer_name": "\n\t"},
        {"agency": "Ủy ban\x00"},
        {"signer_title": "Phó\x07Chủ tịch"},
    ],
)
def test_stamp_spec_rejects_invalid(changes):
    with pytest.raises(InvalidInput) as caught:
        _spec(**changes)

    assert caught.value.code == "pdf_stamp_invalid"


def test_stamp_spec_normalises_text():
    spec = _spec(signer_name=" " + unicodedata.normalize("NFD", SIGNER_NAME) + " ", box=(1, 2, 3, 4))

    assert spec.signer_name == SIGNER_NAME
    assert spec.box == (1.0, 2.0, 3.0, 4.0)


def test_stamp_spec_joins_lines():
    spec = _spec(agency="Ủy ban nhân dân\r\nhuyện  Mẫu Sơn")

    assert spec.agency == AGENCY


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2025, 3, 5, 7, 30, 15, tzinfo=timezone.utc), "05/03/2025 14:30:15 (+07:00)"),
        (datetime(2025, 12, 31, 20, 0, 0, tzinfo=timezone.utc), "01/01/2026 03:00:00 (+07:00)"),
        (datetime(2025, 3, 5, 9, 0, 0, tzinfo=timezone(timedelta(hours=2))), "05/03/2025 14:00:00 (+07:00)"),
    ],
)
def test_format_signing_time_vietnam(moment, expected):
    assert format_signing_time(moment) == expected


def test_stamp_lines_from_spec(pki):
    params = stamp_text_params(
        _spec(), pki.rsa_signer.certificate, reason="Phê duyệt", signing_time=datetime(2025, 3, 5, tzinfo=timezone.utc)
    )

    assert stamp_lines(params) == [
        f"Người ký: {SIGNER_NAME}",
        SIGNER_TITLE,
        f"Cơ quan: {AGENCY}",
        "Thời gian ký: 05/03/2025 07:00:00 (+07:00)",
        "Lý do: Phê duyệt",
    ]


def test_stamp_lines_skip_empty_items(pki):
    params = stamp_text_params(
        _spec(signer_title=""), pki.rsa_signer.certificate, reason="", signing_time=datetime.now(timezone.utc)
    )

    assert len(stamp_lines(params)) == 3


def test_stamp_text_params_from_certificate(pki):
    params = stamp_text_params(
        None, pki.rsa_signer.certificate, reason="Phê duyệt", signing_time=datetime.now(timezone.utc)
    )

    assert params["signer_name"] == SIGNER_NAME
    assert params["agency"] == AGENCY


def test_stamp_text_params_joins_reason_lines(pki):
    params = stamp_text_params(
        None, pki.rsa_signer.certificate, reason="Phê duyệt\nhồ sơ", signing_time=datetime.now(timezone.utc)
    )

    assert params["reason"] == "Phê duyệt hồ sơ"


def test_stamp_text_params_rejects_control_character(pki):
    with pytest.raises(InvalidInput) as caught:
        stamp_text_params(None, pki.rsa_signer.certificate, reason="a\x1bb", signing_time=datetime.now(timezone.utc))

    assert caught.value.code == "pdf_stamp_invalid"


def test_stamp_text_keeps_percent_sign(pki):
    params = stamp_text_params(
        _spec(agency="Ban 100%"), pki.rsa_signer.certificate, reason="50% (s)", signing_time=datetime.now(timezone.utc)
    )

    assert "Cơ quan: Ban 100%" in stamp_lines(params)
    assert "Lý do: 50% (s)" in stamp_lines(params)
