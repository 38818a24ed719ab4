"""Bar continuity: which buckets of a range have no bar, and can we tell why (pure).

An empty bucket between two stored bars is a confirmed quiet period when the
trade ids run on without a break across it (the bar before ends at id n, the bar
after starts at n + 1): no trade can be missing. Otherwise it is unknown (a gap
in the ids spans it). Buckets before the first or after the last stored bar of
the range cannot be judged from bars alone and are reported as unknown.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class FlowBarIds:
    """Collected bars of a range as (start_ms, first_id, last_id), and the ids just outside it."""

    rows: list[tuple[int, int, int]]
    last_id_before: int | None  # last id of the newest collected bar before the range
    first_id_after: int | None  # first id of the oldest collected bar after it


def bucket_range(timeframe: str, start_ms: int, end_ms: int) -> tuple[int, int]:
    """[start, end) widened to whole buckets; ValueError past MAX_BUCKETS."""
    tf = TIMEFRAME_MS[timeframe]
    lo = start_ms - start_ms % tf
    hi = end_ms - end_ms % tf + (tf if end_ms % tf else 0)
    if (hi - lo) // tf > MAX_BUCKETS:
        raise ValueError(f"range spans {(hi - lo) // tf} buckets of {timeframe}; at most {MAX_BUCKETS}")
    return lo, hi


def empty_runs(timeframe: str, lo: int, hi: int, ids: FlowBarIds) -> list[EmptyRun]:
    """Runs of empty buckets in [lo, hi) (whole buckets), each quiet or unknown."""
    tf = TIMEFRAME_MS[timeframe]
    runs: list[EmptyRun] = []
    cursor, last_id = lo, ids.last_id_before
    for start, first_id, bar_last in [*ids.rows, (hi, ids.first_id_after, None)]:
        if start > cursor:
            quiet = last_id is not None and first_id is not None and first_id == last_id + 1
            runs.append(
                EmptyRun(cursor, start, (start - cursor) // tf, "quiet" if quiet else "unknown", last_id, first_id)
            )
        cursor, last_id = start + tf, bar_last
    return runs
