"""The original API's /api/spread, /api/analytics/adf, /api/correlation and /api/backtest.

`window` counts ticks for the spread, its ADF test and the backtest, as the
original did: both legs' newest trades are aligned on their merged trade times
(`ticklens.domain.align.align_ticks`) and go through the same pair statistics as
the flow and /api/v1 (`ticklens.domain.stats.pair`): the hedge ratio is the OLS
fit over the newest `window` aligned points, the z-score compares the newest
spread with the `window` spreads before it (no look-ahead). Correlation is over
closed bars of `timeframe`, as in /api/v1/correlation.
"""

from __future__ import annotations

from itertools import combinations
from typing import Annotated, Literal

import numpy as np
import polars as pl
from fastapi import APIRouter, Query, Response

from api.compat.common import TAG, error_answer, num, or_error
from api.compat.models import AdfAnswer, BacktestAnswer, CorrelationAnswer, SpreadAnswer
from api.deps import Reader, State, json_response, param_error, require_symbol
from api.routers.analytics import MAX_SYMBOLS, parse_symbols
from storage.port import TICK_COLUMNS, StoreReader
from ticklens.domain.align import align_frames, align_ticks
from ticklens.domain.stats.backtest import backtest
from ticklens.domain.stats.correlation import CorrMatrix
from ticklens.domain.stats.pair import PairParams, PairRow, coint_stats, half_life, pair_rows
from ticklens.domain.timeframes import TIMEFRAME_MS
from ticklens.domain.times import iso_ms

router = APIRouter(tags=[TAG])

SERIES_POINTS = 50
MAX_TICK_WINDOW = 20_000
MIN_ADF_POINTS = 30
MIN_CORR_BARS = 5
MAX_TICKS_PER_LEG = 400_000  # read at most this many trades per symbol for one answer

Symbols2 = Annotated[str, Query(max_length=400, description="Two comma-separated symbols: `btcusdt,ethusdt`")]
TickWindow = Annotated[int, Query(ge=3, le=MAX_TICK_WINDOW, description="Ticks in the rolling window")]


def _pair(state: State, reader: StoreReader, text: str) -> tuple[str, str]:
    a, b = parse_symbols(text, 2, 2)
    for s in (a, b):
        require_symbol(state, reader, s)  # 404 when neither configured nor stored
    return a, b


def aligned_ticks(reader: StoreReader, a: str, b: str, per_leg: int) -> tuple[pl.DataFrame, bool]:
    """Each leg's newest `per_leg` trades on their merged trade times (columns ts_ms, a, b), and
    whether that was every trade stored (both legs had fewer)."""
    frames = []
    for s in (a, b):
        rows = reader.ticks(s, per_leg)
        frames.append(pl.DataFrame(rows, schema=list(TICK_COLUMNS), orient="row").select("ts_ms", "price"))
    everything = all(f.height < per_leg for f in frames)
    if frames[0].height == 0 or frames[1].height == 0:
        return pl.DataFrame(schema={"ts_ms": pl.Int64, "a": pl.Float64, "b": pl.Float64}), everything
    return align_ticks(frames[0], frames[1]), everything


def newest_aligned(reader: StoreReader, a: str, b: str, points: int) -> pl.DataFrame:
    """The newest `points` aligned trade times, or all there are. Trades share milliseconds (a busy
    leg prints dozens in one), so more trades than points are read, growing until enough align."""
    per_leg = points
    while True:
        al, everything = aligned_ticks(reader, a, b, per_leg)
        if al.height >= points or everything or per_leg >= MAX_TICKS_PER_LEG:
            return al.tail(points)
        per_leg = min(per_leg * 4, MAX_TICKS_PER_LEG)


def _rows(al: pl.DataFrame, window: int) -> list[PairRow]:
    return pair_rows(al["ts_ms"].to_numpy(), al["a"].to_numpy(), al["b"].to_numpy(), PairParams(window=window), "none")


@router.get(
    "/api/spread",
    **or_error(
        SpreadAnswer,
        "/api/v1/spread",
        "Hedge ratio, spread and z-score of the two symbols' newest trades (`window` counts ticks). The hedge "
        "ratio is OLS (or Kalman) over the newest `window` aligned trade times; the z-score compares the newest "
        "spread with the `window` spreads before it, so 2 × window aligned points are needed; `spread_series` "
        "is the last 50 points. v1 gives every aligned bar with the ADF test, from the flow's stored rows.",
    ),
)
def spread(
    reader: Reader,
    state: State,
    symbols: Symbols2,
    window: TickWindow = 100,
    method: Annotated[Literal["ols", "kalman"], Query(description="Rolling OLS or Kalman hedge ratio")] = "ols",
) -> Response:
    a, b = _pair(state, reader, symbols)
    need = 2 * window  # `window` spreads, each from a fit over `window` points, before the newest
    al = newest_aligned(reader, a, b, need + SERIES_POINTS - 1)
    rows = _rows(al, window) if al.height else []
    last = rows[-1] if rows else None
    z = None if last is None else (last.zscore if method == "ols" else last.k_zscore)
    if last is None or num(z) is None:
        return error_answer(
            f"Insufficient data: a z-score over a window of {window} ticks needs {need} aligned trade times "
            f"of {a} and {b}, {al.height} stored",
            data_points=al.height,
        )
    tail = rows[-SERIES_POINTS:]
    if method == "ols":
        beta, cur, mean, std = last.beta, last.spread, last.spread_mean, last.spread_std
        series = [(r.start_ms, r.spread, r.zscore) for r in tail]
        c = coint_stats(al["a"].to_numpy()[-window:], al["b"].to_numpy()[-window:], last.beta, 1)
        hl = c.half_life if c is not None else None
    else:
        ks = np.array([r.k_spread for r in rows[-window:] if r.k_spread is not None], dtype=float)
        beta, cur = last.k_beta, last.k_spread
        mean, std = float(ks.mean()), float(ks.std(ddof=1)) if len(ks) > 1 else 0.0
        series = [(r.start_ms, r.k_spread, r.k_zscore) for r in tail]
        hl = half_life(ks) if len(ks) > 2 else None
    body = {
        "symbol1": a,
        "symbol2": b,
        "method": method,
        "hedge_ratio": beta,
        "spread_mean": mean,
        "spread_std": std,
        "current_spread": cur,
        "z_score": z,
        "half_life": num(hl),
        "data_points": al.height,
        "window": window,
        "timestamp": iso_ms(last.start_ms),
        "spread_series": [{"timestamp": iso_ms(t), "spread": num(s), "z_score": num(zz)} for t, s, zz in series],
    }
    return json_response(body)


@router.post(
    "/api/analytics/adf",
    **or_error(
        AdfAnswer,
        "/api/v1/adf",
        "Engle-Granger test of the spread over the newest `window` aligned trade times: the ADF statistic of the "
        "OLS residuals with `max_lag` lagged differences, and the cointegration p-value and critical values "
        "(MacKinnon, two variables with a constant) that a fitted spread needs. `is_cointegrated`: p < 0.05. "
        f"Fewer than {MIN_ADF_POINTS} spread points: an `error` answer.",
    ),
)
def adf(
    reader: Reader,
    state: State,
    symbols: Symbols2,
    max_lag: Annotated[int, Query(ge=0, le=50, description="Lagged differences in the ADF regression")] = 10,
    window: TickWindow = 100,
) -> Response:
    a, b = _pair(state, reader, symbols)
    al = newest_aligned(reader, a, b, window)
    n = al.height
    if n < MIN_ADF_POINTS:
        return error_answer(f"Insufficient data: {n} spread points of {a} and {b}, at least {MIN_ADF_POINTS} needed")
    if max_lag + 8 > n:
        raise param_error("query", "max_lag", f"too many lags for {n} spread points", max_lag)
    last = _rows(al, n)[-1]
    c = None if last.beta is None else coint_stats(al["a"].to_numpy(), al["b"].to_numpy(), last.beta, max_lag)
    if c is None:
        return error_answer(f"The spread of {a} and {b} is flat or a leg does not move: no test possible")
    p = c.eg_pvalue
    body = {
        "symbol1": a,
        "symbol2": b,
        "adf_statistic": c.adf_stat,
        "p_value": p,
        "n_lags": c.lags,
        "n_obs": c.nobs - 1 - c.lags,
        "critical_values": {"1%": c.crit_1, "5%": c.crit_5, "10%": c.crit_10},
        "is_cointegrated": p < 0.05,
        "interpretation": "Cointegrated" if p < 0.05 else "Not cointegrated",
        "hedge_ratio": last.beta,
        "half_life": num(c.half_life),
        "window": n,
    }
    return json_response(body)


@router.get(
    "/api/correlation",
    **or_error(
        CorrelationAnswer,
        "/api/v1/correlation",
        "Rolling Pearson correlation of log returns of closed bars, per pair (`a_b`, the last 50 points) and the "
        f"matrix of the newest window. With fewer bars than `window`, the window shrinks to what is stored (at "
        f"least {MIN_CORR_BARS} aligned bars).",
    ),
)
def correlation(
    reader: Reader,
    state: State,
    symbols: Annotated[str, Query(max_length=400, description="Two or more comma-separated symbols")],
    window: Annotated[int, Query(ge=3, le=MAX_TICK_WINDOW, description="Returns per correlation")] = 60,
    timeframe: Annotated[Literal["1s", "1m", "5m"], Query(description="Bar length")] = "1m",
) -> Response:
    syms = parse_symbols(symbols, 2, MAX_SYMBOLS)
    for s in syms:
        require_symbol(state, reader, s)
    al = align_frames({s: reader.closed_bars(s, timeframe) for s in syms}, TIMEFRAME_MS[timeframe])
    if al.height < MIN_CORR_BARS:
        return error_answer(
            f"Insufficient data: {al.height} aligned closed {timeframe} bars, at least {MIN_CORR_BARS} needed"
        )
    w = min(window, al.height - 1)
    al = al.tail(SERIES_POINTS + w + 1)  # a value depends on the newest w + 1 closes only
    matrix = CorrMatrix(syms, w)
    series: dict[str, list[dict]] = {f"{x}_{y}": [] for x, y in combinations(syms, 2)}
    latest: dict[tuple[str, str], float | None] = {}
    cols = [al[s].to_list() for s in syms]
    starts = al["start_ms"].to_list()
    for i, t in enumerate(starts):
        for (x, y), c in matrix.update({s: cols[j][i] for j, s in enumerate(syms)}).items():
            if len(series[f"{x}_{y}"]) or c is not None:
                series[f"{x}_{y}"].append({"timestamp": iso_ms(t), "correlation": num(c)})
            latest[(x, y)] = num(c)
    mat = {x: {y: 1.0 if x == y else latest.get((x, y), latest.get((y, x))) for y in syms} for x in syms}
    body = {
        "symbols": syms,
        "window": w,
        "timeframe": timeframe,
        "rolling_correlations": {k: v[-SERIES_POINTS:] for k, v in series.items()},
        "correlation_matrix": mat,
        "timestamp": iso_ms(starts[-1]),
    }
    return json_response(body)


@router.get(
    "/api/backtest",
    **or_error(
        BacktestAnswer,
        "/api/v1/backtest",
        "Mean reversion on the tick spread of /api/spread: short the spread at z ≥ entry_z, long at z ≤ −entry_z, "
        "out once z is back past ∓exit_z (0: z crossed zero); hedge ratio fixed at entry; pnl in quote currency "
        "for one unit of symbol1, after `fee_bps` per leg. Over the newest `limit` trades of each symbol. "
        "v1 runs on bars with fees, an equity curve and drawdown.",
    ),
)
def backtest_ticks(
    reader: Reader,
    state: State,
    symbols: Symbols2,
    entry_z: Annotated[float, Query(gt=0, le=20, description="Enter when |z| ≥ entry_z")] = 2.0,
    exit_z: Annotated[float, Query(ge=0, le=20, description="Exit once z is back past this level")] = 0.0,
    window: TickWindow = 100,
    limit: Annotated[int, Query(ge=10, le=100_000, description="Newest trades per symbol to test over")] = 5_000,
    fee_bps: Annotated[float, Query(ge=0, le=1000, description="Fee per leg, basis points of notional")] = 0.0,
) -> Response:
    if exit_z >= entry_z:
        raise param_error("query", "exit_z", f"must be below entry_z ({entry_z})", exit_z)
    a, b = _pair(state, reader, symbols)
    al, _ = aligned_ticks(reader, a, b, limit)
    rows = _rows(al, window) if al.height else []
    bt = backtest(rows, entry_z, exit_z, fee_bps, bars_per_year=1.0, exit_rule="cross")
    done = [t for t in bt.trades if not t.open]
    if not done:
        return error_answer("No completed trades", data_points=al.height, window=window)
    spread_at = {r.start_ms: r.spread for r in rows}
    pnls = [t.pnl for t in done]
    wins = sum(p > 0 for p in pnls)
    body = {
        "symbol1": a,
        "symbol2": b,
        "entry_z": entry_z,
        "exit_z": exit_z,
        "window": window,
        "total_trades": len(done),
        "winning_trades": wins,
        "win_rate": 100.0 * wins / len(done),
        "total_pnl": float(sum(pnls)),
        "avg_pnl": float(sum(pnls) / len(pnls)),
        "sharpe": num(bt.sharpe) or 0.0,
        "max_win": max(pnls),
        "max_loss": min(pnls),
        "open_position": any(t.open for t in bt.trades),
        "trades": [
            {
                "entry_time": iso_ms(t.entry_ms),
                "entry_z": t.entry_z,
                "entry_spread": num(spread_at.get(t.entry_ms)),
                "type": "short" if t.side == "short_spread" else "long",
                "exit_time": iso_ms(t.exit_ms),
                "exit_z": t.exit_z,
                "exit_spread": num(spread_at.get(t.exit_ms)),
                "pnl": t.pnl,
                "hedge_ratio": t.beta,
            }
            for t in done[-10:]
        ],
    }
    return json_response(body)
