"""Fixtures for the PKCS#11 layer, run against a real SoftHSM2 token.

SoftHSM2 reads SOFTHSM2_CONF once, at C_Initialize, and python-pkcs11 keeps
one loaded module per process, so every token these tests use is created in
one session-scoped step before the module loads. Tests share the tokens and
use random key ids, so that no test uses another test's keys.

Two tokens exist: "main" for the session-wide ``hsm`` fixture, and "scratch"
for tests that open their own Hsm, plant ambiguous objects or inject faults.
PKCS#11 login state is shared by all sessions of a process on one token, so
keeping those tests on their own token leaves the ``hsm`` fixture logged in.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest
from pkcs11.exceptions import UserAlreadyLoggedIn

from hsm import Hsm, HsmConfig, init_softhsm_token, write_softhsm_config
from hsm.library import load_library, reinitialize_library

MODULE_PATH = os.environ.get("SOFTHSM2_MODULE", "/usr/lib/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class SoftHsmTokens:
    conf_path: Path
    main_label: str
    scratch_label: str
    user_pin: str

    def config(self, label: str, pool_size: int = 4) -> HsmConfig:
        return HsmConfig(MODULE_PATH, label, self.user_pin, pool_size=pool_size)


@pytest.fixture(scope="session")
def softhsm_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmTokens]:
    """Create the main and scratch tokens with random PINs, before the module loads.

    If SOFTHSM2_CONF is already set, for example by a fixture of another test
    package, the tokens are added to that configuration. If the module is
    already loaded in this process it is then re-initialised, because SoftHSM2
    reads the token directory only at C_Initialize.
    """
    if not Path(MODULE_PATH).is_file() or shutil.which("softhsm2-util") is None:
        pytest.skip(f"SoftHSM2 is not installed (module {MODULE_PATH}, softhsm2-util)")

    previous_conf = os.environ.get("SOFTHSM2_CONF")
    if previous_conf:
        conf_path = Path(previous_conf)
    else:
        base = tmp_path_factory.mktemp("softhsm")
        conf_path = base / "softhsm2.conf"
        write_softhsm_config(conf_path, base / "tokens")
        os.environ["SOFTHSM2_CONF"] = str(conf_path)

    suffix = secrets.token_hex(4)
    tokens = SoftHsmTokens(
        conf_path=conf_path,
        main_label=f"hsm-tests-main-{suffix}",
        scratch_label=f"hsm-tests-scratch-{suffix}",
        user_pin=secrets.token_urlsafe(12),
    )
    so_pin = secrets.token_urlsafe(12)
    init_softhsm_token(conf_path, tokens.main_label, so_pin, tokens.user_pin, MODULE_PATH)
    init_softhsm_token(conf_path, tokens.scratch_label, so_pin, tokens.user_pin, MODULE_PATH)

    if previous_conf:
        reinitialize_library(load_library(MODULE_PATH), MODULE_PATH)

    yield tokens

    if not previous_conf:
        os.environ.pop("SOFTHSM2_CONF", None)


@pytest.fixture(scope="session")
def hsm(softhsm_tokens: SoftHsmTokens) -> Iterator[Hsm]:
    """An open Hsm on the main token, shared by the whole test session."""
    with Hsm(softhsm_tokens.config(softhsm_tokens.main_label)) as opened:
        yield opened


@pytest.fixture
def key_id() -> bytes:
    return secrets.token_bytes(8)


@pytest.fixture
def label() -> str:
    return f"key-{secrets.token_hex(6)}"


@pytest.fixture
def scratch_objects(softhsm_tokens: SoftHsmTokens) -> Iterator[pkcs11.Session]:
    """A python-pkcs11 session on the scratch token; every token object it creates is destroyed afterwards."""
    session = raw_session(softhsm_tokens.scratch_label, softhsm_tokens.user_pin)
    before = {found.handle for found in session.get_objects()}
    yield session
    for found in session.get_objects():
        if found.handle not in before:
            found.destroy()
    session.close()


def raw_session(token_label: str, user_pin: str) -> pkcs11.Session:
    """Open a read/write user session with python-pkcs11 alone, bypassing the hsm package.

    When an Hsm of this process is logged in to the token already, the new
    session is a user session without C_Login, and closing it does not log
    that Hsm out.
    """
    token = pkcs11.lib(MODULE_PATH).get_token(token_label=token_label)
    try:
        return token.open(rw=True, user_pin=user_pin)
    except UserAlreadyLoggedIn:
        return token.open(rw=True)
