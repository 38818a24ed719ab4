"""The ticklens dataflow, top to bottom: trades in, deduplicated, barred, analysed, stored; books kept.

In a cluster each keyed step's state lives on one worker per key: a symbol's dedup, bars,
book, statistics and alert state together; a pair's analytics on the worker its "a-b@tf" key
hashes to; the correlation matrix ("_corr@tf") likewise on one worker. Feed items ("_feed":
feed counters, rejects, backfill gaps) pass no keyed step, so they stay on the worker of
the source partition that made them. Every worker's sink writes what reached it (each
key's rows from one worker; `traced` steps print their own traceback in a cluster).
"""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow

from flows.alert_step import alert_step
from flows.book_step import book_step, micro_enabled
from flows.crash import traced
from flows.items import BookClock, Fresh, SymbolOut
from flows.micro_step import micro_step
from flows.pairs import CORR_KEY, corr_step, leg_key, leg_router, pair_step, symbol_stats_step
from flows.sink import make_sink, store_step
from flows.sources import make_source
from ticklens.config import Config
from ticklens.domain.bars import BarBook
from ticklens.domain.book import BookBatch, Quotes
from ticklens.domain.dedup import Conflict, Dedup
from ticklens.domain.records import FEED_KEY, Clock, GapEvent, Rejected, Trades
from ticklens.domain.stats.pair import PairOut
from ticklens.domain.timeframes import TIMEFRAME_MS


def build_flow(cfg: Config) -> Dataflow:
    flow = Dataflow("ticklens")
    items = op.input("source", flow, make_source(cfg))  # Trades | Quotes | BookBatch | Clock | Rejected | FeedStats
    keyed = op.flat_map(
        "route", items, traced("route", _router(cfg.symbols, book_clocks=micro_enabled(cfg)))
    )  # ("btcusdt", Trades | Quotes | BookBatch | Clock) | ("_feed", …)
    split = op.branch("split_feed", keyed, _is_symbol_item)
    kinds = op.branch("split_books", split.trues, _is_trade_item)  # trades and clocks | book batches
    books = op.stateful_map("book", kinds.falses, traced("book", book_step(cfg)))  # ("btcusdt", BookOut)
    deduped = op.stateful_flat_map(
        "dedup", kinds.trues, traced("dedup", _dedup_step(cfg.bars.lateness_ms))
    )  # (…, Fresh | Rejected)
    fresh = op.branch("split_conflicts", deduped, _is_fresh)  # conflicting duplicates go to the store's rejects
    barred = op.stateful_map("bars", fresh.trues, traced("bars", _bars_step(cfg)))  # ("btcusdt", SymbolOut)
    if micro_enabled(cfg):
        micro_in = op.merge("micro_inputs", books, barred)  # a symbol's quotes and levels, its trades and clock
        micro = op.stateful_map("micro", micro_in, traced("micro", micro_step(cfg)))  # ("btcusdt", MicroItem)
    mids = micro_enabled(cfg) and any(p.price == "mid" for p in cfg.pairs)
    leg_in = op.merge("leg_inputs", barred, micro) if mids else barred  # pairs on mids read micro bars
    legs = op.stateful_flat_map("pair_legs", leg_in, traced("pair_legs", leg_router(cfg)))  # ("btcusdt", LegBars)
    legs = op.key_on("by_pair", op.key_rm("unkey_legs", legs), leg_key)  # ("btcusdt-ethusdt@1s" | "_corr@1m", LegBars)
    legs_split = op.branch("split_corr", legs, _is_pair_item)
    pairs = op.stateful_flat_map(
        "pair_analytics", legs_split.trues, traced("pair_analytics", pair_step(cfg))
    )  # ("btcusdt-ethusdt@1s", PairOut)
    corr = op.stateful_flat_map(
        "correlation", legs_split.falses, traced("correlation", corr_step(cfg))
    )  # ("_corr@1m", CorrOut)
    sym_stats = op.stateful_flat_map(
        "symbol_stats", barred, traced("symbol_stats", symbol_stats_step(cfg))
    )  # ("btcusdt", SymbolStatsOut)
    live_pairs = op.filter("first_computed", pairs, _is_first_computed)  # recomputed rows alert no one
    health = op.flat_map(
        "feed_health", items, traced("feed_health", _health_router)
    )  # ("_feed", Clock | FeedStats | Rejected) | ("btcusdt", GapEvent)
    outs = [barred, books, split.falses, fresh.falses, pairs, corr, sym_stats]
    watched_in = [barred, live_pairs, health]
    if micro_enabled(cfg):
        outs.append(micro)
        watched_in.append(micro)
    watched = op.merge("alert_inputs", *watched_in)
    alerts = op.stateful_flat_map(
        "alerts", watched, traced("alerts", alert_step(cfg))
    )  # ("btcusdt" | "btcusdt-ethusdt" | "_feed", AlertFired)
    stored = op.merge("to_store", *outs, alerts)
    store_step(stored, make_sink(cfg))
    return flow


def _router(symbols: list[str], book_clocks: bool = False):
    """`book_clocks`: a clock also goes down each symbol's book path (microstructure closes bars
    when both its inputs, trades and book, have passed them)."""

    def route(item: Any) -> list[tuple[str, Any]]:
        if isinstance(item, (Trades, BookBatch, Quotes)):
            return [(item.symbol, item)]
        if isinstance(item, Clock):  # a partition's clock names its symbols; a lone partition's, none
            out = [(item.symbol, item)] if item.symbol else [(s, Clock(item.ts_ms, s)) for s in symbols]
            if book_clocks:
                out += [(k, BookClock(k, c.ts_ms)) for k, c in list(out)]
            return out
        return [(FEED_KEY, item)]

    return route


def _health_router(item: Any) -> list[tuple[str, Any]]:
    """What feed-health alerts read besides the symbols' batches: the source's clock, reports and
    rejects under the feed key, backfill gap events under their symbol."""
    if isinstance(item, (Trades, BookBatch, Quotes)):
        return []
    if isinstance(item, GapEvent):
        return [(item.symbol, item)]
    return [(FEED_KEY, item)]


def _is_symbol_item(kv: tuple[str, Any]) -> bool:
    return kv[0] != FEED_KEY


def _is_trade_item(kv: tuple[str, Any]) -> bool:
    return not isinstance(kv[1], (BookBatch, BookClock, Quotes))


def _is_first_computed(kv: tuple[str, PairOut]) -> bool:
    return not kv[1].revised


def _is_pair_item(kv: tuple[str, Any]) -> bool:
    return not kv[0].startswith(CORR_KEY)


def _is_fresh(kv: tuple[str, Any]) -> bool:
    return isinstance(kv[1], Fresh)


def _dedup_step(lateness_ms: int):
    def dedup(state: Dedup | None, item: Trades | Clock) -> tuple[Dedup, list[Fresh | Rejected]]:
        state = state or Dedup(lateness_ms)
        conflicts: list[Conflict] = []
        if isinstance(item, Clock):
            now_ts = item.ts_ms
            out = Fresh(symbol=item.symbol, clock=item.ts_ms)
        else:
            fresh, dups, conflicts = state.fresh(item)
            now_ts = state.max_ts
            out = Fresh(symbol=item.symbol, trades=fresh, duplicates=dups, conflicts=len(conflicts))
        out.duplicates_total = state.duplicates
        out.conflicts_total = state.conflicts
        out.gaps = [GapEvent(item.symbol, h.from_id, h.to_id, h.after_ts, status) for h, status in state.settle(now_ts)]
        return state, [out, *map(_conflict_reject, conflicts)]

    return dedup


def _conflict_reject(c: Conflict) -> Rejected:
    """Both versions of a conflicting duplicate, kept in `rejects` (the first one stays stored)."""

    def doc(v: tuple[int, float, float, bool, int]) -> dict[str, object]:
        return dict(zip(("ts_ms", "price", "qty", "is_buyer_maker", "recv_ms"), v, strict=True))

    raw = orjson.dumps({"symbol": c.symbol, "trade_id": c.trade_id, "kept": doc(c.kept), "conflicting": doc(c.other)})
    fields = [
        n for n, a, b in zip(("ts_ms", "price", "qty", "is_buyer_maker"), c.kept, c.other, strict=False) if a != b
    ]
    reason = f"conflicting duplicate: {c.symbol} trade id {c.trade_id} differs in {', '.join(fields)}"
    return Rejected(recv_ms=c.other[4], reason=reason, raw=raw, source="dedup")


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
            conflicts=fresh.conflicts,
            late_trades=state.late_trades,
            revisions=state.revisions,
            watermark=state.watermark,
            clock=fresh.clock,
            trades_total=state.trades,
            duplicates_total=fresh.duplicates_total,
            conflicts_total=fresh.conflicts_total,
            last_trade_ms=state.newest_ts,
        )
        return state, out

    return step
