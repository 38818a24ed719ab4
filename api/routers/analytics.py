"""GET /api/v1/spread, /api/v1/correlation, /api/v1/screen, /api/v1/adf, /api/v1/backtest: pair analytics.

A configured pair at its configured window and timeframe is read from the
flow's `pair_stats` rows; anything else is computed on demand from the stored
closed bars with the same code (`flows.pairs.align_frames` then
`flows.analytics.PairAnalytics`), from the pair's first aligned bar, so the
answer is the same either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from typing import Annotated, Literal

import polars as pl
from fastapi import APIRouter, Depends, Query
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel, Field

from api.deps import AppState, Limit, Reader, State, TimeRange, param_error, require_symbol
from api.models import AdfResponse, BacktestResponse, CorrelationResponse, ScreenResponse
from storage.port import Span, StoreReader
from ticklens.config import Config
from ticklens.domain.align import align_frames
from ticklens.domain.stats.backtest import backtest
from ticklens.domain.stats.correlation import CorrMatrix
from ticklens.domain.stats.pair import PairParams, PairRow, coint_at, coint_stats, pair_rows
from ticklens.domain.stats.unitroot import eg_critical_values
from ticklens.domain.symbols import SYMBOL_RE
from ticklens.domain.timeframes import TIMEFRAME_MS, Timeframe
from ticklens.domain.times import bounds, iso_ms

router = APIRouter(tags=["analytics"])

MAX_SYMBOLS = 12
MAX_WINDOW = 20_000
MAX_ROWS = 200_000  # aligned bars computed on demand; older history is not used beyond this
DEFAULT_WINDOW = 300

SymbolsQuery = Annotated[
    str, Query(max_length=400, description="Comma-separated symbols, any case: `btcusdt,ethusdt` (a is y, b is x)")
]
WindowQuery = Annotated[
    int | None, Query(ge=3, le=MAX_WINDOW, description="Rolling window in bars (default: the configured one, or 300)")
]
TfQuery = Annotated[Timeframe | None, Query(description="Bar length (default: the pair's first configured, or 1m)")]


@dataclass(frozen=True, slots=True)
class Legs:
    """The request's symbols, parsed and known (a 404 names one that is not), and what to read them with."""

    symbols: list[str]
    reader: StoreReader
    state: AppState


def _legs(lo: int, hi: int) -> Callable[..., Legs]:
    def legs(symbols: SymbolsQuery, reader: Reader, state: State) -> Legs:
        syms = parse_symbols(symbols, lo, hi)
        _known(state, reader, syms)
        return Legs(syms, reader, state)

    return legs


PairLegs = Annotated[Legs, Depends(_legs(2, 2))]  # exactly two symbols: y, then x
ManyLegs = Annotated[Legs, Depends(_legs(2, MAX_SYMBOLS))]


class SpreadRow(BaseModel):
    start_ms: int = Field(description="Aligned bar start, epoch ms")
    time: str = Field(description="Aligned bar start, ISO-8601 UTC")
    hedge_ratio: float | None = Field(
        description="beta of y = alpha + beta x (OLS over the window ending here, or Kalman)"
    )
    intercept: float | None
    spread: float | None = Field(description="y - beta x - alpha at this bar")
    zscore: float | None = Field(
        description="OLS: (spread - mean) / std of the `window` spreads before this bar; Kalman: innovation / its std"
    )
    spread_mean: float | None = None
    spread_std: float | None = None
    correlation: float | None = Field(description="Pearson correlation of log returns over the window")
    beta_var: float | None = Field(None, description="Kalman only: variance of beta")
    innovation: float | None = Field(None, description="Kalman only: y minus its prediction from the previous state")
    innovation_var: float | None = None


class Adf(BaseModel):
    at: str | None = Field(description="Bar whose window was tested, ISO-8601 UTC")
    at_ms: int | None
    adf_stat: float | None = Field(
        description="ADF t-statistic of the window's OLS residuals (no constant, fixed lags)"
    )
    adf_pvalue: float | None = Field(description="Plain ADF p-value (N=1): too optimistic for a fitted spread")
    eg_pvalue: float | None = Field(description="Engle-Granger p-value: MacKinnon cointegration distribution, N=2")
    crit: dict[str, float] = Field(description="Engle-Granger critical values (N=2, constant) for the window")
    half_life: float | None = Field(description="Bars; AR(1) on the window's residuals; null if it does not revert")
    half_life_s: float | None


class SpreadResponse(BaseModel):
    pair: str
    timeframe: Timeframe
    window: int
    method: Literal["ols", "kalman"]
    source: Literal["store", "computed"]
    count: int
    rows: list[SpreadRow] = Field(description="Oldest first: the newest `limit` in [start, end)")
    adf: Adf = Field(description="Latest half-life and Engle-Granger result (refreshed every `adf_every` bars)")


# --- parameters ------------------------------------------------------------------------


def parse_symbols(text: str, lo: int, hi: int) -> list[str]:
    syms = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in syms if not SYMBOL_RE.match(s)]
    if bad:
        raise param_error("query", "symbols", f"{bad[0]!r} is not a symbol ([a-z0-9]{{2,30}})", text)
    if len(set(syms)) != len(syms):
        raise param_error("query", "symbols", "a symbol is listed twice", text)
    if not lo <= len(syms) <= hi:
        want = f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
        raise param_error("query", "symbols", f"give {want} comma-separated symbols, got {len(syms)}", text)
    return syms


def _known(state: State, reader: StoreReader, syms: list[str]) -> None:
    for s in syms:
        require_symbol(state, reader, s)  # 404 if neither configured nor stored


def _pair_cfg(cfg: Config, a: str, b: str):
    return next((p for p in cfg.pairs if p.legs == (a, b)), None)


# --- on-demand computation --------------------------------------------------------------


def _aligned(reader: StoreReader, syms: list[str], tf: str, end_ms: int | None) -> pl.DataFrame:
    frames = {s: reader.closed_bars(s, tf, end_ms) for s in syms}
    aligned = align_frames(frames, TIMEFRAME_MS[tf])
    return aligned.tail(MAX_ROWS)


def _computed_rows(
    reader: StoreReader, a: str, b: str, tf: str, params: PairParams, end_ms: int | None
) -> tuple[list[PairRow], PairRow | None]:
    al = _aligned(reader, [a, b], tf, end_ms)
    if al.height == 0:
        return [], None
    ya, xb = al[a].to_numpy(), al[b].to_numpy()
    rows = pair_rows(al["start_ms"].to_numpy(), ya, xb, params, coint="none")
    return rows, coint_at(ya, xb, rows, params)


def _in_range(rows: list[PairRow], start_ms: int | None, end_ms: int | None) -> list[PairRow]:
    lo, hi = bounds(start_ms, end_ms)
    return [r for r in rows if lo <= r.start_ms < hi]


def _num(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _adf(c: PairRow | None, window: int, tf: str) -> dict:
    crit = eg_critical_values(window - 1)
    hl = _num(c.half_life) if c else None
    return {
        "at": iso_ms(c.coint_ms) if c and c.coint_ms is not None else None,
        "at_ms": c.coint_ms if c else None,
        "adf_stat": _num(c.adf_stat) if c else None,
        "adf_pvalue": _num(c.adf_pvalue) if c else None,
        "eg_pvalue": _num(c.eg_pvalue) if c else None,
        "crit": {"1%": float(crit[0]), "5%": float(crit[1]), "10%": float(crit[2])},
        "half_life": hl,
        "half_life_s": hl * TIMEFRAME_MS[tf] / 1000 if hl is not None else None,
    }


# Output field -> PairRow attribute, per hedge-ratio method.
_SPREAD_FIELDS = {
    "ols": {
        "hedge_ratio": "beta",
        "intercept": "alpha",
        "spread": "spread",
        "zscore": "zscore",
        "spread_mean": "spread_mean",
        "spread_std": "spread_std",
    },
    "kalman": {
        "hedge_ratio": "k_beta",
        "intercept": "k_alpha",
        "spread": "k_spread",
        "zscore": "k_zscore",
        "beta_var": "k_beta_var",
        "innovation": "k_innovation",
        "innovation_var": "k_innovation_var",
    },
}


def _spread_row(r: PairRow, method: str) -> dict:
    out = {"start_ms": r.start_ms, "time": iso_ms(r.start_ms), "correlation": _num(r.corr)}
    out.update({name: _num(getattr(r, attr)) for name, attr in _SPREAD_FIELDS[method].items()})
    return out


def _latest_window(al: pl.DataFrame, a: str, b: str, window: int, lags: int) -> dict | None:
    """beta, correlation, Engle-Granger and half-life of the newest `window` aligned bars."""
    if al.height < window + 1:
        return None
    tail = al.tail(window + 1)
    rows = pair_rows(tail["start_ms"].to_numpy(), tail[a].to_numpy(), tail[b].to_numpy(), PairParams(window=window))
    last = rows[-1]
    if last.beta is None or last.alpha is None:
        return None
    ya, xb = tail[a].to_numpy()[1:], tail[b].to_numpy()[1:]
    c = coint_stats(ya, xb, last.beta, lags)
    return {
        "pair": f"{a}-{b}",
        "as_of": iso_ms(last.start_ms),
        "as_of_ms": last.start_ms,
        "hedge_ratio": last.beta,
        "intercept": last.alpha,
        "correlation": _num(last.corr),
        "adf_stat": c.adf_stat if c else None,
        "adf_pvalue": c.adf_pvalue if c else None,
        "eg_pvalue": c.eg_pvalue if c else None,
        "crit": {"1%": c.crit_1, "5%": c.crit_5, "10%": c.crit_10} if c else None,
        "half_life": _num(c.half_life) if c else None,
        "lags": lags,
        "nobs": window,
    }


# --- endpoints ---------------------------------------------------------------------------


@router.get("/spread", response_model=SpreadResponse)
def get_spread(
    legs: PairLegs,
    time_range: TimeRange,
    window: WindowQuery = None,
    timeframe: TfQuery = None,
    method: Annotated[Literal["ols", "kalman"], Query(description="Rolling OLS or Kalman hedge ratio")] = "ols",
    limit: Limit = 1000,
    source: Annotated[
        Literal["auto", "computed"],
        Query(
            description="`auto`: the flow's stored rows when the pair, window and timeframe are configured; "
            "`computed`: always from the stored bars (to check one against the other)"
        ),
    ] = "auto",
) -> ORJSONResponse:
    """Hedge ratio, spread, z-score and correlation per aligned bar, plus the latest half-life and ADF."""
    (a, b), reader, cfg = legs.symbols, legs.reader, legs.state.cfg
    pc = _pair_cfg(cfg, a, b)
    tfs = cfg.pair_timeframes(pc) if pc else []
    tf = timeframe or (tfs[0] if tfs else "1m")
    w = window or (pc.window if pc else DEFAULT_WINDOW)
    start_ms, end_ms = time_range
    name = f"{a}-{b}"
    if source == "auto" and pc and tf in tfs and w == pc.window and reader.has_pair_rows(name, tf, w):
        source = "store"
        rows = reader.pair_rows(name, tf, w, Span(start_ms, end_ms), limit)
        latest = rows[-1] if rows else None
    else:
        source = "computed"
        params = pc.params(w) if pc else PairParams(window=w)
        all_rows, latest = _computed_rows(reader, a, b, tf, params, end_ms)
        rows = _in_range(all_rows, start_ms, end_ms)
        if start_ms is not None and not rows:
            latest = None
    rows = rows[-limit:]
    body = {
        "pair": name,
        "timeframe": tf,
        "window": w,
        "method": method,
        "source": source,
        "count": len(rows),
        "rows": [_spread_row(r, method) for r in rows],
        "adf": _adf(latest, w, tf),
    }
    return ORJSONResponse(body)


@router.get("/correlation", response_model=CorrelationResponse)
def get_correlation(
    legs: ManyLegs,
    window: WindowQuery = None,
    timeframe: TfQuery = None,
    limit: Annotated[int, Query(ge=1, le=20_000, description="Newest rows per pair, 1 … 20,000")] = 1000,
    source: Annotated[
        Literal["auto", "computed"],
        Query(description="auto: the flow's stored rows when the symbols, timeframe and window are configured"),
    ] = "auto",
) -> ORJSONResponse:
    """Rolling correlation of log returns per pair (newest `limit` bars) and the latest matrix."""
    syms, reader, cfg = legs.symbols, legs.reader, legs.state.cfg
    cc = cfg.correlation
    tf = timeframe or (cc.timeframe if cc else "1m")
    w = window or (cc.window if cc else DEFAULT_WINDOW)
    if source == "auto" and cc and tf == cc.timeframe and w == cc.window and set(syms) <= set(cc.symbols):
        stored = _stored_correlation(reader, cc.symbols, syms, tf, w, limit)
        if stored is not None:
            return ORJSONResponse(stored)
    # A value depends on the newest window + 1 closes only, so the tail gives the same numbers.
    al = _aligned(reader, syms, tf, None).tail(limit + w + 1)
    matrix = CorrMatrix(syms, w)
    series: dict[str, list[dict]] = {f"{x}-{y}": [] for x, y in combinations(syms, 2)}
    latest: dict[tuple[str, str], float | None] = {}
    starts = al["start_ms"].to_list() if al.height else []
    cols = [al[s].to_list() for s in syms] if al.height else []
    for i, t in enumerate(starts):
        out = matrix.update({s: cols[j][i] for j, s in enumerate(syms)})
        for (x, y), c in out.items():
            series[f"{x}-{y}"].append({"start_ms": t, "time": iso_ms(t), "corr": _num(c)})
            latest[(x, y)] = _num(c)
    values = [[1.0 if x == y else latest.get((x, y), latest.get((y, x))) for y in syms] for x in syms]
    body = {
        "symbols": syms,
        "timeframe": tf,
        "window": w,
        "as_of": iso_ms(starts[-1]) if starts else None,
        "series": {k: v[-limit:] for k, v in series.items()},
        "matrix": {"symbols": syms, "values": values},
        "source": "computed",
    }
    return ORJSONResponse(body)


def _stored_correlation(
    reader: StoreReader, configured: list[str], syms: list[str], tf: str, w: int, limit: int
) -> dict | None:
    """The flow's rows (pairs keyed in the configured order), or None when it stored none yet."""
    order = {s: i for i, s in enumerate(configured)}
    series: dict[str, list[dict]] = {}
    latest: dict[tuple[str, str], float | None] = {}
    newest = None
    for x, y in combinations(syms, 2):
        a, b = (x, y) if order[x] < order[y] else (y, x)
        rows = reader.correlation_rows(tf, w, a, b, limit)
        if not rows:
            return None
        series[f"{x}-{y}"] = [{"start_ms": t, "time": iso_ms(t), "corr": _num(c)} for t, c in rows]
        latest[(x, y)] = _num(rows[-1][1])
        newest = rows[-1][0] if newest is None else min(newest, rows[-1][0])
    values = [[1.0 if x == y else latest.get((x, y), latest.get((y, x))) for y in syms] for x in syms]
    return {
        "symbols": syms,
        "timeframe": tf,
        "window": w,
        "as_of": iso_ms(newest) if newest is not None else None,
        "series": series,
        "matrix": {"symbols": syms, "values": values},
        "source": "store",
    }


@router.get("/screen", response_model=ScreenResponse)
def get_screen(
    reader: Reader,
    state: State,
    symbols: Annotated[str | None, Query(max_length=400, description="Comma-separated (default: configured)")] = None,
    timeframe: Annotated[Timeframe, Query(description="Bar length")] = "1m",
    window: WindowQuery = None,
) -> ORJSONResponse:
    """Every pair of the symbols, ranked by Engle-Granger p-value over the newest window (lowest first)."""
    cfg = state.cfg
    syms = parse_symbols(symbols, 2, MAX_SYMBOLS) if symbols else list(cfg.symbols)[:MAX_SYMBOLS]
    _known(state, reader, syms)
    w = window or DEFAULT_WINDOW
    frames = {s: reader.closed_bars(s, timeframe) for s in syms}
    ranked = []
    for a, b in combinations(syms, 2):
        al = align_frames({a: frames[a], b: frames[b]}, TIMEFRAME_MS[timeframe])
        res = _latest_window(al, a, b, w, 1)
        ranked.append(res or {"pair": f"{a}-{b}", "eg_pvalue": None, "note": f"fewer than {w + 1} aligned bars"})
    ranked.sort(key=lambda r: (r["eg_pvalue"] is None, r["eg_pvalue"] if r["eg_pvalue"] is not None else 0.0))
    return ORJSONResponse({"timeframe": timeframe, "window": w, "pairs": ranked})


@router.get("/adf", response_model=AdfResponse)
def get_adf(
    legs: PairLegs,
    window: WindowQuery = None,
    timeframe: Annotated[Timeframe, Query(description="Bar length")] = "1m",
    lags: Annotated[int, Query(ge=0, le=50, description="Lagged differences in the ADF regression")] = 1,
) -> ORJSONResponse:
    """Engle-Granger test of y on x over the newest `window` aligned bars (on demand)."""
    (a, b), reader = legs.symbols, legs.reader
    w = window or DEFAULT_WINDOW
    al = _aligned(reader, [a, b], timeframe, None)
    if lags + 8 > w:
        raise param_error("query", "lags", f"too many lags for a window of {w}", lags)
    res = _latest_window(al, a, b, w, lags)
    if res is None:
        return ORJSONResponse({"pair": f"{a}-{b}", "timeframe": timeframe, "window": w, "result": None})
    res["lags"] = lags
    return ORJSONResponse({"pair": f"{a}-{b}", "timeframe": timeframe, "window": w, "result": res})


@router.get("/backtest", response_model=BacktestResponse)
def get_backtest(
    legs: PairLegs,
    time_range: TimeRange,
    entry_z: Annotated[float, Query(gt=0, le=20, description="Enter when |z| >= entry_z")] = 2.0,
    exit_z: Annotated[float, Query(ge=0, le=20, description="Exit when |z| <= exit_z (below entry_z)")] = 0.5,
    window: WindowQuery = None,
    timeframe: Annotated[Timeframe, Query(description="Bar length")] = "1m",
    fee_bps: Annotated[float, Query(ge=0, le=1000, description="Fee per leg, in basis points of notional")] = 4.0,
) -> ORJSONResponse:
    """Mean-reversion backtest on stored bars with the rolling OLS z-score (past-only), beta fixed at entry."""
    if exit_z >= entry_z:
        raise param_error("query", "exit_z", f"must be below entry_z ({entry_z})", exit_z)
    (a, b), reader = legs.symbols, legs.reader
    w = window or DEFAULT_WINDOW
    start_ms, end_ms = time_range
    rows, _ = _computed_rows(reader, a, b, timeframe, PairParams(window=w), end_ms)
    rows = _in_range(rows, start_ms, end_ms)
    bars_per_year = 365 * 86_400_000 / TIMEFRAME_MS[timeframe]
    bt = backtest(rows, entry_z, exit_z, fee_bps, bars_per_year)
    trades = [
        {
            "side": t.side,
            "entry": iso_ms(t.entry_ms),
            "entry_ms": t.entry_ms,
            "exit": iso_ms(t.exit_ms) if t.exit_ms is not None else None,
            "exit_ms": t.exit_ms,
            "entry_z": t.entry_z,
            "exit_z": t.exit_z,
            "hedge_ratio": t.beta,
            "entry_prices": [t.entry_a, t.entry_b],
            "exit_prices": [t.exit_a, t.exit_b],
            "pnl": t.pnl,
            "fees": t.fees,
            "open": t.open,
        }
        for t in bt.trades
    ]
    step = max(1, len(bt.curve) // 5000)  # a bounded curve: at most ~5000 points
    curve = [{"start_ms": s, "time": iso_ms(s), "equity": v} for s, v in bt.curve[::step]]
    body = {
        "pair": f"{a}-{b}",
        "timeframe": timeframe,
        "window": w,
        "entry_z": entry_z,
        "exit_z": exit_z,
        "fee_bps": fee_bps,
        "bars": len(rows),
        "total_pnl": bt.total_pnl,
        "mean_pnl": bt.mean_pnl,
        "win_rate": bt.win_rate,
        "sharpe": _num(bt.sharpe),
        "max_drawdown": bt.max_drawdown,
        "trades": trades,
        "curve": curve,
        "units": "quote currency, long/short 1 unit of a against hedge_ratio units of b",
    }
    return ORJSONResponse(body)
