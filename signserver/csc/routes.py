"""Handlers of the CSC API (Cloud Signature Consortium) under /csc/v1/ and /csc/v2/.

Version 1 follows CSC API v1.0.4.0 and version 2 follows v2.0.0.2. Every
method is a POST with a JSON body, and the v1 field names are accepted on
v2 too. The handlers parse, call the core and render: the rules (tokens, SAD,
OTP, policy, signing) live in ``signserver.core``, and the mapping of errors
to the CSC error shape lives in ``signserver.csc.errors``.
"""

from __future__ import annotations

import base64
import re
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from asn1crypto import algos

from signserver.core import queries
from signserver.core.auth import Authenticator
from signserver.core.context import CoreContext
from signserver.core.csc_signing import SignHashRequest, sign_documents, sign_hashes
from signserver.core.csc_tokens import IssuedTokens, issue_tokens, refresh_access_token, revoke_token
from signserver.core.errors import AuthenticationFailed
from signserver.core.raw_signing import (
    RSA_ENCRYPTION_OID,
    DigestLengthInvalid,
    digest_algorithm_for_oid,
    signature_algorithm_oids,
)
from signserver.core.sad import (
    AuthorizationRequest,
    authorize_credential,
    check_credential_usable,
    credential_for_application,
    extend_sad,
    record_rejection,
)
from signserver.errors import InvalidInput, SignserverError
from signserver.i18n import message, negotiate_language
from signserver.pades_backend import DocumentSigner
from signserver.signing.raw import ECDSA_WITH_DIGEST_OIDS, RSA_WITH_DIGEST_OIDS
from signserver.signing.tsa import ACCEPTED_HASH_ALGORITHMS
from signserver.store.records import Application, Credential

from .auth import BasicAuthMalformed, basic_credentials, bearer_application
from .credentials import CERTIFICATE_CHOICES, OTP_AUTH_OBJECT_ID, credential_info_json
from .documents import PadesDocuments
from .errors import csc_error_response, json_dumps
from .fields import V1, V2, CscBody

# JSON bodies of every method but signDoc (which carries whole documents).
MAX_JSON_BYTES = 1024 * 1024

__all__ = ["routes"]

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

SPECIFICATION_VERSIONS = {V1: "1.0.4.0", V2: "2.0.0.2"}
SERVICE_NAME = "signserver"
# NOTE: the logo is a 1x1 transparent PNG placeholder, because the info method requires a logo URI.
LOGO_URI = ("data:image/png;base64,"
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")
# signDoc signs with the PAdES signer of the native API, with the hash that signAlgo names. In CSC API
# v2.0.0.2 only documentDigests entries carry hashAlgorithmOID, not documents entries, so rsaEncryption
# means SHA-256 here.
PADES_SIGN_ALGORITHMS = {
    "RSA": {**RSA_WITH_DIGEST_OIDS, RSA_ENCRYPTION_OID: "sha256"},
    "EC": dict(ECDSA_WITH_DIGEST_OIDS),
}
# CSC API v2 conformance levels of signDoc, in lower case, and the PAdES levels they request.
PADES_CONFORMANCE_LEVELS = {"ades-b-b": "B-B", "ades-b-t": "B-T", "ades-b-lt": "B-LT", "ades-b-lta": "B-LTA"}
PADES_CONFORMANCE_LEVEL_NAMES = ("Ades-B-B", "Ades-B-T", "Ades-B-LT", "Ades-B-LTA")
MAX_ID_LENGTH = 64


@dataclass(frozen=True)
class CscCall:
    """One CSC request after authentication and body parsing."""

    request: web.Request
    version: str
    body: CscBody
    application: Application | None
    language: str

    @property
    def ctx(self) -> CoreContext:
        return self.request.app["core"]  # type: ignore[no-any-return]

    @property
    def caller(self) -> Application:
        assert self.application is not None
        return self.application


Handler = Callable[[CscCall], Awaitable[web.StreamResponse]]

# Method name → the versions that implement it, in registration order, for the info method.
_METHOD_VERSIONS: dict[str, tuple[str, ...]] = {}


def csc_method(name: str, *, versions: tuple[str, ...] = (V1, V2), authenticated: bool = True,
               audit_rejections: bool = False) -> Callable[[Handler], Handler]:
    """Register ``handler`` as CSC method ``name`` on ``versions``, with authentication and error rendering.

    With ``audit_rejections``, a rejection the core has not recorded yet (for
    example a malformed hash) gets its audit record here, once the caller is
    authenticated. Rejections of unauthenticated calls are only logged, so
    that anonymous traffic cannot grow the audit trail.
    """

    def register(handler: Handler) -> Handler:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            version = request.match_info["version"]
            language = negotiate_language(request.headers.get("Accept-Language"))
            application: Application | None = None
            body: CscBody | None = None
            try:
                if version not in versions:
                    raise InvalidInput("csc_method_not_implemented", method=name, version=version)
                if authenticated:
                    application = await bearer_application(request)
                # Only signDoc carries documents; other methods get a small body limit.
                limit = request.app["settings"].max_body_bytes if name == "signatures/signDoc" else MAX_JSON_BYTES
                body = await CscBody.read(request, version, limit)
                language = body.language() or language
                return await handler(CscCall(request, version, body, application, language))
            except SignserverError as error:
                if audit_rejections and application is not None and not getattr(error, "audited", False):
                    credential_id = body.data.get("credentialID") if body is not None else None
                    await record_rejection(request.app["core"], application, name, error,
                                           credential_id=credential_id if isinstance(credential_id, str) else None)
                log.info("csc.request_rejected", method=name, version=version, code=error.code,
                         application_id=application.id if application else None)
                return csc_error_response(error, version, language, request.get("request_id"))
            except Exception:  # noqa: BLE001 - the CSC error shape even for a fault, without internals
                log.exception("csc.unhandled_error", method=name, version=version)
                return csc_error_response(SignserverError(), version, language, request.get("request_id"))

        routes.post(f"/csc/{{version:v[12]}}/{name}")(endpoint)
        _METHOD_VERSIONS[name] = versions
        return handler

    return register


def _json(data: dict[str, Any], language: str) -> web.Response:
    return web.json_response(data, headers={"Content-Language": language}, dumps=json_dumps)


def _credential_id(body: CscBody) -> str:
    return body.text("credentialID", max_length=MAX_ID_LENGTH) or ""


def _check_synchronous(body: CscBody) -> None:
    if body.text("operationMode", required=False) not in (None, "S"):
        raise InvalidInput("csc_parameter_invalid", field="operationMode",
                           reason='only synchronous signing ("S") is supported')


@csc_method("info", authenticated=False)
async def info(call: CscCall) -> web.Response:
    methods = [name for name, versions in _METHOD_VERSIONS.items() if call.version in versions and name != "info"]
    result: dict[str, Any] = {
        "specs": SPECIFICATION_VERSIONS[call.version],
        "name": SERVICE_NAME,
        "logo": LOGO_URI,
        "region": "VN",
        "lang": call.language,
        "description": message("csc_service_description", call.language),
        "authType": ["basic"],
        "methods": methods,
    }
    if call.version == V2:
        result["signAlgorithms"] = {"algos": signature_algorithm_oids("RSA") + signature_algorithm_oids("EC")}
        result["signature_formats"] = {"formats": ["P"], "envelope_properties": [["Revision"]]}
        result["conformance_levels"] = list(PADES_CONFORMANCE_LEVEL_NAMES)
    return _json(result, call.language)


def _token_json(tokens: IssuedTokens) -> dict[str, Any]:
    result: dict[str, Any] = {"access_token": tokens.access_token, "token_type": "Bearer",
                              "expires_in": tokens.expires_in}
    if tokens.refresh_token is not None:
        result["refresh_token"] = tokens.refresh_token
    return result


@csc_method("auth/login", authenticated=False)
async def login(call: CscCall) -> web.Response:
    remember_me = call.body.flag("rememberMe")
    refresh_token = call.body.text("refresh_token", required=False)
    basic = basic_credentials(call.request)
    if basic is not None:
        authenticator: Authenticator = call.request.app["authenticator"]
        try:
            application = await authenticator.application_by_password(*basic)
        except AuthenticationFailed:
            log.info("csc.login_failed", username=basic[0][:128])
            raise AuthenticationFailed("login_failed") from None
        tokens = await issue_tokens(call.ctx, application, remember_me=remember_me)
    elif refresh_token is not None:
        _application, tokens = await refresh_access_token(call.ctx, refresh_token)
    else:
        raise BasicAuthMalformed()
    return _json(_token_json(tokens), call.language)


@csc_method("auth/revoke")
async def revoke(call: CscCall) -> web.Response:
    token = call.body.text("token") or ""
    hint = call.body.text("token_type_hint", required=False)
    if hint not in (None, "access_token", "refresh_token"):
        raise InvalidInput("csc_parameter_invalid", field="token_type_hint", reason="use access_token or refresh_token")
    await revoke_token(call.ctx, call.caller, token, hint)
    return web.Response(status=204)


def _credential_infos(call: CscCall, credentials: list[Credential]) -> list[dict[str, Any]]:
    certificates = call.body.choice("certificates", CERTIFICATE_CHOICES, "single")
    cert_info = call.body.flag("certInfo")
    call.body.flag("authInfo")  # validated only: the authorization information is always returned
    now = call.ctx.clock()
    return [
        {"credentialID": credential.id,
         **credential_info_json(credential, version=call.version, certificates=certificates, cert_info=cert_info,
                                language=call.language, multisign=call.ctx.settings.max_batch_size, now=now)}
        for credential in credentials
    ]


def _usable(credential: Credential, call: CscCall) -> bool:
    try:
        check_credential_usable(credential, call.ctx.clock())
    except InvalidInput:
        return False
    return True


@csc_method("credentials/list")
async def list_credentials(call: CscCall) -> web.Response:
    if call.body.data.get("userID") is not None:
        raise InvalidInput("csc_user_id_not_null")
    credentials = await queries.credentials_for_application(call.ctx, call.caller)
    only_valid = call.body.flag("onlyValid") if call.version == V2 else False
    if only_valid:
        credentials = [credential for credential in credentials if _usable(credential, call)]

    offset = 0
    page_token = call.body.text("pageToken", required=False, max_length=16)
    if page_token is not None:
        if not (page_token.isascii() and page_token.isdecimal()):
            raise InvalidInput("csc_parameter_invalid", field="pageToken", reason="not a token this service issued")
        offset = int(page_token)
    max_results = call.body.integer("maxResults", required=False)
    if max_results is not None and max_results < 1:
        raise InvalidInput("csc_parameter_invalid", field="maxResults", reason="must be 1 or more")
    end = len(credentials) if max_results is None else offset + max_results
    page = credentials[offset:end]

    result: dict[str, Any] = {"credentialIDs": [credential.id for credential in page]}
    if end < len(credentials):
        result["nextPageToken"] = str(end)
    if call.version == V2 and call.body.flag("credentialInfo"):
        result["credentialInfos"] = _credential_infos(call, page)
    if only_valid:
        result["onlyValid"] = True
    return _json(result, call.language)


@csc_method("credentials/info")
async def credential_info(call: CscCall) -> web.Response:
    credential = await credential_for_application(call.ctx, call.caller, _credential_id(call.body))
    (described,) = _credential_infos(call, [credential])
    del described["credentialID"]
    return _json(described, call.language)


def _otp(body: CscBody) -> str:
    """Return the TOTP code: ``OTP`` (v1, accepted on v2) or the "OTP" object of ``authData`` (v2)."""
    otp = body.text("OTP", required=False, max_length=64)
    if otp is not None:
        return otp
    auth_data = body.objects("authData", required=False) or []
    for item in auth_data:
        if item.get("id") != OTP_AUTH_OBJECT_ID:
            raise InvalidInput("csc_parameter_invalid", field="authData",
                               reason=f'unknown authentication object {str(item.get("id"))[:64]!r}, '
                                      f'the only one is "{OTP_AUTH_OBJECT_ID}"')
        value = item.get("value")
        if isinstance(value, str) and value:
            return value[:64]
    raise InvalidInput("csc_parameter_missing", field=body.name("OTP", "authData"),
                       kind="string" if body.version == V1 else "array")


def _hash_algorithm(body: CscBody) -> str | None:
    oid = body.text("hashAlgo", "hashAlgorithmOID", required=False, max_length=64)
    return digest_algorithm_for_oid(oid) if oid is not None else None


@csc_method("credentials/authorize", audit_rejections=True)
async def authorize(call: CscCall) -> web.Response:
    request = AuthorizationRequest(
        credential_id=_credential_id(call.body),
        num_signatures=call.body.integer("numSignatures") or 0,
        hashes=tuple(call.body.digests(max_count=call.ctx.settings.max_batch_size)),
        hash_algorithm=_hash_algorithm(call.body),
        otp=_otp(call.body),
        description=call.body.text("description", required=False, max_length=500),
    )
    issued = await authorize_credential(call.ctx, call.caller, request)
    return _json({"SAD": issued.sad, "expiresIn": issued.expires_in}, call.language)


@csc_method("credentials/extendTransaction", audit_rejections=True)
async def extend_transaction(call: CscCall) -> web.Response:
    credential_id = _credential_id(call.body)
    sad = call.body.text("SAD") or ""
    hashes = call.body.digests(max_count=call.ctx.settings.max_batch_size) if call.body.present("hash", "hashes") else None
    issued = await extend_sad(call.ctx, call.caller, credential_id, sad, hashes)
    return _json({"SAD": issued.sad, "expiresIn": issued.expires_in}, call.language)


@csc_method("credentials/sendOTP")
async def send_otp(call: CscCall) -> web.Response:
    # CSC v1.0.4.0 section 11.5: an "offline" OTP "does not require the client to invoke the
    # credentials/sendOTP method", and nothing is sent, so this is rejected rather than given a 204 response.
    credential = await credential_for_application(call.ctx, call.caller, _credential_id(call.body))
    raise InvalidInput("csc_otp_offline", credential_id=credential.id)


@csc_method("credentials/getChallenge", versions=(V2,))
async def get_challenge(call: CscCall) -> web.Response:
    credential = await credential_for_application(call.ctx, call.caller, _credential_id(call.body))
    auth_object_id = call.body.text("authObjectID", max_length=MAX_ID_LENGTH) or ""
    if auth_object_id != OTP_AUTH_OBJECT_ID:
        raise InvalidInput("csc_parameter_invalid", field="authObjectID",
                           reason=f'credential {credential.id} has one authentication object, "{OTP_AUTH_OBJECT_ID}"')
    # The "OTP" object is a Password with generator "totp", not a ChallengeResponse: it needs no challenge.
    raise InvalidInput("csc_challenge_not_needed", auth_object_id=auth_object_id)


@csc_method("signatures/signHash", audit_rejections=True)
async def sign_hash(call: CscCall) -> web.Response:
    _check_synchronous(call.body)
    params = call.body.text("signAlgoParams", required=False, max_length=4096)
    request = SignHashRequest(
        credential_id=_credential_id(call.body),
        sad=call.body.text("SAD") or "",
        hashes=tuple(call.body.digests(max_count=call.ctx.settings.max_batch_size)),
        sign_algorithm_oid=call.body.text("signAlgo", max_length=64) or "",
        hash_algorithm_oid=call.body.text("hashAlgo", "hashAlgorithmOID", required=False, max_length=64),
        sign_algorithm_params=call.body.base64_value("signAlgoParams", params) if params is not None else None,
    )
    signatures = await sign_hashes(call.ctx, call.request.app["hsm"], call.caller, request)
    return _json({"signatures": [base64.b64encode(signature).decode("ascii") for signature in signatures]},
                 call.language)


def _nonce(body: CscBody) -> int | None:
    text = body.text("nonce", required=False, max_length=64)
    if text is None:
        return None
    try:
        return int(text, 16)
    except ValueError:
        raise InvalidInput("csc_parameter_invalid", field="nonce", reason="not a hexadecimal number") from None


@csc_method("signatures/timestamp")
async def timestamp(call: CscCall) -> web.Response:
    digest = call.body.base64_value("hash", call.body.text("hash") or "", hash_value=True)
    oid = call.body.text("hashAlgo", "hashAlgorithmOID", max_length=64) or ""
    algorithm = algos.DigestAlgorithmId(oid).native if _is_oid(oid) else oid
    if algorithm not in ACCEPTED_HASH_ALGORITHMS:
        raise InvalidInput("csc_parameter_invalid", field="hashAlgo",
                           reason=f"{oid} is not accepted; use SHA-256, SHA-384, SHA-512 or SHA-3")
    expected = hashlib.new(algorithm).digest_size
    if len(digest) != expected:
        raise DigestLengthInvalid(length=len(digest), algorithm=algorithm, expected=expected)
    token = await call.request.app["tsa"].timestamp_token(digest, algorithm, nonce=_nonce(call.body), cert_req=True)
    return _json({"timestamp": base64.b64encode(token.dump()).decode("ascii")}, call.language)


# Dotted OIDs as X.660 allows them: first arc 0, 1 or 2, second arc below 40 under 0 and 1.
_OID_PATTERN = re.compile(r"(?:[01]\.(?:[0-9]|[1-3][0-9])|2\.(?:0|[1-9][0-9]{0,18}))(?:\.(?:0|[1-9][0-9]{0,18}))*")


def _is_oid(text: str) -> bool:
    return _OID_PATTERN.fullmatch(text) is not None


def _pdf_document(body: CscBody, item: dict[str, Any], credential: Credential) -> tuple[bytes, str, str]:
    """Check one entry of signDoc's ``documents`` against what this service signs, and decode it.

    Returns the document, the hash algorithm that its signAlgo names and the PAdES level it requests.
    """
    document = CscBody(item, body.version)
    signature_format = document.text("signature_format", max_length=8)
    if signature_format != "P":
        raise InvalidInput("csc_parameter_invalid", field="signature_format",
                           reason=f'"{signature_format}" is not supported, only "P" (PAdES)')
    # The CSC default conformance level is Ades-B-B.
    conformance_level = document.text("conformance_level", required=False, max_length=16) or "Ades-B-B"
    level = PADES_CONFORMANCE_LEVELS.get(conformance_level.lower())
    if level is None:
        raise InvalidInput("csc_parameter_invalid", field="conformance_level",
                           reason=f'"{conformance_level}" is not supported, use one of '
                                  f'{", ".join(PADES_CONFORMANCE_LEVEL_NAMES)}')
    sign_algorithm = document.text("signAlgo", max_length=64)
    allowed = PADES_SIGN_ALGORITHMS.get(credential.key_type, {})
    if sign_algorithm not in allowed:
        raise InvalidInput("csc_parameter_invalid", field="signAlgo",
                           reason=f"{sign_algorithm} is not supported for this key, use {', '.join(allowed)}")
    if document.text("signed_envelope_property", required=False, max_length=32) not in (None, "Revision"):
        raise InvalidInput("csc_parameter_invalid", field="signed_envelope_property",
                           reason='only "Revision" (an approval signature) is supported')
    if item.get("signed_props"):
        raise InvalidInput("csc_parameter_invalid", field="signed_props", reason="signed properties are not supported")
    encoded = item.get("document")
    if not isinstance(encoded, str) or not encoded:
        raise InvalidInput("csc_parameter_missing", field="document", kind="string")
    return document.base64_value("document", encoded), allowed[sign_algorithm], level


@csc_method("signatures/signDoc", versions=(V2,), audit_rejections=True)
async def sign_doc(call: CscCall) -> web.Response:
    _check_synchronous(call.body)
    if call.body.flag("returnValidationInfo"):
        raise InvalidInput("csc_parameter_invalid", field="returnValidationInfo", reason="validationInfo is not supported")
    if call.body.data.get("credentialID") is None and call.body.data.get("signatureQualifier") is not None:
        raise InvalidInput("csc_parameter_invalid", field="signatureQualifier", reason="not supported, send credentialID")
    credential_id = _credential_id(call.body)
    sad = call.body.text("SAD") or ""
    if call.body.data.get("documentDigests") is not None:
        raise InvalidInput("csc_parameter_invalid", field="documentDigests",
                           reason="not supported, send the whole PDF in documents")
    items = call.body.objects("documents") or []
    if not items:
        raise InvalidInput("csc_parameter_invalid", field="documents", reason="empty")

    credential = await credential_for_application(call.ctx, call.caller, credential_id)
    parsed = [_pdf_document(call.body, item, credential) for item in items]
    digest_algorithms = {digest_algorithm for _document, digest_algorithm, _level in parsed}
    if len(digest_algorithms) > 1:
        raise InvalidInput("csc_parameter_invalid", field="signAlgo",
                           reason="the documents of one call must name the same hash algorithm")
    levels = {level for _document, _digest_algorithm, level in parsed}
    if len(levels) > 1:
        raise InvalidInput("csc_parameter_invalid", field="conformance_level",
                           reason="the documents of one call must request the same conformance level")
    documents = [document for document, _digest_algorithm, _level in parsed]
    document_signer = call.ctx.document_signer
    assert isinstance(document_signer, DocumentSigner)
    pades = PadesDocuments(call.request.app["hsm"], document_signer, call.ctx.settings.documents_dir / "csc",
                           digest_algorithm=digest_algorithms.pop(), level=levels.pop())
    signed = await sign_documents(call.ctx, call.caller, credential_id, sad, documents, pades)
    return _json({"DocumentWithSignature": [base64.b64encode(document).decode("ascii") for document in signed]},
                 call.language)


@routes.post("/csc/{version:v[12]}/{method:.+}")
async def not_implemented(request: web.Request) -> web.Response:
    # CSC API v2.0.0.2 section 10.1: 501 for a method the service does not implement.
    version = request.match_info["version"]
    language = negotiate_language(request.headers.get("Accept-Language"))
    error = InvalidInput("csc_method_not_implemented", method=request.match_info["method"][:64], version=version)
    return csc_error_response(error, version, language, request.get("request_id"))


@routes.route("*", "/csc/{path:.*}")
async def outside_csc_methods(request: web.Request) -> web.Response:
    """Reject a wrong HTTP method or an unknown API version in the CSC error shape, not the native one."""
    language = negotiate_language(request.headers.get("Accept-Language"))
    version = request.path.split("/")[2] if request.path.count("/") >= 2 else V1
    if request.method != "POST" and version in (V1, V2):
        error = InvalidInput("csc_http_method_invalid", method=request.method)
        response = csc_error_response(error, version, language, request.get("request_id"))
        response.set_status(405)
        response.headers["Allow"] = "POST"
        return response
    error = InvalidInput("csc_version_unknown", path=request.path[:100])
    response = csc_error_response(error, V1, language, request.get("request_id"))
    response.set_status(404)
    return response
