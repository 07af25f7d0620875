"""JSON shapes of the native API's resources."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from signserver.core.change_details import ChangeDetails
from signserver.core.queries import ChainStep
from signserver.core.signature_options import options_of
from signserver.store.records import AdminChange, AuditRecord, Credential, HsmKey, SignRequest

__all__ = [
    "sign_request_json",
    "approval_step_json",
    "credential_json",
    "hsm_key_json",
    "change_json",
    "change_details_json",
    "officer_credential_json",
    "audit_record_json",
    "iso",
    "document_file_response",
    "submitted_document_response",
]


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def sign_request_json(request: SignRequest, credential: Credential | None = None,
                      chain: list[ChainStep] | None = None) -> dict[str, Any]:
    """Return the request's JSON view; with ``credential``, the signer's certificate (base64 DER) too.

    With ``chain``, ``approval_chain`` lists the approval steps in order.

    A hash-only request has ``document`` null and shows the application's
    ``digest`` instead.
    """
    options = options_of(request)
    body: dict[str, Any] = {
        "id": request.id,
        "state": request.state,
        "state_reason": request.state_reason,
        "dossier_code": request.dossier_code,
        "title": request.title,
        "document_type": request.document_type,
        "application_id": request.application_id,
        "signer": {"credential_id": request.credential_id, "approver_official_id": request.approver_official_id,
                   "requested_credential_id": request.requested_credential_id},
        "delegation_id": request.delegation_id,
        "format": request.signature_format,
        "level": request.signature_level,
        "reason": request.reason,
        "location": request.location,
        "placement": json.loads(request.placement_json) if request.placement_json else None,
        "document": {
            "name": request.document_name,
            "sha256": request.document_sha256,
            "size": request.document_size,
            "page_count": request.page_count,
        },
        "created_at": iso(request.created_at),
        "expires_at": iso(request.expires_at),
        "decided_at": iso(request.decided_at),
        "approval_id": request.approval_id,
        "rejection_reason": request.rejection_reason,
        "links": {
            "self": f"/api/v1/sign-requests/{request.id}",
            "document": f"/api/v1/sign-requests/{request.id}/document",
        },
    }
    body["digest_algorithm"] = options.digest_algorithm
    if options.digest is not None:
        body["document"] = None
        body["digest"] = {"algorithm": options.digest_algorithm, "value": options.digest.hex()}
    if options.signature_algorithm is not None:
        body["signature_algorithm"] = options.signature_algorithm
    if credential is not None:
        body["signer"]["certificate"] = base64.b64encode(credential.certificate_der).decode("ascii")
    if chain is not None:
        body["approval_chain"] = [approval_step_json(step) for step in chain]
    if request.signed_sha256:
        # The signers reach the requested level or fail the request, so a signed request's level is the one reached.
        body["signed_document"] = {"sha256": request.signed_sha256, "signed_at": iso(request.signed_at),
                                   "level": request.signature_level}
        body["links"]["signed_document"] = f"/api/v1/sign-requests/{request.id}/signed-document"
    return body


def approval_step_json(step: ChainStep) -> dict[str, Any]:
    return {
        "position": step.position,
        "official": {"id": step.official_id, "username": step.official_username, "full_name": step.official_name},
        "assignee": {"id": step.assignee_official_id, "username": step.assignee_username,
                     "full_name": step.assignee_name},
        "delegation_id": step.delegation_id,
        "state": step.state,
        "decided_at": iso(step.decided_at),
    }


def credential_json(credential: Credential) -> dict[str, Any]:
    return {
        "id": credential.id,
        "kind": credential.kind,
        "display_name": credential.display_name,
        "signer_title": credential.signer_title,
        "agency": credential.agency,
        "key_type": credential.key_type,
        "key_size": credential.key_size,
        "certificate_serial": credential.cert_serial_hex,
        "approver_official_id": credential.approver_official_id,
        "status": credential.status,
    }


def hsm_key_json(key: HsmKey) -> dict[str, Any]:
    """Return an inventory entry as security officers see it, without public key and certificate bytes."""
    return {
        "id": key.id, "key_id": key.key_id_hex, "label": key.key_label, "key_type": key.key_type,
        "key_size": key.key_size, "state": key.state, "credential_id": key.credential_id,
        "certificate_serial": key.cert_serial_hex, "created_at": iso(key.created_at), "created_by": key.created_by,
        "updated_at": iso(key.updated_at),
    }


def officer_credential_json(credential: Credential) -> dict[str, Any]:
    """Return a credential as security officers see it: its key, certificate serial, owner and approver."""
    return {
        "id": credential.id, "kind": credential.kind, "status": credential.status, "key_id": credential.key_id_hex,
        "label": credential.key_label, "key_type": credential.key_type, "key_size": credential.key_size,
        "certificate_serial": credential.cert_serial_hex, "owner_official_id": credential.owner_official_id,
        "approver_official_id": credential.approver_official_id, "display_name": credential.display_name,
        "agency": credential.agency,
    }


def change_json(change: AdminChange) -> dict[str, Any]:
    """Return a four-eyes change without its payload (a policy's text, a key id)."""
    return {
        "id": change.id, "kind": change.kind, "summary": change.summary, "state": change.state,
        "requested_by": change.requested_by, "requested_at": iso(change.requested_at),
        "expires_at": iso(change.expires_at), "decided_by": change.decided_by, "decided_at": iso(change.decided_at),
        "decision_note": change.decision_note,
    }


def change_details_json(details: ChangeDetails) -> dict[str, Any]:
    """Return a four-eyes change with its officers' names and, by its kind, the ``policy`` or the ``key`` it changes."""
    return {
        **change_json(details.change), "requested_by_name": details.requested_by_name,
        "decided_by_name": details.decided_by_name,
        "policy": details.policy.to_json() if details.policy else None,
        "key": details.key.to_json() if details.key else None,
    }


def audit_record_json(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "recorded_at": record.recorded_at.isoformat(),
        "actor_type": record.actor_type,
        "actor_id": record.actor_id,
        "action": record.action,
        "request_id": record.request_id,
        "dossier_code": record.dossier_code,
        "document_sha256": record.document_sha256,
        "key_id": record.key_id_hex,
        "certificate_serial": record.cert_serial_hex,
        "details": json.loads(record.details_json),
        "hash": record.hash,
        "prev_hash": record.prev_hash,
    }


# Content types by file suffix (RFC 8551 section 3.2.1 for the CMS ones).
_MEDIA_TYPES = {
    ".pdf": "application/pdf",
    ".p7s": "application/pkcs7-signature",
    ".p7m": "application/pkcs7-mime",
}


def document_file_response(path: str | Path, sha256: str | None, attachment_name: str | None = None) -> web.FileResponse:
    """Stream a stored document with its SHA-256 in the Digest header (RFC 3230).

    The content type follows the suffix of ``path``, with application/octet-stream
    for any other file, such as the original of a CAdES request.
    The attachment name, if given, gets the same suffix as ``path``.
    """
    suffix = Path(path).suffix.lower()
    media_type = _MEDIA_TYPES.get(suffix, "application/octet-stream")
    headers = {"Content-Type": media_type, "Digest": f"sha-256={sha256}"}
    if attachment_name is not None:
        headers["Content-Disposition"] = f'attachment; filename="{attachment_name}{suffix}"'
    return web.FileResponse(path, headers=headers)


def submitted_document_response(request: SignRequest) -> web.FileResponse:
    """Stream the file the request stores as submitted: the document, or a hash-only request's digest bytes.

    ``document_sha256`` of a hash-only request is its approval binding, not
    the SHA-256 of the stored digest bytes, so the Digest header is computed here.
    """
    digest = options_of(request).digest
    sha256 = request.document_sha256 if digest is None else hashlib.sha256(digest).hexdigest()
    return document_file_response(request.document_path, sha256)
