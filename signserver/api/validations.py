"""Handler of ``POST /api/v1/validations``: the signature validation report of an uploaded PDF or CMS file.

The body is multipart/form-data with these parts:

- ``file``: a PDF, or a CMS signature in DER or PEM;
- ``content`` (optional): the original file of a detached CMS signature;
- ``metadata`` (optional): JSON with ``digest`` and ``digest_algorithm``
  instead of ``content``, and ``password`` of an encrypted PDF (also
  accepted as ``pdf_password``, and as a text part of either name).

The parts are streamed to temporary files that are deleted once the report
is made, and the body-size limit applies to all parts together.

One-stop applications (API key or HTTP Basic) and officials (session token)
may validate. A validation runs on a dedicated thread pool, in an event loop
of its own, so a large or slow document neither blocks the service's event
loop nor takes the default executor's threads, which the HSM calls use.
Python threads share one interpreter lock, so a CPU-heavy validation still
slows other requests down.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from signserver.config import Settings
from signserver.core.auth import SESSION_TOKEN_PREFIX
from signserver.core.context import CoreContext
from signserver.core.validations import record_document_validation
from signserver.errors import InvalidInput
from signserver.signing.report import (
    SUPPORTED_DIGEST_ALGORITHMS,
    normalise_digest_algorithm,
    validate_document_in_thread,
)
from signserver.signing.report_trust import ValidationContextFactory, fetching_context_factory

from .auth import bearer_token, require_application, require_official
from .uploads import (
    MAX_METADATA_BYTES,
    StoredPart,
    check_multipart_request,
    parse_metadata_json,
    stream_part_to_file,
)

__all__ = ["routes", "setup_validations"]

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

MAX_PASSWORD_LENGTH = 1024
# "pdf_password" is the name the sign requests use, and the one the pdf_password_required message gives.
_METADATA_FIELDS = {"digest", "digest_algorithm", "password", "pdf_password"}
_PASSWORD_PARTS = ("password", "pdf_password")
_EXECUTOR_KEY = "validation_executor"
_FACTORY_KEY = "validation_context_factory"


@dataclass
class _ValidationUpload:
    file: StoredPart | None = None
    content: StoredPart | None = None
    metadata: Any = None
    password_part: str | None = None

    def remove(self) -> None:
        for part in (self.file, self.content):
            if part is not None:
                part.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class ValidationOptions:
    digest: bytes | None = None
    digest_algorithm: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, metadata: Any, password_part: str | None) -> "ValidationOptions":
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise InvalidInput("metadata_invalid", reason="must be a JSON object")
        unknown = sorted(set(metadata) - _METADATA_FIELDS)
        if unknown:
            raise InvalidInput("metadata_invalid",
                               reason=f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(_METADATA_FIELDS))}")

        passwords = [metadata[name] for name in _PASSWORD_PARTS if metadata.get(name) is not None]
        if password_part is not None:
            passwords.append(password_part)
        for value in passwords:
            if not isinstance(value, str) or len(value) > MAX_PASSWORD_LENGTH:
                raise InvalidInput("field_invalid", field="password",
                                   reason=f"must be a string of at most {MAX_PASSWORD_LENGTH} characters")
        if len(set(passwords)) > 1:
            raise InvalidInput("field_invalid", field="password", reason="two different passwords were sent")
        password = passwords[0] if passwords else None

        digest_hex = metadata.get("digest")
        algorithm = metadata.get("digest_algorithm")
        if digest_hex is None:
            if algorithm is not None:
                raise InvalidInput("field_missing", field="digest")
            return cls(password=password)
        if not isinstance(digest_hex, str):
            raise InvalidInput("field_invalid", field="digest", reason="must be a hexadecimal string")
        try:
            digest = bytes.fromhex(digest_hex.strip())
        except ValueError:
            raise InvalidInput("field_invalid", field="digest", reason="must be a hexadecimal string") from None
        if algorithm is None:
            algorithm = "sha256"
        if not isinstance(algorithm, str):
            raise InvalidInput("field_invalid", field="digest_algorithm", reason="must be a string")
        algorithm = normalise_digest_algorithm(algorithm)
        if algorithm not in SUPPORTED_DIGEST_ALGORITHMS:
            raise InvalidInput("field_invalid", field="digest_algorithm",
                               reason=f"must be one of {', '.join(SUPPORTED_DIGEST_ALGORITHMS)}")
        return cls(digest=digest, digest_algorithm=algorithm, password=password)


def setup_validations(app: web.Application, settings: Settings,
                      context_factory: ValidationContextFactory | None = None) -> None:
    """Add the route, its thread pool and the source of fetched revocation data to ``app``.

    Without ``context_factory``, each validation context fetches OCSP
    responses and CRLs with its own HTTP session (see
    ``report_trust.fetching_context_factory``), because a validation runs in
    an event loop of its own thread.
    """
    app[_FACTORY_KEY] = context_factory or fetching_context_factory(
        timeout_seconds=settings.revocation_timeout_seconds
    )
    app.add_routes(routes)
    app.cleanup_ctx.append(_validation_executor)


async def _validation_executor(app: web.Application) -> AsyncIterator[None]:
    settings: Settings = app["settings"]
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=settings.validation_workers,
                                                     thread_name_prefix="validation")
    app[_EXECUTOR_KEY] = executor
    yield
    # Running validations end within their time limit; new ones no longer arrive.
    executor.shutdown(wait=True, cancel_futures=True)


@routes.post("/api/v1/validations")
async def create_validation(request: web.Request) -> web.Response:
    ctx: CoreContext = request.app["core"]
    settings = ctx.settings
    actor_type, actor_id = await _authenticated_caller(request)

    upload = await _read_upload(request, settings.documents_dir / "validations", settings.max_body_bytes)
    try:
        if upload.file is None:
            raise InvalidInput("validation_file_missing")
        options = ValidationOptions.parse(upload.metadata, upload.password_part)
        report = await validate_document_in_thread(
            request.app[_EXECUTOR_KEY],
            upload.file.path,
            trust_roots=tuple(request.app["trust_roots"]),
            context_factory=request.app[_FACTORY_KEY],
            timeout_seconds=settings.validation_timeout_seconds,
            content_path=upload.content.path if upload.content is not None else None,
            digest=options.digest,
            digest_algorithm=options.digest_algorithm,
            password=options.password,
        )
    finally:
        upload.remove()

    await record_document_validation(
        ctx, actor_type=actor_type, actor_id=actor_id, document_sha256=report.document.sha256,
        document_kind=report.document.kind, indication=report.indication, counts=report.counts,
        content_sha256=upload.content.sha256 if upload.content is not None else None,
    )
    log.info("document.validated", actor_type=actor_type, actor_id=actor_id, document_sha256=report.document.sha256,
             kind=report.document.kind, indication=report.indication, signatures=report.counts["total"])
    return web.json_response(report.to_json(), dumps=_dumps)


async def _authenticated_caller(request: web.Request) -> tuple[str, str]:
    """Return (actor type, id) of an official with a session token, or of an application."""
    token = bearer_token(request)
    if token is not None and token.startswith(SESSION_TOKEN_PREFIX):
        official = await require_official(request)
        return "official", official.id
    application = await require_application(request)
    return "application", application.id


async def _read_upload(request: web.Request, directory: Path, limit: int) -> _ValidationUpload:
    """Stream the multipart parts to ``directory``; ``limit`` bounds the file and the content together."""
    check_multipart_request(request, limit,
                            expected="multipart/form-data (file, and optionally content and metadata)")

    upload = _ValidationUpload()
    remaining = limit
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name in ("file", "content"):
                if getattr(upload, part.name) is not None:
                    raise InvalidInput("invalid_request", reason=f"more than one {part.name} part")
                stored = await stream_part_to_file(part, directory, max_bytes=remaining, limit=limit)
                remaining -= stored.size
                setattr(upload, part.name, stored)
            elif part.name == "metadata":
                upload.metadata = parse_metadata_json(await _read_small_part(part, "metadata"))
            elif part.name in _PASSWORD_PARTS:
                upload.password_part = (await _read_small_part(part, part.name)).decode("utf-8", errors="strict")
            else:
                await part.release()
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        upload.remove()
        if isinstance(exc, UnicodeDecodeError):
            raise InvalidInput("field_invalid", field="password", reason="not valid UTF-8") from None
        raise InvalidInput("invalid_request", reason=f"malformed multipart body ({exc})") from None
    except BaseException:
        upload.remove()
        raise
    return upload


async def _read_small_part(part: BodyPartReader, name: str) -> bytes:
    raw = bytearray()
    while chunk := await part.read_chunk(8192):
        raw.extend(chunk)
        if len(raw) > MAX_METADATA_BYTES:
            raise InvalidInput("metadata_invalid", reason=f"the {name} part is larger than {MAX_METADATA_BYTES} bytes")
    return bytes(raw)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)

