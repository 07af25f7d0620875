"""SoftHSM2 configuration writing and token initialisation.

These tests use their own configuration files. softhsm2-util runs in a child
process, so they do not touch the module loaded by this process.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from pathlib import Path

import pytest

from hsm import init_softhsm_token, softhsm, write_softhsm_config
from tests.hsm.conftest import MODULE_PATH


def token_labels(conf_path: Path) -> list[str]:
    completed = subprocess.run(
        ["softhsm2-util", "--show-slots", "--module", MODULE_PATH],
        env=dict(os.environ, SOFTHSM2_CONF=str(conf_path)),
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        line.split(":", 1)[1].strip()
        for line in completed.stdout.splitlines()
        if line.strip().startswith("Label:")
    ]


def test_write_config_substitutes_token_dir(tmp_path: Path) -> None:
    conf_path = tmp_path / "softhsm2.conf"
    write_softhsm_config(conf_path, tmp_path / "tokens")

    text = conf_path.read_text()
    assert f"directories.tokendir = {(tmp_path / 'tokens').resolve()}\n" in text
    assert "@TOKENDIR@" not in text
    assert "objectstore.backend = file\n" in text
    assert "log.level = ERROR\n" in text
    assert "slots.removable = false\n" in text


def test_write_config_creates_private_token_dir(tmp_path: Path) -> None:
    write_softhsm_config(tmp_path / "softhsm2.conf", tmp_path / "tokens")

    mode = stat.S_IMODE((tmp_path / "tokens").stat().st_mode)
    assert mode == 0o700


def test_write_config_uses_given_template(tmp_path: Path) -> None:
    template = tmp_path / "custom.template"
    template.write_text("directories.tokendir = @TOKENDIR@\nlog.level = DEBUG\n")

    write_softhsm_config(tmp_path / "softhsm2.conf", tmp_path / "tokens", template)

    assert (tmp_path / "softhsm2.conf").read_text().endswith("log.level = DEBUG\n")


def test_write_config_rejects_template_without_placeholder(tmp_path: Path) -> None:
    template = tmp_path / "broken.template"
    template.write_text("directories.tokendir = /var/lib/softhsm\n")

    with pytest.raises(ValueError, match="@TOKENDIR@"):
        write_softhsm_config(tmp_path / "softhsm2.conf", tmp_path / "tokens", template)


def test_builtin_template_matches_file() -> None:
    assert softhsm.TEMPLATE_PATH.read_text(encoding="utf-8") == softhsm.BUILTIN_TEMPLATE


def test_init_token_creates_labelled_token(tmp_path: Path) -> None:
    conf_path = tmp_path / "softhsm2.conf"
    write_softhsm_config(conf_path, tmp_path / "tokens")

    init_softhsm_token(conf_path, "created", "so-pin-1234", "user-pin-1234", MODULE_PATH)

    assert token_labels(conf_path).count("created") == 1


def test_init_token_twice_keeps_one_token(tmp_path: Path) -> None:
    conf_path = tmp_path / "softhsm2.conf"
    write_softhsm_config(conf_path, tmp_path / "tokens")

    init_softhsm_token(conf_path, "twice", "so-pin-1234", "user-pin-1234", MODULE_PATH)
    init_softhsm_token(conf_path, "twice", "so-pin-1234", "user-pin-1234", MODULE_PATH)

    assert token_labels(conf_path).count("twice") == 1


def test_init_token_keeps_pins_out_of_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_path = tmp_path / "softhsm2.conf"
    write_softhsm_config(conf_path, tmp_path / "tokens")
    so_pin, user_pin = secrets.token_hex(8), secrets.token_hex(8)
    commands: list[list[str]] = []
    real_popen = subprocess.Popen

    def recording_popen(command: list[str], *args: object, **kwargs: object) -> subprocess.Popen:
        commands.append(list(command))
        return real_popen(command, *args, **kwargs)

    monkeypatch.setattr(softhsm.subprocess, "Popen", recording_popen)
    init_softhsm_token(conf_path, "argv", so_pin, user_pin, MODULE_PATH)

    arguments = [argument for command in commands for argument in command]
    assert "--init-token" in arguments
    assert so_pin not in arguments
    assert user_pin not in arguments
    assert "--so-pin" not in arguments
    assert "--pin" not in arguments


def test_init_token_rejects_short_pin_without_echoing_it(tmp_path: Path) -> None:
    conf_path = tmp_path / "softhsm2.conf"
    write_softhsm_config(conf_path, tmp_path / "tokens")

    with pytest.raises(ValueError, match="user_pin") as raised:
        init_softhsm_token(conf_path, "short", "so-pin-1234", "7a9", MODULE_PATH)
    assert "7a9" not in str(raised.value)


def test_init_token_rejects_long_label(tmp_path: Path) -> None:
    conf_path = tmp_path / "softhsm2.conf"
    write_softhsm_config(conf_path, tmp_path / "tokens")

    with pytest.raises(ValueError, match="32 bytes"):
        init_softhsm_token(conf_path, "x" * 33, "so-pin-1234", "user-pin-1234", MODULE_PATH)
