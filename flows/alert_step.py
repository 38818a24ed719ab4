"""The dataflow step that evaluates the stored alert rules (glue between the rule store and the engine).

Rules are re-read from `alert_rules` when they change (checked at most every
250 ms), so a rule created, edited or deleted through the API applies to the
running flow within a second. A rule over several symbols is indexed under
each of them (each symbol keeps its own state for it). Per-key state (rule
arming, cooldowns, holds, previous values, feed health) lives in bytewax
state, so it survives a restart with recovery.

Inputs, by key: a symbol's `SymbolOut` (trades, closed bars, gaps, clock) and
the `GapEvent`s of the REST backfill; a pair's `PairOut`; under the feed key,
the source's `Clock`, `FeedStats` and `Rejected` items.
"""

from __future__ import annotations

import numpy as np

from flows.items import MicroItem, SymbolOut
from flows.sources import EOF_CLOCK_MS
from storage import open_store
from storage.port import RuleFeed
from ticklens.config import Config
from ticklens.domain.alerts.engine import AlertBook, AlertFired
from ticklens.domain.alerts.health import FeedHealth, StreamHealth
from ticklens.domain.alerts.rules import HEALTH_METRICS, StoredRule
from ticklens.domain.records import FEED_KEY, Clock, FeedStats, GapEvent, Rejected
from ticklens.domain.stats.pair import PairOut, PairRow

# PairRow attribute of each pair metric.
PAIR_FIELDS = {"spread": "spread", "zscore": "zscore", "hedge_ratio": "beta", "correlation": "corr"}

FeedItem = Clock | FeedStats | Rejected


def pair_columns(rows: list[PairRow]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(bar starts, metric -> values) of PairRows; None (window not full yet) becomes NaN, which never fires."""
    starts = np.array([r.start_ms for r in rows], dtype=np.int64)
    cols = {
        metric: np.array([np.nan if (v := getattr(r, attr)) is None else v for r in rows], dtype=float)
        for metric, attr in PAIR_FIELDS.items()
    }
    return starts, cols


def _sync(state: AlertBook, rules: RuleFeed) -> None:
    """Forget deleted rules once per change of the rule set."""
    if state.generation != rules.generation:
        state.forget(rules.ids)
        state.generation = rules.generation


class RuleIndex:
    """Enabled rules by the key they watch, rebuilt when the rule set changes."""

    def __init__(self, feed: RuleFeed) -> None:
        self.feed = feed
        self.generation = -1
        self.by_key: dict[str, list[StoredRule]] = {}

    def get(self, key: str) -> list[StoredRule]:
        if self.generation != self.feed.generation:
            by_key: dict[str, list[StoredRule]] = {}
            for sr in self.feed.rules:
                if sr.rule.enabled:
                    for k in sr.rule.keys:
                        by_key.setdefault(k, []).append(sr)
            self.by_key, self.generation = by_key, self.feed.generation
        return self.by_key.get(key, [])


def _health_rules(active: list[StoredRule]) -> list[StoredRule]:
    return [sr for sr in active if sr.rule.metric in HEALTH_METRICS]


def _symbol_step(state: AlertBook, active: list[StoredRule], item: SymbolOut) -> list[AlertFired]:
    out: list[AlertFired] = []
    if item.ticks is not None and len(item.ticks):
        out = state.on_trades(active, item.ticks, item.bars)
    if item.closed:
        out.extend(state.on_bars(active, item.closed))
    health: StreamHealth = state.health
    health.on_gaps(item.gaps)
    now = max(item.clock or 0, item.last_trade_ms)
    readings = health.read(now, item.last_trade_ms, EOF_CLOCK_MS)
    rules = _health_rules(active)
    if rules and readings is not None:
        out.extend(state.on_values(rules, readings, now, f"health:{now}"))
    return out


def _feed_step(state: AlertBook, active: list[StoredRule], item: FeedItem) -> list[AlertFired]:
    feed: FeedHealth = state.health
    if isinstance(item, Clock):
        feed.on_clock(item.ts_ms)
    elif isinstance(item, Rejected):
        feed.on_rejected(item.recv_ms)
    else:
        feed.on_stats(item)
    if not active:
        return []
    return state.on_values(active, feed.read(), feed.now_ms, f"feed:{feed.now_ms}")


def alert_step(cfg: Config, feed: RuleFeed | None = None):
    """Mapper for `op.stateful_flat_map`: SymbolOut, PairOut, GapEvent or feed items in, AlertFired out."""
    rules = feed or open_store(cfg.store).rule_feed()
    index = RuleIndex(rules)

    def step(
        state: AlertBook | None, item: SymbolOut | PairOut | GapEvent | FeedItem
    ) -> tuple[AlertBook, list[AlertFired]]:
        rules.refresh()
        if isinstance(item, SymbolOut | GapEvent):
            state = state or AlertBook(item.symbol)
            if state.health is None:
                state.health = StreamHealth()
            _sync(state, rules)
            if isinstance(item, GapEvent):  # from the REST backfill: read at the symbol's next batch
                state.health.on_gaps([item])
                return state, []
            return state, _symbol_step(state, index.get(state.key), item)
        if isinstance(item, MicroItem):
            state = state or AlertBook(item.symbol)
            _sync(state, rules)
            return state, state.on_micro(index.get(state.key), item.bars) if item.bars else []
        if isinstance(item, PairOut):
            state = state or AlertBook(item.pair)
            _sync(state, rules)
            if not item.rows:
                return state, []
            starts, cols = pair_columns(item.rows)
            return state, state.on_rows(index.get(state.key), item.timeframe, starts, cols)
        state = state or AlertBook(FEED_KEY)
        if state.health is None:
            state.health = FeedHealth()
        _sync(state, rules)
        return state, _feed_step(state, index.get(FEED_KEY), item)

    return step
