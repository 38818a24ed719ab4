"""The dataflow step that evaluates the stored alert rules (glue between the rule store and the engine).

Rules are re-read from `alert_rules` when they change (checked at most every
250 ms), so a rule created, edited or deleted through the API applies to the
running flow within a second. Per-key state (rule arming, cooldowns, previous
values) lives in bytewax state, so it survives a restart with recovery.
"""

from __future__ import annotations

import numpy as np

from flows.items import SymbolOut
from storage import open_store
from storage.port import RuleFeed
from ticklens.config import Config
from ticklens.domain.alerts.engine import AlertBook, AlertFired
from ticklens.domain.stats.pair import PairOut, PairRow

# PairRow attribute of each pair metric.
PAIR_FIELDS = {"spread": "spread", "zscore": "zscore", "hedge_ratio": "beta", "correlation": "corr"}


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


def alert_step(cfg: Config, feed: RuleFeed | None = None):
    """Mapper for `op.stateful_flat_map`: SymbolOut or PairOut in, AlertFired out."""
    rules = feed or open_store(cfg.store).rule_feed()

    def step(state: AlertBook | None, item: SymbolOut | PairOut) -> tuple[AlertBook, list[AlertFired]]:
        rules.refresh()
        if isinstance(item, SymbolOut):
            state = state or AlertBook(item.symbol)
            _sync(state, rules)
            active = rules.by_key.get(state.key, [])
            out = []
            if item.ticks is not None and len(item.ticks):
                out = state.on_trades(active, item.ticks)
            if item.closed:
                out.extend(state.on_bars(active, item.closed))
            return state, out
        # A pair's analytics rows of one timeframe.
        state = state or AlertBook(item.pair)
        _sync(state, rules)
        if not item.rows:
            return state, []
        starts, cols = pair_columns(item.rows)
        return state, state.on_rows(rules.by_key.get(state.key, []), item.timeframe, starts, cols)

    return step
