"""The microstructure tables in SQLite: `micro_bars` and `vpin` (schema, writes, reads).

Both are idempotent by natural key: a micro bar written again (complete, or revised by late
data) replaces its earlier version; a VPIN bucket is keyed by (symbol, bucket index).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable

from storage.sqlite.sql import insert_flat
from ticklens.domain.micro import MICRO_COLUMNS, MicroBar, VpinBucket

_INTEGER = {"start_ms", "quote_updates", "depth_updates", "trades", "vpin_buckets", "complete", "revision"}
_TEXT = {"symbol", "timeframe"}


def _column(name: str) -> str:
    if name in _TEXT:
        return f"{name} TEXT NOT NULL"
    if name in _INTEGER:
        return f"{name} INTEGER NOT NULL"
    return f"{name} REAL"  # NULL where the value is not defined


MICRO_DDL = (
    "CREATE TABLE IF NOT EXISTS micro_bars(\n    "
    + ",\n    ".join(_column(c) for c in MICRO_COLUMNS)
    + ",\n    updated_ms INTEGER NOT NULL,\n    PRIMARY KEY(symbol, timeframe, start_ms)\n) WITHOUT ROWID;\n"
    """CREATE TABLE IF NOT EXISTS vpin(
    symbol TEXT NOT NULL,
    bucket INTEGER NOT NULL,          -- 0 = the first volume bucket the flow filled
    end_ms INTEGER NOT NULL,          -- time of the trade that filled it
    buy_volume REAL NOT NULL,
    sell_volume REAL NOT NULL,
    vpin REAL,                        -- NULL before the first n buckets
    PRIMARY KEY(symbol, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vpin_time ON vpin(symbol, end_ms);
"""
)

MICRO_OUT = MICRO_COLUMNS[2:]  # start_ms … revision
VPIN_OUT = ("bucket", "end_ms", "buy_volume", "sell_volume", "vpin")
_MICRO_HEAD = f"INSERT OR REPLACE INTO micro_bars({','.join(MICRO_COLUMNS)},updated_ms)"
_VPIN_HEAD = f"INSERT OR REPLACE INTO vpin(symbol,{','.join(VPIN_OUT)})"


def micro_params(bars: Iterable[MicroBar], vpin: Iterable[VpinBucket], now: int) -> tuple[list[object], list[object]]:
    """Flat parameters, the last version of each key only (plain values: the flow goes on)."""
    last: dict[tuple[str, str, int], tuple] = {}
    for b in bars:
        last[(b.symbol, b.timeframe, b.start_ms)] = b.row()
    flat: list[object] = []
    for row in last.values():
        flat.extend(None if isinstance(v, float) and not math.isfinite(v) else v for v in row)
        flat.append(now)
    buckets: dict[tuple[str, int], VpinBucket] = {(v.symbol, v.bucket): v for v in vpin}
    vflat: list[object] = []
    for v in buckets.values():
        vflat.extend((v.symbol, v.bucket, v.end_ms, v.buy_volume, v.sell_volume, v.vpin))
    return flat, vflat


def write_micro(conn: sqlite3.Connection, flat: list[object], vflat: list[object]) -> None:
    if flat:
        insert_flat(conn, _MICRO_HEAD, len(MICRO_COLUMNS) + 1, flat)
    if vflat:
        insert_flat(conn, _VPIN_HEAD, 1 + len(VPIN_OUT), vflat)


def read_micro_bars(conn: sqlite3.Connection, symbol: str, timeframe: str, limit: int, s: int, e: int) -> list[tuple]:
    rows = conn.execute(
        f"SELECT {','.join(MICRO_OUT)} FROM micro_bars WHERE symbol=? AND timeframe=? AND start_ms >= ?"
        " AND start_ms < ? ORDER BY start_ms DESC LIMIT ?",
        (symbol, timeframe, s, e, limit),
    ).fetchall()
    rows.reverse()
    return rows


def read_vpin(conn: sqlite3.Connection, symbol: str, limit: int, s: int, e: int) -> list[tuple]:
    rows = conn.execute(
        f"SELECT {','.join(VPIN_OUT)} FROM vpin WHERE symbol=? AND end_ms >= ? AND end_ms < ?"
        " ORDER BY bucket DESC LIMIT ?",
        (symbol, s, e, limit),
    ).fetchall()
    rows.reverse()
    return rows
