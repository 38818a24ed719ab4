"""GET /api/v1/health (liveness + store readable and intact) and GET /metrics (Prometheus text).

`GET /health` itself answers in the original design's shape (`api/compat`), with these fields added.
Neither needs a reader when the store failed its integrity check: they say so (degraded) instead.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from api.deps import AppState, State, json_response
from api.models import Health
from storage.port import StoreHealth, StoreReader
from ticklens.domain.times import iso_ms, now_ms

router = APIRouter(tags=["health"])  # under /api/v1
root = APIRouter(tags=["health"])  # unprefixed: /metrics, where scrapers look

PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def damaged(state: AppState) -> StoreHealth | None:
    """The store's last check, when it found a problem."""
    last = state.store.last_check
    return last if last is not None and not last.ok else None


def _checked(h: StoreHealth) -> str | None:
    return iso_ms(h.checked_ms) if h.checked_ms else None


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "Store damaged"}})
def health(state: State) -> Health | Response:
    """200 once the app is up and the store answers a query; 503 `degraded` naming the problem when
    the store failed its integrity check (at start and every `store.check_interval_s`)."""
    bad = damaged(state)
    if bad is not None:
        body = Health(
            status="degraded",
            problem=bad.problem,
            store=bad.location,
            schema_version=bad.schema_version,
            checked_time=_checked(bad),
            time=iso_ms(now_ms()),
        )
        return json_response(body.model_dump(), status_code=503)
    with state.store.reader() as reader:
        h = reader.health()
        dropped = reader.rejects_dropped()
    return Health(
        status="ok",
        store=h.location,
        schema_version=h.schema_version,
        checked_time=_checked(h),
        rejects_dropped=dropped,
        time=iso_ms(now_ms()),
    )


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Exposition:
    """Builds Prometheus text format 0.0.4 (HELP, TYPE, samples)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {float(value)!r}" if lab else f"{name} {float(value)!r}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@root.get("/metrics", response_class=PlainTextResponse, responses={200: {"content": {PROM_CONTENT_TYPE: {}}}})
def metrics(state: State) -> PlainTextResponse:
    """Ingest rate, lag, reconnects, gaps, malformed messages, DB size (Prometheus text format).

    A store that failed its integrity check gives `ticklens_store_ok 0` and the flow's state only."""
    m = _Exposition()
    sup = getattr(state, "supervisor", None)
    running = bool(sup and sup.state().running)
    m.metric("ticklens_flow_up", "gauge", "1 if a dataflow process is running", [({}, 1 if running else 0)])
    ok = damaged(state) is None
    m.metric("ticklens_store_ok", "gauge", "0 if the store failed its integrity check", [({}, 1 if ok else 0)])
    if ok:
        with state.store.reader() as reader:
            _store_metrics(m, reader, state)
    return PlainTextResponse(m.text(), media_type=PROM_CONTENT_TYPE)


def _store_metrics(m: _Exposition, store: StoreReader, state: AppState) -> None:
    now = now_ms()
    docs = store.status_docs()
    flow, flow_updated = docs.get("flow", ({}, 0))
    feeds = flow.get("feeds") or {}
    gaps = store.gap_counts()
    m.metric(
        "ticklens_ingest_trades_per_second",
        "gauge",
        "Trades stored per second at the flow's last status write",
        [({}, flow.get("trades_per_s", 0.0))],
    )
    m.metric(
        "ticklens_trades_stored_total",
        "counter",
        "Trades the flow stored since it first started (resumed runs go on counting)",
        [({}, flow.get("trades_total", 0))],
    )
    m.metric(
        "ticklens_status_age_seconds",
        "gauge",
        "Seconds since the flow last wrote its status",
        [({}, (now - flow_updated) / 1000 if flow_updated else -1)],
    )
    lag, last = [], []
    for key, (doc, _updated) in sorted(docs.items()):
        if key.startswith("symbol:") and doc.get("last_trade_ms"):
            sym = key.split(":", 1)[1]
            lag.append(({"symbol": sym}, (now - doc["last_trade_ms"]) / 1000))
            last.append(({"symbol": sym}, doc["last_trade_ms"] / 1000))
    m.metric("ticklens_lag_seconds", "gauge", "Wall time now minus the newest stored trade time", lag)
    m.metric("ticklens_last_trade_timestamp_seconds", "gauge", "Exchange time of the newest stored trade", last)
    m.metric(
        "ticklens_reconnects_total",
        "counter",
        "Feed reconnects",
        [({"source": k}, v.get("reconnects", 0)) for k, v in sorted(feeds.items())],
    )
    m.metric(
        "ticklens_connects_per_minute",
        "gauge",
        "Connection attempts in the last minute at the flow's last status write (capped by source.max_connects_per_minute)",
        [({"source": k}, v.get("connects_per_min", 0)) for k, v in sorted(feeds.items())],
    )
    m.metric(
        "ticklens_gaps_open",
        "gauge",
        "Trade-id gaps not (yet) filled",
        [({"symbol": s}, o) for s, (o, _) in sorted(gaps.items())],
    )
    m.metric(
        "ticklens_gaps_total",
        "counter",
        "Trade-id gaps detected",
        [({"symbol": s}, t) for s, (_, t) in sorted(gaps.items())],
    )
    m.metric(
        "ticklens_malformed_messages_total",
        "counter",
        "Messages rejected and kept aside",
        [({}, store.reject_count())],
    )
    m.metric(
        "ticklens_rejects_dropped_total",
        "counter",
        "Rejects dropped, oldest first, to keep store.rejects_max_rows",
        [({}, store.rejects_dropped())],
    )
    h = store.health()
    m.metric(
        "ticklens_db_size_bytes",
        "gauge",
        "Store size (SQLite: file plus its write-ahead log)",
        [({}, h.figures.get("db_size_bytes", 0.0))],
    )
    m.metric(
        "ticklens_store_figure",
        "gauge",
        "The store backend's own health figures",
        [({"backend": state.store.kind, "figure": k}, v) for k, v in sorted(h.figures.items())],
    )
