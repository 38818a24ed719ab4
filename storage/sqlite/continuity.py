"""Bar continuity audit: which buckets of a range have no bar, and can we tell why.

An empty bucket between two stored bars is a confirmed quiet period when the
trade ids run on without a break across it (the bar before ends at id n, the bar
after starts at n + 1): no trade can be missing. Otherwise it is unknown (a gap
in the ids spans it). Buckets before the first or after the last stored bar of
the range cannot be judged from bars alone and are reported as unknown.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ticklens.domain.timeframes import TIMEFRAME_MS

MAX_BUCKETS = 100_000


@dataclass(frozen=True, slots=True)
class EmptyRun:
    start_ms: int  # first empty bucket
    end_ms: int  # end of the last empty bucket (exclusive)
    buckets: int
    status: str  # quiet | unknown
    before_last_id: int | None
    after_first_id: int | None


def audit(
    conn: sqlite3.Connection, symbol: str, timeframe: str, start_ms: int, end_ms: int
) -> tuple[int, list[EmptyRun]]:
    """(stored bar count, runs of empty buckets) over [start_ms, end_ms), aligned to the timeframe."""
    tf = TIMEFRAME_MS[timeframe]
    lo = start_ms - start_ms % tf
    hi = end_ms - end_ms % tf + (tf if end_ms % tf else 0)
    if (hi - lo) // tf > MAX_BUCKETS:
        raise ValueError(f"range spans {(hi - lo) // tf} buckets of {timeframe}; at most {MAX_BUCKETS}")
    # The bars just outside the range tell whether ids run on across its edges.
    prev = conn.execute(
        "SELECT start_ms, last_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms<? AND origin='flow'"
        " ORDER BY start_ms DESC LIMIT 1",
        (symbol, timeframe, lo),
    ).fetchone()
    rows = conn.execute(
        "SELECT start_ms, first_id, last_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms>=? AND start_ms<?"
        " AND origin='flow' ORDER BY start_ms",
        (symbol, timeframe, lo, hi),
    ).fetchall()
    nxt = conn.execute(
        "SELECT start_ms, first_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms>=? AND origin='flow'"
        " ORDER BY start_ms LIMIT 1",
        (symbol, timeframe, hi),
    ).fetchone()
    runs: list[EmptyRun] = []
    cursor, last_id = lo, (prev[1] if prev else None)
    for start, first_id, bar_last in [*rows, (hi, nxt[1] if nxt else None, None)]:
        if start > cursor:
            quiet = last_id is not None and first_id is not None and first_id == last_id + 1
            runs.append(
                EmptyRun(cursor, start, (start - cursor) // tf, "quiet" if quiet else "unknown", last_id, first_id)
            )
        cursor, last_id = start + tf, bar_last
    return len(rows), runs
