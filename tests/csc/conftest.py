"""Helpers and fixtures of the CSC API tests: a client over requests, and an access token of the demo application."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.harness import Client

SHA256_OID = "2.16.840.1.101.3.4.2.1"
SHA256_WITH_RSA_OID = "1.2.840.113549.1.1.11"
RSASSA_PSS_OID = "1.2.840.113549.1.1.10"
ECDSA_WITH_SHA256_OID = "1.2.840.10045.4.3.2"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def random_hashes(count: int) -> list[bytes]:
    return [hashlib.sha256(os.urandom(32)).digest() for _ in range(count)]


def assert_csc_error(response: requests.Response, status: int, error: str) -> dict[str, Any]:
    """Check the CSC error shape: the status, the ``error`` value and a non-empty description."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert body["error_description"], body
    return body


class CscClient:
    """Calls of the CSC API with requests, as an application holding ``token``."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def call(self, version: str, method: str, body: dict[str, Any] | None = None, *, token: str | None = None,
             language: str = "en", auth: tuple[str, str] | None = None) -> requests.Response:
        headers = {"Accept-Language": language}
        if auth is None:
            headers["Authorization"] = f"Bearer {token or self.token}"
        return requests.post(f"{self.url}/csc/{version}/{method}", json=body or {}, headers=headers, auth=auth,
                             timeout=120)

    def authorize(self, version: str, credential_id: str, hashes: list[bytes], otp: str,
                  **extra: Any) -> requests.Response:
        body: dict[str, Any] = {"credentialID": credential_id, "numSignatures": len(hashes)}
        if version == "v1":
            body.update(hash=[b64(h) for h in hashes], OTP=otp)
        else:
            body.update(hashes=[b64(h) for h in hashes], hashAlgorithmOID=SHA256_OID,
                        authData=[{"id": "OTP", "value": otp}])
        body.update(extra)
        return self.call(version, "credentials/authorize", body)

    def sad(self, version: str, credential_id: str, hashes: list[bytes], otp: str) -> str:
        response = self.authorize(version, credential_id, hashes, otp)
        assert response.status_code == 200, response.text
        return response.json()["SAD"]

    def sign_hash(self, version: str, credential_id: str, sad: str, hashes: list[bytes], sign_algo: str, *,
                  params: bytes | None = None, **extra: Any) -> requests.Response:
        body: dict[str, Any] = {"credentialID": credential_id, "SAD": sad, "signAlgo": sign_algo}
        if version == "v1":
            body.update(hash=[b64(h) for h in hashes], hashAlgo=SHA256_OID)
        else:
            body.update(hashes=[b64(h) for h in hashes], hashAlgorithmOID=SHA256_OID)
        if params is not None:
            body["signAlgoParams"] = b64(params)
        body.update(extra)
        return self.call(version, "signatures/signHash", body)


@pytest.fixture(scope="session")
def csc(client: Client) -> CscClient:
    """A CSC client logged in with the demo application's HTTP Basic credentials."""
    application = client.credentials["application"]
    response = requests.post(f"{client.url}/csc/v1/auth/login", json={},
                             auth=(application["username"], application["password"]), timeout=30)
    response.raise_for_status()
    return CscClient(client.url, response.json()["access_token"])


@pytest.fixture(scope="session")
def rsa_official(client: Client) -> dict[str, Any]:
    return client.official(0)


@pytest.fixture(scope="session")
def ec_official(client: Client) -> dict[str, Any]:
    return client.official(1)


@dataclass(frozen=True)
class SadMisuse:
    """The responses to misuses of one SAD authorized for the hashes [a, b, b], and of its OTP."""

    sad: str
    hashes: list[bytes]  # a, b, and a hash the SAD does not cover
    replayed_otp: requests.Response
    not_covered: requests.Response
    beyond_count: requests.Response
    other_credential: requests.Response
    all_covered: requests.Response
    reused: requests.Response


@pytest.fixture(scope="session")
def sad_misuse(client: Client, csc: CscClient, rsa_official: dict[str, Any],
               ec_official: dict[str, Any]) -> SadMisuse:
    """Replay the SAD's OTP, misuse the SAD, then spend it whole, then use it again.

    The calls are made here, one right after the other, because the test
    server's SADs live 3 seconds. The tests only read the responses.
    """
    a, b, other = random_hashes(3)
    otp = client.otp.next(rsa_official["totp_secret"])
    credential_id = rsa_official["credential_id"]
    sad = csc.sad("v1", credential_id, [a, b, b], otp)
    return SadMisuse(
        sad=sad,
        hashes=[a, b, other],
        replayed_otp=csc.authorize("v1", credential_id, [other], otp),
        not_covered=csc.sign_hash("v1", credential_id, sad, [other], SHA256_WITH_RSA_OID),
        beyond_count=csc.sign_hash("v1", credential_id, sad, [a, a], SHA256_WITH_RSA_OID),
        other_credential=csc.sign_hash("v1", ec_official["credential_id"], sad, [a], ECDSA_WITH_SHA256_OID),
        all_covered=csc.sign_hash("v2", credential_id, sad, [b, a, b], SHA256_WITH_RSA_OID),
        reused=csc.sign_hash("v1", credential_id, sad, [a], SHA256_WITH_RSA_OID),
    )
