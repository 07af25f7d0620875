"""Submission of a sign request by a one-stop application.

Order of checks: the metadata, the idempotency key (a retry returns the first
request), the signer, the key policy (a denial is recorded), then the PDF
itself. CAdES signs any file type, so a CAdES request skips the PDF check.
Only when all pass is the document moved into place and the request stored,
together with its audit records, in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from signserver.errors import InvalidInput
from signserver.store.db import IntegrityError
from signserver.store.records import Application, Credential, SignRequest

from .audit import append_audit
from .context import CoreContext, new_id
from .errors import IdempotencyKeyReused, PolicyDenied, SignerUnknown
from .ports import CheckedPdf
from .metrics import SIGN_REQUEST_EVENTS
from .states import PENDING_APPROVAL

__all__ = ["SubmitMetadata", "UploadedDocument", "submit_sign_request"]

log = structlog.get_logger(__name__)

SUPPORTED_FORMATS = {"pades": {"B-T"}, "cades": {"B-B", "B-T"}}
# CAdES packaging: "detached" writes a .p7s without the file, "attached" a .p7m that embeds it.
CADES_PACKAGINGS = ("detached", "attached")
MAX_TTL_SECONDS = 30 * 86400


@dataclass(frozen=True)
class Placement:
    page: int | None  # None: the last page
    box: tuple[float, float, float, float] | None  # None: the bottom-right corner of that page
    visible: bool = True


@dataclass(frozen=True)
class SubmitMetadata:
    idempotency_key: str
    dossier_code: str
    title: str
    signer: str
    reason: str
    location: str
    signature_format: str
    signature_level: str
    document_type: str | None
    placement: Placement
    pdf_password: str | None
    expires_in_seconds: int | None
    # Only for CAdES, else None.
    cades_packaging: str | None = None

    @classmethod
    def parse(cls, data: Any, idempotency_header: str | None, min_ttl_seconds: int = 60) -> "SubmitMetadata":
        if not isinstance(data, dict):
            raise InvalidInput("metadata_invalid", reason="metadata must be a JSON object")

        def text(name: str, *, required: bool, max_length: int) -> str | None:
            value = data.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                if required:
                    raise InvalidInput("field_missing", field=name)
                return None
            if not isinstance(value, str):
                raise InvalidInput("field_invalid", field=name, reason="must be a string")
            return _clean_text(name, value, max_length)

        body_key = text("idempotency_key", required=False, max_length=255)
        header_key = _clean_text("Idempotency-Key", idempotency_header, 255) if idempotency_header else None
        if header_key and body_key and header_key != body_key:
            raise InvalidInput("field_invalid", field="idempotency_key",
                               reason="differs from the Idempotency-Key header; send one of them")
        key = header_key or body_key
        if not key:
            raise InvalidInput("field_missing", field="idempotency_key")

        signature_format = (text("format", required=False, max_length=16) or "pades").lower()
        level = (text("level", required=False, max_length=16) or "B-T").upper()
        if signature_format not in SUPPORTED_FORMATS:
            raise InvalidInput("format_unsupported", format=signature_format, supported=", ".join(SUPPORTED_FORMATS))
        if level not in SUPPORTED_FORMATS[signature_format]:
            raise InvalidInput(
                "level_unsupported", level=level, supported=", ".join(sorted(SUPPORTED_FORMATS[signature_format]))
            )

        cades_packaging = None
        if signature_format != "cades" and data.get("cades_packaging") is not None:
            raise InvalidInput("field_invalid", field="cades_packaging", reason='only applies to format "cades"')
        if signature_format == "cades":
            cades_packaging = (text("cades_packaging", required=False, max_length=16) or "detached").lower()
            if cades_packaging not in CADES_PACKAGINGS:
                raise InvalidInput("field_invalid", field="cades_packaging",
                                   reason=f"must be one of {', '.join(CADES_PACKAGINGS)}")

        expires_in = data.get("expires_in_seconds")
        if expires_in is not None and (not isinstance(expires_in, int) or isinstance(expires_in, bool)
                                       or not min_ttl_seconds <= expires_in <= MAX_TTL_SECONDS):
            raise InvalidInput("field_invalid", field="expires_in_seconds",
                               reason=f"must be an integer from {min_ttl_seconds} to {MAX_TTL_SECONDS}")

        return cls(
            idempotency_key=key,
            dossier_code=text("dossier_code", required=True, max_length=128) or "",
            title=text("title", required=True, max_length=500) or "",
            signer=text("signer", required=True, max_length=64) or "",
            reason=text("reason", required=False, max_length=500) or "",
            location=text("location", required=False, max_length=500) or "",
            signature_format=signature_format,
            signature_level=level,
            document_type=text("document_type", required=False, max_length=128),
            placement=_parse_placement(data.get("placement")),
            pdf_password=_parse_password(data.get("pdf_password")),
            expires_in_seconds=expires_in,
            cades_packaging=cades_packaging,
        )

    def fingerprint(self, document_sha256: str) -> str:
        """Digest of everything that defines the request, to tell a true retry from a reused key."""
        content = {
            "dossier_code": self.dossier_code,
            "title": self.title,
            "signer": self.signer,
            "reason": self.reason,
            "location": self.location,
            "format": self.signature_format,
            "level": self.signature_level,
            "document_type": self.document_type,
            "placement": [self.placement.page, self.placement.box, self.placement.visible],
            "document_sha256": document_sha256,
        }
        if self.cades_packaging is not None:
            content["cades_packaging"] = self.cades_packaging
        return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _clean_text(name: str, value: str, max_length: int) -> str:
    """Return ``value`` stripped and in NFC, or raise if it is too long or contains control characters.

    NFC matters because the same Vietnamese word can arrive composed or
    decomposed, and dossier codes and names are compared and searched as stored.
    """
    value = unicodedata.normalize("NFC", value.strip())
    if len(value) > max_length:
        raise InvalidInput("field_invalid", field=name, reason=f"longer than {max_length} characters")
    if any(unicodedata.category(character) == "Cc" for character in value):
        raise InvalidInput("field_invalid", field=name, reason="contains control characters")
    return value


def _parse_password(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 1024:
        raise InvalidInput("field_invalid", field="pdf_password", reason="must be a string of at most 1024 characters")
    return value


def _parse_placement(value: Any) -> Placement:
    if value is None:
        return Placement(page=None, box=None)
    if not isinstance(value, dict):
        raise InvalidInput("field_invalid", field="placement", reason="must be an object with page and rect")
    if value.get("visible") is False:
        return Placement(page=None, box=None, visible=False)
    page = value.get("page")
    if page is not None and (not isinstance(page, int) or isinstance(page, bool) or page < 1):
        raise InvalidInput("field_invalid", field="placement.page", reason="must be a page number from 1")
    rect = value.get("rect")
    if rect is None:
        return Placement(page=page, box=None)
    if (
        not isinstance(rect, list)
        or len(rect) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rect)
    ):
        raise InvalidInput("field_invalid", field="placement.rect", reason="must be [x1, y1, x2, y2] in PDF points")
    x1, y1, x2, y2 = (float(v) for v in rect)
    # Smaller than 120 x 50 points, the five stamp lines shrink below a readable size.
    if not (0 <= x1 < x2 and 0 <= y1 < y2) or x2 - x1 < 120 or y2 - y1 < 50 or max(x2, y2) > 14400:
        raise InvalidInput(
            "field_invalid", field="placement.rect",
            reason="needs 0 <= x1 < x2, 0 <= y1 < y2, at least 120 x 50 points, within 14400 points",
        )
    return Placement(page=page, box=(x1, y1, x2, y2))


@dataclass(frozen=True)
class UploadedDocument:
    path: Path  # a temporary file the API layer streamed the upload into
    name: str
    sha256: str
    size: int


async def _resolve_signer(ctx: CoreContext, signer: str) -> Credential:
    async with ctx.store.transaction() as tx:
        credential = await tx.credential(signer)
        if credential is None:
            credential = await tx.personal_credential(signer)
    if credential is None or credential.kind == "tsa" or credential.status != "active":
        raise SignerUnknown(signer=signer)
    return credential


def _placement_json(placement: Placement, checked: CheckedPdf) -> str:
    if not placement.visible:
        return json.dumps({"visible": False})
    box = placement.box if placement.box is not None else checked.default_stamp_box
    return json.dumps({"page": checked.stamp_page, "rect": list(box), "visible": True})


async def submit_sign_request(
    ctx: CoreContext, application: Application, meta: SubmitMetadata, document: UploadedDocument
) -> tuple[SignRequest, bool]:
    """Store a new sign request, or return the earlier one for a retried idempotency key.

    Returns the request and whether it was created by this call.
    """
    now = ctx.clock()
    fingerprint = meta.fingerprint(document.sha256)

    existing = await _existing_request(ctx, application.id, meta.idempotency_key, fingerprint)
    if existing is not None:
        return existing, False

    credential = await _resolve_signer(ctx, meta.signer)
    decision = ctx.policies.decide(application.id, credential.id, meta.signature_format)
    if not decision.allowed:
        async with ctx.store.transaction() as tx:
            await append_audit(
                tx, action="policy_denied", actor_type="application", actor_id=application.id,
                dossier_code=meta.dossier_code, document_sha256=document.sha256, key_id_hex=credential.key_id_hex,
                details={"credential_id": credential.id, "rule": decision.rule_id,
                         "policy_version": decision.policy_version, "format": meta.signature_format},
                now=now,
            )
        log.info("sign_request.policy_denied", application_id=application.id, credential_id=credential.id,
                 dossier_code=meta.dossier_code, rule=decision.rule_id)
        raise PolicyDenied(rule=decision.rule_id, signer=meta.signer)

    if meta.signature_format == "cades":
        # A CAdES signature covers any file type, so the PDF checks and the stamp do not apply.
        page_count = None
        placement_json = json.dumps({"packaging": meta.cades_packaging})
        stored_name = "original.bin"
    else:
        stamp_box = meta.placement.box if meta.placement.visible else None
        checked = await ctx.pdf_checker.check(document.path, meta.pdf_password, meta.placement.page, stamp_box)
        page_count = checked.page_count
        placement_json = _placement_json(meta.placement, checked)
        stored_name = "original.pdf"

    request_id = new_id("req")
    request_dir = ctx.settings.documents_dir / request_id
    request_dir.mkdir(parents=True, exist_ok=False)
    stored_path = request_dir / stored_name
    shutil.move(str(document.path), stored_path)
    password_wrapped = None
    if meta.pdf_password is not None and meta.signature_format == "pades":
        password_wrapped = await ctx.secret_box.seal(meta.pdf_password.encode())
    ttl = meta.expires_in_seconds or int(ctx.settings.request_ttl.total_seconds())

    values = dict(
        id=request_id,
        application_id=application.id,
        idempotency_key=meta.idempotency_key,
        fingerprint=fingerprint,
        dossier_code=meta.dossier_code,
        title=meta.title,
        document_type=meta.document_type,
        credential_id=credential.id,
        approver_official_id=credential.approver_official_id,
        signature_format=meta.signature_format,
        signature_level=meta.signature_level,
        reason=meta.reason,
        location=meta.location,
        placement_json=placement_json,
        document_name=document.name,
        document_path=str(stored_path),
        document_sha256=document.sha256,
        document_size=document.size,
        page_count=page_count,
        pdf_password_wrapped=password_wrapped,
        state=PENDING_APPROVAL,
        policy_rule=f"{decision.rule_id}@{decision.policy_version}",
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    try:
        async with ctx.store.transaction() as tx:
            await tx.insert_sign_request(**values)
            common = dict(
                actor_type="application", actor_id=application.id, request_id=request_id,
                dossier_code=meta.dossier_code, document_sha256=document.sha256,
                key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex, now=now,
            )
            await append_audit(tx, action="submitted", details={
                "title": meta.title, "credential_id": credential.id, "format": meta.signature_format,
                "level": meta.signature_level, "document_size": document.size, "idempotency_key": meta.idempotency_key,
            }, **common)
            await append_audit(tx, action="policy_allowed", details={
                "rule": decision.rule_id, "policy_version": decision.policy_version,
            }, **common)
            created = await tx.sign_request(request_id)
    except IntegrityError:
        # A concurrent retry with the same idempotency key won the insert.
        shutil.rmtree(request_dir, ignore_errors=True)
        existing = await _existing_request(ctx, application.id, meta.idempotency_key, fingerprint)
        if existing is None:
            raise
        return existing, False

    assert created is not None
    SIGN_REQUEST_EVENTS.labels(state=PENDING_APPROVAL).inc()
    log.info("sign_request.submitted", request_id=request_id, dossier_code=meta.dossier_code,
             application_id=application.id, credential_id=credential.id)
    return created, True


async def _existing_request(ctx: CoreContext, application_id: str, key: str, fingerprint: str) -> SignRequest | None:
    async with ctx.store.transaction() as tx:
        existing = await tx.sign_request_by_idempotency_key(application_id, key)
    if existing is None:
        return None
    if existing.fingerprint != fingerprint:
        raise IdempotencyKeyReused(idempotency_key=key, request_id=existing.id)
    return existing
