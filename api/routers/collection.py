"""POST /api/v1/start, POST /api/v1/stop, GET /api/v1/status: the API supervises the dataflow process."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException

from api.deps import Reader, State
from api.models import ControlResponse, StartRequest, StatusResponse, SymbolStatus
from api.supervisor import FlowSupervisor
from ticklens.domain.timeframes import TIMEFRAMES
from ticklens.domain.times import iso_ms, now_ms

router = APIRouter(tags=["collection"])


def _supervisor(state: State) -> FlowSupervisor:
    return state.supervisor


Supervisor = Annotated[FlowSupervisor, Depends(_supervisor)]


@router.post("/start", response_model=ControlResponse)
def start(
    sup: Supervisor,
    body: Annotated[StartRequest, Body(default_factory=StartRequest)],
) -> ControlResponse:
    """Start the dataflow for the configured symbols plus `symbols`, or add them to the running one.

    Starting twice does not start two flows (`changed: false`).
    """
    try:
        out = sup.start(body.symbols)
    except PermissionError as e:
        raise HTTPException(409, str(e)) from None
    return ControlResponse(action="start", **out)


@router.post("/stop", response_model=ControlResponse)
def stop(sup: Supervisor) -> ControlResponse:
    """Stop the flow gracefully (SIGINT: buffered trades are written); a no-op when stopped."""
    return ControlResponse(action="stop", **sup.stop())


@router.get("/status", response_model=StatusResponse)
def status(store: Reader, state: State) -> StatusResponse:
    """Running or not, and the flow's health: trades/s, reconnects, gaps, malformed messages, late trades."""
    sup: FlowSupervisor = state.supervisor
    fs = sup.state()
    docs = store.status_docs()
    flow, flow_updated = docs.get("flow", ({}, 0))
    gaps = store.gap_counts()
    symbols = fs.symbols or list(state.cfg.symbols)
    per = []
    for sym in sorted(set(symbols) | {k.split(":", 1)[1] for k in docs if k.startswith("symbol:")}):
        doc = docs.get(f"symbol:{sym}", ({}, 0))[0]
        last_ms = doc.get("last_trade_ms") or None
        g_open, g_total = gaps.get(sym, (0, 0))
        per.append(
            SymbolStatus(
                symbol=sym,
                last_trade_time=iso_ms(last_ms) if last_ms else None,
                last_trade_ms=last_ms,
                trades_per_s=store.recent_trade_rate(sym),
                trades=doc.get("trades", 0),
                late_trades=doc.get("late_trades", 0),
                duplicates=doc.get("duplicates", 0),
                conflicts=doc.get("conflicts", 0),
                revisions=doc.get("revisions", 0),
                gaps_open=g_open,
                gaps_total=g_total,
                missing_bars={tf: store.missing_bars(sym, tf) for tf in TIMEFRAMES if tf != "1s"},
            )
        )
    feeds = flow.get("feeds") or {}
    now = now_ms()
    return StatusResponse(
        running=fs.running,
        pid=fs.pid,
        started_by=fs.started_by,  # type: ignore[arg-type]
        symbols=symbols,
        source=state.cfg.source.kind,
        started_time=iso_ms(fs.started_ms) if fs.started_ms else None,
        uptime_s=(now - fs.started_ms) / 1000 if fs.running and fs.started_ms else None,
        trades_per_s=flow.get("trades_per_s", 0.0) if fs.running else 0.0,
        trades_total=flow.get("trades_total", 0),
        reconnects=sum(int(f.get("reconnects", 0)) for f in feeds.values()),
        connects_per_min=sum(int(f.get("connects_per_min", 0)) for f in feeds.values()) if fs.running else 0,
        malformed_messages=store.reject_count(),
        rejects_dropped=store.rejects_dropped(),
        gaps_open=sum(o for o, _ in gaps.values()),
        gaps_total=sum(t for _, t in gaps.values()),
        status_time=iso_ms(flow_updated) if flow_updated else None,
        per_symbol=per,
        log=fs.log,
    )
