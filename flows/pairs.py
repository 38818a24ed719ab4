"""Aligned bars of several symbols, and the dataflow steps of pair and symbol analytics.

Alignment rule (flow and API alike): per timeframe, a complete grid of bar
starts. A leg with no trade in a bucket carries its last close forward (with
zero volume). A row exists only once every leg has had a bar (the grid starts
at the latest first bar), and the grid ends at the newest bar of any leg: a
quiet tail is filled in when the next bar arrives, never invented. In the flow
a bucket is emitted once every leg's watermark has passed its end, so a bar
that closes later can no longer change it. Analytics see each bar as it first
closed; a late-trade revision of a closed bar updates `bars` only.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from flows.analytics import CorrMatrix, PairAnalytics, PairParams, PairRow, SymbolRow, SymbolStats
from flows.events import SymbolOut
from ticklens.config import TIMEFRAME_MS, Config, PairConfig

CORR_KEY = "_corr"
Leg = tuple[float, float, float]  # close, volume, quote volume


@dataclass(slots=True)
class LegBars:
    """Closed bars of one symbol at one timeframe, and how far its watermark has come."""

    symbol: str
    timeframe: str
    bars: list[tuple[int, float, float, float]]  # (start_ms, close, volume, quote_volume), oldest first
    watermark: int
    key: str = ""  # the state it feeds ("a-b@1s"): bytewax does not pass keys to mappers


@dataclass(slots=True)
class PairOut:
    pair: str
    legs: tuple[str, str]
    timeframe: str
    window: int
    rows: list[PairRow]


@dataclass(slots=True)
class SymbolStatsOut:
    symbol: str
    timeframe: str
    window: int
    rows: list[SymbolRow]


@dataclass(slots=True)
class CorrOut:
    timeframe: str
    window: int
    rows: list[tuple[int, str, str, float | None]]  # (start_ms, a, b, corr)


def max_idle_bars(tf_ms: int) -> int:
    """Buckets carried forward after the last trade on any leg: 10 minutes of 1s, an hour of 1m or 5m."""
    return max(1, min(600, 3_600_000 // tf_ms))


@dataclass(slots=True)
class Aligner:
    """Turns per-leg closed bars into complete aligned rows (see the module docstring)."""

    legs: list[str]
    tf_ms: int
    pending: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    first: dict[str, int] = field(default_factory=dict)
    newest: dict[str, int] = field(default_factory=dict)
    wm: dict[str, int] = field(default_factory=dict)
    current: dict[str, Leg] = field(default_factory=dict)
    cursor: int | None = None
    last_bar: int = -(2**62)  # newest bucket aligned so far in which any leg traded

    def push(self, leg: LegBars) -> list[tuple[int, dict[str, Leg]]]:
        q = self.pending[leg.symbol]
        for bar in leg.bars:
            start = bar[0]
            if (self.cursor is not None and start < self.cursor) or start <= self.newest.get(leg.symbol, -1):
                continue  # already aligned past it: a revision, not a new bar
            q.append(bar)
            self.first.setdefault(leg.symbol, start)
            self.newest[leg.symbol] = start
        self.wm[leg.symbol] = max(self.wm.get(leg.symbol, leg.watermark), leg.watermark)
        return self._drain()

    def _drain(self) -> list[tuple[int, dict[str, Leg]]]:
        if len(self.first) < len(self.legs) or len(self.wm) < len(self.legs):
            return []
        if self.cursor is not None and not any(self.pending.values()):
            return []  # the common case: everything aligned, waiting for the next bar
        if self.cursor is None:
            self.cursor = max(self.first.values())
        last = max(self.newest.values())
        safe = min(self.wm.values())
        idle_ms = max_idle_bars(self.tf_ms) * self.tf_ms
        out = []
        t = self.cursor
        while t <= last and t + self.tf_ms <= safe:
            row: dict[str, Leg] = {}
            for s in self.legs:
                q = self.pending[s]
                fresh = None
                while q and q[0][0] <= t:
                    fresh = q.popleft()
                if fresh is not None:
                    self.last_bar = max(self.last_bar, fresh[0])
                    self.current[s] = (fresh[1], fresh[2], fresh[3]) if fresh[0] == t else (fresh[1], 0.0, 0.0)
                    row[s] = self.current[s]
                else:
                    row[s] = (self.current[s][0], 0.0, 0.0)
            if t - self.last_bar >= idle_ms:
                # A long silence on every leg (an outage, a gap between recordings): resume at the next bar.
                t = min(q[0][0] for q in self.pending.values() if q)
                continue
            out.append((t, row))
            t += self.tf_ms
        self.cursor = t
        return out


def align_frames(bars: dict[str, pl.DataFrame], tf_ms: int) -> pl.DataFrame:
    """Batch alignment of closed bars (columns start_ms, close, volume, quote_volume) per symbol.

    Returns start_ms plus `<sym>`, `<sym>_volume`, `<sym>_quote` per symbol; empty if a leg has no bar.
    """
    if not bars or any(df.height == 0 for df in bars.values()):
        return pl.DataFrame({"start_ms": []}, schema={"start_ms": pl.Int64})
    lo = min(int(df["start_ms"].min()) for df in bars.values())
    first = max(int(df["start_ms"].min()) for df in bars.values())
    last = max(int(df["start_ms"].max()) for df in bars.values())
    grid = pl.DataFrame({"start_ms": pl.int_range(lo, last + tf_ms, tf_ms, eager=True, dtype=pl.Int64)})
    for sym, df in bars.items():
        leg = df.select(
            pl.col("start_ms").cast(pl.Int64),
            pl.col("close").cast(pl.Float64).alias(sym),
            pl.col("volume").cast(pl.Float64).alias(f"{sym}_volume"),
            pl.col("quote_volume").cast(pl.Float64).alias(f"{sym}_quote"),
        )
        grid = grid.join(leg, on="start_ms", how="left").with_columns(
            pl.col(sym).forward_fill(),
            pl.col(f"{sym}_volume").fill_null(0.0),
            pl.col(f"{sym}_quote").fill_null(0.0),
            pl.col(sym).is_not_null().alias(f"_{sym}_traded"),
        )
    traded = pl.any_horizontal([pl.col(c) for c in grid.columns if c.endswith("_traded")])
    last_bar = pl.when(traded).then(pl.col("start_ms")).forward_fill()
    idle_ms = max_idle_bars(tf_ms) * tf_ms
    return grid.filter((pl.col("start_ms") >= first) & (pl.col("start_ms") - last_bar < idle_ms)).drop(
        [c for c in grid.columns if c.endswith("_traded")]
    )


def pair_params(pair: PairConfig, window: int | None = None) -> PairParams:
    return PairParams(
        window=window or pair.window,
        log_prices=pair.log_prices,
        adf_every=pair.adf_every,
        adf_lags=pair.adf_lags,
        kalman_delta=pair.kalman_delta,
        kalman_obs_var=pair.kalman_obs_var,
        kalman_init_var=pair.kalman_init_var,
    )


# --- dataflow steps ------------------------------------------------------------------


def pair_timeframes(cfg: Config, pair: PairConfig) -> list[str]:
    """A pair's timeframes that the flow bars (others have no bars to align)."""
    return [tf for tf in pair.timeframes if tf in cfg.timeframes]


def corr_timeframe(cfg: Config) -> str | None:
    c = cfg.correlation
    return c.timeframe if c and len(c.symbols) >= 2 and c.timeframe in cfg.timeframes else None


def _closed_by_tf(out: SymbolOut) -> dict[str, list[tuple[int, float, float, float]]]:
    by: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    for b in out.closed:
        by[b.timeframe].append((b.start_ms, b.close, b.volume, b.quote_volume))
    for lst in by.values():
        lst.sort()
    return by


def leg_router(cfg: Config) -> Callable[[dict | None, SymbolOut], tuple[dict, list[LegBars]]]:
    """Stateful per symbol: SymbolOut -> one LegBars per pair (and correlation set) and timeframe it feeds.

    A watermark that moved within a bucket releases nothing, so a leg is only
    sent when it has closed bars or its watermark crossed a bucket boundary
    (most batches do neither; each item costs a trip through bytewax).
    """
    routes: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for pair in cfg.pairs:
        for tf in pair_timeframes(cfg, pair):
            for leg in pair.legs:
                routes[leg].append((f"{pair.name}@{tf}", tf))
    ctf = corr_timeframe(cfg)
    if cfg.correlation and ctf:
        for s in cfg.correlation.symbols:
            routes[s].append((f"{CORR_KEY}@{ctf}", ctf))

    def route(state: dict | None, out: SymbolOut) -> tuple[dict, list[LegBars]]:
        state = state if state is not None else {}  # timeframe -> watermark bucket last sent
        targets = routes.get(out.symbol)
        if not targets:
            return state, []
        by = _closed_by_tf(out)
        items = []
        for key, tf in targets:
            bucket = out.watermark // TIMEFRAME_MS[tf]
            if tf in by or bucket > state.get(tf, -(2**62)):
                items.append(LegBars(out.symbol, tf, by.get(tf, []), out.watermark, key))
        for tf in {tf for _, tf in targets}:
            state[tf] = max(state.get(tf, -(2**62)), out.watermark // TIMEFRAME_MS[tf])
        return state, items

    return route


def leg_key(leg: LegBars) -> str:
    return leg.key


@dataclass(slots=True)
class _PairState:
    aligner: Aligner
    stats: PairAnalytics


def pair_step(cfg: Config) -> Callable[[_PairState | None, LegBars], tuple[_PairState, list[PairOut]]]:
    """Stateful step keyed by "a-b@tf": aligned rows in, pair statistics out."""
    pairs = {f"{p.name}@{tf}": (p, tf) for p in cfg.pairs for tf in pair_timeframes(cfg, p)}

    def step(state: _PairState | None, leg: LegBars) -> tuple[_PairState, list[PairOut]]:
        pair, tf = pairs[leg.key]
        if state is None:
            state = _PairState(Aligner(list(pair.legs), TIMEFRAME_MS[tf]), PairAnalytics(pair_params(pair)))
        a, b = pair.legs
        rows = [state.stats.update(t, r[a][0], r[b][0]) for t, r in state.aligner.push(leg)]
        return state, ([PairOut(pair.name, pair.legs, tf, pair.window, rows)] if rows else [])

    return step


def symbol_stats_step(cfg: Config) -> Callable[[dict | None, SymbolOut], tuple[dict, list[SymbolStatsOut]]]:
    """Stateful step keyed by symbol: per-timeframe rolling statistics of aligned bars."""
    window = cfg.stats.window

    def step(state: dict | None, out: SymbolOut) -> tuple[dict, list[SymbolStatsOut]]:
        state = state if state is not None else {}
        if not cfg.stats.enabled:
            return state, []
        results = []
        by = _closed_by_tf(out)
        for tf in cfg.timeframes:
            if tf not in cfg.stats.timeframes:
                continue
            if tf not in state:
                state[tf] = (Aligner([out.symbol], TIMEFRAME_MS[tf]), SymbolStats(window))
            aligner, stats = state[tf]
            rows = [
                stats.update(t, *r[out.symbol])
                for t, r in aligner.push(LegBars(out.symbol, tf, by.get(tf, []), out.watermark))
            ]
            if rows:
                results.append(SymbolStatsOut(out.symbol, tf, window, rows))
        return state, results

    return step


def corr_step(cfg: Config) -> Callable[[tuple | None, LegBars], tuple[tuple, list[CorrOut]]]:
    """Stateful step keyed by "_corr@tf": the rolling correlation matrix of `cfg.correlation`."""
    corr = cfg.correlation
    syms, window, tf = (corr.symbols, corr.window, corr.timeframe) if corr else ([], 2, "1m")

    def step(state: tuple | None, leg: LegBars) -> tuple[tuple, list[CorrOut]]:
        if state is None:
            state = (Aligner(list(syms), TIMEFRAME_MS[tf]), CorrMatrix(list(syms), window))
        aligner, matrix = state
        rows = []
        for t, r in aligner.push(leg):
            for (a, b), c in matrix.update({s: r[s][0] for s in syms}).items():
                rows.append((t, a, b, c))
        return state, ([CorrOut(tf, window, rows)] if rows else [])

    return step
