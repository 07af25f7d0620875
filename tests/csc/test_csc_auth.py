"""Service authorization of the CSC API: auth/login with HTTP Basic, refresh tokens, auth/revoke, API keys."""

from __future__ import annotations

import hashlib

import requests

from tests.csc.conftest import CscClient, assert_csc_error
from tests.harness import Client, Server
from tests.postgres import query


def login(client: Client, body: dict | None = None, auth: tuple[str, str] | None = None) -> requests.Response:
    application = client.credentials["application"]
    return requests.post(f"{client.url}/csc/v2/auth/login", json=body or {},
                         auth=auth or (application["username"], application["password"]), timeout=30)


def test_login_returns_access_token(client: Client) -> None:
    response = login(client)
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]


def test_login_expires_in_positive(client: Client) -> None:
    assert login(client).json()["expires_in"] > 0


def test_login_without_remember_me_no_refresh_token(client: Client) -> None:
    assert "refresh_token" not in login(client).json()


def test_login_token_lists_credentials(client: Client) -> None:
    csc = CscClient(client.url, login(client).json()["access_token"])
    assert csc.call("v2", "credentials/list").status_code == 200


def test_login_wrong_password_rejected(client: Client) -> None:
    username = client.credentials["application"]["username"]
    response = login(client, auth=(username, "wrong-password"))
    assert_csc_error(response, 401, "authentication_error")


def test_login_unknown_user_rejected(client: Client) -> None:
    response = login(client, auth=("nobody", "wrong-password"))
    assert_csc_error(response, 401, "authentication_error")


def test_login_malformed_basic_rejected(client: Client) -> None:
    response = requests.post(f"{client.url}/csc/v1/auth/login", json={},
                             headers={"Authorization": "Basic %%%"}, timeout=30)
    assert_csc_error(response, 401, "invalid_request")


def test_remember_me_refresh_gives_new_access_token(client: Client) -> None:
    first = login(client, {"rememberMe": True}).json()
    refreshed = requests.post(f"{client.url}/csc/v1/auth/login", json={"refresh_token": first["refresh_token"]},
                              timeout=30)
    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()["access_token"]
    assert token != first["access_token"]
    assert CscClient(client.url, token).call("v1", "credentials/list").status_code == 200


def test_invalid_refresh_token_rejected(client: Client) -> None:
    response = requests.post(f"{client.url}/csc/v1/auth/login", json={"refresh_token": "csr_unknown"}, timeout=30)
    assert_csc_error(response, 400, "invalid_request")


def test_revoked_access_token_rejected(client: Client) -> None:
    csc = CscClient(client.url, login(client).json()["access_token"])
    assert csc.call("v1", "auth/revoke", {"token": csc.token}).status_code == 204
    assert_csc_error(csc.call("v1", "credentials/list"), 401, "invalid_token")


def test_revoked_refresh_token_revokes_grant(client: Client) -> None:
    tokens = login(client, {"rememberMe": True}).json()
    csc = CscClient(client.url, tokens["access_token"])
    revoked = csc.call("v2", "auth/revoke", {"token": tokens["refresh_token"], "token_type_hint": "refresh_token"})
    assert revoked.status_code == 204
    assert_csc_error(csc.call("v2", "credentials/list"), 401, "invalid_token")


def test_refresh_after_revoke_rejected(client: Client) -> None:
    tokens = login(client, {"rememberMe": True}).json()
    CscClient(client.url, tokens["access_token"]).call("v2", "auth/revoke", {"token": tokens["refresh_token"]})
    response = requests.post(f"{client.url}/csc/v2/auth/login", json={"refresh_token": tokens["refresh_token"]},
                             timeout=30)
    assert_csc_error(response, 400, "invalid_request")


def test_revoking_access_keeps_refresh(client: Client) -> None:
    tokens = login(client, {"rememberMe": True}).json()
    CscClient(client.url, tokens["access_token"]).call("v1", "auth/revoke", {"token": tokens["access_token"]})
    response = requests.post(f"{client.url}/csc/v1/auth/login", json={"refresh_token": tokens["refresh_token"]},
                             timeout=30)
    assert response.status_code == 200, response.text


def test_api_key_accepted_as_bearer(client: Client) -> None:
    csc = CscClient(client.url, client.api_key)
    assert csc.call("v1", "credentials/list").status_code == 200


def test_tokens_stored_as_digests(server: Server, client: Client) -> None:
    tokens = login(client, {"rememberMe": True}).json()
    stored = {row[0] for row in query(server.home, "SELECT token_sha256 FROM csc_tokens")}
    assert hashlib.sha256(tokens["access_token"].encode()).hexdigest() in stored
    assert tokens["access_token"] not in stored
