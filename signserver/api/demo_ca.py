"""HTTP routes of the demo CA: CRLs, OCSP (RFC 6960 appendix A.1, POST and GET) and the CA certificates.

``signserver.app`` adds these routes only when the data directory contains
the demo CA (``signserver.demo_ca.has_demo_ca``). The responses are built by
``signserver.demo_ca.DemoCa``, stored in ``app["demo_ca"]``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from urllib.parse import unquote

from aiohttp import web

from signserver.demo_ca import CA_NAMES, DemoCa
from signserver.http_streams import read_at_most

__all__ = ["routes", "OCSP_PATH"]

routes = web.RouteTableDef()

OCSP_PATH = "/demo-ca/ocsp"
OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
# An OCSPRequest for one certificate takes a few hundred bytes, or a few kilobytes when signed with
# certificates attached (an estimate). A larger body gets the malformedRequest response status.
MAX_OCSP_REQUEST_BYTES = 16 * 1024


def _demo_ca(request: web.Request) -> DemoCa:
    return request.app["demo_ca"]  # type: ignore[no-any-return]


def _ca_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if name not in CA_NAMES:
        raise web.HTTPNotFound()
    return name


@routes.get("/demo-ca/crl/{name}.crl")
async def crl(request: web.Request) -> web.Response:
    ca_name = _ca_name(request)
    body = await asyncio.get_running_loop().run_in_executor(None, _demo_ca(request).crl_der, ca_name)
    return web.Response(body=body, content_type="application/pkix-crl")


@routes.get("/demo-ca/certs/{name}.cer")
async def ca_certificate(request: web.Request) -> web.Response:
    return web.Response(body=_demo_ca(request).certificate_der(_ca_name(request)), content_type="application/pkix-cert")


@routes.post(OCSP_PATH)
async def ocsp_post(request: web.Request) -> web.Response:
    if request.content_type != OCSP_REQUEST_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"send the OCSPRequest as {OCSP_REQUEST_TYPE}")
    body = await read_at_most(request.content, MAX_OCSP_REQUEST_BYTES)
    if len(body) > MAX_OCSP_REQUEST_BYTES:
        body = b""  # gets the malformedRequest response status
    return await _ocsp_response(request, body)


@routes.get(OCSP_PATH + "/{encoded:.+}")
async def ocsp_get(request: web.Request) -> web.Response:
    # RFC 6960 A.1: the path ends with the URL-encoded base64 of the DER OCSPRequest. The raw path is
    # decoded here because base64 text may contain "/" and "+", which routing would split or alter.
    encoded = unquote(request.raw_path.split("?", 1)[0][len(OCSP_PATH) + 1:])
    # Some clients send the URL-safe alphabet. Standard base64 never contains "-" or "_", so mapping them back is safe.
    encoded = encoded.replace("-", "+").replace("_", "/")
    try:
        body = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        body = b""  # gets the malformedRequest response status
    return await _ocsp_response(request, body)


async def _ocsp_response(request: web.Request, body: bytes) -> web.Response:
    # Even a malformed request gets an OCSPResponse (status malformedRequest) with HTTP 200, as RFC 6960 A.1 expects.
    response = await asyncio.get_running_loop().run_in_executor(None, _demo_ca(request).ocsp_response_der, body)
    return web.Response(body=response, content_type=OCSP_RESPONSE_TYPE)
