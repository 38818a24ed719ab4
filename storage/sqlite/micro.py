"""The microstructure tables in SQLite: `micro_bars` and `vpin` (writes; their tables: storage/tables.py).

Both are idempotent by natural key: a micro bar written again (complete, or revised by late
data) replaces its earlier version; a VPIN bucket is keyed by (symbol, bucket index).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable

from storage.sqlite.sql import insert_flat
from ticklens.domain.micro import MICRO_COLUMNS, MicroBar, VpinBucket

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
