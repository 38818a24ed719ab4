"""The ticklens REST API: `uvicorn api.app:app --port 8000` (OpenAPI at /docs).

Reads the store named by the same pipeline file as the flow (TICKLENS_CONFIG or
./pipeline.yaml), read-only; supervises the flow process for /api/v1/start|stop.
Two surfaces over the same store: ticklens' typed API under /api/v1, and the
original design's wire format on its original paths (/health, /api/...; `api.compat`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import compat
from api.deps import AppState, json_response
from api.routers import (
    alerts,
    analytics,
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
from api.supervisor import FlowSupervisor
from storage import open_store
from storage.port import StoreUnavailable
from ticklens.config import Config, load_config

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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ticklens = AppState(cfg, store, FlowSupervisor(cfg, store))
        yield
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
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins + list(cfg.api.cors_origins),
        allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=["Content-Type"],
        expose_headers=["X-Ticklens-Status"],
    )
    app.add_middleware(BodyLimit)

    async def _store_unavailable(request: Request, exc: Exception) -> Response:
        return json_response({"detail": f"store unavailable: {exc}"}, status_code=503)

    for exc in (StoreUnavailable, *store.unavailable_errors):
        app.add_exception_handler(exc, _store_unavailable)

    for r in (health, collection, ticks, ohlc, book, symbols, data, analytics, alerts, continuity, microstructure):
        app.include_router(r.router, prefix=API_V1)
    app.include_router(health.root)
    app.include_router(compat.router)
    return app


app = create_app()
