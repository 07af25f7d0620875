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
from signserver.core.policy_versions import bootstrap_policy
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

# A second agency of the same province with its own one-stop application and
# seal, so that a trial shows one agency's application cannot reach another's keys.
OTHER_AGENCY = "Sở Tư pháp tỉnh Thử Nghiệm"
OTHER_APPLICATION_ID = "app-motcua-so-tu-phap"
OTHER_SEAL_CREDENTIAL_ID = "cred-seal-so-tu-phap"
OTHER_SEAL_HOLDER = DemoOfficial("off-vu-thi-lan", "lan.vt", "Vũ Thị Lan", "Văn thư Sở Tư pháp",
                                 "", "EC", 256, "CCCD:001192000003")


@dataclass(frozen=True)
class DemoPerson:
    """A security officer or an auditor: no key, signs in with a password and a TOTP code."""

    id: str
    username: str
    full_name: str
    title: str
    roles: str


DEMO_ADMINISTRATORS = (
    DemoPerson("so-le-van-cuong", "cuong.lv", "Lê Văn Cường", "Cán bộ quản trị an ninh, Sở Thông tin và Truyền thông",
               "security_officer"),
    DemoPerson("so-pham-thu-ha", "ha.pt", "Phạm Thu Hà", "Cán bộ quản trị an ninh, Sở Thông tin và Truyền thông",
               "security_officer"),
    DemoPerson("aud-hoang-minh-duc", "duc.hm", "Hoàng Minh Đức", "Thanh tra viên, Thanh tra tỉnh", "auditor"),
)


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
    if settings.home.exists() and any(not _empty_token_mount(settings, child) for child in settings.home.iterdir()):
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


def _empty_token_mount(settings: Settings, child: Path) -> bool:
    """Return whether ``child`` is an empty token directory, such as a token volume that replicas share."""
    return child == settings.token_dir and child.is_dir() and not any(child.iterdir())


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
                       display_name: str, signer_title: str, owner: str | None, approver: str | None,
                       agency: str = DEMO_AGENCY) -> None:
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
            agency=agency, status="active", created_at=now, public_key_der=spki,
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
        OTHER_SEAL_CREDENTIAL_ID, "seal", OTHER_SEAL_HOLDER.key_type, OTHER_SEAL_HOLDER.key_size,
        demo_pki.SubjectSpec(common_name=OTHER_AGENCY, organization=OTHER_AGENCY, locality="Thành phố Thử Nghiệm",
                             state=DEMO_PROVINCE, user_id="MST:0100000002"),
        OTHER_AGENCY, "", None, OTHER_SEAL_HOLDER.id, agency=OTHER_AGENCY,
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
    other_api_key = new_api_key()
    app_password = secrets.token_urlsafe(18)
    officials_out = []
    administrators_out = []

    async def add_person(person_id: str, username: str, full_name: str, title: str, agency: str,
                         roles: str) -> dict[str, Any]:
        password = secrets.token_urlsafe(12)
        totp_secret = pyotp.random_base32()
        await tx.insert_official(
            id=person_id, username=username, full_name=full_name, title=title, agency=agency,
            password_hash=hash_password(password), totp_secret_wrapped=await secret_box.seal(totp_secret.encode()),
            otp_failed_count=0, enabled=True, created_at=now, roles=roles,
        )
        return {
            "id": person_id, "full_name": full_name, "title": title, "username": username, "password": password,
            "totp_secret": totp_secret, "roles": roles.split(","),
            "totp_uri": pyotp.TOTP(totp_secret).provisioning_uri(name=username, issuer_name="signserver"),
        }

    try:
        async with store.transaction() as tx:
            await tx.insert_application(
                id=DEMO_APPLICATION_ID, name="Hệ thống một cửa điện tử huyện Mẫu Sơn (thử nghiệm)",
                agency=DEMO_AGENCY, api_key_sha256=sha256_hex(api_key), basic_username="motcua-demo",
                basic_password_hash=hash_password(app_password), enabled=True, created_at=now,
            )
            await tx.insert_application(
                id=OTHER_APPLICATION_ID, name="Hệ thống một cửa điện tử Sở Tư pháp (thử nghiệm)",
                agency=OTHER_AGENCY, api_key_sha256=sha256_hex(other_api_key), basic_username=None,
                basic_password_hash=None, enabled=True, created_at=now,
            )
            for official in DEMO_OFFICIALS:
                roles = "official,seal_holder" if official.id == SEAL_HOLDER_ID else "official"
                person = await add_person(official.id, official.username, official.full_name, official.title,
                                          DEMO_AGENCY, roles)
                officials_out.append({**person, "credential_id": official.credential_id})
            other_holder = await add_person(OTHER_SEAL_HOLDER.id, OTHER_SEAL_HOLDER.username,
                                            OTHER_SEAL_HOLDER.full_name, OTHER_SEAL_HOLDER.title, OTHER_AGENCY,
                                            "official,seal_holder")
            for administrator in DEMO_ADMINISTRATORS:
                administrators_out.append(await add_person(
                    administrator.id, administrator.username, administrator.full_name, administrator.title,
                    "Sở Thông tin và Truyền thông tỉnh Thử Nghiệm", administrator.roles))
            for row in credential_rows:
                public_key_der = row.pop("public_key_der")
                await tx.insert_credential(**row)
                await tx.insert_hsm_key(
                    id="key_" + row["key_id_hex"][:20], key_id_hex=row["key_id_hex"], key_label=row["key_label"],
                    key_type=row["key_type"], key_size=row["key_size"], public_key_der=public_key_der,
                    state="active", credential_id=row["id"], certificate_der=row["certificate_der"],
                    chain_pem=row["chain_pem"], cert_serial_hex=row["cert_serial_hex"], created_at=now,
                    created_by="signserver-init", updated_at=now,
                )
            await append_audit(tx, action="initialized", actor_type="system", actor_id="signserver-init",
                               details={"credentials": [r["id"] for r in credential_rows],
                                        "officials": [o.id for o in DEMO_OFFICIALS] + [OTHER_SEAL_HOLDER.id],
                                        "administrators": [a.id for a in DEMO_ADMINISTRATORS],
                                        "applications": [DEMO_APPLICATION_ID, OTHER_APPLICATION_ID]}, now=now)
            await bootstrap_policy(tx, settings.policies_dir, now)
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
        "security_officers": [a for a in administrators_out if "security_officer" in a["roles"]],
        "auditors": [a for a in administrators_out if "auditor" in a["roles"]],
        "other_agency": {
            "agency": OTHER_AGENCY,
            "application": {"id": OTHER_APPLICATION_ID, "api_key": other_api_key},
            "seal": {"credential_id": OTHER_SEAL_CREDENTIAL_ID, "holder_official_id": OTHER_SEAL_HOLDER.id},
            "seal_holder": other_holder,
        },
        "demo_root_certificate": str(settings.demo_root_file),
    }
