"""Enrolment of officials and applications by a security officer, over the API and the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.harness import OtpCodes, Server, cli_login, run_cli

NEW_OFFICIAL = {"id": "off-le-thi-hoa", "username": "hoa.lt", "full_name": "Lê Thị Hoa",
                "title": "Chuyên viên Phòng Tư pháp", "agency": "Ủy ban nhân dân huyện Mẫu Sơn", "roles": ["official"]}


@pytest.fixture(scope="module")
def officer_token(server: Server, credentials: dict[str, Any], otp_codes: OtpCodes) -> str:
    officer = credentials["security_officers"][1]
    response = requests.post(f"{server.url}/api/v1/sessions", json={
        "username": officer["username"], "password": officer["password"],
        "otp": otp_codes.next(officer["totp_secret"])}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.fixture(scope="module")
def enrolled(server: Server, officer_token: str) -> dict[str, Any]:
    response = requests.post(f"{server.url}/api/v1/admin/officials", json=NEW_OFFICIAL,
                             headers={"Authorization": f"Bearer {officer_token}"}, timeout=30)
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


def test_enrolled_official_logs_in(server: Server, enrolled: dict[str, Any]) -> None:
    response = requests.post(f"{server.url}/api/v1/sessions", json={
        "username": "hoa.lt", "password": enrolled["password"]}, timeout=30)
    assert response.status_code == 201, response.text
    assert response.json()["official"]["roles"] == ["official"]
    assert response.json()["official"]["full_name"] == "Lê Thị Hoa"


def test_enrolment_of_existing_id_conflicts(server: Server, officer_token: str, enrolled: dict[str, Any]) -> None:
    response = requests.post(f"{server.url}/api/v1/admin/officials", json=NEW_OFFICIAL,
                             headers={"Authorization": f"Bearer {officer_token}"}, timeout=30)
    assert response.status_code == 409
    assert response.json()["code"] == "account_exists"


def test_enrolment_rejects_admin_role(server: Server, officer_token: str) -> None:
    body = dict(NEW_OFFICIAL, id="off-tran-van-binh", username="binh.tv", roles=["security_officer"])
    response = requests.post(f"{server.url}/api/v1/admin/officials", json=body,
                             headers={"Authorization": f"Bearer {officer_token}"}, timeout=30)
    assert response.status_code == 400
    assert response.json()["code"] == "field_invalid"


def test_official_cannot_enrol(server: Server, client: Any) -> None:
    body = dict(NEW_OFFICIAL, id="off-pham-van-cuong", username="cuong.pv")
    response = requests.post(f"{server.url}/api/v1/admin/officials", json=body,
                             headers={"Authorization": f"Bearer {client.login(0)}"}, timeout=30)
    assert response.status_code == 403
    assert response.json()["code"] == "role_required"


def test_cli_enrols_application_without_keys(server: Server, credentials: dict[str, Any], otp_codes: OtpCodes,
                                             auditor_session: str, enrolled: dict[str, Any]) -> None:
    session = cli_login(server.home, credentials["security_officers"][1], otp_codes)
    result = run_cli(server.home, "apps", "add", "--id", "app-motcua-xa-an-phu", "--name",
                     "Hệ thống một cửa điện tử xã An Phú", "--agency", "Ủy ban nhân dân xã An Phú", "--json",
                     session=session)
    assert result.returncode == 0, result.stderr
    api_key = json.loads(result.stdout)["api_key"]

    listed = requests.get(f"{server.url}/api/v1/credentials", headers={"Authorization": f"Bearer {api_key}"},
                          timeout=30)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []

    trail = run_cli(server.home, "audit", "list", "--json", session=auditor_session)
    records = json.loads(trail.stdout)
    actions = {(r["action"], r["details"].get("official_id") or r["details"].get("application_id"))
               for r in records}
    assert ("official_enrolled", "off-le-thi-hoa") in actions
    assert ("application_enrolled", "app-motcua-xa-an-phu") in actions
    assert enrolled["password"] not in trail.stdout
    assert enrolled["totp_secret"] not in trail.stdout
    assert api_key not in trail.stdout
