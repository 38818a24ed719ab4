"""The microstructure tables in PostgreSQL: `micro_bars` and `vpin` (rows; their tables: storage/tables.py).

The same tables, keys and meaning as storage/sqlite/micro.py: a micro bar written again
(complete, or revised by late data) replaces its earlier version, a VPIN bucket is keyed by
(symbol, bucket index).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ticklens.domain.micro import MICRO_COLUMNS, MicroBar, VpinBucket

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
