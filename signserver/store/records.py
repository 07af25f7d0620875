"""Typed records the store returns; the core works with these, never with rows."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Mapping, TypeVar

__all__ = ["Application", "Official", "Credential", "CredentialProfile", "SignRequest", "AuditRecord", "HsmKey",
           "AdminChange", "PolicyVersion", "from_row"]

T = TypeVar("T")


def _aware(value: Any) -> Any:
    # SQLite returns naive datetimes even for timezone=True columns; everything is stored in UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def from_row(cls: type[T], row: Mapping[str, Any]) -> T:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{key: _aware(value) for key, value in row.items() if key in names})


@dataclass(frozen=True)
class Application:
    id: str
    name: str
    agency: str
    api_key_sha256: str
    basic_username: str | None
    basic_password_hash: str | None
    enabled: bool
    created_at: datetime
    webhook_url: str | None = None
    webhook_secret_wrapped: bytes | None = None


@dataclass(frozen=True)
class Official:
    id: str
    username: str
    full_name: str
    title: str
    agency: str
    password_hash: str
    totp_secret_wrapped: bytes
    otp_failed_count: int
    otp_locked_until: datetime | None
    enabled: bool
    created_at: datetime
    roles: str = "official"

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(role.strip() for role in self.roles.split(",") if role.strip())


@dataclass(frozen=True)
class Credential:
    id: str
    kind: str
    key_id_hex: str
    key_label: str
    key_type: str
    key_size: int
    certificate_der: bytes
    chain_pem: str
    cert_serial_hex: str
    owner_official_id: str | None
    approver_official_id: str | None
    display_name: str
    signer_title: str
    agency: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class CredentialProfile:
    """A credential's appearance settings; None fields are not set."""

    credential_id: str
    signature_image: bytes | None = field(repr=False)
    seal_image: bytes | None = field(repr=False)
    seal_diameter_mm: float | None
    default_appearance: str | None
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class SignRequest:
    id: str
    application_id: str
    idempotency_key: str
    fingerprint: str
    dossier_code: str
    title: str
    document_type: str | None
    credential_id: str
    approver_official_id: str | None
    signature_format: str
    signature_level: str
    reason: str
    location: str
    placement_json: str | None
    document_name: str
    document_path: str
    document_sha256: str
    document_size: int
    page_count: int | None
    pdf_password_wrapped: bytes | None
    state: str
    state_reason: str | None
    policy_rule: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    approval_id: str | None
    decided_by: str | None
    decided_at: datetime | None
    rejection_reason: str | None
    signed_path: str | None
    signed_sha256: str | None
    signed_at: datetime | None
    signing_instance: str | None = None
    signing_attempts: int = 0
    delegation_id: str | None = None
    requested_credential_id: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    recorded_at: datetime
    actor_type: str
    actor_id: str
    action: str
    request_id: str | None
    dossier_code: str | None
    document_sha256: str | None
    key_id_hex: str | None
    cert_serial_hex: str | None
    details_json: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class HsmKey:
    id: str
    key_id_hex: str
    key_label: str
    key_type: str
    key_size: int
    public_key_der: bytes = field(repr=False)
    state: str
    credential_id: str | None
    certificate_der: bytes | None = field(repr=False)
    chain_pem: str | None = field(repr=False)
    cert_serial_hex: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime


@dataclass(frozen=True)
class AdminChange:
    id: str
    kind: str
    summary: str
    payload_json: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    state: str
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None


@dataclass(frozen=True)
class PolicyVersion:
    version: int
    documents_json: str = field(repr=False)
    digest: str
    author_id: str
    approver_id: str
    change_id: str | None
    applied_at: datetime
