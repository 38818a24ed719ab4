"""The original design's API (`../shared/seed/seed-api.md`) on its original paths, driven as its dashboard does.

A real uvicorn over a store filled by the real flow. Every call is made with the
parameters the original clients send, and every field they read is read the
way they read it: symbols joined with ", ", numbers formatted with `:,.2f`,
timestamps parsed by pandas `to_datetime(format="ISO8601")`. Expected values
come from the store read with SQL and recomputed here (numpy, pandas,
statsmodels), never from ticklens code.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from api_support import ApiServer, api_server, rows, wait_until
from feed_support import Feed
from feed_support import write_config as feed_config
from flow_support import WINDOW_A, WINDOW_B, run_flow, write_config

TICKS = "SELECT ts_ms, price, qty FROM ticks WHERE symbol=? ORDER BY trade_id"


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("compat_store")
    config = write_config(tmp, symbols=["btcusdt", "ethusdt", "solusdt"])
    done = run_flow(config, "--no-recovery")
    assert done.returncode == 0, done.stderr[-3000:]
    return config, tmp / "ticklens.db"


@pytest.fixture(scope="module")
def api(filled, tmp_path_factory) -> ApiServer:
    with api_server(filled[0], tmp_path_factory.mktemp("compat_log") / "uvicorn.log") as server:
        yield server


@pytest.fixture(scope="module")
def store(filled) -> Path:
    return filled[1]


# --- how the original dashboard reads an answer ----------------------------------------------


def fmt(value: object) -> str:
    """The dashboard's number format: fails on None or a string, as it would."""
    return f"{value:,.2f}"


def when(text: str) -> pd.Timestamp:
    return pd.to_datetime(text, format="ISO8601")


def times(items: list[dict], key: str = "timestamp") -> pd.Series:
    return pd.to_datetime(pd.Series([i[key] for i in items]), format="ISO8601", utc=True)


def ms(items: list[dict], key: str = "timestamp") -> list[int]:
    return times(items, key).dt.as_unit("ms").astype("int64").tolist()


def get(api: ApiServer, path: str, **params: object) -> dict:
    r = api.client.get(path, params=params)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
    return r.json()


# --- the calls of every render: /health, /api/status, /api/symbols -------------------------


def test_every_render_polls_health_status_and_symbols(api: ApiServer, store: Path) -> None:
    health = get(api, "/health")
    assert health["status"] == "healthy" and health["collecting"] is False
    assert abs(when(health["timestamp"]).timestamp() - pd.Timestamp.now(tz="UTC").timestamp()) < 60
    status = get(api, "/api/status")
    assert status == {"is_collecting": False, "active_symbols": [], "connections": 0, "uptime": None}
    symbols = get(api, "/api/symbols")["symbols"]
    stored = sorted({r[0] for r in rows(store, "SELECT DISTINCT symbol FROM ticks")})
    assert symbols == stored == ["btcusdt", "ethusdt"]
    assert ", ".join(symbols) == "btcusdt, ethusdt"  # the first render's crash on main


# --- market data -----------------------------------------------------------------------------


def test_ticks_are_the_newest_oldest_first_with_size(api: ApiServer, store: Path) -> None:
    body = get(api, "/api/ticks/btcusdt", limit=250)
    want = rows(store, TICKS, ("btcusdt",))[-250:]
    assert body["symbol"] == "btcusdt" and body["count"] == 250
    assert ms(body["data"]) == [w[0] for w in want]
    assert [(d["price"], d["size"]) for d in body["data"]] == [(w[1], w[2]) for w in want]
    assert {d["symbol"] for d in body["data"]} == {"btcusdt"}
    assert len(get(api, "/api/ticks/ethusdt")["data"]) == 100  # the default limit


@pytest.mark.parametrize("timeframe", ["1s", "1m", "5m"])
def test_ohlc_rows_are_the_stored_bars(api: ApiServer, store: Path, timeframe: str) -> None:
    body = get(api, "/api/ohlc/ethusdt", timeframe=timeframe, limit=1000)
    want = rows(
        store,
        "SELECT start_ms, open, high, low, close, volume FROM bars WHERE symbol='ethusdt' AND timeframe=?"
        " ORDER BY start_ms",
        (timeframe,),
    )[-1000:]
    assert (body["symbol"], body["timeframe"], body["count"]) == ("ethusdt", timeframe, len(want))
    data = body["data"]
    assert ms(data) == [w[0] for w in want]
    assert [(d["open"], d["high"], d["low"], d["close"], d["volume"]) for d in data] == [w[1:] for w in want]
    assert {(d["symbol"], d["timeframe"]) for d in data} == {("ethusdt", timeframe)}
    df = pd.DataFrame(data)
    df["timestamp"] = pd.to_datetime(df["timestamp"], format="ISO8601")  # what the chart does
    assert df["timestamp"].is_monotonic_increasing


@pytest.mark.parametrize("window", [1, 60, 100, 5000])
def test_stats_are_over_the_newest_window_of_ticks(api: ApiServer, store: Path, window: int) -> None:
    body = get(api, "/api/stats/btcusdt", window=window)
    t = np.array(rows(store, TICKS, ("btcusdt",))[-window:])
    p, q = t[:, 1], t[:, 2]
    assert body["symbol"] == "btcusdt" and body["count"] == len(t)
    for key in ("last_price", "mean", "std", "min", "max", "volume", "vwap"):
        fmt(body[key])
    assert body["last_price"] == p[-1] and body["min"] == p.min() and body["max"] == p.max()
    assert math.isclose(body["mean"], p.mean(), rel_tol=1e-12)
    assert math.isclose(body["std"], p.std(ddof=1) if len(p) > 1 else 0.0, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(body["volume"], q.sum(), rel_tol=1e-12)
    assert math.isclose(body["vwap"], (p * q).sum() / q.sum(), rel_tol=1e-12)


def test_stats_without_data_is_the_error_answer(api: ApiServer) -> None:
    body = get(api, "/api/stats/solusdt")  # configured, nothing stored
    assert body["error"] == "No data available"


def test_timeseries_adds_returns_volatility_and_range_in_percent(api: ApiServer, store: Path) -> None:
    body = get(api, "/api/timeseries/btcusdt", timeframe="1s", limit=120)
    bars = pd.DataFrame(
        rows(store, "SELECT start_ms, open, high, low, close, volume FROM bars WHERE symbol='btcusdt'"
                    " AND timeframe='1s' ORDER BY start_ms"),
        columns=["start_ms", "open", "high", "low", "close", "volume"],
    )  # fmt: skip
    bars["returns"] = bars["close"].pct_change() * 100
    bars["volatility"] = bars["returns"].rolling(20).std()
    bars["range_pct"] = (bars["high"] - bars["low"]) / bars["close"] * 100
    want = bars.tail(120)
    got = pd.DataFrame(body["data"])
    assert ms(body["data"]) == want["start_ms"].tolist()
    for col in ("returns", "volatility", "range_pct"):
        assert np.allclose(got[col].astype(float), want[col], rtol=1e-9, atol=1e-12), col


# --- analytics -------------------------------------------------------------------------------


def aligned_ticks(store: Path, a: str, b: str) -> pd.DataFrame:
    """Both legs on their merged trade times: each leg's last price at or before every millisecond
    in which either traded (pandas merge_asof over every stored trade)."""
    legs = []
    for s in (a, b):
        t = pd.DataFrame(rows(store, TICKS, (s,)), columns=["ts_ms", "price", "qty"])
        legs.append(t.groupby("ts_ms", sort=True)["price"].last().rename(s).reset_index())
    grid = pd.DataFrame({"ts_ms": np.union1d(legs[0]["ts_ms"], legs[1]["ts_ms"])})
    for leg in legs:
        grid = pd.merge_asof(grid, leg, on="ts_ms", direction="backward")
    return grid.dropna().reset_index(drop=True)


def ols(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    import statsmodels.api as sm

    alpha, beta = sm.OLS(y, sm.add_constant(x)).fit().params
    return float(beta), float(alpha)


def reference_z(y: np.ndarray, x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rolling OLS over `window` points (spread of the newest point of each fit), and the z-score of
    each spread against the `window` spreads before it (no look-ahead). A window in which x did not
    move has no fit and no spread; the z-score's window holds the last `window` spreads there are.
    Returns (beta, spread, z)."""
    n = len(y)
    beta, spread, z = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    defined: list[float] = []
    for t in range(window - 1, n):
        xs, ys = x[t - window + 1 : t + 1], y[t - window + 1 : t + 1]
        if np.ptp(xs) == 0:
            continue
        xc, yc = xs - xs.mean(), ys - ys.mean()  # centred: no cancellation at 60 000
        beta[t] = (xc @ yc) / (xc @ xc)
        spread[t] = (y[t] - ys.mean()) - beta[t] * (x[t] - xs.mean())
        if len(defined) >= window:
            past = np.array(defined[-window:])
            sd = past.std(ddof=1)
            if sd > 0:
                z[t] = (spread[t] - past.mean()) / sd
        defined.append(spread[t])
    return beta, spread, z


def test_spread_is_the_rolling_ols_of_the_newest_ticks(api: ApiServer, store: Path) -> None:
    window = 40
    body = get(api, "/api/spread", symbols="btcusdt,ethusdt", window=window)
    assert "error" not in body, body
    al = aligned_ticks(store, "btcusdt", "ethusdt").tail(2 * window + 49)
    y, x = al["btcusdt"].to_numpy(), al["ethusdt"].to_numpy()
    beta_now, alpha_now = ols(y[-window:], x[-window:])  # the hedge ratio: OLS over the newest window (statsmodels)
    _, spread, z = reference_z(y, x, window)
    assert body["symbol1"] == "btcusdt" and body["symbol2"] == "ethusdt" and body["method"] == "ols"
    for key in ("hedge_ratio", "current_spread", "z_score", "spread_mean", "spread_std"):
        fmt(body[key])
    assert math.isclose(body["hedge_ratio"], beta_now, rel_tol=1e-6)
    assert math.isclose(body["current_spread"], y[-1] - beta_now * x[-1] - alpha_now, rel_tol=1e-6, abs_tol=1e-6)
    past = spread[~np.isnan(spread)][-window - 1 : -1]
    assert math.isclose(body["spread_mean"], past.mean(), rel_tol=1e-6, abs_tol=1e-7)
    assert math.isclose(body["spread_std"], past.std(ddof=1), rel_tol=1e-6)
    assert math.isclose(body["z_score"], z[-1], rel_tol=1e-6, abs_tol=1e-7)
    assert body["data_points"] == 2 * window + 49
    series = body["spread_series"]
    assert len(series) == 50 and ms(series) == al["ts_ms"].tail(50).tolist()
    assert np.allclose([s["z_score"] for s in series], z[-50:], rtol=1e-6, atol=1e-7)
    assert np.allclose([s["spread"] for s in series], spread[-50:], rtol=1e-6, atol=1e-6)
    # Half-life: AR(1) of the newest window's residuals, ds = c + b s_{t-1}, -ln 2 / ln(1 + b).
    res = (y[-window:] - y[-window:].mean()) - beta_now * (x[-window:] - x[-window:].mean())
    b = np.polyfit(res[:-1], np.diff(res), 1)[0]
    assert body["half_life"] == pytest.approx(-math.log(2) / math.log1p(b), rel=1e-6) if -1 < b < 0 else None


def test_spread_with_kalman_gives_numbers_the_dashboard_formats(api: ApiServer) -> None:
    body = get(api, "/api/spread", symbols="btcusdt,ethusdt", window=50, method="kalman")
    assert "error" not in body, body
    assert body["method"] == "kalman" and len(body["spread_series"]) == 50
    for key in ("hedge_ratio", "current_spread", "z_score", "spread_mean", "spread_std"):
        fmt(body[key])


def test_spread_with_too_little_data_is_the_error_answer(api: ApiServer, store: Path) -> None:
    n = len(aligned_ticks(store, "btcusdt", "ethusdt"))
    body = get(api, "/api/spread", symbols="btcusdt,ethusdt", window=n)  # 2 × window points needed
    assert "error" in body and "hedge_ratio" not in body


def test_adf_is_engle_granger_on_the_newest_spread(api: ApiServer, store: Path) -> None:
    from statsmodels.tsa.stattools import coint

    r = api.client.post("/api/analytics/adf", params={"symbols": "btcusdt,ethusdt"})
    assert r.status_code == 200, r.text
    body = r.json()
    al = aligned_ticks(store, "btcusdt", "ethusdt").tail(100)  # the window: 100 ticks, as /api/spread
    stat, p, crit = coint(al["btcusdt"], al["ethusdt"], trend="c", maxlag=10, autolag=None)
    assert body["symbol1"] == "btcusdt" and body["symbol2"] == "ethusdt"
    assert body["adf_statistic"] == pytest.approx(stat, rel=1e-6)
    assert body["p_value"] == pytest.approx(p, rel=1e-4)
    assert [body["critical_values"][k] for k in ("1%", "5%", "10%")] == pytest.approx(list(crit), rel=1e-4)
    assert body["n_lags"] == 10 and body["n_obs"] == 100 - 1 - 10
    assert body["is_cointegrated"] is (p < 0.05)
    assert body["interpretation"] == ("Cointegrated" if p < 0.05 else "Not cointegrated")
    few = api.client.post("/api/analytics/adf", params={"symbols": "btcusdt,ethusdt", "window": 20}).json()
    assert "error" in few  # fewer than 30 spread points


def closes_on_a_grid(store: Path, syms: list[str], tf: str, tf_ms: int) -> pd.DataFrame:
    """Closed bars on a full grid of bar starts, a silent leg's close carried forward."""
    frames = []
    for s in syms:
        r = rows(store, "SELECT start_ms, close FROM bars WHERE symbol=? AND timeframe=? AND closed=1", (s, tf))
        frames.append(pd.DataFrame(r, columns=["start_ms", s]).set_index("start_ms"))
    lo = min(int(f.index.min()) for f in frames)
    hi = max(int(f.index.max()) for f in frames)
    grid = pd.DataFrame(index=pd.RangeIndex(lo, hi + 1, tf_ms, name="start_ms"))
    for f in frames:
        grid = grid.join(f)
    first = max(int(f.index.min()) for f in frames)
    return grid.ffill().loc[first:]


@pytest.mark.parametrize(("timeframe", "tf_ms", "window"), [("1m", 60_000, 60), ("1s", 1000, 60)])
def test_correlation_of_log_returns_shrinks_its_window_to_the_bars_there_are(
    api: ApiServer, store: Path, timeframe: str, tf_ms: int, window: int
) -> None:
    body = get(api, "/api/correlation", symbols="btcusdt,ethusdt", window=window, timeframe=timeframe)
    g = closes_on_a_grid(store, ["btcusdt", "ethusdt"], timeframe, tf_ms)
    w = min(window, len(g) - 1)
    rets = np.log(g).diff()
    ref = rets["btcusdt"].rolling(w).corr(rets["ethusdt"]).dropna()
    assert body["symbols"] == ["btcusdt", "ethusdt"] and body["window"] == w
    series = body["rolling_correlations"]["btcusdt_ethusdt"]
    assert ms(series) == ref.index[-50:].tolist()
    assert np.allclose([s["correlation"] for s in series], ref.to_numpy()[-50:], rtol=1e-9)
    m = body["correlation_matrix"]
    assert m["btcusdt"]["btcusdt"] == 1.0 == m["ethusdt"]["ethusdt"]
    assert m["btcusdt"]["ethusdt"] == m["ethusdt"]["btcusdt"] == pytest.approx(ref.iloc[-1], rel=1e-9)
    assert when(body["timestamp"]).value // 1_000_000 == ref.index[-1]


def reference_backtest(z: np.ndarray, beta: np.ndarray, a: np.ndarray, b: np.ndarray, entry: float, exit_: float):
    """Short the spread at z >= entry, long at z <= -entry; out once z is back past -/+exit; beta fixed at entry."""
    trades, pos = [], None
    for t in range(len(z)):
        if np.isnan(z[t]):
            continue
        if pos is not None and ((pos["sign"] < 0 and z[t] <= exit_) or (pos["sign"] > 0 and z[t] >= -exit_)):
            pnl = pos["sign"] * ((a[t] - pos["a"]) - pos["beta"] * (b[t] - pos["b"]))
            trades.append({"entry": pos["t"], "exit": t, "pnl": pnl, "type": "short" if pos["sign"] < 0 else "long"})
            pos = None
        elif pos is None and abs(z[t]) >= entry:
            pos = {"t": t, "sign": -1.0 if z[t] > 0 else 1.0, "a": a[t], "b": b[t], "beta": beta[t]}
    return trades


def test_backtest_trades_the_tick_z_score(api: ApiServer, store: Path) -> None:
    window, limit = 40, 1500
    body = get(api, "/api/backtest", symbols="btcusdt,ethusdt", window=window, limit=limit)
    assert "error" not in body, body
    # The API reads the newest `limit` trades of each symbol; so does this reference.
    legs = {}
    for s in ("btcusdt", "ethusdt"):
        t = pd.DataFrame(rows(store, TICKS, (s,))[-limit:], columns=["ts_ms", "price", "qty"])
        legs[s] = t.groupby("ts_ms", sort=True)["price"].last().rename(s).reset_index()
    grid = pd.DataFrame({"ts_ms": np.union1d(legs["btcusdt"]["ts_ms"], legs["ethusdt"]["ts_ms"])})
    for leg in legs.values():
        grid = pd.merge_asof(grid, leg, on="ts_ms", direction="backward")
    al = grid.dropna().reset_index(drop=True)
    y, x = al["btcusdt"].to_numpy(), al["ethusdt"].to_numpy()
    beta, spread, z = reference_z(y, x, window)
    ref = reference_backtest(z, beta, y, x, 2.0, 0.0)
    assert len(ref) > 3
    pnls = np.array([t["pnl"] for t in ref])
    assert body["total_trades"] == len(ref) and body["winning_trades"] == int((pnls > 0).sum())
    assert body["win_rate"] == pytest.approx(100 * (pnls > 0).mean())
    assert body["total_pnl"] == pytest.approx(pnls.sum(), rel=1e-6, abs=1e-6)
    assert body["avg_pnl"] == pytest.approx(pnls.mean(), rel=1e-6, abs=1e-6)
    assert body["max_win"] == pytest.approx(pnls.max(), rel=1e-6) and body["max_loss"] == pytest.approx(pnls.min())
    for key in ("win_rate", "total_pnl", "avg_pnl", "sharpe", "max_win", "max_loss"):
        fmt(body[key])
    last10 = ref[-10:]
    got = body["trades"]
    assert [t["type"] for t in got] == [t["type"] for t in last10]
    assert ms(got, "entry_time") == [int(al["ts_ms"][t["entry"]]) for t in last10]
    assert ms(got, "exit_time") == [int(al["ts_ms"][t["exit"]]) for t in last10]
    assert [t["pnl"] for t in got] == pytest.approx([t["pnl"] for t in last10], rel=1e-6, abs=1e-6)
    assert [t["entry_z"] for t in got] == pytest.approx([z[t["entry"]] for t in last10], rel=1e-6)
    assert [t["entry_spread"] for t in got] == pytest.approx([spread[t["entry"]] for t in last10], rel=1e-6, abs=1e-6)
    none = get(api, "/api/backtest", symbols="btcusdt,ethusdt", limit=10)  # too few ticks for a z-score
    assert none["error"] == "No completed trades"


# --- export and upload -----------------------------------------------------------------------


def test_export_csv_and_json_are_the_ohlc_rows(api: ApiServer, store: Path) -> None:
    want = rows(
        store,
        "SELECT start_ms, open, high, low, close, volume FROM bars WHERE symbol='btcusdt' AND timeframe='1m'"
        " ORDER BY start_ms",
    )
    r = api.client.get("/api/export/btcusdt", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="btcusdt_1m.csv"' in r.headers["content-disposition"]
    df = pd.read_csv(io.BytesIO(r.content))
    assert list(df.columns) == ["symbol", "timeframe", "timestamp", "open", "high", "low", "close", "volume"]
    stamps = pd.to_datetime(df["timestamp"], format="ISO8601").dt.as_unit("ms").astype("int64")
    assert stamps.tolist() == [w[0] for w in want]
    assert df[["open", "high", "low", "close", "volume"]].to_numpy().tolist() == [list(w[1:]) for w in want]
    data = get(api, "/api/export/btcusdt", format="json")["data"]
    assert ms(data) == [w[0] for w in want]
    assert [(d["open"], d["close"], d["volume"]) for d in data] == [(w[1], w[4], w[5]) for w in want]


def test_upload_of_1m_bars_without_a_timeframe_column(api: ApiServer, store: Path) -> None:
    text = "symbol,timestamp,open,high,low,close,volume\n" + "".join(
        f"ADAUSDT,2024-01-01 00:{i:02d}:00,{0.5 + i / 100},{0.6 + i / 100},{0.4 + i / 100},{0.55 + i / 100},{10 * i}\n"
        for i in range(12)
    )
    r = api.client.post("/api/upload/ohlc", files={"file": ("bars.csv", text.encode(), "text/csv")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["rows"], body["symbols"]) == ("success", 12, ["adausdt"])
    stored = rows(store, "SELECT timeframe, start_ms, close FROM bars WHERE symbol='adausdt' ORDER BY start_ms")
    assert [s[0] for s in stored] == ["1m"] * 12 and stored[3][2] == pytest.approx(0.58)
    assert [d["close"] for d in get(api, "/api/ohlc/adausdt", limit=12)["data"]] == [s[2] for s in stored]
    bad = api.client.post(
        "/api/upload/ohlc", files={"file": ("b.csv", b"symbol,timestamp,open,high,low,close,volume\nx,1,a,1,1,1,1\n")}
    )
    assert bad.status_code == 422 and bad.json()["detail"]["bad_rows"] == 1


# --- invalid input: a 4xx naming the problem --------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "params", "status", "words"),
    [
        ("GET", "/api/spread", {"symbols": "btcusdt"}, 422, "symbols"),
        ("GET", "/api/spread", {"symbols": "btcusdt,ethusdt", "method": "pca"}, 422, "method"),
        ("GET", "/api/ohlc/btcusdt", {"timeframe": "2m"}, 422, "timeframe"),
        ("GET", "/api/ticks/btcusdt", {"limit": 0}, 422, "limit"),
        ("GET", "/api/stats/btcusdt", {"window": "many"}, 422, "window"),
        ("GET", "/api/ticks/dogeusdt", {}, 404, "dogeusdt"),
        ("GET", "/api/correlation", {"symbols": "btcusdt,dogeusdt"}, 404, "dogeusdt"),
        ("GET", "/api/backtest", {"symbols": "btcusdt,ethusdt", "entry_z": 1, "exit_z": 2}, 422, "exit_z"),
        ("POST", "/api/analytics/adf", {"symbols": "btcusdt,ethusdt", "max_lag": 95}, 422, "max_lag"),
        ("GET", "/api/export/btcusdt", {"format": "xlsx"}, 422, "format"),
        ("DELETE", "/api/alerts/987654", {}, 404, "987654"),
        ("DELETE", "/api/alerts/abc", {}, 404, "abc"),
    ],
)
def test_invalid_input_is_a_4xx_naming_the_problem(
    api: ApiServer, method: str, path: str, params: dict, status: int, words: str
) -> None:
    r = api.client.request(method, path, params=params)
    assert r.status_code == status, r.text
    assert words in r.text


def test_openapi_documents_the_original_api_under_its_own_tag_with_the_v1_counterpart(api: ApiServer) -> None:
    spec = api.client.get("/openapi.json").json()
    tag = "original API (compatible)"
    assert tag in {t["name"] for t in spec["tags"]}
    ops = {(p, m): op for p, item in spec["paths"].items() for m, op in item.items()}
    ours = {k: op for k, op in ops.items() if tag in op.get("tags", [])}
    expected = {
        ("/health", "get"), ("/api/start", "post"), ("/api/stop", "post"), ("/api/status", "get"),
        ("/api/symbols", "get"), ("/api/ticks/{symbol}", "get"), ("/api/ohlc/{symbol}", "get"),
        ("/api/stats/{symbol}", "get"), ("/api/spread", "get"), ("/api/analytics/adf", "post"),
        ("/api/correlation", "get"), ("/api/backtest", "get"), ("/api/alerts", "post"), ("/api/alerts", "get"),
        ("/api/alerts/{alert_id}", "delete"), ("/api/alerts/triggered", "get"), ("/api/export/{symbol}", "get"),
        ("/api/upload/ohlc", "post"), ("/api/timeseries/{symbol}", "get"),
    }  # fmt: skip
    assert set(ours) == expected
    for (path, method), op in ours.items():
        v1 = re.search(r"Richer answer:\*\* `([^`]+)`", op["description"])
        assert v1, (path, method)
        assert v1.group(1) in spec["paths"], (path, v1.group(1))


# --- alerts: the original dashboard's rules, fired by a real flow -----------------------------


def reference_level_fires(values: np.ndarray, threshold: float) -> list[int]:
    """'price > threshold': fires when it becomes true, again only after it was false."""
    out, armed = [], True
    for i, v in enumerate(values):
        if armed and v > threshold:
            out.append(i)
            armed = False
        elif not armed and v <= threshold:
            armed = True
    return out


def test_a_rule_over_every_symbol_is_one_rule_with_one_trigger_count(tmp_path: Path) -> None:
    config = write_config(tmp_path, source={"paths": [str(p) for p in WINDOW_B]}, timeframes=["1s"])
    db = tmp_path / "ticklens.db"
    with api_server(config, tmp_path / "uvicorn.log") as api:
        c = api.client
        level = (
            2681.39  # ETH's median on 2024-08-08 (it crosses it often); BTC (≈ 61 700) is above from its first trade
        )
        created = c.post(
            "/api/alerts",
            json={"name": "above", "condition": f"price > {level}", "symbols": ["btcusdt", "ethusdt"], "enabled": True},
        )
        assert created.status_code == 200, created.text
        assert created.json()["status"] == "created" and isinstance(created.json()["alert_id"], str)
        bad = c.post("/api/alerts", json={"name": "x", "condition": "price >> 1", "symbols": ["btcusdt"]})
        assert bad.status_code == 422 and "condition" in bad.text
        unknown = c.post("/api/alerts", json={"name": "x", "condition": "price > 1", "symbols": ["xyzusdt"]})
        assert unknown.status_code == 422 and "xyzusdt" in unknown.text and "btcusdt, ethusdt" in unknown.text
        done = run_flow(config, "--no-recovery")
        assert done.returncode == 0, done.stderr[-3000:]
        listed = c.get("/api/alerts").json()["alerts"]
        assert len(listed) == 1  # one rule, not one per symbol
        rule = listed[0]
        assert rule["id"] == created.json()["alert_id"] and rule["name"] == "above"
        assert rule["condition"] == f"price > {level}" and rule["symbols"] == ["btcusdt", "ethusdt"]
        assert rule["enabled"] is True and when(rule["created_at"]).year >= 2024
        # Each symbol watched on its own: the reference fires per symbol over its stored trades in id order.
        expected = {}
        for sym in ("btcusdt", "ethusdt"):
            t = np.array(rows(db, "SELECT ts_ms, price FROM ticks WHERE symbol=? ORDER BY trade_id", (sym,)))
            expected[sym] = [(int(t[i, 0]), float(t[i, 1])) for i in reference_level_fires(t[:, 1], level)]
        assert len(expected["btcusdt"]) == 1 and len(expected["ethusdt"]) > 3
        assert rule["trigger_count"] == sum(len(v) for v in expected.values())
        hist = c.get("/api/alerts/triggered", params={"limit": 1000}).json()["alerts"]
        assert len(hist) == rule["trigger_count"]
        assert ms(hist) == sorted(ms(hist), reverse=True)  # newest first
        for sym in ("btcusdt", "ethusdt"):
            got = sorted((m, h["price"]) for m, h in zip(ms(hist), hist, strict=True) if h["symbol"] == sym)
            assert got == expected[sym], sym
        assert {(h["rule_id"], h["rule_name"], h["condition"]) for h in hist} == {
            (rule["id"], "above", rule["condition"])
        }
        times(hist, "triggered_at")
        for h in hist[:3]:
            fmt(h["price"])
        assert c.delete(f"/api/alerts/{rule['id']}").json() == {"status": "deleted"}
        assert c.get("/api/alerts").json()["alerts"] == []
        assert c.delete(f"/api/alerts/{rule['id']}").status_code == 404


# --- collection control ----------------------------------------------------------------------


def test_start_status_stop_drive_a_real_flow(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        symbols=["btcusdt"],
        source={"kind": "replay", "paths": [str(p) for p in WINDOW_A], "speed": 1},
        progress_interval_s=0.3,
    )
    with api_server(config, tmp_path / "uvicorn.log") as api:
        c = api.client
        try:
            r = c.post("/api/start", json={"symbols": ["ETHUSDT"]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "started" and body["symbols"] == ["btcusdt", "ethusdt"] and body["message"]
            status = wait_until(
                lambda: (
                    (s := c.get("/api/status").json())["is_collecting"] and s["uptime"] not in (None, "0:00:00") and s
                ),
                30,
                "the flow to run a second",
            )
            assert status["active_symbols"] == ["btcusdt", "ethusdt"] and status["connections"] == 0  # a file replay
            assert re.fullmatch(r"\d+:\d\d:\d\d", status["uptime"])
            assert get(api, "/health")["collecting"] is True
            wait_until(lambda: get(api, "/api/symbols")["symbols"] == ["btcusdt", "ethusdt"], 120, "both stored")
        finally:
            stopped = c.post("/api/stop").json()
        assert stopped["status"] == "stopped" and stopped["message"]
        assert get(api, "/api/status") == {
            "is_collecting": False,
            "active_symbols": [],
            "connections": 0,
            "uptime": None,
        }
        assert get(api, "/health")["collecting"] is False


def test_status_counts_the_open_feed_connections(tmp_path: Path) -> None:
    feed = Feed(*(str(p) for p in WINDOW_B), "--speed", "1", "--loop")
    try:
        config = feed_config(tmp_path, feed.url, max_streams_per_connection=1)  # one connection per symbol
        with api_server(config, tmp_path / "uvicorn.log") as api:
            c = api.client
            try:
                assert c.post("/api/start", json={}).json()["status"] == "started"
                status = wait_until(
                    lambda: (s := c.get("/api/status").json())["connections"] == 2 and s, 120, "two connections"
                )
                assert status["is_collecting"] is True and status["active_symbols"] == ["btcusdt", "ethusdt"]
            finally:
                c.post("/api/stop")
            assert c.get("/api/status").json()["connections"] == 0
    finally:
        feed.stop()
