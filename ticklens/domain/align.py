"""Aligned bars of several symbols: one rule for the flow (streaming) and the API (batch).

Per timeframe, a complete grid of bar starts. A leg with no trade in a bucket
carries its last close forward (with zero volume). A row exists only once every
leg has had a bar (the grid starts at the latest first bar), and the grid ends
at the newest bar of any leg: a quiet tail is filled in when the next bar
arrives, never invented. In the flow a bucket is emitted once every leg's
watermark has passed its end, so a bar that closes later can no longer change it.
`Aligner` does this bar by bar, `align_frames` over stored bars, side by side.
`align_ticks` aligns two symbols' trades instead (the original design's tick windows).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ticklens.domain.times import FAR_PAST

if TYPE_CHECKING:  # align_frames imports it: the flow uses the streaming half only (start-up ~0.1 s)
    import polars as pl

Leg = tuple[float, float, float]  # close, volume, quote volume


@dataclass(slots=True)
class LegBars:
    """Closed bars of one symbol at one timeframe, and how far its watermark has come."""

    symbol: str
    timeframe: str
    bars: list[tuple[int, float, float, float]]  # (start_ms, close, volume, quote_volume), oldest first
    watermark: int
    key: str = ""  # the state it feeds ("a-b@1s"): bytewax does not pass keys to mappers


def max_idle_bars(tf_ms: int) -> int:
    """Buckets carried forward after the last trade on any leg: 10 minutes of 1s, an hour of 1m or 5m."""
    return max(1, min(600, 3_600_000 // tf_ms))


@dataclass(slots=True)
class Aligner:
    """Turns per-leg closed bars into complete aligned rows (see the module docstring)."""

    legs: list[str]
    tf_ms: int
    pending: dict[str, deque[tuple[int, float, float, float]]] = field(default_factory=lambda: defaultdict(deque))
    first: dict[str, int] = field(default_factory=dict)
    newest: dict[str, int] = field(default_factory=dict)
    wm: dict[str, int] = field(default_factory=dict)
    current: dict[str, Leg] = field(default_factory=dict)
    cursor: int | None = None
    last_bar: int = FAR_PAST  # newest bucket aligned so far in which any leg traded

    def clone(self) -> Aligner:
        """An independent copy (bars and closes are immutable tuples)."""
        new = Aligner(list(self.legs), self.tf_ms)
        new.pending = defaultdict(deque, {s: q.copy() for s, q in self.pending.items()})
        new.first, new.newest, new.wm, new.current = (
            dict(self.first),
            dict(self.newest),
            dict(self.wm),
            dict(self.current),
        )
        new.cursor, new.last_bar = self.cursor, self.last_bar
        return new

    def push(self, leg: LegBars) -> list[tuple[int, dict[str, Leg]]]:
        self.add(leg)
        return list(self.rows())

    def add(self, leg: LegBars) -> None:
        """Take a leg's new closed bars (oldest first) and watermark; `rows` then aligns what it can."""
        q = self.pending[leg.symbol]
        for bar in leg.bars:
            start = bar[0]
            if (self.cursor is not None and start < self.cursor) or start <= self.newest.get(leg.symbol, -1):
                continue  # already aligned past it: a revision, not a new bar
            q.append(bar)
            self.first.setdefault(leg.symbol, start)
            self.newest[leg.symbol] = start
        self.wm[leg.symbol] = max(self.wm.get(leg.symbol, leg.watermark), leg.watermark)

    def rows(self) -> Iterator[tuple[int, dict[str, Leg]]]:
        """The aligned rows now complete, oldest first; between two rows `cursor` is the next bucket."""
        if len(self.first) < len(self.legs) or len(self.wm) < len(self.legs):
            return
        if self.cursor is not None and not any(self.pending.values()):
            return  # the common case: everything aligned, waiting for the next bar
        if self.cursor is None:
            self.cursor = max(self.first.values())
        last = max(self.newest.values())
        safe = min(self.wm.values())
        idle_ms = max_idle_bars(self.tf_ms) * self.tf_ms
        t = self.cursor
        while t <= last and t + self.tf_ms <= safe:
            row: dict[str, Leg] = {}
            for s in self.legs:
                q = self.pending[s]
                fresh = None
                while q and q[0][0] <= t:
                    fresh = q.popleft()
                if fresh is not None:
                    self.last_bar = max(self.last_bar, fresh[0])
                    self.current[s] = (fresh[1], fresh[2], fresh[3]) if fresh[0] == t else (fresh[1], 0.0, 0.0)
                    row[s] = self.current[s]
                else:
                    row[s] = (self.current[s][0], 0.0, 0.0)
            if t - self.last_bar >= idle_ms:
                # A long silence on every leg (an outage, a gap between recordings): resume at the next bar.
                t = self.cursor = min(q[0][0] for q in self.pending.values() if q)
                continue
            self.cursor = t + self.tf_ms
            yield t, row
            t += self.tf_ms
        self.cursor = t


def align_frames(bars: dict[str, pl.DataFrame], tf_ms: int) -> pl.DataFrame:
    """Batch alignment of closed bars (columns start_ms, close, volume, quote_volume) per symbol.

    Returns start_ms plus `<sym>`, `<sym>_volume`, `<sym>_quote` per symbol; empty if a leg has no bar.
    """
    import polars as pl

    if not bars or any(df.height == 0 for df in bars.values()):
        return pl.DataFrame({"start_ms": []}, schema={"start_ms": pl.Int64})
    spans = [
        df.select(pl.col("start_ms").min().alias("a"), pl.col("start_ms").max().alias("b")).row(0)
        for df in bars.values()
    ]
    lo = min(int(a) for a, _ in spans)
    first = max(int(a) for a, _ in spans)
    last = max(int(b) for _, b in spans)
    grid = pl.DataFrame({"start_ms": pl.int_range(lo, last + tf_ms, tf_ms, eager=True, dtype=pl.Int64)})
    for sym, df in bars.items():
        leg = df.select(
            pl.col("start_ms").cast(pl.Int64),
            pl.col("close").cast(pl.Float64).alias(sym),
            pl.col("volume").cast(pl.Float64).alias(f"{sym}_volume"),
            pl.col("quote_volume").cast(pl.Float64).alias(f"{sym}_quote"),
        )
        grid = grid.join(leg, on="start_ms", how="left").with_columns(
            pl.col(sym).forward_fill(),
            pl.col(f"{sym}_volume").fill_null(0.0),
            pl.col(f"{sym}_quote").fill_null(0.0),
            pl.col(sym).is_not_null().alias(f"_{sym}_traded"),
        )
    traded = pl.any_horizontal([pl.col(c) for c in grid.columns if c.endswith("_traded")])
    last_bar = pl.when(traded).then(pl.col("start_ms")).forward_fill()
    idle_ms = max_idle_bars(tf_ms) * tf_ms
    return grid.filter((pl.col("start_ms") >= first) & (pl.col("start_ms") - last_bar < idle_ms)).drop(
        [c for c in grid.columns if c.endswith("_traded")]
    )


def align_ticks(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Two symbols' trades (columns ts_ms, price; oldest first) on their merged trade times.

    At every millisecond in which either traded, each leg's last price at or
    before it (by trade time, then id order as given): columns ts_ms, a, b. Rows
    start once both have traded.
    """
    import polars as pl

    legs = []
    for name, df in (("a", a), ("b", b)):
        legs.append(
            df.select(pl.col("ts_ms").cast(pl.Int64), pl.col("price").cast(pl.Float64).alias(name))
            .group_by("ts_ms", maintain_order=True)
            .last()
            .sort("ts_ms")
        )
    times = pl.concat([legs[0].select("ts_ms"), legs[1].select("ts_ms")]).unique().sort("ts_ms")
    out = times.join_asof(legs[0], on="ts_ms", strategy="backward").join_asof(legs[1], on="ts_ms", strategy="backward")
    return out.drop_nulls()
