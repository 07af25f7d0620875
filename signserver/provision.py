"""First-run set-up of a data directory: SoftHSM token, keys, demo PKI, demo accounts.

``signserver init`` calls :func:`initialize` once; later runs find the marker
file and do nothing. The demo PKI's root and issuing CA stand in for the
Vietnamese Government CA; their software keys stay under ``pki/`` (mode 0600)
because they belong to the external CA, not to the service. Every key the
service signs with is generated inside the token and never leaves it. The
certificates name the demo CA's OCSP and CRL services under
``Settings.demo_ca_base_url``, which ``pki/demo-ca.json`` records.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyotp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import hsm
from signserver import demo_pki
from signserver.config import Settings
from signserver.core.auth import hash_password, new_api_key, sha256_hex
from signserver.core.appearance_profiles import set_credential_appearance
from signserver.core.audit import append_audit
from signserver.demo_ca import create_demo_ca
from signserver.demo_images import demo_appearance_changes
from signserver.hsm_bridge import SECRET_WRAP_KEY_ID, SECRET_WRAP_KEY_LABEL, HsmSecretBox
from signserver.store.db import Store
from signserver.store.migrate import upgrade_to_head

__all__ = ["initialize", "InitializationError", "DEMO_APPLICATION_ID"]

DEMO_APPLICATION_ID = "app-motcua-demo"
DEMO_AGENCY = "Ủy ban nhân dân huyện Mẫu Sơn"
DEMO_LOCALITY = "Huyện Mẫu Sơn"
DEMO_PROVINCE = "Tỉnh Thử Nghiệm"


class InitializationError(Exception):
    pass


@dataclass(frozen=True)
class DemoOfficial:
    id: str
    username: str
    full_name: str
    title: str
    credential_id: str
    key_type: str
    key_size: int
    citizen_id: str


DEMO_OFFICIALS = (
    DemoOfficial("off-tran-thi-bich-ngoc", "ngoc.ttb", "Trần Thị Bích Ngọc", "Phó Chủ tịch",
                 "cred-tran-thi-bich-ngoc", "RSA", 2048, "CCCD:001186000001"),
    DemoOfficial("off-nguyen-van-an", "an.nv", "Nguyễn Văn An", "Chuyên viên Văn phòng HĐND và UBND",
                 "cred-nguyen-van-an", "EC", 256, "CCCD:001090000002"),
)
SEAL_CREDENTIAL_ID = "cred-seal-ubnd-mau-son"
SEAL_HOLDER_ID = "off-nguyen-van-an"  # the văn thư who operates the agency seal
TSA_CREDENTIAL_ID = "cred-tsa"


def _write_secret_file(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def _new_key_id() -> bytes:
    return secrets.token_bytes(16)


def _generate(token: hsm.Hsm, key_id: bytes, label: str, key_type: str, key_size: int) -> bytes:
    if key_type == "RSA":
        return token.generate_rsa_key(key_id, label, key_size)
    return token.generate_ec_key(key_id, label, {256: "P-256", 384: "P-384"}[key_size])


def _pem(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def _serial_hex(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


def initialize(settings: Settings) -> dict[str, Any]:
    """Create the data directory's token, PKI, store and demo accounts; returns the demo credentials."""
    if settings.initialized_marker.exists():
        raise InitializationError("already initialised")
    if settings.home.exists() and any(settings.home.iterdir()):
        raise InitializationError(
            f"{settings.home} is not empty but was never fully initialised; move it away and run init again"
        )
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(settings.home, 0o700)
    try:
        return _initialize_empty_home(settings)
    except BaseException:
        # Leave the directory empty again, so that the next `signserver init` can start over.
        for child in settings.home.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        raise


def _initialize_empty_home(settings: Settings) -> dict[str, Any]:
    user_pin = secrets.token_hex(16)
    so_pin = secrets.token_hex(16)
    _write_secret_file(settings.pin_file, user_pin)
    _write_secret_file(settings.so_pin_file, so_pin)
    settings.token_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    hsm.write_softhsm_config(settings.softhsm_conf, settings.token_dir)
    os.environ["SOFTHSM2_CONF"] = str(settings.softhsm_conf)
    hsm.init_softhsm_token(settings.softhsm_conf, settings.token_label, so_pin, user_pin, settings.pkcs11_module)

    upgrade_to_head(settings.database_url)

    token = hsm.Hsm(hsm.HsmConfig(settings.pkcs11_module, settings.token_label, user_pin, settings.hsm_pool_size))
    token.open()
    try:
        return _provision_with_token(settings, token)
    finally:
        token.close()


def _provision_with_token(settings: Settings, token: hsm.Hsm) -> dict[str, Any]:
    import asyncio

    token.generate_secret_key(SECRET_WRAP_KEY_ID, SECRET_WRAP_KEY_LABEL)

    # The certificates name the demo CA's OCSP and CRL services at this URL, so it is fixed here.
    ca = create_demo_ca(settings.pki_dir, settings.demo_ca_base_url)
    root, issuing = ca.root, ca.issuing
    demo_pki.write_pem(settings.trust_roots_file, root.certificate)
    demo_pki.write_pem(settings.demo_root_file, root.certificate)
    chain_pem = _pem(issuing.certificate, root.certificate)

    now = datetime.now(timezone.utc)
    credential_rows: list[dict[str, Any]] = []

    def add_credential(credential_id: str, kind: str, key_type: str, key_size: int, subject: demo_pki.SubjectSpec,
                       display_name: str, signer_title: str, owner: str | None, approver: str | None) -> None:
        key_id = _new_key_id()
        spki = _generate(token, key_id, credential_id, key_type, key_size)
        if kind == "tsa":
            certificate = demo_pki.issue_tsa_certificate(issuing, spki, subject,
                                                         revocation_urls=ca.urls.for_end_entity())
        else:
            certificate = demo_pki.issue_signing_certificate(issuing, spki, subject,
                                                             revocation_urls=ca.urls.for_end_entity())
        demo_pki.write_pem(settings.pki_dir / f"{credential_id}.pem", certificate)
        ca.record_issued(certificate)
        credential_rows.append(dict(
            id=credential_id, kind=kind, key_id_hex=key_id.hex(), key_label=credential_id, key_type=key_type,
            key_size=key_size, certificate_der=certificate.public_bytes(serialization.Encoding.DER),
            chain_pem=chain_pem, cert_serial_hex=_serial_hex(certificate), owner_official_id=owner,
            approver_official_id=approver, display_name=display_name, signer_title=signer_title,
            agency=DEMO_AGENCY, status="active", created_at=now,
        ))

    for official in DEMO_OFFICIALS:
        add_credential(
            official.credential_id, "personal", official.key_type, official.key_size,
            demo_pki.SubjectSpec(common_name=official.full_name, organization=DEMO_AGENCY,
                                 organizational_unit="Văn phòng HĐND và UBND", locality=DEMO_LOCALITY,
                                 state=DEMO_PROVINCE, title=official.title, user_id=official.citizen_id),
            official.full_name, official.title, official.id, official.id,
        )
    add_credential(
        SEAL_CREDENTIAL_ID, "seal", "RSA", 2048,
        demo_pki.SubjectSpec(common_name=DEMO_AGENCY, organization=DEMO_AGENCY, locality=DEMO_LOCALITY,
                             state=DEMO_PROVINCE, user_id="MST:0100000001"),
        DEMO_AGENCY, "", None, SEAL_HOLDER_ID,
    )
    add_credential(
        TSA_CREDENTIAL_ID, "tsa", "RSA", 2048,
        demo_pki.SubjectSpec(common_name="Signserver TSA - Dấu thời gian thử nghiệm",
                             organization="Signserver Demo PKI"),
        "Signserver TSA", "", None, None,
    )

    credentials = asyncio.run(_store_accounts(settings, token, credential_rows, now))
    _write_secret_file(settings.credentials_file, json.dumps(credentials, ensure_ascii=False, indent=2) + "\n")
    settings.initialized_marker.write_text(now.isoformat() + "\n")
    return credentials


async def _store_accounts(settings: Settings, token: hsm.Hsm, credential_rows: list[dict[str, Any]],
                          now: datetime) -> dict[str, Any]:
    store = Store(settings.database_url)
    secret_box = HsmSecretBox(token)
    api_key = new_api_key()
    app_password = secrets.token_urlsafe(18)
    officials_out = []
    try:
        async with store.transaction() as tx:
            await tx.insert_application(
                id=DEMO_APPLICATION_ID, name="Hệ thống một cửa điện tử huyện Mẫu Sơn (thử nghiệm)",
                agency=DEMO_AGENCY, api_key_sha256=sha256_hex(api_key), basic_username="motcua-demo",
                basic_password_hash=hash_password(app_password), enabled=True, created_at=now,
            )
            for official in DEMO_OFFICIALS:
                password = secrets.token_urlsafe(12)
                totp_secret = pyotp.random_base32()
                await tx.insert_official(
                    id=official.id, username=official.username, full_name=official.full_name, title=official.title,
                    agency=DEMO_AGENCY, password_hash=hash_password(password),
                    totp_secret_wrapped=await secret_box.seal(totp_secret.encode()),
                    otp_failed_count=0, enabled=True, created_at=now,
                )
                officials_out.append({
                    "id": official.id, "full_name": official.full_name, "title": official.title,
                    "username": official.username, "password": password, "totp_secret": totp_secret,
                    "totp_uri": pyotp.TOTP(totp_secret).provisioning_uri(name=official.username, issuer_name="signserver"),
                    "credential_id": official.credential_id,
                })
            for row in credential_rows:
                await tx.insert_credential(**row)
            await append_audit(tx, action="initialized", actor_type="system", actor_id="signserver-init",
                               details={"credentials": [r["id"] for r in credential_rows],
                                        "officials": [o.id for o in DEMO_OFFICIALS],
                                        "applications": [DEMO_APPLICATION_ID]}, now=now)
            appearances = demo_appearance_changes([(o.credential_id, o.full_name) for o in DEMO_OFFICIALS],
                                                  SEAL_CREDENTIAL_ID, DEMO_AGENCY, DEMO_PROVINCE)
            for credential_id, change in appearances.items():
                await set_credential_appearance(tx, credential_id, change, actor_type="system",
                                                actor_id="signserver-init", now=now)
    finally:
        await store.close()
    return {
        "note": "Demo credentials generated by `signserver init`. Keep this file private (mode 0600).",
        "application": {"id": DEMO_APPLICATION_ID, "api_key": api_key, "username": "motcua-demo",
                        "password": app_password},
        "officials": officials_out,
        "seal": {"credential_id": SEAL_CREDENTIAL_ID, "holder_official_id": SEAL_HOLDER_ID},
        "demo_root_certificate": str(settings.demo_root_file),
    }
