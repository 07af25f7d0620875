"""Tests for the stamp font lookup and NFC normalisation."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest

from signserver.errors import SignserverError
from signserver.signing.fonts import DEFAULT_STAMP_FONT, STAMP_FONT_ENV_VAR, nfc, stamp_font_path


LIBERATION_SERIF = Path("/usr/share/fonts/truetype/liberation2/LiberationSerif-Regular.ttf")


def test_stamp_font_path_default(monkeypatch):
    monkeypatch.delenv(STAMP_FONT_ENV_VAR, raising=False)

    assert stamp_font_path() == DEFAULT_STAMP_FONT


def test_stamp_font_path_env_override(monkeypatch, tmp_path):
    font = tmp_path / "termes.otf"
    shutil.copy(DEFAULT_STAMP_FONT, font)
    monkeypatch.setenv(STAMP_FONT_ENV_VAR, str(font))

    assert stamp_font_path() == font


def test_stamp_font_not_a_font_rejected(monkeypatch, tmp_path):
    font = tmp_path / "font.ttf"
    font.write_bytes(b"placeholder")
    monkeypatch.setenv(STAMP_FONT_ENV_VAR, str(font))

    with pytest.raises(SignserverError) as caught:
        stamp_font_path()

    assert caught.value.code == "stamp_font_unsupported"


def test_stamp_font_2048_units_per_em_rejected(monkeypatch):
    monkeypatch.setenv(STAMP_FONT_ENV_VAR, str(LIBERATION_SERIF))

    with pytest.raises(SignserverError) as caught:
        stamp_font_path()

    assert caught.value.code == "stamp_font_unsupported"
    assert "2048" in caught.value.params["reason"]


def test_stamp_font_path_missing(monkeypatch, tmp_path):
    missing = tmp_path / "missing.ttf"
    monkeypatch.setenv(STAMP_FONT_ENV_VAR, str(missing))

    with pytest.raises(SignserverError) as caught:
        stamp_font_path()

    assert caught.value.code == "stamp_font_missing"
    assert caught.value.params == {"path": str(missing), "env_var": STAMP_FONT_ENV_VAR}


def test_nfc_composes_vietnamese():
    decomposed = unicodedata.normalize("NFD", "Trần Thị Bích Ngọc")

    assert nfc(decomposed) == "Trần Thị Bích Ngọc"
    assert len(nfc(decomposed)) < len(decomposed)
