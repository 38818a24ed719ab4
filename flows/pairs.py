"""The dataflow steps of pair, correlation and symbol analytics (thin adapters over ticklens.domain).

Analytics see each bar as it first closed; a late-trade revision of a closed
bar updates `bars` only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from flows.items import MicroItem, SymbolOut
from ticklens.config import Config
from ticklens.domain.align import Aligner, LegBars
from ticklens.domain.stats.correlation import CorrMatrix, CorrOut
from ticklens.domain.stats.pair import PairAnalytics, PairOut
from ticklens.domain.stats.symbol import SymbolStats, SymbolStatsOut
from ticklens.domain.timeframes import TIMEFRAME_MS

CORR_KEY = "_corr"


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


def leg_router(cfg: Config) -> Callable[[dict | None, SymbolOut | MicroItem], tuple[dict, list[LegBars]]]:
    """Stateful per symbol: SymbolOut (or, for pairs on mids, MicroItem) -> one LegBars per pair (and
    correlation set) and timeframe it feeds.

    A watermark that moved within a bucket releases nothing, so a leg is only
    sent when it has closed bars or its watermark crossed a bucket boundary
    (most batches do neither; each item costs a trip through bytewax). A pair with
    `price: mid` reads each micro bar's closing mid once, when it is first written.
    """
    routes: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)  # (symbol, price) -> targets
    for pair in cfg.pairs:
        for tf in cfg.pair_timeframes(pair):
            for leg in pair.legs:
                routes[(leg, pair.price)].append((f"{pair.name}@{tf}", tf))
    ctf = corr_timeframe(cfg)
    if cfg.correlation and ctf:
        for s in cfg.correlation.symbols:
            routes[(s, "close")].append((f"{CORR_KEY}@{ctf}", ctf))

    def route(state: dict | None, out: SymbolOut | MicroItem) -> tuple[dict, list[LegBars]]:
        state = state if state is not None else {}  # (price, timeframe) -> watermark bucket last sent
        price = "mid" if isinstance(out, MicroItem) else "close"
        targets = routes.get((out.symbol, price))
        if not targets:
            return state, []
        by = _mids_by_tf(out, state) if isinstance(out, MicroItem) else _closed_by_tf(out)
        items = []
        for key, tf in targets:
            bucket = out.watermark // TIMEFRAME_MS[tf]
            if tf in by or bucket > state.get((price, tf), -(2**62)):
                items.append(LegBars(out.symbol, tf, by.get(tf, []), out.watermark, key))
        for tf in {tf for _, tf in targets}:
            state[(price, tf)] = max(state.get((price, tf), -(2**62)), out.watermark // TIMEFRAME_MS[tf])
        return state, items

    return route


def _mids_by_tf(out: MicroItem, state: dict) -> dict[str, list[tuple[int, float, float, float]]]:
    """Micro bars written for the first time, as (start, closing mid, 0, 0) per timeframe."""
    by: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    for b in sorted(out.bars, key=lambda b: b.start_ms):
        last = state.get(("mid_start", b.timeframe), -(2**62))
        if b.start_ms > last and b.mid_close is not None:
            by[b.timeframe].append((b.start_ms, b.mid_close, 0.0, 0.0))
            state[("mid_start", b.timeframe)] = b.start_ms
    return by


def leg_key(leg: LegBars) -> str:
    return leg.key


@dataclass(slots=True)
class _PairState:
    aligner: Aligner
    stats: PairAnalytics


def pair_step(cfg: Config) -> Callable[[_PairState | None, LegBars], tuple[_PairState, list[PairOut]]]:
    """Stateful step keyed by "a-b@tf": aligned rows in, pair statistics out."""
    pairs = {f"{p.name}@{tf}": (p, tf) for p in cfg.pairs for tf in cfg.pair_timeframes(p)}

    def step(state: _PairState | None, leg: LegBars) -> tuple[_PairState, list[PairOut]]:
        pair, tf = pairs[leg.key]
        if state is None:
            state = _PairState(Aligner(list(pair.legs), TIMEFRAME_MS[tf]), PairAnalytics(pair.params()))
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
