"""Pair and symbol analytics against independent oracles (statsmodels, numpy, polars).

Real data: the bundled BTC/ETH recordings, run through the real flow into a
SQLite store; the test aligns the stored 1s closes itself (numpy carry-forward)
and checks every statistic against statsmodels / numpy / polars computed here.
Synthetic data: a cointegrated pair with known beta.
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.tsa.adfvalues import mackinnonp
from statsmodels.tsa.stattools import adfuller, coint

from tests.flow_support import ROOT, query, run_flow, write_config
from ticklens.config import ConfigError, parse_config
from ticklens.domain.align import align_frames
from ticklens.domain.stats.backtest import backtest
from ticklens.domain.stats.pair import PairParams, pair_rows

W = 60  # pair window on the 1s bars of the sample (8 minutes: 480 bars)
ADF_EVERY = 5
CORR_W = 30
STATS_W = 20
RTOL = 1e-9


def close(actual, expected, rtol: float = RTOL, scale: float | None = None) -> None:
    """Relative agreement; `scale` adds an absolute floor rtol*scale for values that cross zero."""
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    atol = rtol * (scale if scale is not None else 0.0)
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real flow over the bundled BTC/ETH recordings, with a pair, a correlation set and stats."""
    tmp = tmp_path_factory.mktemp("analytics")
    cfg = write_config(
        tmp,
        timeframes=["1s", "1m"],
        source={"stream": "trade"},
        pairs=[{"legs": ["btcusdt", "ethusdt"], "window": W, "timeframes": ["1s"], "adf_every": ADF_EVERY}],
        correlation={"symbols": ["btcusdt", "ethusdt"], "window": CORR_W, "timeframe": "1s"},
        stats={"window": STATS_W, "timeframes": ["1s", "1m"]},
    )
    res = run_flow(cfg, "--no-recovery")
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp / "ticklens.db"


def oracle_aligned(db: Path, tf: str = "1s") -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Grid of starts with BTC/ETH closes carried forward, built with plain numpy (no ticklens code)."""
    tf_ms = {"1s": 1000, "1m": 60_000}[tf]
    raw = {}
    for s in ("btcusdt", "ethusdt"):
        rows = query(
            db, "SELECT start_ms, close, volume FROM bars WHERE symbol=? AND timeframe=? ORDER BY start_ms", (s, tf)
        )
        raw[s] = np.array(rows, dtype=float)
    first = max(int(r[0, 0]) for r in raw.values())
    last = max(int(r[-1, 0]) for r in raw.values())
    grid = np.arange(first, last + tf_ms, tf_ms, dtype=np.int64)
    closes, vols = {}, {}
    for s, r in raw.items():
        idx = np.searchsorted(r[:, 0], grid, side="right") - 1  # last bar at or before each start
        closes[s] = r[idx, 1]
        vols[s] = np.where(r[idx, 0] == grid, r[idx, 2], 0.0)
    return grid, closes, vols


@pytest.fixture(scope="module")
def real(flow_store: Path):
    grid, closes, _ = oracle_aligned(flow_store)
    return grid, closes["btcusdt"], closes["ethusdt"]


def synthetic_pair(n: int = 1500, beta: float = 1.7, alpha: float = 5.0, seed: int = 7):
    """x a random walk around 100; y = alpha + beta x + iid noise: cointegrated with known beta."""
    rng = np.random.default_rng(seed)
    x = 100.0 + np.cumsum(rng.normal(0, 0.5, n))
    y = alpha + beta * x + rng.normal(0, 0.3, n)
    starts = np.arange(n, dtype=np.int64) * 1000
    return starts, y, x


def datasets(real) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    s, y, x = synthetic_pair()
    return [("real", *real), ("synthetic", s, y, x)]


# --- each statistic against its oracle ---------------------------------------------------


def test_rolling_ols_hedge_ratio_and_spread_match_statsmodels(real) -> None:
    for name, starts, y, x in datasets(real):
        rows = pair_rows(starts, y, x, PairParams(window=W), coint="none")
        assert all(r.beta is None for r in rows[: W - 1]), name
        for i in range(W - 1, len(rows), 3):
            fit = sm.OLS(y[i - W + 1 : i + 1], sm.add_constant(x[i - W + 1 : i + 1])).fit()
            alpha, beta = fit.params
            r = rows[i]
            close(r.beta, beta)
            close(r.alpha, alpha)
            # The residual at t in centred form (y - alpha - beta x cancels ~64 000 against ~64 000).
            yw, xw = y[i - W + 1 : i + 1], x[i - W + 1 : i + 1]
            ref = (y[i] - yw.mean()) - beta * (x[i] - xw.mean())
            close(r.spread, ref, scale=np.std(fit.resid))


def test_log_price_hedge_ratio_matches_statsmodels(real) -> None:
    _, starts, y, x = datasets(real)[0]
    rows = pair_rows(starts, y, x, PairParams(window=W, log_prices=True), coint="none")
    for i in range(W - 1, len(rows), 11):
        fit = sm.OLS(np.log(y[i - W + 1 : i + 1]), sm.add_constant(np.log(x[i - W + 1 : i + 1]))).fit()
        close([rows[i].alpha, rows[i].beta], fit.params)


def test_zscore_uses_only_the_window_of_past_spreads(real) -> None:
    for name, starts, y, x in datasets(real):
        rows = pair_rows(starts, y, x, PairParams(window=W), coint="none")
        spreads = np.array([np.nan] * (W - 1) + [float(r.spread) for r in rows[W - 1 :]])
        assert all(r.zscore is None for r in rows[: 2 * W - 1]), name
        for i in range(2 * W - 1, len(rows)):
            past = spreads[i - W : i]  # the W spreads before bar i, not bar i itself
            m, s = past.mean(), past.std(ddof=1)
            close([rows[i].spread_mean, rows[i].spread_std], [m, s], scale=s)
            close(rows[i].zscore, (spreads[i] - m) / s, rtol=1e-8, scale=1.0)


def test_return_correlation_matches_numpy_and_polars(real) -> None:
    for name, starts, y, x in datasets(real):
        rows = pair_rows(starts, y, x, PairParams(window=W), coint="none")
        ry, rx = np.diff(np.log(y)), np.diff(np.log(x))
        pol = pl.DataFrame({"a": ry, "b": rx}).select(pl.rolling_corr("a", "b", window_size=W))["a"].to_numpy()
        for i in range(W, len(rows)):
            ref = np.corrcoef(ry[i - W : i], rx[i - W : i])[0, 1]
            close(rows[i].corr, ref, scale=1.0)
            close(rows[i].corr, pol[i - 1], rtol=1e-7, scale=1.0)  # polars' own sums are less exact
        assert all(r.corr is None for r in rows[:W]), name


def test_half_life_and_engle_granger_match_statsmodels(real) -> None:
    for name, starts, y, x in datasets(real):
        rows = pair_rows(starts, y, x, PairParams(window=W, adf_every=ADF_EVERY, adf_lags=1))
        checked = 0
        for i in range(W - 1, len(rows), ADF_EVERY):
            r = rows[i]
            assert r.coint_ms == r.start_ms, name  # refreshed at this bar
            yw, xw = y[i - W + 1 : i + 1], x[i - W + 1 : i + 1]
            # statsmodels' coint: the same test, but its residuals y - X b lose ~8 digits to
            # cancellation on real prices (64 000 - 13 x 3 400 - 19 000), so it agrees to ~1e-5
            # on the statistic; the p-value's steep tail magnifies that.
            stat, pvalue, crit = coint(yw, xw, trend="c", maxlag=1, autolag=None)
            close(r.adf_stat, stat, rtol=1e-5)
            close(r.eg_pvalue, pvalue, rtol=1e-3, scale=1e-6)
            # The exact oracle: adfuller on residuals with statsmodels' beta, in centred form.
            beta = sm.OLS(yw, sm.add_constant(xw)).fit().params[1]
            resid = (yw - yw.mean()) - beta * (xw - xw.mean())
            ref_stat, plain = adfuller(resid, maxlag=1, autolag=None, regression="n", result_object=False)[:2]
            close(r.adf_stat, ref_stat)
            close(r.eg_pvalue, mackinnonp(ref_stat, regression="c", N=2), scale=1e-6)
            close(r.adf_pvalue, plain, scale=1e-6)
            ar = sm.OLS(np.diff(resid), sm.add_constant(resid[:-1])).fit().params[1]
            if -1 < ar < 0:
                close(r.half_life, -math.log(2) / math.log(1 + ar))
            else:
                assert r.half_life is None
            # Between refreshes the last result is carried, and says which bar it came from.
            for j in range(i + 1, min(i + ADF_EVERY, len(rows))):
                assert rows[j].coint_ms == r.start_ms and rows[j].adf_stat == r.adf_stat
            checked += 1
        assert checked > 10, name


def numpy_kalman(x: np.ndarray, y: np.ndarray, delta: float, ve: float, p0: float = 0.0) -> dict[str, np.ndarray]:
    """The textbook matrix form (Chan 2013): theta = [beta, alpha], H = [x, 1]."""
    n = len(x)
    theta = np.zeros(2)
    P = p0 * np.eye(2)
    Vw = delta / (1 - delta) * np.eye(2)
    out = {k: np.empty(n) for k in ("beta", "alpha", "var", "e", "q")}
    for t in range(n):
        H = np.array([[x[t], 1.0]])
        R = P + Vw
        e = y[t] - (H @ theta)[0]
        Q = (H @ R @ H.T)[0, 0] + ve
        K = (R @ H.T)[:, 0] / Q
        theta = theta + K * e
        P = R - np.outer(K, H @ R)
        out["beta"][t], out["alpha"][t], out["var"][t], out["e"][t], out["q"][t] = theta[0], theta[1], P[0, 0], e, Q
    return out


def test_kalman_hedge_ratio_matches_a_numpy_filter(real) -> None:
    for name, starts, y, x in datasets(real):
        for log_prices, p0, warmup in ((False, 0.0, None), (True, 0.0, 1), (True, 10.0, 17)):
            p = PairParams(
                window=W,
                log_prices=log_prices,
                kalman_delta=1e-4,
                kalman_obs_var=1e-3,
                kalman_init_var=p0,
                kalman_warmup=warmup,
            )
            rows = pair_rows(starts, y, x, p, coint="none")
            yy, xx = (np.log(y), np.log(x)) if log_prices else (y, x)
            ref = numpy_kalman(xx, yy, 1e-4, 1e-3, p0)
            # Published from the documented bar on: the filter's `kalman_warmup`-th bar (default: window).
            first = (warmup or W) - 1
            fields = ("k_beta", "k_alpha", "k_beta_var", "k_spread", "k_innovation", "k_innovation_var", "k_zscore")
            assert all(getattr(r, f) is None for r in rows[:first] for f in fields), name
            assert all(getattr(r, f) is not None for r in rows[first:] for f in fields), name
            got = {
                k: np.array([getattr(r, f) for r in rows[first:]])
                for k, f in (
                    ("beta", "k_beta"),
                    ("alpha", "k_alpha"),
                    ("var", "k_beta_var"),
                    ("e", "k_innovation"),
                    ("q", "k_innovation_var"),
                )
            }
            for k in ref:
                want = ref[k][first:]
                close(got[k], want, rtol=1e-6, scale=float(np.max(np.abs(want))) * 1e-3)
            close([r.k_zscore for r in rows[first:]], (ref["e"] / np.sqrt(ref["q"]))[first:], rtol=1e-6, scale=1e-3)
            close(rows[first].k_zscore, ref["e"][first] / math.sqrt(ref["q"][first]), rtol=1e-9)


def test_kalman_zscore_is_null_through_the_warm_up_where_the_prior_gives_thousands(real) -> None:
    _, starts, y, x = datasets(real)[0]
    ref = numpy_kalman(x, y, 1e-4, 1e-3)
    assert abs(ref["e"][0] / math.sqrt(ref["q"][0])) > 1000  # the first bar against beta = alpha = 0
    rows = pair_rows(starts, y, x, PairParams(window=W), coint="none")
    published = [i for i, r in enumerate(rows) if r.k_zscore is not None]
    assert published[0] == W - 1 and published == list(range(W - 1, len(rows)))
    assert rows[W - 1].beta is not None and rows[W - 2].beta is None  # the bar the OLS beta starts at, too
    assert max(abs(r.k_zscore) for r in rows[W - 1 :]) < 50


def test_synthetic_beta_is_recovered_within_its_confidence_interval() -> None:
    starts, y, x = synthetic_pair(n=1500, beta=1.7, alpha=5.0)
    w = 500
    rows = pair_rows(starts, y, x, PairParams(window=w, adf_every=50))
    for i in (w - 1, 999, 1499):
        fit = sm.OLS(y[i - w + 1 : i + 1], sm.add_constant(x[i - w + 1 : i + 1])).fit()
        lo, hi = fit.conf_int(alpha=0.01)[1]
        assert lo <= rows[i].beta <= hi
        assert lo <= 1.7 <= hi, "the known beta lies in the 99% interval"
    assert rows[-1].eg_pvalue < 0.01, "a cointegrated pair is recognised"
    # Kalman told the true noise (0.3^2), a near-constant beta and a vague prior: truth within 4 sigma.
    p = PairParams(window=w, kalman_delta=1e-6, kalman_obs_var=0.09, kalman_init_var=100.0)
    last = pair_rows(starts, y, x, p, coint="none")[-1]
    assert abs(last.k_beta - 1.7) <= 4 * math.sqrt(last.k_beta_var)


# --- no look-ahead ----------------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(cut=st.integers(min_value=50, max_value=380), seed=st.integers(0, 10_000))
def test_changing_bars_after_t_changes_nothing_at_or_before_t(cut: int, seed: int) -> None:
    starts, y, x = synthetic_pair(n=400, seed=3)
    p = PairParams(window=40, adf_every=7)
    before = pair_rows(starts, y, x, p)
    rng = np.random.default_rng(seed)
    y2, x2 = y.copy(), x.copy()
    y2[cut + 1 :] *= rng.uniform(0.5, 1.5, len(y) - cut - 1)
    x2[cut + 1 :] += rng.normal(0, 5, len(x) - cut - 1)
    after = pair_rows(starts, y2, x2, p)
    assert [r.as_dict() for r in before[: cut + 1]] == [r.as_dict() for r in after[: cut + 1]]
    assert before[cut + 1 :] != after[cut + 1 :]


def test_alignment_of_future_bars_does_not_change_past_rows(flow_store: Path) -> None:
    bars = {
        s: pl.DataFrame(
            query(
                flow_store,
                "SELECT start_ms, close, volume, quote_volume FROM bars WHERE symbol=? AND timeframe='1s' ORDER BY start_ms",
                (s,),
            ),
            schema=["start_ms", "close", "volume", "quote_volume"],
            orient="row",
        )
        for s in ("btcusdt", "ethusdt")
    }
    full = align_frames(bars, 1000)
    cut = int(full["start_ms"][200])
    part = align_frames({s: df.filter(pl.col("start_ms") <= cut) for s, df in bars.items()}, 1000)
    assert part.equals(full.filter(pl.col("start_ms") <= cut))


# --- the flow --------------------------------------------------------------------------


def _stored_pair_stats(db: Path) -> pl.DataFrame:
    with sqlite3.connect(db) as conn:
        cur = conn.execute("SELECT * FROM pair_stats WHERE pair='btcusdt-ethusdt' AND timeframe='1s' ORDER BY start_ms")
        cols = [d[0] for d in cur.description]
        return pl.DataFrame(cur.fetchall(), schema=cols, orient="row", infer_schema_length=None)


def test_flow_aligns_bars_with_carry_forward_on_a_complete_grid(flow_store: Path, real) -> None:
    grid, y, x = real
    got = _stored_pair_stats(flow_store)
    assert got["start_ms"].to_list() == grid.tolist(), "one row per bucket from the later first bar to the newest bar"
    assert got["close_a"].to_list() == y.tolist()
    assert got["close_b"].to_list() == x.tolist()


def test_flow_pair_stats_equal_the_batch_computation_on_stored_bars(flow_store: Path, real) -> None:
    grid, y, x = real
    batch = pair_rows(grid, y, x, PairParams(window=W, adf_every=ADF_EVERY, adf_lags=1))
    got = _stored_pair_stats(flow_store)
    assert got.height == len(batch)
    for col in (
        "beta",
        "alpha",
        "spread",
        "zscore",
        "corr",
        "k_beta",
        "k_innovation",
        "half_life",
        "adf_stat",
        "eg_pvalue",
        "coint_ms",
    ):
        ref = [getattr(r, col) for r in batch]
        assert got[col].to_list() == ref, col  # exactly: same code, same inputs
    assert got["zscore"].drop_nulls().len() > 100
    # The Kalman warm-up in the flow: nothing before the window's first full bar, then the reference.
    kz = got["k_zscore"].to_list()
    assert all(v is None for v in kz[: W - 1]) and all(v is not None for v in kz[W - 1 :])
    ref = numpy_kalman(x, y, 1e-4, 1e-3)
    close(kz[W - 1], ref["e"][W - 1] / math.sqrt(ref["q"][W - 1]), rtol=1e-9)


def _rolling_ref(db: Path, s: str) -> pl.DataFrame:
    """Per-bar rolling statistics of aligned 1s bars, in polars (no ticklens code)."""
    rows = query(
        db,
        "SELECT start_ms, close, volume, quote_volume FROM bars WHERE symbol=? AND timeframe='1s' ORDER BY start_ms",
        (s,),
    )
    bars = pl.DataFrame(rows, schema=["start_ms", "close", "volume", "quote_volume"], orient="row")
    lo, hi = int(bars["start_ms"].min()), int(bars["start_ms"].max())
    return (
        pl.DataFrame({"start_ms": pl.int_range(lo, hi + 1000, 1000, eager=True)})
        .join(bars, on="start_ms", how="left")
        .with_columns(pl.col("close").forward_fill(), pl.col("volume", "quote_volume").fill_null(0.0))
        .with_columns(r=pl.col("close").log().diff())
        .with_columns(
            mean=pl.col("close").rolling_mean(STATS_W),
            std=pl.col("close").rolling_std(STATS_W),
            vwap=pl.col("quote_volume").rolling_sum(STATS_W) / pl.col("volume").rolling_sum(STATS_W),
            vol=pl.col("volume").rolling_sum(STATS_W),
            rv=(pl.col("r") ** 2).rolling_sum(STATS_W).sqrt(),
        )
    )


def test_flow_symbol_stats_match_polars_rolling(flow_store: Path) -> None:
    for s in ("btcusdt", "ethusdt"):
        ref = _rolling_ref(flow_store, s)
        got = pl.DataFrame(
            query(
                flow_store,
                "SELECT start_ms, mean, std, vwap, roll_volume, realised_vol, log_return FROM symbol_stats WHERE symbol=? AND timeframe='1s' ORDER BY start_ms",
                (s,),
            ),
            schema=["start_ms", "mean", "std", "vwap", "vol", "rv", "r"],
            orient="row",
        )
        assert got["start_ms"].to_list() == ref["start_ms"].to_list()
        for col in ("mean", "vwap", "vol", "rv", "r"):
            m = ref[col].is_not_null()
            assert got.filter(m)[col].null_count() == 0, col
            close(
                got.filter(m)[col].to_numpy(),
                ref.filter(m)[col].to_numpy(),
                rtol=1e-8,
                scale=float(ref[col].abs().max()) * 1e-3,
            )
        m = ref["std"].is_not_null()
        close(got.filter(m)["std"].to_numpy(), ref.filter(m)["std"].to_numpy(), rtol=1e-6, scale=1e-6)


def test_flow_correlation_matrix_matches_numpy(flow_store: Path, real) -> None:
    grid, y, x = real
    got = dict(
        query(
            flow_store,
            "SELECT start_ms, corr FROM correlation WHERE timeframe='1s' AND sym_a='btcusdt' AND sym_b='ethusdt'",
        )
    )
    ry, rx = np.diff(np.log(y)), np.diff(np.log(x))
    checked = 0
    for i in range(CORR_W, len(grid)):
        ref = np.corrcoef(ry[i - CORR_W : i], rx[i - CORR_W : i])[0, 1]
        close(got[int(grid[i])], ref, scale=1.0)
        checked += 1
    assert checked > 300


def test_bad_pairs_fail_at_start_with_the_field_named() -> None:
    base = {"symbols": ["btcusdt", "ethusdt"], "source": {"kind": "replay", "paths": ["x.gz"]}}
    with pytest.raises(ConfigError, match="paired with itself"):
        parse_config({**base, "pairs": [["btcusdt", "BTCUSDT"]]})
    with pytest.raises(ConfigError, match="xrpusdt"):
        parse_config({**base, "pairs": [{"legs": ["btcusdt", "xrpusdt"]}]})
    cfg = parse_config({**base, "pairs": [["btcusdt", "ethusdt"], {"legs": ["ethusdt", "btcusdt"], "window": 50}]})
    assert [p.window for p in cfg.pairs] == [300, 50]


# --- backtest ----------------------------------------------------------------------------


def test_backtest_trades_on_past_only_z_with_beta_fixed_at_entry() -> None:
    starts, y, x = synthetic_pair(n=800, seed=11)
    rows = pair_rows(starts, y, x, PairParams(window=50), coint="none")
    bt = backtest(rows, entry_z=2.0, exit_z=0.5, fee_bps=2.0, bars_per_year=365 * 86400)
    # Independent replay of the rules with plain loops.
    equity, pos, trades = [], None, []
    cash = 0.0
    for r in rows:
        z = r.zscore
        if pos and z is not None and abs(z) <= 0.5:
            side, b, ya, xb, fee_in = pos
            fee_out = 2e-4 * (r.close_a + abs(b) * r.close_b)
            gross = side * ((r.close_a - ya) - b * (r.close_b - xb))
            trades.append(gross - fee_in - fee_out)
            cash += gross - fee_out
            pos = None
        elif pos is None and z is not None and abs(z) >= 2.0:
            fee_in = 2e-4 * (r.close_a + abs(r.beta) * r.close_b)
            pos = (-1.0 if z > 0 else 1.0, r.beta, r.close_a, r.close_b, fee_in)
            cash -= fee_in
        mtm = pos[0] * ((r.close_a - pos[2]) - pos[1] * (r.close_b - pos[3])) if pos else 0.0
        equity.append(cash + mtm)
    done = [t for t in bt.trades if not t.open]
    assert len(done) == len(trades) > 3
    close([t.pnl for t in done], trades, rtol=1e-9, scale=1.0)
    close([v for _, v in bt.curve], equity, rtol=1e-9, scale=1.0)
    eq = np.array(equity)
    assert bt.max_drawdown == pytest.approx(float(np.max(np.maximum.accumulate(np.r_[0.0, eq])[1:] - eq)))
    assert bt.win_rate == pytest.approx(sum(t > 0 for t in trades) / len(trades))
    d = np.diff(eq)
    assert bt.sharpe == pytest.approx(d.mean() / d.std(ddof=1) * math.sqrt(365 * 86400))


# --- the API over real uvicorn -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api(flow_store: Path):
    cfg = flow_store.parent / "pipeline.yaml"
    port = _free_port()
    env = dict(os.environ, TICKLENS_CONFIG=str(cfg), TICKLENS_QUIET="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=base, timeout=30) as client:
        while True:
            try:
                client.get("/openapi.json")
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        proc.stderr.read().decode()[-2000:] if proc.stderr else "uvicorn did not start"
                    ) from None
                time.sleep(0.1)
        yield client
    proc.terminate()
    proc.wait(10)


def test_api_spread_is_the_same_stored_or_computed(api: httpx.Client, real) -> None:
    q = {"symbols": "BTCUSDT,ethusdt", "timeframe": "1s", "limit": 100_000}
    stored = api.get("/api/v1/spread", params=q).json()
    computed = api.get("/api/v1/spread", params={**q, "source": "computed"}).json()
    assert stored["source"] == "store" and computed["source"] == "computed"
    assert stored["rows"] == computed["rows"]
    assert stored["adf"] == computed["adf"]
    grid = real[0]
    assert [r["start_ms"] for r in stored["rows"]] == grid.tolist()
    assert stored["rows"][-1]["time"].endswith("Z")
    # A window range: the same rows, cut.
    lo, hi = int(grid[300]), int(grid[350])
    part = api.get("/api/v1/spread", params={**q, "start": lo, "end": hi, "source": "computed"}).json()
    assert part["rows"] == [r for r in stored["rows"] if lo <= r["start_ms"] < hi]
    newest = {**q, "limit": 50, "start": int(grid[100])}
    a, b = (
        api.get("/api/v1/spread", params=newest).json(),
        api.get("/api/v1/spread", params={**newest, "source": "computed"}).json(),
    )
    assert a["rows"] == b["rows"] == stored["rows"][-50:] and a["adf"] == b["adf"]
    kal = api.get("/api/v1/spread", params={**q, "method": "kalman", "limit": 5}).json()
    assert len(kal["rows"]) == 5 and kal["rows"][-1]["beta_var"] > 0
    # Kalman on demand warms up as in the flow: the same rows, null through the first window - 1 bars.
    kq = {**q, "method": "kalman"}
    ks, kc = (api.get("/api/v1/spread", params={**kq, "source": src}).json() for src in ("auto", "computed"))
    assert ks["source"] == "store" and kc["source"] == "computed" and ks["rows"] == kc["rows"]
    z = [r["zscore"] for r in kc["rows"]]
    assert all(v is None for v in z[: W - 1]) and all(v is not None for v in z[W - 1 :])


def test_api_spread_on_demand_window_matches_statsmodels(api: httpx.Client, real) -> None:
    grid, y, x = real
    body = api.get(
        "/api/v1/spread", params={"symbols": "btcusdt,ethusdt", "timeframe": "1s", "window": 90, "limit": 3}
    ).json()
    assert body["source"] == "computed" and body["window"] == 90
    fit = sm.OLS(y[-90:], sm.add_constant(x[-90:])).fit()
    close([body["rows"][-1]["intercept"], body["rows"][-1]["hedge_ratio"]], fit.params)


def test_api_adf_and_screen_match_statsmodels_coint(api: httpx.Client, real) -> None:
    grid, y, x = real
    stat, p, crit = coint(y[-120:], x[-120:], trend="c", maxlag=1, autolag=None)
    adf = api.get("/api/v1/adf", params={"symbols": "btcusdt,ethusdt", "timeframe": "1s", "window": 120}).json()[
        "result"
    ]
    close([adf["adf_stat"], adf["eg_pvalue"]], [stat, p], rtol=1e-7)
    close([adf["crit"]["1%"], adf["crit"]["5%"], adf["crit"]["10%"]], crit)
    screen = api.get("/api/v1/screen", params={"timeframe": "1s", "window": 120}).json()
    assert screen["pairs"][0]["pair"] == "btcusdt-ethusdt"
    close(screen["pairs"][0]["eg_pvalue"], p, rtol=1e-7)


def test_api_correlation_series_and_matrix(api: httpx.Client, real) -> None:
    grid, y, x = real
    body = api.get("/api/v1/correlation", params={"symbols": "btcusdt,ethusdt", "timeframe": "1s", "window": 45}).json()
    ref = np.corrcoef(np.diff(np.log(y))[-45:], np.diff(np.log(x))[-45:])[0, 1]
    series = body["series"]["btcusdt-ethusdt"]
    close(series[-1]["corr"], ref, scale=1.0)
    assert body["matrix"]["values"][0][0] == 1.0
    close(body["matrix"]["values"][0][1], ref, scale=1.0)


def test_api_correlation_at_the_configured_window_is_the_flows_stored_series(api: httpx.Client, real) -> None:
    grid, y, x = real
    params = {"symbols": "btcusdt,ethusdt", "timeframe": "1s", "window": CORR_W, "limit": 5000}
    stored = api.get("/api/v1/correlation", params=params).json()
    computed = api.get("/api/v1/correlation", params={**params, "source": "computed"}).json()
    assert stored["source"] == "store" and computed["source"] == "computed"
    ry, rx = np.diff(np.log(y)), np.diff(np.log(x))
    ref = {int(grid[i]): np.corrcoef(ry[i - CORR_W : i], rx[i - CORR_W : i])[0, 1] for i in range(CORR_W, len(grid))}
    got = {r["start_ms"]: r["corr"] for r in stored["series"]["btcusdt-ethusdt"] if r["corr"] is not None}
    assert len(got) == len(ref) > 300
    close([got[t] for t in ref], list(ref.values()), scale=1.0)
    again = {r["start_ms"]: r["corr"] for r in computed["series"]["btcusdt-ethusdt"] if r["corr"] is not None}
    close([again[t] for t in ref], list(ref.values()), scale=1.0)
    close(stored["matrix"]["values"][0][1], ref[max(ref)], scale=1.0)


def test_api_rolling_stats_are_the_flows_per_bar_statistics(api: httpx.Client, flow_store: Path) -> None:
    ref = _rolling_ref(flow_store, "ethusdt").filter(pl.col("std").is_not_null()).tail(100)
    body = api.get("/api/v1/stats/ethusdt/rolling", params={"timeframe": "1s", "limit": 100}).json()
    assert body["window"] == STATS_W and body["count"] == 100
    assert [r["ts_ms"] for r in body["rows"]] == ref["start_ms"].to_list()
    for col, name in (("mean", "mean"), ("vwap", "vwap"), ("vol", "roll_volume"), ("rv", "realised_vol")):
        close([r[name] for r in body["rows"]], ref[col].to_numpy(), rtol=1e-8, scale=float(ref[col].abs().max()) * 1e-3)
    close([r["std"] for r in body["rows"]], ref["std"].to_numpy(), rtol=1e-6, scale=1e-6)


def test_api_backtest_reports_trades_and_risk(api: httpx.Client) -> None:
    body = api.get(
        "/api/v1/backtest",
        params={
            "symbols": "btcusdt,ethusdt",
            "timeframe": "1s",
            "window": 60,
            "entry_z": 2,
            "exit_z": 0.5,
            "fee_bps": 1,
        },
    ).json()
    assert body["bars"] > 400 and body["trades"]
    assert body["total_pnl"] == pytest.approx(body["curve"][-1]["equity"])
    assert body["max_drawdown"] >= 0


@pytest.mark.parametrize(
    ("path", "params", "status", "name"),
    [
        ("/api/v1/spread", {"symbols": "btcusdt"}, 422, "symbols"),
        ("/api/v1/spread", {"symbols": "btcusdt,ethusdt", "window": 2}, 422, "window"),
        ("/api/v1/spread", {"symbols": "btcusdt,ethusdt", "method": "x"}, 422, "method"),
        ("/api/v1/spread", {"symbols": "btcusdt,ethusdt", "start": "yesterday"}, 422, "start"),
        ("/api/v1/backtest", {"symbols": "btcusdt,ethusdt", "entry_z": 1, "exit_z": 1}, 422, "exit_z"),
        ("/api/v1/correlation", {"symbols": "btc$usdt,ethusdt"}, 422, "symbols"),
        ("/api/v1/spread", {"symbols": "btcusdt,xrpusdt"}, 404, None),
        ("/api/v1/adf", {"symbols": "dogeusdt,ethusdt"}, 404, None),
    ],
)
def test_api_rejects_bad_parameters_naming_them(
    api: httpx.Client, path: str, params: dict, status: int, name: str | None
) -> None:
    r = api.get(path, params=params)
    assert r.status_code == status, r.text
    if name:
        assert name in [e["loc"][-1] for e in r.json()["detail"]]


def _legs_with_gaps() -> dict[str, list[tuple[int, float, float, float]]]:
    """Two legs with short silences (carried) and one long silence of both (skipped), 1s bars."""
    rng = np.random.default_rng(5)
    out: dict[str, list[tuple[int, float, float, float]]] = {}
    for k, s in enumerate(("aaa", "bbb")):
        starts = sorted(set(rng.choice(np.r_[np.arange(3, 900), np.arange(2500, 3000)], 700, replace=False).tolist()))
        starts = [t + k for t in starts] if k == 0 else starts
        out[s] = [(t * 1000, 100.0 + k + 0.01 * i, 1.0 + i, (100.0 + k) * (1.0 + i)) for i, t in enumerate(starts)]
    return out


def test_incremental_alignment_equals_batch_alignment_across_silences() -> None:
    from ticklens.domain.align import Aligner, LegBars, max_idle_bars

    legs = _legs_with_gaps()
    al = Aligner(["aaa", "bbb"], 1000)
    rows = []
    # Bars arrive leg by leg in chunks, with watermarks moving as they would in the flow.
    for lo in range(0, 3100_000, 37_000):
        for s, bars in legs.items():
            chunk = [b for b in bars if lo <= b[0] < lo + 37_000]
            rows += al.push(LegBars(s, "1s", chunk, lo + 37_000))
    frames = {
        s: pl.DataFrame(b, schema=["start_ms", "close", "volume", "quote_volume"], orient="row")
        for s, b in legs.items()
    }
    batch = align_frames(frames, 1000)
    assert [t for t, _ in rows] == batch["start_ms"].to_list()
    assert [r["aaa"][0] for _, r in rows] == batch["aaa"].to_list()
    assert [r["bbb"][1] for _, r in rows] == batch["bbb_volume"].to_list()
    # Independent oracle of the rule: every 1s bucket from the later first bar to the newest bar,
    # except those 600 or more buckets after the last bar of either leg.
    all_bars = np.array(sorted({b[0] for bars in legs.values() for b in bars}))
    grid = np.arange(max(b[0][0] for b in legs.values()), all_bars[-1] + 1000, 1000)
    last_bar = all_bars[np.searchsorted(all_bars, grid, side="right") - 1]
    expected = grid[grid - last_bar < max_idle_bars(1000) * 1000]
    assert batch["start_ms"].to_list() == expected.tolist()
    assert len(expected) < len(grid), "the long silence is skipped"


def test_a_leg_flat_for_a_whole_window_has_no_hedge_ratio_or_correlation() -> None:
    starts, y, x = synthetic_pair(n=200, seed=2)
    x[60:140] = x[59]  # carried forward: the leg did not trade for 80 bars
    rows = pair_rows(starts, y, x, PairParams(window=30), coint="none")
    flat = [r for r in rows if 89 <= r.start_ms // 1000 < 140]
    assert flat and all(r.beta is None and r.corr is None for r in flat)
    assert rows[-1].beta is not None and rows[-1].corr is not None
    moving = rows[60]  # 29 moving bars before the flat stretch: still a slope
    fit = sm.OLS(y[31:61], sm.add_constant(x[31:61])).fit()
    close(moving.beta, fit.params[1])
