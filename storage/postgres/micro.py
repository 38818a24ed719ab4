"""The microstructure tables in PostgreSQL: `micro_bars` and `vpin` (DDL, rows, reads).

The same tables, keys and meaning as storage/sqlite/micro.py: a micro bar written again
(complete, or revised by late data) replaces its earlier version, a VPIN bucket is keyed by
(symbol, bucket index).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ticklens.domain.micro import MICRO_COLUMNS, MicroBar, VpinBucket

_INTEGER = {"start_ms"}
_COUNTS = {"quote_updates", "depth_updates", "trades", "vpin_buckets", "revision"}


def _column(name: str) -> str:
    if name in ("symbol", "timeframe"):
        return f"{name} text NOT NULL"
    if name in _INTEGER:
        return f"{name} bigint NOT NULL"
    if name in _COUNTS:
        return f"{name} bigint NOT NULL"
    if name == "complete":
        return "complete boolean NOT NULL"
    return f"{name} double precision"  # NULL where the value is not defined


MICRO_DDL = (
    "CREATE TABLE IF NOT EXISTS micro_bars(\n    "
    + ",\n    ".join(_column(c) for c in MICRO_COLUMNS)
    + ",\n    updated_ms bigint NOT NULL,\n    PRIMARY KEY(symbol, timeframe, start_ms)\n);\n"
    """CREATE TABLE IF NOT EXISTS vpin(
    symbol text NOT NULL,
    bucket bigint NOT NULL,            -- 0 = the first volume bucket the flow filled
    end_ms bigint NOT NULL,            -- time of the trade that filled it
    buy_volume double precision NOT NULL,
    sell_volume double precision NOT NULL,
    vpin double precision,             -- NULL before the first n buckets
    PRIMARY KEY(symbol, bucket)
);
CREATE INDEX IF NOT EXISTS vpin_time ON vpin(symbol, end_ms);
"""
)
# As statements: a migration step (storage/postgres/schema.py) is a list of them.
MICRO_STATEMENTS = [st.strip() for st in MICRO_DDL.split(";") if st.strip()]
MICRO_COLS = (*MICRO_COLUMNS, "updated_ms")
VPIN_COLS = ("symbol", "bucket", "end_ms", "buy_volume", "sell_volume", "vpin")
MICRO_OUT = MICRO_COLUMNS[2:]
VPIN_OUT = VPIN_COLS[1:]
_COMPLETE = MICRO_COLUMNS.index("complete")


def _finite(v: object) -> object:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def micro_rows(bars: Iterable[MicroBar], vpin: Iterable[VpinBucket], ts: int) -> tuple[list[tuple], list[tuple]]:
    """Row tuples, the last version of each key only."""
    last: dict[tuple[str, str, int], tuple] = {}
    for b in bars:
        row = [_finite(v) for v in b.row()]
        row[_COMPLETE] = bool(row[_COMPLETE])
        last[(b.symbol, b.timeframe, b.start_ms)] = (*row, ts)
    buckets = {(v.symbol, v.bucket): (v.symbol, v.bucket, v.end_ms, v.buy_volume, v.sell_volume, v.vpin) for v in vpin}
    return list(last.values()), list(buckets.values())


MICRO_SELECT = f"SELECT {','.join('complete::int' if c == 'complete' else c for c in MICRO_OUT)} FROM micro_bars"
MICRO_QUERY = (
    f"{MICRO_SELECT} WHERE symbol=%s AND timeframe=%s AND start_ms >= %s AND start_ms < %s"
    " ORDER BY start_ms DESC LIMIT %s"
)
VPIN_QUERY = (
    f"SELECT {','.join(VPIN_OUT)} FROM vpin WHERE symbol=%s AND end_ms >= %s AND end_ms < %s"
    " ORDER BY bucket DESC LIMIT %s"
)
