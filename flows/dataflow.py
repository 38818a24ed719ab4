"""The ticklens dataflow, top to bottom: trades in, deduplicated, barred, analysed, stored."""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.alert_step import alert_step
from flows.items import Fresh, SymbolOut
from flows.pairs import CORR_KEY, corr_step, leg_key, leg_router, pair_step, symbol_stats_step
from flows.sink import make_sink
from flows.sources import make_source
from ticklens.config import Config
from ticklens.domain.bars import BarBook
from ticklens.domain.dedup import Dedup
from ticklens.domain.records import Clock, GapEvent, Trades
from ticklens.domain.stats.pair import PairOut
from ticklens.domain.timeframes import TIMEFRAME_MS

FEED_KEY = "_feed"


def build_flow(cfg: Config) -> Dataflow:
    flow = Dataflow("ticklens")
    items = op.input("source", flow, make_source(cfg))  # Trades | Clock | Rejected | FeedStats
    keyed = op.flat_map("route", items, _router(cfg.symbols))  # ("btcusdt", Trades | Clock) | ("_feed", …)
    split = op.branch("split_feed", keyed, _is_symbol_item)
    fresh = op.stateful_map("dedup", split.trues, _dedup_step(cfg.bars.lateness_ms))  # ("btcusdt", Fresh)
    barred = op.stateful_map("bars", fresh, _bars_step(cfg))  # ("btcusdt", SymbolOut)
    legs = op.stateful_flat_map("pair_legs", barred, leg_router(cfg))  # ("btcusdt", LegBars)
    legs = op.key_on("by_pair", op.key_rm("unkey_legs", legs), leg_key)  # ("btcusdt-ethusdt@1s" | "_corr@1m", LegBars)
    legs_split = op.branch("split_corr", legs, _is_pair_item)
    pairs = op.stateful_flat_map("pair_analytics", legs_split.trues, pair_step(cfg))  # ("btcusdt-ethusdt@1s", PairOut)
    corr = op.stateful_flat_map("correlation", legs_split.falses, corr_step(cfg))  # ("_corr@1m", CorrOut)
    sym_stats = op.stateful_flat_map("symbol_stats", barred, symbol_stats_step(cfg))  # ("btcusdt", SymbolStatsOut)
    live_pairs = op.filter("first_computed", pairs, _is_first_computed)  # recomputed rows alert no one
    watched = op.merge("alert_inputs", barred, live_pairs)
    alerts = op.stateful_flat_map("alerts", watched, alert_step(cfg))  # ("btcusdt" | "btcusdt-ethusdt", AlertFired)
    stored = op.merge("to_store", barred, split.falses, pairs, corr, sym_stats, alerts)
    op.output("store", stored, make_sink(cfg))
    return flow


def _router(symbols: list[str]):
    def route(item: Any) -> list[tuple[str, Any]]:
        if isinstance(item, Trades):
            return [(item.symbol, item)]
        if isinstance(item, Clock):
            return [(s, Clock(item.ts_ms, s)) for s in symbols]
        return [(FEED_KEY, item)]

    return route


def _is_symbol_item(kv: tuple[str, Any]) -> bool:
    return kv[0] != FEED_KEY


def _is_first_computed(kv: tuple[str, PairOut]) -> bool:
    return not kv[1].revised


def _is_pair_item(kv: tuple[str, Any]) -> bool:
    return not kv[0].startswith(CORR_KEY)


def _dedup_step(lateness_ms: int):
    def dedup(state: Dedup | None, item: Trades | Clock) -> tuple[Dedup, Fresh]:
        state = state or Dedup(lateness_ms)
        if isinstance(item, Clock):
            now_ts = item.ts_ms
            out = Fresh(symbol=item.symbol, clock=item.ts_ms)
        else:
            fresh, dups = state.fresh(item)
            now_ts = state.max_ts
            out = Fresh(symbol=item.symbol, trades=fresh, duplicates=dups)
        out.gaps = [GapEvent(item.symbol, h.from_id, h.to_id, h.after_ts, status) for h, status in state.settle(now_ts)]
        return state, out

    return dedup


def _bars_step(cfg: Config):
    timeframes = {tf: TIMEFRAME_MS[tf] for tf in cfg.timeframes}

    def step(state: BarBook | None, fresh: Fresh) -> tuple[BarBook, SymbolOut]:
        trades = fresh.trades
        if state is None:
            state = BarBook(fresh.symbol, timeframes, cfg.bars.lateness_ms, cfg.bars.keep_closed_ms)
        changed, merges = state.add(trades) if trades is not None else ([], [])
        # Closed before this step's watermark moved: changed by a late trade (analytics recompute them).
        revised = [b for b in changed if b.closed]
        closed = state.advance(fresh.clock)
        # A bar that closed in this step is written again so its `closed` flag lands.
        changed.extend(closed)
        out = SymbolOut(
            symbol=state.symbol,
            ticks=trades,
            bars=changed,
            merges=merges,
            closed=closed,
            revised=revised,
            gaps=fresh.gaps,
            duplicates=fresh.duplicates,
            late_trades=state.late_trades,
            revisions=state.revisions,
            watermark=state.watermark,
        )
        return state, out

    return step
