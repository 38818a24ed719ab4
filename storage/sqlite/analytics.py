"""Rows of the analytics tables (pair_stats, symbol_stats, correlation): writes and reads.

The flow's sink turns analytics items into (SQL, rows) pairs written in the
batch's transaction; the API reads them back (and reads closed bars to compute
on demand). Parameterised SQL only.
"""

from __future__ import annotations

import sqlite3

import polars as pl

from ticklens.domain.stats.correlation import CorrOut
from ticklens.domain.stats.pair import PAIR_ROW_FIELDS, PairOut, PairRow
from ticklens.domain.stats.symbol import SYMBOL_ROW_FIELDS, SymbolStatsOut

_PAIR_COLS = ("pair", "timeframe", "leg_a", "leg_b", "window", *PAIR_ROW_FIELDS, "updated_ms")
_SYM_COLS = ("symbol", "timeframe", "window", *SYMBOL_ROW_FIELDS, "updated_ms")
_CORR_COLS = ("timeframe", "sym_a", "sym_b", "start_ms", "window", "corr", "updated_ms")
# Heads of multi-row INSERTs (storage.sqlite.insert_flat): the rows below, in these column orders.
PAIR_INSERT = f"INSERT OR REPLACE INTO pair_stats({','.join(_PAIR_COLS)})"
SYMBOL_INSERT = f"INSERT OR REPLACE INTO symbol_stats({','.join(_SYM_COLS)})"
CORR_INSERT = f"INSERT OR REPLACE INTO correlation({','.join(_CORR_COLS)})"


def pair_rows(out: PairOut, now_ms: int) -> list[tuple]:
    head = (out.pair, out.timeframe, out.legs[0], out.legs[1], out.window)
    return [head + tuple(getattr(r, f) for f in PAIR_ROW_FIELDS) + (now_ms,) for r in out.rows]


def symbol_rows(out: SymbolStatsOut, now_ms: int) -> list[tuple]:
    head = (out.symbol, out.timeframe, out.window)
    return [head + tuple(getattr(r, f) for f in SYMBOL_ROW_FIELDS) + (now_ms,) for r in out.rows]


def corr_rows(out: CorrOut, now_ms: int) -> list[tuple]:
    return [(out.timeframe, a, b, t, out.window, c, now_ms) for t, a, b, c in out.rows]


# --- reads ---------------------------------------------------------------------------


def closed_bars(conn: sqlite3.Connection, symbol: str, timeframe: str, end_ms: int | None = None) -> pl.DataFrame:
    """Closed bars of one symbol (start_ms, close, volume, quote_volume), oldest first."""
    sql = "SELECT start_ms, close, volume, quote_volume FROM bars WHERE symbol=? AND timeframe=? AND closed=1"
    args: list = [symbol, timeframe]
    if end_ms is not None:
        sql += " AND start_ms < ?"
        args.append(end_ms)
    rows = conn.execute(sql + " ORDER BY start_ms", args).fetchall()
    return pl.DataFrame(
        rows,
        schema={"start_ms": pl.Int64, "close": pl.Float64, "volume": pl.Float64, "quote_volume": pl.Float64},
        orient="row",
    )


def stored_pair_rows(
    conn: sqlite3.Connection,
    pair: str,
    timeframe: str,
    window: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int | None = None,
) -> list[PairRow]:
    """Stored pair statistics in [start_ms, end_ms), oldest first (the newest `limit` of them)."""
    sql = f"SELECT {','.join(PAIR_ROW_FIELDS)} FROM pair_stats WHERE pair=? AND timeframe=? AND window=?"
    args: list = [pair, timeframe, window]
    if start_ms is not None:
        sql += " AND start_ms >= ?"
        args.append(start_ms)
    if end_ms is not None:
        sql += " AND start_ms < ?"
        args.append(end_ms)
    if limit is None:
        return [PairRow(*r) for r in conn.execute(sql + " ORDER BY start_ms", args)]
    rows = conn.execute(sql + " ORDER BY start_ms DESC LIMIT ?", [*args, limit]).fetchall()
    return [PairRow(*r) for r in reversed(rows)]


def has_pair_rows(conn: sqlite3.Connection, pair: str, timeframe: str, window: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pair_stats WHERE pair=? AND timeframe=? AND window=? LIMIT 1", (pair, timeframe, window)
    ).fetchone()
    return row is not None
