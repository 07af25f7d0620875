"""Submission of a sign request by a one-stop application.

Order of checks: the metadata, the idempotency key (a retry returns the first
request), the signer, the key policy (a denial is recorded), then the PDF
itself. CAdES signs any file type, so a CAdES request skips the PDF check,
and so does a raw or hash-only request (see ``signature_options``).
Only when all pass is the document moved into place and the request stored,
together with its audit records, in one transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import shutil
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from signserver.errors import InvalidInput
from signserver.signing.anchor import AnchorPlacement
from signserver.signing.errors import PdfCertificationNotFirst, PdfCertifiedNewVisibleField
from signserver.store.chains import insert_approval_steps
from signserver.store.db import IntegrityError, Transaction
from signserver.store.records import Application, Credential, SignRequest

from .audit import append_audit
from .chain_errors import DeputyCredentialNotAllowed
from .chains import ChainPlan, parse_approvers, plan_chain, step_rows
from .context import CoreContext, new_id
from .errors import IdempotencyKeyReused, SignerUnknown
from .ports import CheckedPdf
from .metrics import SIGN_REQUEST_EVENTS
from .signature_options import (
    DIGEST_FILE_NAME,
    RAW_FORMAT,
    RAW_LEVEL,
    DigestWithDocument,
    LevelNotApplicable,
    SignatureOptions,
    parse_signature_options,
)
from .stamp_plan import StampPlan, parse_appearance, parse_stamp_position, plan_stamp
from .key_access import evaluate_key_use
from .policy import PolicyQuery
from .states import APPROVED, PENDING_APPROVAL
from .webhooks import enqueue_state_event

__all__ = ["SubmitMetadata", "UploadedDocument", "submit_sign_request"]

log = structlog.get_logger(__name__)

SUPPORTED_FORMATS = {"pades": {"B-B", "B-T", "B-LT", "B-LTA"}, "cades": {"B-B", "B-T", "B-LT", "B-LTA"},
                     RAW_FORMAT: {RAW_LEVEL}}
# CAdES packaging: "detached" writes a .p7s without the file, "attached" a .p7m that embeds it.
CADES_PACKAGINGS = ("detached", "attached")
MAX_TTL_SECONDS = 30 * 86400


@dataclass(frozen=True)
class Placement:
    page: int | None  # None: the last page
    box: tuple[float, float, float, float] | None  # None: the bottom-right corner of that page
    visible: bool = True
    # Alternatives to box: under an anchor text, or for a seal over a signed field (see stamp_plan).
    anchor: AnchorPlacement | None = None
    over_field: str | None = None
    # The signature appearance also draws the position title and the full name (see signing.appearance).
    signature_text: bool = False


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
    options: SignatureOptions = SignatureOptions()
    # "signature", "seal" or "text"; None takes the credential's default.
    appearance: str | None = None
    # PAdES only: a certification signature with DocMDP P=2 instead of an approval signature.
    certify: bool = False
    # Usernames of the officials who approve, in order, before the key's approver (see core.chains).
    approvers: tuple[str, ...] = ()

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
        requested_level = text("level", required=False, max_length=16)
        level = (requested_level or "B-T").upper()
        if signature_format == RAW_FORMAT:
            # A bare signature value has no AdES level, so a requested one is rejected rather than ignored.
            if requested_level is not None:
                raise LevelNotApplicable(format=signature_format, level=requested_level)
            level = RAW_LEVEL
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

        options = parse_signature_options(data, signature_format, level, cades_packaging)

        certify = data.get("certify", False)
        if not isinstance(certify, bool):
            raise InvalidInput("field_invalid", field="certify", reason="must be true or false")
        if certify and signature_format != "pades":
            raise InvalidInput("field_invalid", field="certify", reason='only applies to format "pades"')

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
            options=options,
            appearance=parse_appearance(data.get("appearance")),
            certify=certify,
            approvers=parse_approvers(data.get("approvers")),
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
        content.update(self.options.stored_fields())
        # Added only when set, so that requests stored before these fields keep their fingerprints.
        if self.appearance is not None:
            content["appearance"] = self.appearance
        if self.placement.anchor is not None:
            content["anchor"] = dataclasses.asdict(self.placement.anchor)
        if self.placement.over_field is not None:
            content["over_field"] = self.placement.over_field
        if self.certify:
            content["certify"] = True
        if self.approvers:
            content["approvers"] = list(self.approvers)
        return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# Unicode's explicit embeddings, overrides and isolates (UAX #9), which reorder the text shown around them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _clean_text(name: str, value: str, max_length: int) -> str:
    """Return ``value`` stripped and in NFC, or raise if it is too long or contains control characters.

    NFC matters because the same Vietnamese word can arrive composed or
    decomposed, and dossier codes and names are compared and searched as stored.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Header bytes that are not UTF-8 reach here as lone surrogates.
        raise InvalidInput("field_invalid", field=name, reason="is not UTF-8 text") from None
    value = unicodedata.normalize("NFC", value.strip())
    if len(value) > max_length:
        raise InvalidInput("field_invalid", field=name, reason=f"longer than {max_length} characters")
    if any(unicodedata.category(character) == "Cc" for character in value):
        raise InvalidInput("field_invalid", field=name, reason="contains control characters")
    if any(character in _BIDI_CONTROLS for character in value):
        # An override shows "RTL" as "LTR" in the official's inbox, so a title could disguise what is signed.
        raise InvalidInput("field_invalid", field=name, reason="contains bidirectional control characters")
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
    anchor, over_field = parse_stamp_position(value)
    signature_text = value.get("signature_text", False)
    if not isinstance(signature_text, bool):
        raise InvalidInput("field_invalid", field="placement.signature_text", reason="must be true or false")
    rect = value.get("rect")
    if rect is None:
        return Placement(page=page, box=None, anchor=anchor, over_field=over_field, signature_text=signature_text)
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
    return Placement(page=page, box=(x1, y1, x2, y2), signature_text=signature_text)


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
    if credential is None or credential.kind == "tsa":
        raise SignerUnknown(signer=signer)
    return credential


def _placement_json(placement: Placement, checked: CheckedPdf, options: SignatureOptions,
                    stamp_fields: dict[str, Any], certify: bool = False) -> str:
    # "certify" is stored only when set, as the PAdES signer's switch to a certification signature.
    signature_fields = {**options.stored_fields(), **({"certify": True} if certify else {})}
    if not placement.visible:
        return json.dumps({"visible": False, **signature_fields})
    box = placement.box if placement.box is not None else checked.default_stamp_box
    if checked.stamp_box is not None:
        box = checked.stamp_box
    return json.dumps({"page": checked.stamp_page, "rect": list(box), "visible": True, **stamp_fields,
                       **signature_fields})


def _digest_upload(directory: Path, options: SignatureOptions) -> UploadedDocument:
    """Write a hash-only request's digest to a temporary file, to be stored like an uploaded document."""
    assert options.digest is not None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{secrets.token_hex(12)}.digest"
    path.write_bytes(options.digest)
    return UploadedDocument(path=path, name=DIGEST_FILE_NAME, sha256=options.binding_sha256(), size=len(options.digest))


async def submit_sign_request(
    ctx: CoreContext, application: Application, meta: SubmitMetadata, document: UploadedDocument | None
) -> tuple[SignRequest, bool]:
    """Store a new sign request, or return the earlier one for a retried idempotency key.

    Exactly one of ``document`` and the metadata's digest must be present.
    Returns the request and whether it was created by this call.
    """
    if document is not None and meta.options.hash_only:
        raise DigestWithDocument()
    if document is not None:
        return await _submit(ctx, application, meta, document)
    if not meta.options.hash_only:
        raise InvalidInput("document_missing")

    digest_file = _digest_upload(ctx.settings.documents_dir / "incoming", meta.options)
    try:
        return await _submit(ctx, application, meta, digest_file)
    finally:
        # Moved into place on success.
        digest_file.path.unlink(missing_ok=True)


async def _submit(
    ctx: CoreContext, application: Application, meta: SubmitMetadata, document: UploadedDocument
) -> tuple[SignRequest, bool]:
    now = ctx.clock()
    fingerprint = meta.fingerprint(document.sha256)

    existing = await _existing_request(ctx, application.id, meta.idempotency_key, fingerprint)
    if existing is not None:
        return existing, False

    credential = await _resolve_signer(ctx, meta.signer)
    query = PolicyQuery(application_id=application.id, credential_id=credential.id,
                        signature_format=meta.signature_format, signature_level=meta.signature_level,
                        document_type=meta.document_type)
    async with ctx.store.transaction() as tx:
        key_use = await evaluate_key_use(tx, ctx, credential, query, now, signer_name=meta.signer)
        decision = key_use.decision
        if key_use.error is not None:
            await append_audit(
                tx, action="policy_denied", actor_type="application", actor_id=application.id,
                dossier_code=meta.dossier_code, document_sha256=document.sha256,
                key_id_hex=credential.key_id_hex if decision.visible else None,
                details={"credential_id": credential.id if decision.visible else meta.signer,
                         "rule": decision.rule_id, "reason": getattr(key_use.error, "code", decision.reason),
                         "policy_version": decision.policy_version, "format": meta.signature_format,
                         "level": meta.signature_level, "document_type": meta.document_type},
                now=now,
            )
    if key_use.error is not None:
        log.info("sign_request.policy_denied", application_id=application.id, credential_id=credential.id,
                 dossier_code=meta.dossier_code, rule=decision.rule_id, code=getattr(key_use.error, "code", None))
        raise key_use.error
    # Only an agency seal may sign without a person's approval; a personal key always needs its official's code.
    approval_required = decision.approval_required or credential.kind != "seal"
    async with ctx.store.read_only() as tx:
        chain = await plan_chain(tx, credential, meta.approvers, approval_required=approval_required,
                                 max_length=ctx.settings.approval_chain_max_length, now=now)
    requested_credential = credential
    if chain.credential_delegation is not None:
        # The request is routed to a deputy who signs with their own key, which the policy must allow too.
        credential = chain.signing_credential
        await _check_deputy_key_use(ctx, application, meta, document, chain, query, now)
    meta.options.check_key_type(credential.key_type)

    # A revoked, expired or untrusted certificate is rejected now, before the official spends a code on it.
    # Revocation data is not required here: an unreachable responder is checked again at signing.
    await ctx.document_signer.check_signer_certificate(credential, revocation_required=False)

    stamp_plan: StampPlan | None = None
    if meta.signature_format in ("cades", RAW_FORMAT):
        # CAdES and raw signatures cover any file type or a digest, so the PDF checks and the stamp do not apply.
        page_count = None
        packaging = {"packaging": meta.cades_packaging} if meta.signature_format == "cades" else {}
        placement_json = json.dumps({**packaging, **meta.options.stored_fields()})
        stored_name = DIGEST_FILE_NAME if meta.options.hash_only else "original.bin"
    else:
        stamp_plan = await plan_stamp(ctx, credential, meta.placement, meta.appearance, document.path,
                                      meta.pdf_password)
        page_count = stamp_plan.checked.page_count
        # Rejected here rather than after the official's approval; sign_pdf checks both again.
        if meta.certify and stamp_plan.checked.has_signatures:
            raise PdfCertificationNotFirst()
        if meta.placement.visible and stamp_plan.checked.certification_level is not None:
            raise PdfCertifiedNewVisibleField(certification_level=stamp_plan.checked.certification_level)
        placement_json = _placement_json(meta.placement, stamp_plan.checked, meta.options,
                                         stamp_plan.placement_fields(), certify=meta.certify)
        stored_name = "original.pdf"

    request_id = new_id("req")
    request_dir = ctx.settings.documents_dir / request_id
    request_dir.mkdir(parents=True, exist_ok=False)
    stored_path = request_dir / stored_name
    shutil.move(str(document.path), stored_path)
    if stamp_plan is not None:
        stamp_plan.write_image(request_dir)
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
        approver_official_id=chain.first_assignee_id if chain.steps else credential.approver_official_id,
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
        state=PENDING_APPROVAL if approval_required or chain.steps else APPROVED,
        policy_rule=f"{decision.rule_id}@{decision.policy_version}",
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    if chain.credential_delegation is not None:
        values.update(requested_credential_id=requested_credential.id, delegation_id=chain.credential_delegation.id)
    if not approval_required and not chain.steps:
        values.update(decided_by=f"policy:{decision.rule_id}"[:64], decided_at=now, approver_official_id=None)
    try:
        async with ctx.store.transaction() as tx:
            await tx.insert_sign_request(**values)
            if chain.steps:
                await insert_approval_steps(tx, step_rows(request_id, chain))
            common = dict(
                actor_type="application", actor_id=application.id, request_id=request_id,
                dossier_code=meta.dossier_code, document_sha256=document.sha256,
                key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex, now=now,
            )
            await append_audit(tx, action="submitted", details={
                "title": meta.title, "credential_id": requested_credential.id, "format": meta.signature_format,
                "level": meta.signature_level, "document_size": document.size, "idempotency_key": meta.idempotency_key,
                **meta.options.stored_fields(), **({"approvers": list(meta.approvers)} if meta.approvers else {}),
            }, **common)
            await append_audit(tx, action="policy_allowed", details={
                "rule": decision.rule_id, "policy_version": decision.policy_version,
                "approval_required": approval_required, "document_type": meta.document_type,
            }, **common)
            await _audit_chain(tx, chain, requested_credential, bool(meta.approvers), common)
            if not approval_required and not chain.steps:
                # An agency seal the policy lets this application use unattended, for this document type.
                await append_audit(tx, action="approved_by_policy", details={
                    "rule": decision.rule_id, "policy_version": decision.policy_version,
                }, **common)
                approved_request = await tx.sign_request(request_id)
                assert approved_request is not None
                await enqueue_state_event(tx, approved_request, APPROVED, now)
            created = await tx.sign_request(request_id)
    except IntegrityError:
        # A concurrent retry with the same idempotency key won the insert.
        shutil.rmtree(request_dir, ignore_errors=True)
        existing = await _existing_request(ctx, application.id, meta.idempotency_key, fingerprint)
        if existing is None:
            raise
        return existing, False

    assert created is not None
    SIGN_REQUEST_EVENTS.labels(state=created.state).inc()
    log.info("sign_request.submitted", request_id=request_id, dossier_code=meta.dossier_code,
             application_id=application.id, credential_id=credential.id)
    return created, True


async def _check_deputy_key_use(ctx: CoreContext, application: Application, meta: SubmitMetadata,
                                document: UploadedDocument, chain: ChainPlan, query: PolicyQuery,
                                now: datetime) -> None:
    """Evaluate the policy for the deputy's credential as for the requested one, and record a denial."""
    deputy_credential = chain.signing_credential
    delegation = chain.credential_delegation
    assert delegation is not None
    deputy_query = dataclasses.replace(query, credential_id=deputy_credential.id)
    async with ctx.store.transaction() as tx:
        key_use = await evaluate_key_use(tx, ctx, deputy_credential, deputy_query, now,
                                         signer_name=deputy_credential.id)
        error: Exception | None = key_use.error
        if isinstance(error, SignerUnknown):
            # The application asked for a key it may use, so "signer unknown" would name a credential it never
            # requested. The refusal names the delegation, and only the audit record names the hidden key.
            last = chain.steps[-1]
            error = DeputyCredentialNotAllowed(delegator=last.official.username, deputy=last.assignee.username,
                                               delegation_id=delegation.id)
        if error is not None:
            await append_audit(
                tx, action="policy_denied", actor_type="application", actor_id=application.id,
                dossier_code=meta.dossier_code, document_sha256=document.sha256,
                key_id_hex=deputy_credential.key_id_hex if key_use.decision.visible else None,
                details={"credential_id": deputy_credential.id, "requested_credential_id": query.credential_id,
                         "delegation_id": delegation.id, "rule": key_use.decision.rule_id,
                         "reason": getattr(error, "code", key_use.decision.reason),
                         "policy_version": key_use.decision.policy_version},
                now=now,
            )
    if error is not None:
        log.info("sign_request.deputy_policy_denied", application_id=application.id,
                 credential_id=deputy_credential.id, delegation_id=delegation.id, code=getattr(error, "code", None))
        raise error


async def _audit_chain(tx: Transaction, chain: ChainPlan, requested_credential: Credential, approvers_named: bool,
                       common: dict[str, Any]) -> None:
    """Record the chain of a request with named approvers or a delegation, and each delegation applied.

    A request that only its key's official approves gets no record here, so its trail keeps the usual records.
    """
    delegated = [(position, step) for position, step in enumerate(chain.steps, start=1) if step.delegation]
    if not approvers_named and not delegated:
        return
    await append_audit(tx, action="approval_chain_assigned", details={"steps": [
        {"position": position, "official_id": step.official.id, "assignee_official_id": step.assignee.id,
         "delegation_id": step.delegation.id if step.delegation else None}
        for position, step in enumerate(chain.steps, start=1)
    ]}, **common)
    for position, step in delegated:
        assert step.delegation is not None
        replaced = chain.credential_delegation is not None and position == len(chain.steps)
        await append_audit(tx, action="delegation_applied", details={
            "delegation_id": step.delegation.id, "position": position, "step_count": len(chain.steps),
            "delegator_official_id": step.official.id, "deputy_official_id": step.assignee.id,
            "requested_credential_id": requested_credential.id if replaced else None,
            "credential_id": chain.signing_credential.id if replaced else None,
        }, **common)


async def _existing_request(ctx: CoreContext, application_id: str, key: str, fingerprint: str) -> SignRequest | None:
    async with ctx.store.transaction() as tx:
        existing = await tx.sign_request_by_idempotency_key(application_id, key)
    if existing is None:
        return None
    if existing.fingerprint != fingerprint:
        raise IdempotencyKeyReused(idempotency_key=key, request_id=existing.id)
    return existing
