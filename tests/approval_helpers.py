"""Helpers of the approval chain and delegation tests: an own server, officials' calls and the audit trail.

Those tests start a server of their own, because a delegation or a lockout
on the session's server would change where other test files' requests go.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.conftest import TEST_SERVER_ENV
from tests.harness import REPO, Client, OtpCodes, Server, free_port, init_home

__all__ = ["ChainService", "own_service", "DEFAULT_POLICIES"]

# The demo policy: both officials' keys, and the agency seal used unattended for receipts (BN-TIEPNHAN).
DEFAULT_POLICIES = REPO / "policies"


class ChainService:
    """A server with its demo credentials, and the officials' and auditor's API calls the tests need."""

    def __init__(self, server: Server, credentials: dict[str, Any], otp: OtpCodes) -> None:
        self.server = server
        self.credentials = credentials
        self.otp = otp
        self.client = Client(server, credentials, otp)
        self.url = server.url
        self._tokens: dict[str, str] = {}

    def person(self, username: str) -> dict[str, Any]:
        people = [*self.credentials["officials"], *self.credentials["security_officers"],
                  *self.credentials["auditors"], self.credentials["other_agency"]["seal_holder"]]
        return next(person for person in people if person["username"] == username)

    def token(self, username: str) -> str:
        """Return a session token of ``username``, logging in once; administrators give a TOTP code."""
        if username not in self._tokens:
            person = self.person(username)
            body = {"username": username, "password": person["password"]}
            if "official" not in person["roles"] and "seal_holder" not in person["roles"]:
                body["otp"] = self.otp.next(person["totp_secret"])
            response = requests.post(f"{self.url}/api/v1/sessions", json=body, timeout=60)
            assert response.status_code == 201, response.text
            self._tokens[username] = response.json()["token"]
        return self._tokens[username]

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}", "Accept-Language": "en"}

    def code(self, username: str) -> str:
        return self.otp.next(self.person(username)["totp_secret"])

    def pending_ids(self, username: str) -> list[str]:
        response = requests.get(f"{self.url}/api/v1/inbox", headers=self.headers(username), timeout=30)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    def inbox_item(self, username: str, request_id: str) -> requests.Response:
        return requests.get(f"{self.url}/api/v1/inbox/{request_id}", headers=self.headers(username), timeout=30)

    def approve(self, username: str, request_ids: list[str], otp: str,
                document_sha256: dict[str, str] | None = None) -> requests.Response:
        body: dict[str, Any] = {"request_ids": request_ids, "otp": otp}
        if document_sha256 is not None:
            body["document_sha256"] = document_sha256
        return requests.post(f"{self.url}/api/v1/approvals", json=body, headers=self.headers(username), timeout=60)

    def reject(self, username: str, request_id: str, reason: str) -> requests.Response:
        return requests.post(f"{self.url}/api/v1/sign-requests/{request_id}/rejection", json={"reason": reason},
                             headers=self.headers(username), timeout=30)

    def audit_actions(self, request_id: str) -> list[dict[str, Any]]:
        """Return the audit records of ``request_id`` in order, read by the demo auditor."""
        auditor = self.credentials["auditors"][0]["username"]
        response = requests.get(f"{self.url}/api/v1/audit", params={"request_id": request_id},
                                headers=self.headers(auditor), timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["items"]


@contextmanager
def own_service(home: Path, policies_dir: Path, **extra_env: str) -> Iterator[ChainService]:
    """Initialise ``home`` with the policies of ``policies_dir``, start a server on it, and stop the server at the end."""
    port = free_port()
    credentials = init_home(home, port, SIGNSERVER_POLICIES_DIR=str(policies_dir))
    server = Server(home, port, {**TEST_SERVER_ENV, **extra_env}).start()
    try:
        yield ChainService(server, credentials, OtpCodes())
    finally:
        server.stop()
