"""Operations routes: liveness, readiness, Prometheus metrics, the OpenAPI document, and the RFC 3161 TSA."""

from __future__ import annotations

import asyncio
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from signserver.http_streams import read_at_most

__all__ = ["routes", "openapi_document"]

routes = web.RouteTableDef()

TSA_QUERY_TYPE = "application/timestamp-query"
TSA_REPLY_TYPE = "application/timestamp-reply"
MAX_TSA_QUERY_BYTES = 16 * 1024


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).resolve().parent.parent / "openapi.yaml").read_text(encoding="utf-8"))


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    hsm = request.app["hsm"]
    store = request.app["store"]
    loop = asyncio.get_running_loop()
    checks = {
        "hsm": await loop.run_in_executor(None, hsm.probe),
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
    reply = await request.app["tsa"].respond(query)
    return web.Response(body=reply, content_type=TSA_REPLY_TYPE)
