"""Operations routes: liveness, readiness, Prometheus metrics, the OpenAPI document, and the RFC 3161 TSA."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import structlog
import yaml
from aiohttp import web
from asn1crypto import tsp
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from signserver.core.errors import HsmUnavailable
from signserver.http_streams import read_at_most
from signserver.i18n import message, negotiate_language
from signserver.signing.tsa import TimeStampResp

__all__ = ["routes", "openapi_document"]

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

TSA_QUERY_TYPE = "application/timestamp-query"
TSA_REPLY_TYPE = "application/timestamp-reply"
MAX_TSA_QUERY_BYTES = 16 * 1024
# Seconds a client should wait before it retries a time-stamp query that the HSM could not sign.
TSA_RETRY_AFTER_SECONDS = 5


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).resolve().parent.parent / "openapi.yaml").read_text(encoding="utf-8"))


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    store = request.app["store"]
    checks = {
        # The outcome of the last HSM call or keep-alive probe, so a readiness poll never waits on the HSM.
        "hsm": request.app["hsm"].available,
        "database": await store.ping(),
        "tsa": request.app.get("tsa") is not None,
    }
    ready = all(checks.values())
    return web.json_response({"status": "ready" if ready else "not_ready", "checks": checks},
                             status=200 if ready else 503)


@routes.get("/metrics")
async def metrics(_request: web.Request) -> web.Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several workers (signserver.workers): sum the counters every process wrote to that directory.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


@routes.get("/openapi.json")
async def openapi(_request: web.Request) -> web.Response:
    return web.json_response(openapi_document(), dumps=lambda value: json.dumps(value, ensure_ascii=False))


@routes.post("/tsa")
async def timestamp(request: web.Request) -> web.Response:
    if request.content_type != TSA_QUERY_TYPE:
        return web.Response(status=415, text=f"expected Content-Type {TSA_QUERY_TYPE}\n")
    if request.content_length is not None and request.content_length > MAX_TSA_QUERY_BYTES:
        return web.Response(status=413, text=f"time-stamp query larger than {MAX_TSA_QUERY_BYTES} bytes\n")
    query = await read_at_most(request.content, MAX_TSA_QUERY_BYTES)
    if len(query) > MAX_TSA_QUERY_BYTES:
        return web.Response(status=413, text=f"time-stamp query larger than {MAX_TSA_QUERY_BYTES} bytes\n")
    # A malformed query still gets a TimeStampResp (status rejection, failInfo badDataFormat/badRequest).
    try:
        reply = await request.app["tsa"].respond(query)
    except HsmUnavailable as error:
        log.info("tsa.hsm_unavailable", reason=error.params.get("reason"))
        return _hsm_unavailable_reply(request)
    return web.Response(body=reply, content_type=TSA_REPLY_TYPE)


def _hsm_unavailable_reply(request: web.Request) -> web.Response:
    """Return HTTP 503 with Retry-After and a TimeStampResp of status rejection, failInfo systemFailure.

    RFC 3161 section 2.4.2 names systemFailure for a request that "cannot be
    handled due to system failure", so a client that reads only the body gets
    a protocol response, and an HTTP client sees a 503 it may retry. The
    statusString contains the stable code, then the message in the client's language.
    """
    language = negotiate_language(request.headers.get("Accept-Language"))
    status = tsp.PKIStatusInfo({
        "status": "rejection",
        "status_string": tsp.PKIFreeText(["hsm_unavailable", message("hsm_unavailable", language)]),
        "fail_info": tsp.PKIFailureInfo({"system_failure"}),
    })
    return web.Response(
        status=503, body=TimeStampResp({"status": status}).dump(), content_type=TSA_REPLY_TYPE,
        headers={"Retry-After": str(TSA_RETRY_AFTER_SECONDS), "Content-Language": language},
    )
