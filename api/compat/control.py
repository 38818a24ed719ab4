"""The original API's /health, /api/start, /api/stop and /api/status over the flow supervisor."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.compat.common import TAG, richer
from api.compat.models import CompatHealth, StartAnswer, StatusAnswer, StopAnswer
from api.deps import Reader, State, json_response
from api.routers.health import damaged
from ticklens.domain.symbols import normalise_symbol
from ticklens.domain.times import iso_ms, now_ms

router = APIRouter(tags=[TAG])


class StartBody(BaseModel):
    """`{"symbols": ["btcusdt", …]}`; other keys are ignored, as the original did."""

    model_config = ConfigDict(extra="ignore")

    symbols: list[str] = Field(default_factory=list, max_length=200)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        return sorted({normalise_symbol(s) for s in v})


@router.get(
    "/health",
    response_model=CompatHealth,
    responses={503: {"model": CompatHealth, "description": "Store damaged: `degraded`, naming the problem"}},
    description=richer(
        "/api/v1/health",
        "Liveness: `healthy` once the app answers and the store is readable; `degraded` (503) naming the "
        "problem when the store failed its integrity check.",
    ),
)
def health(state: State) -> CompatHealth | Response:
    now = iso_ms(now_ms())
    collecting = state.supervisor.state().running
    bad = damaged(state)
    if bad is not None:
        body = CompatHealth(
            status="degraded",
            timestamp=now,
            collecting=collecting,
            store=bad.location,
            schema_version=bad.schema_version,
            problem=bad.problem,
            time=now,
        )
        return json_response(body.model_dump(), status_code=503)
    with state.store.reader() as reader:
        h = reader.health()
    return CompatHealth(
        status="healthy",
        timestamp=now,
        collecting=collecting,
        store=h.location,
        schema_version=h.schema_version,
        time=now,
    )


@router.post(
    "/api/start",
    response_model=StartAnswer,
    description=richer(
        "/api/v1/start",
        "Start collecting `symbols` (added to the configured ones); a running flow missing some is restarted "
        "with them (its recovery snapshot resumes it).",
    ),
)
def start(state: State, body: Annotated[StartBody, Body(default_factory=StartBody)]) -> StartAnswer:
    try:
        out = state.supervisor.start(body.symbols)
    except PermissionError as e:
        raise HTTPException(409, str(e)) from None
    return StartAnswer(status="started", symbols=out["symbols"], message=out["message"])


@router.post(
    "/api/stop",
    response_model=StopAnswer,
    description=richer("/api/v1/stop", "Stop the flow gracefully (buffered trades are written)."),
)
def stop(state: State) -> StopAnswer:
    return StopAnswer(status="stopped", message=state.supervisor.stop()["message"])


def _connections(state: State, reader: Reader, symbols: list[str]) -> int:
    """Open WebSocket connections: one per group of up to `max_streams_per_connection` symbols,
    when the flow's feed reports them connected; a file replay has none."""
    src = state.cfg.source
    if src.kind == "replay":
        return 0
    flow = reader.status_docs().get("flow", ({}, 0))[0]
    feeds = flow.get("feeds") or {}
    if not any(f.get("connected") for f in feeds.values()):
        return 0
    return math.ceil(len(symbols) / src.max_streams_per_connection)


@router.get(
    "/api/status",
    response_model=StatusAnswer,
    description=richer(
        "/api/v1/status",
        "Collecting or not, the symbols, open connections and uptime. The v1 answer adds ingest rate, totals, "
        "reconnects, gaps, malformed messages and per-symbol health.",
    ),
)
def status(reader: Reader, state: State) -> StatusAnswer:
    fs = state.supervisor.state()
    symbols = sorted(fs.symbols) if fs.running else []
    uptime = None
    if fs.running and fs.started_ms:
        uptime = str(timedelta(seconds=max(0, (now_ms() - fs.started_ms) // 1000)))
    return StatusAnswer(
        is_collecting=fs.running,
        active_symbols=symbols,
        connections=_connections(state, reader, symbols) if fs.running else 0,
        uptime=uptime,
    )
