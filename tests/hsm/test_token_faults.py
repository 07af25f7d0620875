"""An Hsm whose SoftHSM token directory disappears and comes back: errors, back-off, probe and recovery.

SoftHSM 2.6 reads its token directory at C_Initialize. Without the directory
it finds no objects and fails C_GetTokenInfo and C_Initialize with
CKR_GENERAL_ERROR. After the directory is back, the token is found again
only after a new C_Initialize.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog

from hsm import Hsm, HsmUnavailable
from hsm.token import MAX_REOPEN_BACKOFF_SECONDS
from tests.hsm.conftest import SoftHsmTokens

# python-pkcs11 0.10 ends a search operation in __del__. On a dead session its
# C_FindObjectsFinal fails there, and pytest reports the error as unraisable.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

DIGEST = bytes(range(32))


def token_directory(conf_path: Path) -> Path:
    for line in conf_path.read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "directories.tokendir":
            return Path(value.strip())
    raise AssertionError(f"no directories.tokendir in {conf_path}")


@contextmanager
def token_directory_removed(conf_path: Path) -> Iterator[None]:
    """Rename the token directory away for the ``with`` block, as if the HSM were unplugged."""
    directory = token_directory(conf_path)
    moved = directory.with_name(directory.name + ".away")
    directory.rename(moved)
    try:
        yield
    finally:
        moved.rename(directory)


def sign_until_recovered(opened: Hsm, key_id: bytes) -> bytes:
    """Sign every 0.1 s until the token responds again, for at most two full back-off periods."""
    deadline = time.monotonic() + 2 * MAX_REOPEN_BACKOFF_SECONDS
    while True:
        try:
            return opened.sign(key_id, "ECDSA", DIGEST)
        except HsmUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def event_names(logs: list[dict]) -> list[str]:
    return [entry["event"] for entry in logs]


def test_sign_without_token_directory_raises_unavailable(
    softhsm_tokens: SoftHsmTokens, key_id: bytes, label: str
) -> None:
    with Hsm(softhsm_tokens.config(softhsm_tokens.scratch_label, pool_size=1)) as opened:
        opened.generate_ec_key(key_id, label, "P-256")
        opened.sign(key_id, "ECDSA", DIGEST)

        with token_directory_removed(softhsm_tokens.conf_path):
            # The key lookup finds nothing, and that must read as a missing token, not as a missing key.
            with pytest.raises(HsmUnavailable):
                opened.sign(key_id, "ECDSA", DIGEST)
            assert opened.available is False

        signature = sign_until_recovered(opened, key_id)
        assert opened.available is True
    assert len(signature) == 64


def test_calls_during_backoff_fail_fast(softhsm_tokens: SoftHsmTokens, key_id: bytes, label: str) -> None:
    with Hsm(softhsm_tokens.config(softhsm_tokens.scratch_label, pool_size=1)) as opened:
        opened.generate_ec_key(key_id, label, "P-256")

        with token_directory_removed(softhsm_tokens.conf_path), structlog.testing.capture_logs() as logs:
            calls = 0
            started = time.monotonic()
            while time.monotonic() - started < 2.0:
                with pytest.raises(HsmUnavailable):
                    opened.sign(key_id, "ECDSA", DIGEST)
                calls += 1

        sign_until_recovered(opened, key_id)

    failed_reopens = [entry for entry in logs if entry["event"] == "hsm.session_pool.reopen_failed"]
    # Attempts at about 0.2, 0.6 and 1.4 s; a call without back-off would try every time.
    assert 2 <= len(failed_reopens) <= 4
    assert [entry["retry_in_seconds"] for entry in failed_reopens[:3]] == [0.4, 0.8, 1.6][:len(failed_reopens)]
    # Calls between attempts raise at once instead of sleeping through the back-off.
    assert calls >= 50


def test_probe_reports_outage_and_recovery(hsm: Hsm, softhsm_tokens: SoftHsmTokens) -> None:
    with Hsm(softhsm_tokens.config(softhsm_tokens.scratch_label)) as opened:
        assert opened.probe() is True

        with token_directory_removed(softhsm_tokens.conf_path), structlog.testing.capture_logs() as down_logs:
            probes_down = [opened.probe() for _ in range(3)]
            available_down = opened.available

        deadline = time.monotonic() + 2 * MAX_REOPEN_BACKOFF_SECONDS
        with structlog.testing.capture_logs() as up_logs:
            while not opened.probe():
                assert time.monotonic() < deadline, "the probe did not see the token again"
                time.sleep(0.1)

    assert probes_down == [False, False, False]
    assert available_down is False
    assert event_names(down_logs).count("hsm.down") == 1
    assert event_names(up_logs).count("hsm.up") == 1
    # The session-wide Hsm on the other token of that directory recovers on its next call.
    assert hsm.probe() is True
