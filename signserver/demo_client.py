"""The main job, end to end, through the HTTP API only: what ``signserver demo`` runs.

1. submit the PDF as the demo one-stop application (API key);
2. log in as the official and approve with a TOTP code computed from the enrolled secret;
3. poll until the request is signed, then download the signed PDF.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pyotp

__all__ = ["DemoFailed", "run_demo"]

POLL_INTERVAL_SECONDS = 0.25
SIGN_TIMEOUT_SECONDS = 120


class DemoFailed(Exception):
    def __init__(self, code: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class DemoResult:
    request_id: str
    dossier_code: str
    signer_name: str
    output: Path
    signed_sha256: str


async def _problem(response: aiohttp.ClientResponse) -> DemoFailed:
    try:
        body = await response.json(content_type=None)
        return DemoFailed(body.get("code", f"http_{response.status}"), body.get("detail", ""), response.status)
    except (json.JSONDecodeError, aiohttp.ContentTypeError, ValueError):
        return DemoFailed(f"http_{response.status}", (await response.text())[:300], response.status)


async def _approve(session: aiohttp.ClientSession, server: str, official: dict[str, Any], request_id: str,
                   language: str) -> None:
    async with session.post(f"{server}/api/v1/sessions", json={
        "username": official["username"], "password": official["password"],
    }, headers={"Accept-Language": language}) as response:
        if response.status != 201:
            raise await _problem(response)
        token = (await response.json())["token"]

    totp = pyotp.TOTP(official["totp_secret"])
    headers = {"Authorization": f"Bearer {token}", "Accept-Language": language}
    for _attempt in range(3):
        async with session.post(f"{server}/api/v1/approvals", json={
            "request_ids": [request_id], "otp": totp.now(),
        }, headers=headers) as response:
            if response.status == 201:
                return
            problem = await _problem(response)
        if problem.code != "otp_replayed":
            raise problem
        # This code was already used in the current 30-second step: wait for the next one.
        await asyncio.sleep(totp.interval - time.time() % totp.interval + 0.5)
    raise problem


async def run_demo(server: str, credentials: dict[str, Any], input_path: Path, output_path: Path, *,
                   password: str | None, signer_id: str | None, dossier_code: str, language: str = "vi",
                   placement: dict[str, Any] | None = None) -> DemoResult:
    server = server.rstrip("/")
    officials = credentials["officials"]
    official = next((o for o in officials if o["id"] == signer_id), None) if signer_id else officials[0]
    if official is None:
        known = ", ".join(o["id"] for o in officials)
        raise DemoFailed("signer_unknown", f"{signer_id} is not in the demo credentials file (known: {known})")

    application = credentials["application"]
    app_headers = {"Authorization": f"Bearer {application['api_key']}", "Accept-Language": language}
    metadata = {
        "idempotency_key": f"demo-{secrets.token_hex(8)}",
        "dossier_code": dossier_code,
        "title": f"Văn bản thử nghiệm {input_path.name}",
        "signer": official["credential_id"],
        "reason": "Phê duyệt kết quả giải quyết thủ tục hành chính",
        "location": "Huyện Mẫu Sơn",
        "format": "pades",
        "level": "B-T",
    }
    if password is not None:
        metadata["pdf_password"] = password
    if placement is not None:
        metadata["placement"] = placement

    timeout = aiohttp.ClientTimeout(total=SIGN_TIMEOUT_SECONDS + 60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        form = aiohttp.FormData()
        form.add_field("metadata", json.dumps(metadata, ensure_ascii=False), content_type="application/json")
        form.add_field("document", input_path.open("rb"), filename=input_path.name, content_type="application/pdf")
        async with session.post(f"{server}/api/v1/sign-requests", data=form, headers=app_headers) as response:
            if response.status not in (200, 201):
                raise await _problem(response)
            request_id = (await response.json())["id"]

        await _approve(session, server, official, request_id, language)

        deadline = time.monotonic() + SIGN_TIMEOUT_SECONDS
        while True:
            async with session.get(f"{server}/api/v1/sign-requests/{request_id}", headers=app_headers) as response:
                if response.status != 200:
                    raise await _problem(response)
                state = await response.json()
            if state["state"] == "signed":
                break
            if state["state"] in ("failed", "rejected", "expired"):
                reason = state.get("state_reason") or state["state"]
                raise DemoFailed(reason, f"request {request_id} ended in state {state['state']}")
            if time.monotonic() > deadline:
                raise DemoFailed("timeout", f"request {request_id} not signed after {SIGN_TIMEOUT_SECONDS} s")
            await asyncio.sleep(POLL_INTERVAL_SECONDS)

        async with session.get(f"{server}/api/v1/sign-requests/{request_id}/signed-document",
                               headers=app_headers) as response:
            if response.status != 200:
                raise await _problem(response)
            partial = output_path.with_name(output_path.name + ".part")
            with partial.open("wb") as handle:
                async for chunk in response.content.iter_chunked(256 * 1024):
                    handle.write(chunk)
            partial.replace(output_path)

    return DemoResult(request_id, dossier_code, official["full_name"], output_path,
                      state["signed_document"]["sha256"])
