"""Rows of the analytics tables (pair_stats, symbol_stats, correlation) as the writer inserts them."""

from __future__ import annotations

from storage.port import StoreBatch
from ticklens.domain.stats.pair import PAIR_ROW_FIELDS
from ticklens.domain.stats.symbol import SYMBOL_ROW_FIELDS

_PAIR_COLS = ("pair", "timeframe", "leg_a", "leg_b", "window", *PAIR_ROW_FIELDS, "updated_ms")
_SYM_COLS = ("symbol", "timeframe", "window", *SYMBOL_ROW_FIELDS, "updated_ms")
_CORR_COLS = ("timeframe", "sym_a", "sym_b", "start_ms", "window", "corr", "updated_ms")
# Heads of multi-row INSERTs (storage.sqlite.sql.insert_flat): the rows below, in these column orders.
PAIR_INSERT = f"INSERT OR REPLACE INTO pair_stats({','.join(_PAIR_COLS)})"
SYMBOL_INSERT = f"INSERT OR REPLACE INTO symbol_stats({','.join(_SYM_COLS)})"
CORR_INSERT = f"INSERT OR REPLACE INTO correlation({','.join(_CORR_COLS)})"


def analytics_rows(batch: StoreBatch, now_ms: int) -> list[tuple[str, list[tuple]]]:
    """(INSERT head, rows) per analytics output of the batch, in the batch's order."""
    out: list[tuple[str, list[tuple]]] = []
    for p in batch.pairs:
        head = (p.pair, p.timeframe, p.legs[0], p.legs[1], p.window)
        out.append((PAIR_INSERT, [head + tuple(getattr(r, f) for f in PAIR_ROW_FIELDS) + (now_ms,) for r in p.rows]))
    for s in batch.symbol_stats:
        head = (s.symbol, s.timeframe, s.window)
        out.append(
            (SYMBOL_INSERT, [head + tuple(getattr(r, f) for f in SYMBOL_ROW_FIELDS) + (now_ms,) for r in s.rows])
        )
    for c in batch.correlations:
        out.append((CORR_INSERT, [(c.timeframe, a, b, t, c.window, v, now_ms) for t, a, b, v in c.rows]))
    return out
