"""Signatures made with a SAD: raw hashes (signatures/signHash) and whole documents (signatures/signDoc).

Both follow the same steps: check the credential and its certificate
(validity, chain, revocation), check the request, spend the SAD's
authorizations for exactly these hashes, then sign in the HSM and record the
result. The SAD is spent before the HSM is called, so a failure
while signing costs the client its authorization but never yields a second
signature over one authorization.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import structlog

import hsm
from signserver.errors import SignserverError
from signserver.store.records import Application, Credential

from .audit import append_audit, append_audit_committed
from .context import CoreContext
from .raw_signing import check_digest_length, resolve_signature_scheme, sign_digests
from .sad import RejectionAudit, check_credential_usable, credential_for_application, spend_sad

__all__ = ["SignHashRequest", "sign_hashes", "DocumentFormat", "sign_documents", "DOCUMENT_DIGEST_ALGORITHM"]

log = structlog.get_logger(__name__)

# signDoc binds a document to the SAD by the SHA-256 of its bytes.
DOCUMENT_DIGEST_ALGORITHM = "sha256"



class DocumentFormat(Protocol):
    """A signature format for whole documents, such as PAdES."""

    # The format's level needs OCSP or CRL data for the signer's certificate (B-LT, B-LTA).
    revocation_required: bool

    async def check(self, document: bytes) -> None:
        """Raise the format's InvalidInput error for a document it cannot sign."""
        ...

    async def sign(self, credential: Credential, document: bytes) -> bytes:
        """Sign ``document`` with the credential's key and return the signed document."""
        ...


@dataclass(frozen=True)
class SignHashRequest:
    credential_id: str
    sad: str
    hashes: tuple[bytes, ...]
    sign_algorithm_oid: str
    hash_algorithm_oid: str | None
    sign_algorithm_params: bytes | None


async def sign_hashes(ctx: CoreContext, token: hsm.Hsm, application: Application,
                      request: SignHashRequest) -> list[bytes]:
    """Sign each hash of ``request`` with its credential and return the signatures in the order of the hashes."""
    hashes_hex = [digest.hex() for digest in request.hashes]
    operation = "signatures/signHash"
    audit = RejectionAudit(ctx, application, operation, request.credential_id,
                           details={"hashes": hashes_hex, "sign_algorithm": request.sign_algorithm_oid})
    async with audit:
        credential = await credential_for_application(ctx, application, request.credential_id)
        audit.credential = credential
        scheme = resolve_signature_scheme(credential.key_type, credential.key_size, request.sign_algorithm_oid,
                                          request.hash_algorithm_oid, request.sign_algorithm_params)
        for digest in request.hashes:
            check_digest_length(digest, scheme.digest_algorithm)
        check_credential_usable(credential, ctx.clock())
        # Raw signatures embed no revocation data, so an unreachable OCSP responder is only a warning.
        await ctx.document_signer.check_signer_certificate(credential, revocation_required=False)
        spent = await spend_sad(ctx, application, credential, request.sad, list(request.hashes),
                                scheme.digest_algorithm, operation=operation,
                                details={"sign_algorithm": scheme.sign_algorithm_oid})

    details = {"interface": "csc", "operation": operation, "sad_id": spent.sad_id, "credential_id": credential.id,
               "hashes": hashes_hex, "sign_algorithm": scheme.sign_algorithm_oid,
               "hash_algorithm": scheme.digest_algorithm}
    try:
        signatures = await sign_digests(token, credential, scheme, list(request.hashes))
    except Exception as exc:
        await _record_failure(ctx, application, credential, details, exc)
        raise

    await append_audit_committed(ctx.store, action="csc_hashes_signed", actor_type="application",
                                 actor_id=application.id, key_id_hex=credential.key_id_hex,
                                 cert_serial_hex=credential.cert_serial_hex, details=details, now=ctx.clock())
    log.info("csc.hashes_signed", sad_id=spent.sad_id, application_id=application.id,
             credential_id=credential.id, count=len(signatures))
    return signatures


async def sign_documents(ctx: CoreContext, application: Application, credential_id: str, sad: str,
                         documents: list[bytes], document_format: DocumentFormat) -> list[bytes]:
    """Sign each document once the SAD covers the SHA-256 of each of them.

    Every document is checked before the SAD is spent, so a document the
    format cannot sign costs no authorization.
    """
    digests = [hashlib.new(DOCUMENT_DIGEST_ALGORITHM, document).digest() for document in documents]
    hashes_hex = [digest.hex() for digest in digests]
    operation = "signatures/signDoc"
    audit = RejectionAudit(ctx, application, operation, credential_id, details={"hashes": hashes_hex})
    async with audit:
        credential = await credential_for_application(ctx, application, credential_id)
        audit.credential = credential
        check_credential_usable(credential, ctx.clock())
        await ctx.document_signer.check_signer_certificate(
            credential, revocation_required=document_format.revocation_required)
        for document in documents:
            await document_format.check(document)
        spent = await spend_sad(ctx, application, credential, sad, digests, DOCUMENT_DIGEST_ALGORITHM,
                                operation=operation, details={})

    signed_documents = []
    for document, document_hex in zip(documents, hashes_hex):
        details = {"interface": "csc", "operation": operation, "sad_id": spent.sad_id,
                   "credential_id": credential.id}
        try:
            signed = await document_format.sign(credential, document)
        except Exception as exc:
            await _record_failure(ctx, application, credential, {**details, "hashes": [document_hex]}, exc)
            raise
        signed_sha256 = hashlib.sha256(signed).hexdigest()
        async with ctx.store.transaction() as tx:
            await append_audit(tx, action="csc_document_signed", actor_type="application", actor_id=application.id,
                               document_sha256=document_hex, key_id_hex=credential.key_id_hex,
                               cert_serial_hex=credential.cert_serial_hex,
                               details={**details, "signed_sha256": signed_sha256}, now=ctx.clock())
        log.info("csc.document_signed", sad_id=spent.sad_id, application_id=application.id,
                 credential_id=credential.id, document_sha256=document_hex)
        signed_documents.append(signed)
    return signed_documents


async def _record_failure(ctx: CoreContext, application: Application, credential: Credential,
                          details: dict[str, object], exc: Exception) -> None:
    reason = getattr(exc, "code", None) or type(exc).__name__
    log.error("csc.signing_failed", application_id=application.id, credential_id=credential.id,
              reason=reason, error=str(exc)[:300])
    async with ctx.store.transaction() as tx:
        await append_audit(tx, action="csc_signing_failed", actor_type="application", actor_id=application.id,
                           key_id_hex=credential.key_id_hex, cert_serial_hex=credential.cert_serial_hex,
                           details={**details, "reason": reason}, now=ctx.clock())
    if isinstance(exc, SignserverError):
        exc.audited = True  # type: ignore[attr-defined]
