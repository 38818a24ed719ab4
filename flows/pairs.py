"""The dataflow steps of pair, correlation and symbol analytics (thin adapters over ticklens.domain).

Analytics see each bar as it closes, and again when a late trade revises it
(while `BarBook` still holds it, `bars.keep_closed_ms`): the rows from the
revised bar on are recomputed (`ticklens.domain.aligned.AlignedStats`), so the
stored analytics, like the bars, do not depend on arrival order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from flows.items import MicroItem, SymbolOut
from ticklens.config import Config
from ticklens.domain.align import Leg, LegBars
from ticklens.domain.aligned import AlignedStats
from ticklens.domain.stats.correlation import CorrMatrix, CorrOut
from ticklens.domain.stats.pair import PairAnalytics, PairOut, PairRow
from ticklens.domain.stats.symbol import SymbolRow, SymbolStats, SymbolStatsOut
from ticklens.domain.timeframes import TIMEFRAME_MS
from ticklens.domain.times import FAR_PAST

CORR_KEY = "_corr"


def corr_timeframe(cfg: Config) -> str | None:
    c = cfg.correlation
    return c.timeframe if c and len(c.symbols) >= 2 and c.timeframe in cfg.timeframes else None


def _closed_by_tf(out: SymbolOut) -> dict[str, list[tuple[int, float, float, float]]]:
    """Bars that closed or were revised in this step, per timeframe, oldest first."""
    by: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    for b in out.closed:
        by[b.timeframe].append((b.start_ms, b.close, b.volume, b.quote_volume))
    for b in out.revised:
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
            if tf in by or bucket > state.get((price, tf), FAR_PAST):
                items.append(LegBars(out.symbol, tf, by.get(tf, []), out.watermark, key))
        for tf in {tf for _, tf in targets}:
            state[(price, tf)] = max(state.get((price, tf), FAR_PAST), out.watermark // TIMEFRAME_MS[tf])
        return state, items

    return route


def _mids_by_tf(out: MicroItem, state: dict) -> dict[str, list[tuple[int, float, float, float]]]:
    """Micro bars written for the first time, as (start, closing mid, 0, 0) per timeframe."""
    by: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    for b in sorted(out.bars, key=lambda b: b.start_ms):
        last = state.get(("mid_start", b.timeframe), FAR_PAST)
        if b.start_ms > last and b.mid_close is not None:
            by[b.timeframe].append((b.start_ms, b.mid_close, 0.0, 0.0))
            state[("mid_start", b.timeframe)] = b.start_ms
    return by


def leg_key(leg: LegBars) -> str:
    return leg.key


# What each statistic makes of an aligned row (a `RowStats` for AlignedStats): module-level
# classes, so the flow's state pickles for recovery.


@dataclass(slots=True)
class _Pair:
    legs: tuple[str, str]
    stats: PairAnalytics

    def clone(self) -> _Pair:
        return _Pair(self.legs, self.stats.clone())

    def on_row(self, start_ms: int, row: dict[str, Leg]) -> PairRow:
        return self.stats.update(start_ms, row[self.legs[0]][0], row[self.legs[1]][0])


@dataclass(slots=True)
class _Symbol:
    symbol: str
    stats: SymbolStats

    def clone(self) -> _Symbol:
        return _Symbol(self.symbol, self.stats.clone())

    def on_row(self, start_ms: int, row: dict[str, Leg]) -> SymbolRow:
        return self.stats.update(start_ms, *row[self.symbol])


@dataclass(slots=True)
class _Corr:
    matrix: CorrMatrix

    def clone(self) -> _Corr:
        return _Corr(self.matrix.clone())

    def on_row(self, start_ms: int, row: dict[str, Leg]) -> list[tuple[int, str, str, float | None]]:
        closes = {s: row[s][0] for s in self.matrix.symbols}
        return [(start_ms, a, b, c) for (a, b), c in self.matrix.update(closes).items()]


def pair_step(cfg: Config) -> Callable[[AlignedStats | None, LegBars], tuple[AlignedStats, list[PairOut]]]:
    """Stateful step keyed by "a-b@tf": aligned rows in, pair statistics out (recomputed ones apart)."""
    pairs = {f"{p.name}@{tf}": (p, tf) for p in cfg.pairs for tf in cfg.pair_timeframes(p)}
    keep = cfg.bars.keep_closed_ms

    def step(state: AlignedStats | None, leg: LegBars) -> tuple[AlignedStats, list[PairOut]]:
        pair, tf = pairs[leg.key]
        if state is None:
            stats = _Pair(pair.legs, PairAnalytics(pair.params()))
            state = AlignedStats(list(pair.legs), TIMEFRAME_MS[tf], keep, stats)
        out = state.push(leg)
        items = []
        if out.revised:
            items.append(PairOut(pair.name, pair.legs, tf, pair.window, out.revised, revised=True))  # type: ignore[arg-type]
        if out.fresh:
            items.append(PairOut(pair.name, pair.legs, tf, pair.window, out.fresh))  # type: ignore[arg-type]
        return state, items

    return step


def symbol_stats_step(cfg: Config) -> Callable[[dict | None, SymbolOut], tuple[dict, list[SymbolStatsOut]]]:
    """Stateful step keyed by symbol: per-timeframe rolling statistics of aligned bars."""
    window = cfg.stats.window
    keep = cfg.bars.keep_closed_ms

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
                state[tf] = AlignedStats([out.symbol], TIMEFRAME_MS[tf], keep, _Symbol(out.symbol, SymbolStats(window)))
            res = state[tf].push(LegBars(out.symbol, tf, by.get(tf, []), out.watermark))
            rows = res.revised + res.fresh
            if rows:
                results.append(SymbolStatsOut(out.symbol, tf, window, rows))  # type: ignore[arg-type]
        return state, results

    return step


def corr_step(cfg: Config) -> Callable[[AlignedStats | None, LegBars], tuple[AlignedStats, list[CorrOut]]]:
    """Stateful step keyed by "_corr@tf": the rolling correlation matrix of `cfg.correlation`."""
    corr = cfg.correlation
    syms, window, tf = (corr.symbols, corr.window, corr.timeframe) if corr else ([], 2, "1m")
    keep = cfg.bars.keep_closed_ms

    def step(state: AlignedStats | None, leg: LegBars) -> tuple[AlignedStats, list[CorrOut]]:
        if state is None:
            state = AlignedStats(list(syms), TIMEFRAME_MS[tf], keep, _Corr(CorrMatrix(list(syms), window)))
        out = state.push(leg)
        rows = [r for rs in (*out.revised, *out.fresh) for r in rs]  # type: ignore[attr-defined]
        return state, ([CorrOut(tf, window, rows)] if rows else [])

    return step
