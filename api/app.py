"""The ticklens REST API: `uvicorn api.app:app --port 8000` (OpenAPI at /docs).

Reads the store named by the same pipeline file as the flow (TICKLENS_CONFIG or
./pipeline.yaml), read-only; supervises the flow process for /api/v1/start|stop.
Two surfaces over the same store: ticklens' typed API under /api/v1, and the
original design's wire format on its original paths (/health, /api/...; `api.compat`).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import compat, errors
from api.deps import AppState, json_response
from api.routers import (
    alerts,
    analytics,
    audit,
    book,
    collection,
    continuity,
    data,
    health,
    microstructure,
    ohlc,
    symbols,
    ticks,
)
from api.security import Guard
from api.store_checks import StoreChecks
from api.supervisor import FlowSupervisor
from storage import open_store
from ticklens.config import Config, ConfigError, load_config

API_V1 = "/api/v1"
UPLOAD_PREFIXES = (f"{API_V1}/upload/", "/api/upload/")
UPLOAD_MAX_BODY = 21 * 1024 * 1024  # the 20 MB file plus multipart framing
MAX_BODY = 64 * 1024


class BodyLimit:
    """413 for a request body over the limit, before the app reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = UPLOAD_MAX_BODY if scope["path"].startswith(UPLOAD_PREFIXES) else MAX_BODY
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                await _too_large(scope, receive, send, limit)
                return
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read up to the limit, then replay it to the app.
        chunks: list[Message] = []
        size = 0
        while True:
            msg = await receive()
            chunks.append(msg)
            if msg["type"] != "http.request":
                break
            size += len(msg.get("body", b""))
            if size > limit:
                await _too_large(scope, receive, send, limit)
                return
            if not msg.get("more_body"):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    resp = json_response({"detail": f"request body larger than {limit} bytes"}, status_code=413)
    await resp(scope, receive, send)


def create_app(cfg: Config | None = None) -> FastAPI:
    """The app for `cfg` (default: the pipeline file named by TICKLENS_CONFIG)."""
    cfg = cfg or load_config()

    store = open_store(cfg.store)
    checks = StoreChecks(store, cfg.store.check_interval_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ticklens = AppState(cfg, store, FlowSupervisor(cfg, store), recheck=checks.soon)
        checks.start()  # at start, then every store.check_interval_s, in a worker thread
        yield
        await checks.stop()
        store.close()

    app = FastAPI(
        title="ticklens",
        summary="Real-time Binance USD-M trade analytics: ticks, exact bars, statistics, collection control",
        description="`/api/v1/...`: ticklens' typed API. `/health` and `/api/...`: the original design's "
        f"API, wire-compatible (tag *{compat.TAG}*; each endpoint names its richer v1 counterpart).",
        version="0.1.0",
        lifespan=lifespan,
        openapi_tags=[
            {
                "name": compat.TAG,
                "description": "The original system's endpoints and JSON shapes, "
                "so its dashboard and scripts work unchanged; see docs/api.md for the v1 counterparts.",
            }
        ],
    )
    origins = [f"http://127.0.0.1:{cfg.dashboard.port}", f"http://localhost:{cfg.dashboard.port}"]
    origins += list(cfg.api.cors_origins)
    # Outermost last: body limit, then CORS (answers preflights), then the guard (api/security.py).
    app.add_middleware(Guard, token=cfg.api.bearer_token(), origins=origins, upload_prefixes=UPLOAD_PREFIXES)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=["Content-Type", "Authorization"],
        expose_headers=["X-Ticklens-Status"],
    )
    app.add_middleware(BodyLimit)
    errors.install(app, store, checks.soon)

    routers = (
        health,
        collection,
        ticks,
        ohlc,
        book,
        symbols,
        data,
        analytics,
        alerts,
        continuity,
        audit,
        microstructure,
    )
    for r in routers:
        app.include_router(r.router, prefix=API_V1)
    app.include_router(health.root)
    app.include_router(compat.router)
    _finish_schema(app)
    return app


# OpenAPI links: the id a create answers with is the path parameter of the rule's own
# operations (clients and schemathesis' stateful tests follow them).
_LINKS = {
    (f"{API_V1}/alerts", "post", "201"): ("#/id", f"{API_V1}/alerts/{{alert_id}}", ("get", "patch", "delete")),
    ("/api/alerts", "post", "200"): ("#/alert_id", "/api/alerts/{alert_id}", ("delete",)),
}


def _add_links(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    for (path, method, code), (pointer, target, methods) in _LINKS.items():
        links = {}
        for m in methods:
            op = paths[target][m]
            links[f"{m}_{op['operationId']}"] = {
                "operationId": op["operationId"],
                "parameters": {"alert_id": f"$response.body{pointer}"},
                "description": f"{m.upper()} {target} of the rule just created",
            }
        paths[path][method]["responses"][code]["links"] = links


def _finish_schema(app: FastAPI) -> None:
    """The OpenAPI page offers the token (Authorize); each operation takes it or nothing, as
    configured; creates link to the created rule's operations."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "api.token or TICKLENS_API_TOKEN"}
            }
            schema["security"] = [{}, {"bearer": []}]  # {}: none needed when no token is configured
            _add_links(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


try:
    app = create_app()
except ConfigError as e:  # `uvicorn api.app:app` on a bad config: one clear message, no traceback
    print(f"ticklens: {e}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
