"""The check that a request's stored document is still the one its ``document_sha256`` names.

An official's approval binds their code to ``document_sha256``, but what gets
signed is the file kept under the data directory. Anyone with write access
there could change that file after submission. So it is hashed again before
an approval is accepted, which keeps the code unspent on a changed document,
and again just before the signer reads it.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import structlog

from signserver.store.records import SignRequest

from .errors import StoredDocumentChanged
from .signature_options import SignatureOptions, options_of

__all__ = ["check_stored_document"]

log = structlog.get_logger(__name__)

_READ_CHUNK_BYTES = 1 << 20


def _stored_binding(request: SignRequest) -> str | None:
    """Return the ``document_sha256`` the stored file gives now, or None when the file is gone."""
    path = Path(request.document_path)
    options = options_of(request)
    try:
        if options.hash_only:
            # A hash-only request stores the application's digest. Its binding is derived as at submission.
            stored = path.read_bytes()
            return SignatureOptions(digest_algorithm=options.digest_algorithm, digest=stored).binding_sha256()
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            while chunk := stream.read(_READ_CHUNK_BYTES):
                digest.update(chunk)
        return digest.hexdigest()
    except FileNotFoundError:
        return None


async def check_stored_document(request: SignRequest) -> None:
    """Raise StoredDocumentChanged unless the stored file still matches the request's ``document_sha256``."""
    loop = asyncio.get_running_loop()
    actual = await loop.run_in_executor(None, _stored_binding, request)
    if actual != request.document_sha256:
        log.error("sign_request.stored_document_changed", request_id=request.id, dossier_code=request.dossier_code,
                  expected_sha256=request.document_sha256, actual_sha256=actual)
        raise StoredDocumentChanged(request_id=request.id, expected=request.document_sha256,
                                    actual=actual or "-")
