"""Start-up refuses a token where two keys share a label or an id, and names them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Server, free_port, init_home, service_env

# Run in a child process with the data directory's SoftHSM configuration: a second private key labelled like
# an existing credential's key, as a careless import with another tool would leave it.
PLANT_DUPLICATE = """
import pkcs11
from pkcs11 import Attribute, KeyType
from signserver.config import Settings

settings = Settings.from_env()
token = pkcs11.lib(settings.pkcs11_module).get_token(token_label=settings.token_label)
with token.open(rw=True, user_pin=settings.user_pin()) as session:
    session.generate_keypair(KeyType.RSA, 2048, id=bytes.fromhex("d0d0d0d0"), label="cred-nguyen-van-an",
                             store=True)
"""


def test_serve_rejects_duplicate_label(tmp_path: Path) -> None:
    port = free_port()
    init_home(tmp_path, port)
    planted = subprocess.run([sys.executable, "-c", PLANT_DUPLICATE], env=service_env(tmp_path, port),
                             capture_output=True, text=True, timeout=120)
    assert planted.returncode == 0, planted.stderr

    server = Server(tmp_path, port)
    with pytest.raises(RuntimeError) as stopped:
        server.start(timeout=60)
    output = str(stopped.value)
    assert "exited with 1" in output
    assert "Không khởi động: token HSM có các đối tượng trùng nhãn" in output
    assert "Traceback" not in output
    assert "ambiguous token" in output
    assert "CKA_LABEL 'cred-nguyen-van-an'" in output
    assert "d0d0d0d0" in output
