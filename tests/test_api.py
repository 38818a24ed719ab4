"""The REST API against a real uvicorn server and a store filled by the real flow.

Expected values come from the store read directly (SQL full scans, polars), not
from the API's own query code.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest
from api_support import ApiServer, api_server, rows, wait_until
from flow_support import WINDOW_A, run_flow, write_config
from prometheus_client.parser import text_string_to_metric_families
from reference import ohlc
from store_support import BACKENDS, StoreRef, new_store

from ticklens.domain.times import iso_ms, parse_time

TICK_SQL = "SELECT trade_id, ts_ms, price, qty, is_buyer_maker FROM ticks WHERE symbol=?"


@pytest.fixture(scope="session", params=BACKENDS)
def filled(request, tmp_path_factory) -> tuple[Path, StoreRef]:
    """(config, store) after replaying the bundled 2024-07-18/19 BTC+ETH window through the real flow,
    into each backend in turn (the whole suite below runs on both)."""
    tmp = tmp_path_factory.mktemp(f"api_store_{request.param}")
    store = new_store(request.param, tmp)
    config = write_config(tmp, symbols=["btcusdt", "ethusdt", "solusdt"], store=store.config())
    done = run_flow(config, "--no-recovery")
    assert done.returncode == 0, done.stderr[-3000:]
    return config, store


@pytest.fixture(scope="session")
def api(filled, tmp_path_factory) -> ApiServer:
    config, _ = filled
    with api_server(config, tmp_path_factory.mktemp("api_log") / "uvicorn.log") as server:
        yield server


@pytest.fixture(scope="session")
def store(filled) -> StoreRef:
    return filled[1]


def ticks_frame(store: StoreRef, symbol: str) -> pl.DataFrame:
    return pl.DataFrame(
        rows(store, TICK_SQL + " ORDER BY trade_id", (symbol,)),
        schema=["trade_id", "ts_ms", "price", "qty", "is_buyer_maker"],
        orient="row",
    )


def reference_bars(store: StoreRef, symbol: str, every: str) -> pl.DataFrame:
    """Bars computed here from the stored ticks (polars), independent of the flow's bar code."""
    t = ticks_frame(store, symbol).with_columns(time=pl.from_epoch("ts_ms", time_unit="ms")).sort("ts_ms", "trade_id")
    return (
        t.group_by_dynamic("time", every=every)
        .agg(
            **ohlc(),
            volume=pl.col("qty").sum(),
            trades=pl.len(),
        )
        .with_columns(ts_ms=pl.col("time").dt.epoch("ms"))
    )


# --- health, symbols -----------------------------------------------------------------


def test_health_names_the_store_and_schema(api: ApiServer, store: StoreRef) -> None:
    body = api.client.get("/api/v1/health").json()
    assert body["status"] == "ok"
    assert body["store"] == store.location
    assert body["schema_version"] == store.schema_version
    assert body["time"].endswith("Z")
    # /health answers in the original design's shape, ticklens' own fields beside it.
    compat = api.client.get("/health").json()
    assert compat["status"] == "healthy" and compat["collecting"] is False
    assert (
        compat["store"] == store.location
        and compat["schema_version"] == store.schema_version
        and compat["timestamp"].endswith("Z")
    )


def test_openapi_documents_every_endpoint(api: ApiServer) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    for p in [
        "/api/v1/start", "/api/v1/stop", "/api/v1/status", "/api/v1/ticks/{symbol}", "/api/v1/ohlc/{symbol}", "/api/v1/symbols",
        "/api/v1/stats/{symbol}", "/api/v1/export/{symbol}", "/api/v1/upload/ohlc", "/api/v1/health", "/health",
        "/metrics",
    ]:  # fmt: skip
        assert p in paths, p
    assert api.client.get("/docs").status_code == 200


def test_symbols_lists_configured_and_stored_with_counts(api: ApiServer, store: StoreRef) -> None:
    by = {s["symbol"]: s for s in api.client.get("/api/v1/symbols").json()["symbols"]}
    assert {"btcusdt", "ethusdt", "solusdt"} <= set(by)
    for sym in ("btcusdt", "ethusdt"):
        ((n, last_ts),) = rows(store, "SELECT COUNT(*), MAX(ts_ms) FROM ticks WHERE symbol=?", (sym,))
        assert by[sym]["ticks"] == n
        assert by[sym]["last_trade_ms"] == last_ts
        assert by[sym]["last_trade_time"] == iso_ms(last_ts)
        assert by[sym]["has_data"] and by[sym]["configured"]
    assert by["solusdt"]["configured"] and not by["solusdt"]["has_data"]


# --- ticks ---------------------------------------------------------------------------


def test_ticks_are_the_newest_oldest_first_and_case_insensitive(api: ApiServer, store: StoreRef) -> None:
    expected = ticks_frame(store, "btcusdt").tail(700)
    body = api.client.get("/api/v1/ticks/BTCUSDT", params={"limit": 700}).json()
    assert body["symbol"] == "btcusdt" and body["status"] == "ok" and body["count"] == 700
    got = body["ticks"]
    assert [t["trade_id"] for t in got] == expected["trade_id"].to_list()
    assert [t["price"] for t in got] == expected["price"].to_list()
    assert [t["qty"] for t in got] == expected["qty"].to_list()
    assert [t["ts_ms"] for t in got] == expected["ts_ms"].to_list()
    assert all(t["time"] == iso_ms(t["ts_ms"]) and t["time"].endswith("Z") for t in got)
    assert all(t["side"] == ("sell" if t["is_buyer_maker"] else "buy") for t in got)


@pytest.mark.parametrize("sym", ["btcusdt", "ethusdt"])
def test_ticks_time_range_equals_a_full_scan(api: ApiServer, store: Path, sym: str) -> None:
    t = ticks_frame(store, sym)
    rng = np.random.default_rng(7)
    lo, hi = t["ts_ms"].min(), t["ts_ms"].max()
    for _ in range(6):
        a, b = sorted(int(x) for x in rng.integers(lo - 5_000, hi + 5_000, size=2))
        b += 1
        want = rows(store, TICK_SQL + " AND ts_ms >= ? AND ts_ms < ? ORDER BY trade_id", (sym, a, b))
        body = api.client.get(
            f"/api/v1/ticks/{sym}", params={"start": iso_ms(a), "end": str(b), "limit": 100_000}
        ).json()
        assert [x["trade_id"] for x in body["ticks"]] == [r[0] for r in want]
    # the newest `limit` within the range
    a, b = int(lo) + 60_000, int(lo) + 120_000
    want = rows(store, TICK_SQL + " AND ts_ms >= ? AND ts_ms < ? ORDER BY trade_id", (sym, a, b))[-50:]
    body = api.client.get(f"/api/v1/ticks/{sym}", params={"start": a, "end": b, "limit": 50}).json()
    assert [x["trade_id"] for x in body["ticks"]] == [r[0] for r in want]


# --- ohlc ----------------------------------------------------------------------------


@pytest.mark.parametrize(("tf", "every"), [("1s", "1s"), ("1m", "1m"), ("5m", "5m")])
def test_ohlc_equals_bars_computed_from_the_stored_ticks(api: ApiServer, store: Path, tf: str, every: str) -> None:
    ref = reference_bars(store, "ethusdt", every)
    body = api.client.get("/api/v1/ohlc/ethusdt", params={"timeframe": tf, "limit": 100_000}).json()
    got = pl.DataFrame(body["bars"])
    assert got["ts_ms"].to_list() == ref["ts_ms"].to_list()
    for col in ("open", "high", "low", "close", "trades"):
        assert got[col].to_list() == ref[col].to_list(), col
    assert np.allclose(got["volume"].to_numpy(), ref["volume"].to_numpy(), rtol=0, atol=1e-8)
    assert got["time"].to_list() == [iso_ms(x) for x in ref["ts_ms"]]
    assert not any(got["in_progress"])  # the replay ran to the end: every bar closed
    assert set(got["origin"]) == {"flow"}


def test_ohlc_limit_returns_the_newest_bars_oldest_first(api: ApiServer, store: StoreRef) -> None:
    ref = reference_bars(store, "btcusdt", "1s")
    body = api.client.get("/api/v1/ohlc/btcusdt", params={"timeframe": "1s", "limit": 25}).json()
    assert [b["ts_ms"] for b in body["bars"]] == ref["ts_ms"].tail(25).to_list()
    a = int(ref["ts_ms"][100])
    b = int(ref["ts_ms"][200])
    body = api.client.get(
        "/api/v1/ohlc/btcusdt", params={"timeframe": "1s", "start": iso_ms(a), "end": iso_ms(b)}
    ).json()
    assert [x["ts_ms"] for x in body["bars"]] == ref["ts_ms"][100:200].to_list()


def test_ohlc_max_points_merges_consecutive_bars_keeping_extremes(api: ApiServer, store: StoreRef) -> None:
    raw = pl.DataFrame(
        rows(store, "SELECT start_ms, open, high, low, close, volume, trades FROM bars"
                    " WHERE symbol='btcusdt' AND timeframe='1s' ORDER BY start_ms"),
        schema=["start_ms", "open", "high", "low", "close", "volume", "trades"],
        orient="row",
    )  # fmt: skip
    body = api.client.get("/api/v1/ohlc/btcusdt", params={"timeframe": "1s", "limit": 100_000, "max_points": 50}).json()
    got = body["bars"]
    assert 0 < len(got) <= 50 < raw.height
    covered = 0
    for b in got:
        part = raw.filter((pl.col("start_ms") >= b["ts_ms"]) & (pl.col("start_ms") < b["ts_ms"] + b["span_ms"]))
        covered += part.height
        assert b["open"] == part["open"][0] and b["close"] == part["close"][-1]
        assert b["high"] == part["high"].max() and b["low"] == part["low"].min()
        assert b["trades"] == part["trades"].sum()
        assert b["volume"] == pytest.approx(part["volume"].sum(), abs=1e-8)
    assert covered == raw.height  # every bar in exactly one bucket
    plain = api.client.get("/api/v1/ohlc/btcusdt", params={"timeframe": "1s", "limit": 40, "max_points": 50}).json()
    assert [b["span_ms"] for b in plain["bars"]] == [1000] * 40


# --- stats ---------------------------------------------------------------------------


def test_stats_match_numpy_over_the_window(api: ApiServer, store: StoreRef) -> None:
    bars = rows(
        store,
        "SELECT open, high, low, close, volume, quote_volume FROM bars WHERE symbol='btcusdt' AND timeframe='1s'"
        " ORDER BY start_ms DESC LIMIT 120",
    )[::-1]
    o, h, lo, c, v, qv = (np.array(col) for col in zip(*bars, strict=True))
    body = api.client.get("/api/v1/stats/BTCUSDT", params={"window": 120, "timeframe": "1s"}).json()
    assert body["count"] == 120 and body["status"] == "ok"
    assert body["last"] == c[-1]
    assert math.isclose(body["mean"], c.mean(), rel_tol=1e-12)
    assert math.isclose(body["std"], c.std(ddof=1), rel_tol=1e-9)
    assert body["min"] == lo.min() and body["max"] == h.max()
    assert math.isclose(body["volume"], v.sum(), rel_tol=1e-12)
    assert math.isclose(body["vwap"], qv.sum() / v.sum(), rel_tol=1e-12)
    assert math.isclose(body["return"], c[-1] / o[0] - 1, rel_tol=1e-9)
    assert math.isclose(body["realised_volatility"], np.sqrt((np.diff(np.log(c)) ** 2).sum()), rel_tol=1e-9)


# --- parameters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/api/v1/ticks/btcusdt", {"limit": 0}, "limit"),
        ("/api/v1/ticks/btcusdt", {"limit": 100_001}, "limit"),
        ("/api/v1/ohlc/btcusdt", {"limit": -5}, "limit"),
        ("/api/v1/ticks/btcusdt", {"start": "yesterday"}, "start"),
        ("/api/v1/ohlc/btcusdt", {"end": "2024-13-45"}, "end"),
        ("/api/v1/ohlc/btcusdt", {"start": "2024-07-19T00:00:00Z", "end": "2024-07-18T00:00:00Z"}, "end"),
        ("/api/v1/ohlc/btcusdt", {"timeframe": "2m"}, "timeframe"),
        ("/api/v1/stats/btcusdt", {"window": 1}, "window"),
        ("/api/v1/export/btcusdt", {"format": "xlsx"}, "format"),
        ("/api/v1/export/btcusdt", {"kind": "orderbook"}, "kind"),
        ("/api/v1/ticks/b", {}, "symbol"),
        ("/api/v1/ohlc/btc-usdt", {}, "symbol"),
    ],
)
def test_bad_parameter_is_422_naming_it(api: ApiServer, path: str, params: dict, name: str) -> None:
    r = api.client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert any(err["loc"][-1] == name for err in r.json()["detail"]), r.text


@pytest.mark.parametrize(
    "path", ["/api/v1/ticks/dogeusdt", "/api/v1/ohlc/dogeusdt", "/api/v1/stats/dogeusdt", "/api/v1/export/dogeusdt"]
)
def test_unknown_symbol_is_404(api: ApiServer, path: str) -> None:
    r = api.client.get(path)
    assert r.status_code == 404
    assert "dogeusdt" in r.json()["detail"]


def test_configured_symbol_without_data_is_empty_with_status(api: ApiServer) -> None:
    for path in ("/api/v1/ticks/solusdt", "/api/v1/ohlc/solusdt"):
        r = api.client.get(path)
        assert r.status_code == 200
        assert r.headers["x-ticklens-status"] == "no_data"
        body = r.json()
        assert body["status"] == "no_data" and body["count"] == 0
    assert api.client.get("/api/v1/stats/solusdt").json()["count"] == 0


def test_start_with_a_bad_symbol_is_422_and_starts_nothing(api: ApiServer) -> None:
    r = api.client.post("/api/v1/start", json={"symbols": ["btc/usdt"]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][:2] == ["body", "symbols"]
    assert api.client.get("/api/v1/status").json()["running"] is False


def test_cors_allows_only_the_dashboard_origin(api: ApiServer) -> None:
    ok = api.client.get("/health", headers={"Origin": "http://127.0.0.1:5006"})
    assert ok.headers.get("access-control-allow-origin") == "http://127.0.0.1:5006"
    bad = api.client.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in bad.headers


def test_oversized_body_is_413(api: ApiServer) -> None:
    r = api.client.post("/api/v1/start", content=b"x" * 100_000, headers={"content-type": "application/json"})
    assert r.status_code == 413


# --- status and metrics --------------------------------------------------------------


def test_status_reports_counters_of_the_finished_flow(api: ApiServer, store: StoreRef) -> None:
    body = api.client.get("/api/v1/status").json()
    assert body["running"] is False and body["pid"] is None
    (n,) = rows(store, "SELECT COUNT(*) FROM ticks")[0]
    assert body["trades_total"] == n
    assert body["malformed_messages"] == rows(store, "SELECT COUNT(*) FROM rejects")[0][0]
    per = {s["symbol"]: s for s in body["per_symbol"]}
    last = rows(store, "SELECT MAX(ts_ms) FROM ticks WHERE symbol='ethusdt'")[0][0]
    assert per["ethusdt"]["last_trade_ms"] == last and per["ethusdt"]["last_trade_time"] == iso_ms(last)
    assert per["ethusdt"]["missing_bars"] == {"1m": 0, "5m": 0}
    # trades/s over the last 10 s of exchange time, counted here from the ticks
    recent = rows(
        store, "SELECT COUNT(*) FROM ticks WHERE symbol='ethusdt' AND ts_ms >= ?", (last // 1000 * 1000 - 9000,)
    )
    assert per["ethusdt"]["trades_per_s"] == pytest.approx(recent[0][0] / 10)


def test_metrics_are_prometheus_text(api: ApiServer, store: StoreRef) -> None:
    r = api.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in ("ticklens_ingest_trades_per_second", "ticklens_lag_seconds", "ticklens_reconnects",
                 "ticklens_gaps_open", "ticklens_malformed_messages", "ticklens_db_size_bytes"):  # fmt: skip
        assert name in fams, name
    size = fams["ticklens_db_size_bytes"].samples[0].value
    assert size >= store.size_bytes() * 0.99
    lag = {s.labels["symbol"]: s.value for s in fams["ticklens_lag_seconds"].samples}
    last = rows(store, "SELECT MAX(ts_ms) FROM ticks WHERE symbol='btcusdt'")[0][0]
    assert lag["btcusdt"] == pytest.approx(time.time() - last / 1000, abs=60)


# --- export --------------------------------------------------------------------------


def test_csv_export_of_bars_equals_the_store(api: ApiServer, store: StoreRef) -> None:
    r = api.client.get("/api/v1/export/btcusdt", params={"format": "csv", "timeframe": "1s"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    got = pl.read_csv(io.BytesIO(r.content))
    want = rows(
        store,
        "SELECT start_ms, open, high, low, close, volume, trades FROM bars WHERE symbol='btcusdt' AND timeframe='1s'"
        " ORDER BY start_ms",
    )
    assert got.height == len(want)
    for i, col in enumerate(["ts_ms", "open", "high", "low", "close", "volume", "trades"]):
        assert got[col].to_list() == [w[i] for w in want], col
    assert got["timestamp"].to_list() == [iso_ms(w[0]) for w in want]


def test_csv_export_of_ticks_in_a_range_equals_the_store(api: ApiServer, store: StoreRef) -> None:
    a, b = parse_time("2024-07-19T00:00:30Z"), parse_time("2024-07-19T00:02:00Z")
    r = api.client.get("/api/v1/export/ethusdt", params={"kind": "ticks", "start": iso_ms(a), "end": b})
    got = pl.read_csv(io.BytesIO(r.content))
    want = rows(store, TICK_SQL + " AND ts_ms >= ? AND ts_ms < ? ORDER BY trade_id", ("ethusdt", a, b))
    assert got["trade_id"].to_list() == [w[0] for w in want]
    assert got["price"].to_list() == [w[2] for w in want]
    assert got["qty"].to_list() == [w[3] for w in want]
    assert got["is_buyer_maker"].to_list() == [bool(w[4]) for w in want]


def test_parquet_export_equals_the_store(api: ApiServer, store: StoreRef) -> None:
    r = api.client.get("/api/v1/export/ETHUSDT", params={"format": "parquet", "kind": "ticks"})
    assert r.status_code == 200
    got = pl.read_parquet(io.BytesIO(r.content))
    want = ticks_frame(store, "ethusdt")
    assert got.select(want.columns).with_columns(pl.col("is_buyer_maker").cast(pl.Int64)).equals(want)
    assert got["timestamp"].dtype == pl.Datetime("ms", "UTC")
    r = api.client.get("/api/v1/export/ethusdt", params={"format": "parquet", "timeframe": "5m"})
    bars = pl.read_parquet(io.BytesIO(r.content))
    want = rows(store, "SELECT start_ms, close, volume FROM bars WHERE symbol='ethusdt' AND timeframe='5m' ORDER BY 1")
    assert bars.select("ts_ms", "close", "volume").rows() == want


# --- upload --------------------------------------------------------------------------

UPLOAD_HEADER = "symbol,timeframe,timestamp,open,high,low,close,volume\n"


def _upload(api: ApiServer, text: str, **params) -> object:
    files = {"file": ("bars.csv", text.encode(), "text/csv")}
    return api.client.post("/api/v1/upload/ohlc", files=files, params=params)


def test_upload_with_one_bad_row_is_rejected_whole_and_writes_nothing(api: ApiServer, store: StoreRef) -> None:
    before = rows(store, "SELECT COUNT(*) FROM bars")[0][0]
    text = UPLOAD_HEADER + (
        "adausdt,1m,2024-01-01T00:00:00Z,1.0,1.2,0.9,1.1,100\n"
        "adausdt,1m,1704067260000,1.1,1.0,0.9,1.05,100\n"  # high below open
        "adausdt,1m,2024-01-01T00:02:30Z,1.0,1.2,0.9,1.1,100\n"  # not aligned
        "ada-usdt,7m,2024-01-01T00:03:00Z,x,1.2,0.9,1.1,100\n"  # symbol, timeframe, open
    )
    r = _upload(api, text)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail["bad_rows"] == 3
    by_row = {e["row"]: " ".join(e["errors"]) for e in detail["errors"]}
    assert set(by_row) == {2, 3, 4}
    assert "high" in by_row[2]
    assert "aligned" in by_row[3]
    assert "symbol" in by_row[4] and "timeframe" in by_row[4] and "open" in by_row[4]
    assert rows(store, "SELECT COUNT(*) FROM bars")[0][0] == before
    assert rows(store, "SELECT COUNT(*) FROM bars WHERE symbol='adausdt'")[0][0] == 0


def test_upload_of_good_bars_is_stored_as_uploaded(api: ApiServer, store: StoreRef) -> None:
    text = UPLOAD_HEADER + "".join(
        f"XRPUSDT,1m,{1704067200000 + i * 60_000},{0.5 + i / 100},{0.6 + i / 100},{0.4 + i / 100},{0.55 + i / 100},{10 * i}\n"
        for i in range(30)
    )
    r = _upload(api, text)
    assert r.status_code == 200, r.text
    assert r.json() | {} == {
        "rows": 30,
        "inserted": 30,
        "replaced": 0,
        "skipped": 0,
        "symbols": ["xrpusdt"],
        "timeframes": ["1m"],
    }
    stored = rows(store, "SELECT start_ms, open, close, origin, closed FROM bars WHERE symbol='xrpusdt' ORDER BY 1")
    assert len(stored) == 30 and {s[3] for s in stored} == {"upload"} and {s[4] for s in stored} == {1}
    assert stored[3][1] == pytest.approx(0.53) and stored[3][2] == pytest.approx(0.58)
    bars = api.client.get("/api/v1/ohlc/xrpusdt", params={"limit": 5}).json()["bars"]
    assert [b["origin"] for b in bars] == ["upload"] * 5 and bars[-1]["time"] == "2024-01-01T00:29:00.000Z"
    again = _upload(api, text).json()
    assert (again["inserted"], again["replaced"]) == (0, 30)


def test_upload_over_the_size_limit_is_413(api: ApiServer) -> None:
    big = UPLOAD_HEADER + "x" * (21 * 1024 * 1024)
    assert _upload(api, big).status_code == 413


# --- collection control: a real flow process -----------------------------------------


@pytest.fixture(params=BACKENDS)
def control(request, tmp_path: Path) -> ApiServer:
    """An API over an empty store whose configured source replays in real time (speed 1); `.store` is the store."""
    ref = new_store(request.param, tmp_path)
    config = write_config(
        tmp_path,
        symbols=["btcusdt"],
        source={"kind": "replay", "paths": [str(p) for p in WINDOW_A], "speed": 1},
        store=ref.config(),
        progress_interval_s=0.3,
    )
    server = ApiServer(config, tmp_path / "uvicorn.log")
    server.store = ref  # type: ignore[attr-defined]
    yield server
    if server.proc.poll() is None:
        server.client.post("/api/v1/stop")
    server.stop()


def _flow_pid(control: ApiServer) -> int | None:
    return control.client.get("/api/v1/status").json()["pid"]


def test_start_stop_status_drive_a_real_flow(control: ApiServer, tmp_path: Path) -> None:
    c = control.client
    store = control.store
    assert c.get("/api/v1/status").json()["running"] is False
    assert c.get("/api/v1/ticks/btcusdt").json()["status"] == "no_data"
    assert c.post("/api/v1/stop").json()["changed"] is False  # stopping when stopped: a clear no-op

    r = c.post("/api/v1/start", json={"symbols": ["ETHUSDT"]}).json()
    assert r["changed"] is True and r["symbols"] == ["btcusdt", "ethusdt"]
    pid = r["pid"]
    # Read as soon as the API answers, the child may not have exec'd yet (an empty cmdline).
    wait_until(lambda: "flows.runner" in " ".join(psutil.Process(pid).cmdline()), 60, "the flow's command line")
    again = c.post("/api/v1/start", json={"symbols": ["ethusdt"]}).json()
    assert again["changed"] is False and again["pid"] == pid
    assert [p for p in psutil.process_iter(["cmdline"]) if "flows.runner" in " ".join(p.info["cmdline"] or [])
            and str(tmp_path) in str(p.environ().get("TICKLENS_CONFIG", ""))] != []  # fmt: skip

    try:
        status = wait_until(
            lambda: (s := c.get("/api/v1/status").json())["running"] and s["trades_total"] > 0 and s,
            120,
            "trades stored",
        )
    except AssertionError as e:
        log = (tmp_path / "ticklens.flow.log").read_text()[-2000:]
        raise AssertionError(f"{e}; status {c.get('/api/v1/status').text[:600]}; flow log: {log}") from None
    assert status["pid"] == pid and status["started_by"] == "api" and status["uptime_s"] > 0
    assert {s["symbol"] for s in status["per_symbol"]} == {"btcusdt", "ethusdt"}
    bars = wait_until(lambda: c.get("/api/v1/ohlc/ethusdt", params={"timeframe": "1m"}).json()["bars"], 60, "eth bars")
    assert bars[-1]["in_progress"] is True  # at speed 1 the current minute is still open

    stopped = c.post("/api/v1/stop").json()
    assert stopped["changed"] is True and stopped["pid"] == pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert c.get("/api/v1/status").json()["running"] is False
    # what the flow stored before it stopped is there and served
    n = rows(store, "SELECT COUNT(*) FROM ticks WHERE symbol='ethusdt'")[0][0]
    assert n > 0
    assert c.get("/api/v1/ticks/ethusdt", params={"limit": 100_000}).json()["count"] == n
    assert c.post("/api/v1/stop").json()["changed"] is False


def test_a_restarted_api_finds_the_flow_it_started(control: ApiServer, tmp_path: Path) -> None:
    pid = control.client.post("/api/v1/start", json={}).json()["pid"]
    control.stop()
    second = ApiServer(control.config, tmp_path / "uvicorn2.log")
    try:
        s = second.client.get("/api/v1/status").json()
        assert s["running"] is True and s["pid"] == pid
        assert second.client.post("/api/v1/start", json={}).json()["changed"] is False
        assert second.client.post("/api/v1/stop").json()["changed"] is True
        wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10,
                   "the flow to exit")  # fmt: skip
    finally:
        second.stop()
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


def test_upload_never_overwrites_collected_bars_unless_asked(control: ApiServer, tmp_path: Path) -> None:
    c = control.client
    store = control.store
    c.post("/api/v1/start", json={})
    wait_until(lambda: c.get("/api/v1/ohlc/btcusdt", params={"timeframe": "1s"}).json()["count"] > 0, 120, "a 1s bar")
    c.post("/api/v1/stop")
    start, close = rows(store, "SELECT start_ms, close FROM bars WHERE symbol='btcusdt' AND timeframe='1s' LIMIT 1")[0]
    line = f"btcusdt,1s,{iso_ms(start)},1000,1000,1000,1000,1\n"
    r = _upload(control, UPLOAD_HEADER + line).json()
    assert (r["inserted"], r["replaced"], r["skipped"]) == (0, 0, 1)
    assert rows(store, "SELECT close, origin FROM bars WHERE symbol='btcusdt' AND timeframe='1s' AND start_ms=?",
                (start,)) == [(close, "flow")]  # fmt: skip
    r = _upload(control, UPLOAD_HEADER + line, overwrite="true").json()
    assert (r["inserted"], r["replaced"], r["skipped"]) == (0, 1, 0)
    assert rows(store, "SELECT close, origin FROM bars WHERE symbol='btcusdt' AND timeframe='1s' AND start_ms=?",
                (start,)) == [(1000.0, "upload")]  # fmt: skip


def _trade_ids_in(paths: list[Path]) -> set[tuple[str, int]]:
    """(symbol, trade id) of every @trade line in the recordings, read here with gzip + json."""
    out = set()
    for p in paths:
        with gzip.open(p, "rt") as fh:
            for line in fh:
                msg = json.loads(line.split(" ", 1)[1])["data"]
                if msg.get("e") == "trade":
                    out.add((msg["s"].lower(), int(msg["t"])))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_then_start_loses_nothing(tmp_path: Path, backend: str) -> None:
    store = new_store(backend, tmp_path)
    config = write_config(
        tmp_path,
        source={"kind": "replay", "paths": [str(p) for p in WINDOW_A], "speed": 80},
        store=store.config(),
        recovery={"snapshot_interval_s": 0.5},
        progress_interval_s=0.3,
    )
    with api_server(config, tmp_path / "uvicorn.log") as server:
        c = server.client
        assert c.post("/api/v1/start", json={}).json()["changed"] is True
        wait_until(lambda: c.get("/api/v1/status").json()["trades_total"] > 500, 120, "the first trades")
        stopped = c.post("/api/v1/stop").json()
        assert stopped["changed"] is True
        part = rows(store, "SELECT COUNT(*) FROM ticks")[0][0]
        assert c.post("/api/v1/start", json={}).json()["changed"] is True  # resumes from the recovery snapshot
        wait_until(lambda: not c.get("/api/v1/status").json()["running"], 120, "the replay to finish")
    stored = set(rows(store, "SELECT symbol, trade_id FROM ticks"))
    assert 0 < part < len(stored)
    assert stored == _trade_ids_in(WINDOW_A)
