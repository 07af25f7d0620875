"""Free loopback ports for the servers that tests start, never handed to two pytest-xdist workers of one run.

``free_port`` binds port 0 and closes the socket, so the port stays free only
until some process binds it. A test usually binds it seconds later, after
``signserver init`` wrote the port into the demo certificates. Under
pytest-xdist another worker could get the same port from the kernel in that
time. The controller therefore names a directory in ``PORT_CLAIMS_ENV``
(tests/conftest.py), and a worker returns a port only after creating that
port's file there with O_EXCL. A port stays claimed until the run ends. In a
run without pytest-xdist the variable is unset and no port is claimed.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["PORT_CLAIMS_ENV", "claim_port", "free_port"]

PORT_CLAIMS_ENV = "SIGNSERVER_TEST_PORT_CLAIMS"

# bind(0) picks from Linux's ephemeral range, 32768-60999 by default, and a run claims a few dozen ports.
MAX_PORT_ATTEMPTS = 1000


def free_port() -> int:
    """Return a loopback TCP port that was free just now and that no pytest-xdist worker of this run returned before."""
    for _ in range(MAX_PORT_ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if claim_port(port):
            return port
    claims = os.environ.get(PORT_CLAIMS_ENV, "")
    raise RuntimeError(f"found no unclaimed loopback port in {MAX_PORT_ATTEMPTS} attempts "
                       f"({len(os.listdir(claims))} ports claimed in {claims})")


def claim_port(port: int) -> bool:
    """Claim ``port`` for this run. Return False when a worker of this run claimed it already."""
    claims = os.environ.get(PORT_CLAIMS_ENV)
    if not claims:
        return True
    try:
        descriptor = os.open(Path(claims) / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.close(descriptor)
    return True
