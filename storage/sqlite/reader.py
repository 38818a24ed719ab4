"""Read queries over the store, shared by the API and the dashboard.

Pure functions of an open connection (read-only is enough): parameterised SQL,
plain tuples out. Ticks have no time index (it would slow inserts), so a time
range on ticks is turned into a trade-id range via the bars' open/close ids and
then served by the (symbol, trade_id) primary key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from ticklens.domain.timeframes import TIMEFRAME_MS

FAR_PAST = -(2**62)
FAR_FUTURE = 2**62

TICK_COLUMNS = ("trade_id", "ts_ms", "price", "qty", "is_buyer_maker", "first_id", "last_id")
BAR_OUT_COLUMNS = (
    "start_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "vwap",
    "closed",
    "revision",
    "origin",
)
_TICK_SELECT = f"SELECT {','.join(TICK_COLUMNS)} FROM ticks"
_BAR_SELECT = f"SELECT {','.join(BAR_OUT_COLUMNS)} FROM bars"


def _bounds(start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    return (FAR_PAST if start_ms is None else start_ms, FAR_FUTURE if end_ms is None else end_ms)


# --- symbols -------------------------------------------------------------------------


def _distinct_symbols(conn: sqlite3.Connection, table: str) -> list[str]:
    """Distinct symbols by skipping along the primary key (no full scan)."""
    assert table in ("ticks", "bars")
    out: list[str] = []
    last = ""
    while True:
        row = conn.execute(f"SELECT MIN(symbol) FROM {table} WHERE symbol > ?", (last,)).fetchone()
        if row is None or row[0] is None:
            return out
        last = row[0]
        out.append(last)


def symbols_with_data(conn: sqlite3.Connection) -> list[str]:
    return sorted(set(_distinct_symbols(conn, "bars")) | set(_distinct_symbols(conn, "ticks")))


def has_data(conn: sqlite3.Connection, symbol: str) -> bool:
    for table in ("bars", "ticks"):
        if conn.execute(f"SELECT 1 FROM {table} WHERE symbol=? LIMIT 1", (symbol,)).fetchone():
            return True
    return False


@dataclass(slots=True)
class SymbolSummary:
    symbol: str
    timeframes: list[str]
    first_ms: int | None  # start of the first bar (smallest timeframe)
    last_trade_ms: int | None  # close time of the last bar
    last_price: float | None
    ticks: int  # trade messages, from the largest timeframe's bars (no tick scan)
    uploaded_bars: bool


def symbol_summary(conn: sqlite3.Connection, symbol: str) -> SymbolSummary:
    tfs = [
        tf
        for tf in TIMEFRAME_MS
        if conn.execute("SELECT 1 FROM bars WHERE symbol=? AND timeframe=? LIMIT 1", (symbol, tf)).fetchone()
    ]
    first_ms = last_ms = None
    last_price = None
    ticks = 0
    if tfs:
        small, large = tfs[0], tfs[-1]
        first_ms = conn.execute(
            "SELECT start_ms FROM bars WHERE symbol=? AND timeframe=? ORDER BY start_ms LIMIT 1", (symbol, small)
        ).fetchone()[0]
        row = conn.execute(
            "SELECT close_ts, close, start_ms FROM bars WHERE symbol=? AND timeframe=? ORDER BY start_ms DESC LIMIT 1",
            (symbol, small),
        ).fetchone()
        last_ms, last_price = row[0], row[1]
        ticks = conn.execute(
            "SELECT COALESCE(SUM(messages), 0) FROM bars WHERE symbol=? AND timeframe=?", (symbol, large)
        ).fetchone()[0]
    uploaded = (
        conn.execute("SELECT 1 FROM bars WHERE symbol=? AND origin='upload' LIMIT 1", (symbol,)).fetchone() is not None
    )
    return SymbolSummary(symbol, tfs, first_ms, last_ms, last_price, int(ticks), uploaded)


# --- ticks ---------------------------------------------------------------------------


def trade_id_range(conn: sqlite3.Connection, symbol: str, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """A trade-id range that holds every tick with start <= ts < end (a superset).

    Uses the smallest timeframe's collected bars: one bar beyond each end is taken
    so ids that are not strictly time-ordered at a bar boundary are still covered.
    """
    lo, hi = FAR_PAST, FAR_FUTURE
    for tf, tf_ms in TIMEFRAME_MS.items():
        if not conn.execute(
            "SELECT 1 FROM bars WHERE symbol=? AND timeframe=? AND origin='flow' LIMIT 1", (symbol, tf)
        ).fetchone():
            continue
        if start_ms is not None:
            row = conn.execute(
                "SELECT open_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms < ? AND origin='flow'"
                " ORDER BY start_ms DESC LIMIT 1",
                (symbol, tf, start_ms - start_ms % tf_ms),
            ).fetchone()
            if row:
                lo = row[0]
        if end_ms is not None:
            row = conn.execute(
                "SELECT close_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms >= ? AND origin='flow'"
                " ORDER BY start_ms LIMIT 1",
                (symbol, tf, end_ms - end_ms % tf_ms + tf_ms),
            ).fetchone()
            if row:
                hi = row[0]
        break
    return lo, hi


def ticks(
    conn: sqlite3.Connection, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
) -> list[tuple]:
    """The newest `limit` ticks with start <= ts < end, oldest first (columns: TICK_COLUMNS)."""
    if start_ms is None and end_ms is None:
        rows = conn.execute(f"{_TICK_SELECT} WHERE symbol=? ORDER BY trade_id DESC LIMIT ?", (symbol, limit)).fetchall()
    else:
        lo, hi = trade_id_range(conn, symbol, start_ms, end_ms)
        s, e = _bounds(start_ms, end_ms)
        rows = conn.execute(
            f"{_TICK_SELECT} WHERE symbol=? AND trade_id BETWEEN ? AND ? AND ts_ms >= ? AND ts_ms < ?"
            " ORDER BY trade_id DESC LIMIT ?",
            (symbol, lo, hi, s, e, limit),
        ).fetchall()
    rows.reverse()
    return rows


def iter_ticks(
    conn: sqlite3.Connection,
    symbol: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    chunk: int = 50_000,
) -> Iterator[list[tuple]]:
    """All ticks in range, oldest first, in chunks (for streamed exports)."""
    lo, hi = (
        trade_id_range(conn, symbol, start_ms, end_ms) if (start_ms, end_ms) != (None, None) else (FAR_PAST, FAR_FUTURE)
    )
    s, e = _bounds(start_ms, end_ms)
    cur = conn.execute(
        f"{_TICK_SELECT} WHERE symbol=? AND trade_id BETWEEN ? AND ? AND ts_ms >= ? AND ts_ms < ? ORDER BY trade_id",
        (symbol, lo, hi, s, e),
    )
    while rows := cur.fetchmany(chunk):
        yield rows


# --- bars ----------------------------------------------------------------------------


def bars(
    conn: sqlite3.Connection,
    symbol: str,
    timeframe: str,
    limit: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[tuple]:
    """The newest `limit` bars starting in [start, end), oldest first (columns: BAR_OUT_COLUMNS)."""
    s, e = _bounds(start_ms, end_ms)
    rows = conn.execute(
        f"{_BAR_SELECT} WHERE symbol=? AND timeframe=? AND start_ms >= ? AND start_ms < ?"
        " ORDER BY start_ms DESC LIMIT ?",
        (symbol, timeframe, s, e, limit),
    ).fetchall()
    rows.reverse()
    return rows


def iter_bars(
    conn: sqlite3.Connection,
    symbol: str,
    timeframe: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    chunk: int = 50_000,
) -> Iterator[list[tuple]]:
    s, e = _bounds(start_ms, end_ms)
    cur = conn.execute(
        f"{_BAR_SELECT} WHERE symbol=? AND timeframe=? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms",
        (symbol, timeframe, s, e),
    )
    while rows := cur.fetchmany(chunk):
        yield rows


def recent_trade_rate(conn: sqlite3.Connection, symbol: str, seconds: int = 10) -> float:
    """Trades/s over the last `seconds` of exchange time, from the 1s bars."""
    row = conn.execute(
        "SELECT start_ms FROM bars WHERE symbol=? AND timeframe='1s' ORDER BY start_ms DESC LIMIT 1", (symbol,)
    ).fetchone()
    if row is None:
        return 0.0
    n = conn.execute(
        "SELECT COALESCE(SUM(messages), 0) FROM bars WHERE symbol=? AND timeframe='1s' AND start_ms > ?",
        (symbol, row[0] - seconds * 1000),
    ).fetchone()[0]
    return n / seconds


def missing_bars(conn: sqlite3.Connection, symbol: str, timeframe: str) -> int:
    """Buckets without a bar between the first and last bar (no trades, or a hole in the data)."""
    n, lo, hi = conn.execute(
        "SELECT COUNT(*), MIN(start_ms), MAX(start_ms) FROM bars WHERE symbol=? AND timeframe=?", (symbol, timeframe)
    ).fetchone()
    if not n:
        return 0
    return (hi - lo) // TIMEFRAME_MS[timeframe] + 1 - n


# --- health --------------------------------------------------------------------------


def status_docs(conn: sqlite3.Connection) -> dict[str, tuple[dict, int]]:
    """The flow's status documents: key → (document, updated_ms)."""
    out = {}
    for key, value, updated in conn.execute("SELECT key, value, updated_ms FROM status"):
        try:
            out[key] = (orjson.loads(value), updated)
        except orjson.JSONDecodeError:
            continue
    return out


def gap_counts(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """symbol → (open gaps, all gaps ever detected)."""
    return {
        s: (int(o), int(t))
        for s, o, t in conn.execute("SELECT symbol, SUM(status='open'), COUNT(*) FROM gaps GROUP BY symbol")
    }


def reject_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM rejects").fetchone()[0])


def schema_version(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else None
