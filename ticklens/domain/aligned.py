"""Statistics over aligned bars that follow the bars' revisions (pure; the flow's analytics state).

A late trade can revise a bar after the analytics used it (`BarBook` re-sends
the bar, closed, with its new values). Rolling windows and the Kalman recursion
make every later row depend on it, so the rows from the revised bar on are
recomputed: the state is rewound to a checkpoint at or before that bar and the
aligned rows are replayed from the bars kept here. The result is what an
in-order arrival would have computed, bit for bit; nothing before the
checkpoint is replayed.

What is kept is bounded by how far back a revision can reach: a bar leaves
`BarBook` `keep_closed_ms` after its end (a later trade for it becomes a store
merge, and the analytics then keep the values they had), so bars and
checkpoints older than `min(watermark) - keep_closed_ms - timeframe` are
dropped. Checkpoints are taken every `every` aligned rows (about 16 over that
horizon), so a revision replays at most `every` rows before the revised bar.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from ticklens.domain.align import Aligner, Leg, LegBars
from ticklens.domain.times import FAR_PAST

BarValues = tuple[int, float, float, float]  # (start_ms, close, volume, quote_volume)


R = TypeVar("R", covariant=True)


class RowStats(Protocol[R]):
    """A statistics state fed aligned rows in time order, which can be copied (a checkpoint)."""

    def clone(self) -> RowStats[R]: ...

    def on_row(self, start_ms: int, row: dict[str, Leg]) -> R: ...


S = TypeVar("S", bound=RowStats)  # type: ignore[type-arg]


@dataclass(slots=True)
class _Checkpoint(Generic[S]):
    """The state before aligned bucket `cursor` (None: before the first row, when nothing was aligned)."""

    cursor: int | None
    current: dict[str, Leg]
    last_bar: int
    first: dict[str, int]
    newest: dict[str, int]
    stats: S


@dataclass(slots=True)
class Replayed:
    """One push's outputs (`RowStats.on_row` results): rows computed again after a revision, oldest
    first, and rows computed for the first time."""

    revised: list[object] = field(default_factory=list)
    fresh: list[object] = field(default_factory=list)


class AlignedStats(Generic[S]):
    """An `Aligner` and a statistics state (`RowStats`) that rewinds when a bar it used is revised."""

    def __init__(self, legs: list[str], tf_ms: int, keep_closed_ms: int, stats: S) -> None:
        self.legs = legs
        self.tf_ms = tf_ms
        self.horizon_ms = keep_closed_ms + tf_ms
        self.every = max(8, min(256, self.horizon_ms // tf_ms // 16))
        self.aligner = Aligner(list(legs), tf_ms)
        self.stats: S = stats
        self.bars: dict[str, dict[int, BarValues]] = {s: {} for s in legs}
        self.starts: dict[str, list[int]] = {s: [] for s in legs}  # sorted keys of `bars`
        self.wm: dict[str, int] = {}
        self.checkpoints: list[_Checkpoint[S]] = [self._checkpoint(None)]
        self.since_checkpoint = 0
        self.rewinds = 0
        self.trim_at = FAR_PAST  # watermark from which the next trim can drop something

    def __deepcopy__(self, memo: dict[int, object]) -> AlignedStats[S]:
        """What bytewax snapshots every epoch: checkpoints are never changed once taken, so they are shared."""
        new = AlignedStats.__new__(AlignedStats)
        new.__dict__.update(self.__dict__)
        new.aligner = self.aligner.clone()
        new.stats = self.stats.clone()
        new.bars = {s: dict(b) for s, b in self.bars.items()}
        new.starts = {s: list(k) for s, k in self.starts.items()}
        new.wm = dict(self.wm)
        new.checkpoints = list(self.checkpoints)
        return new

    def push(self, leg: LegBars) -> Replayed:
        """A leg's closed or revised bars (and its watermark) in; the rows they complete or change out."""
        sym = leg.symbol
        bars, starts = self.bars[sym], self.starts[sym]
        newest = starts[-1] if starts else FAR_PAST
        new: list[BarValues] = []
        rewind: int | None = None
        cursor = self.aligner.cursor
        for bar in sorted(leg.bars) if len(leg.bars) > 1 else leg.bars:
            start = bar[0]
            if start > newest and (cursor is None or start >= cursor):
                new.append(bar)  # the common case: the leg's next bar
                newest = start
                starts.append(start)
                bars[start] = bar
                continue
            if bars.get(start) == bar:
                continue  # sent again unchanged
            if cursor is not None and start >= cursor:
                self._revise_pending(sym, bar)  # not aligned yet: only its value changes
            else:
                # Already aligned (or before the grid started): recompute from it.
                rewind = start if rewind is None else min(rewind, start)
            if start not in bars:
                insort(starts, start)
            bars[start] = bar
        wm = self.wm.get(sym)
        self.wm[sym] = leg.watermark if wm is None or leg.watermark > wm else wm
        out = Replayed()
        if rewind is not None and self._rewind(rewind):
            for t, r in self._rows():
                if t >= rewind:
                    (out.revised if cursor is not None and t < cursor else out.fresh).append(r)
        else:
            self.aligner.add(LegBars(sym, leg.timeframe, new, leg.watermark))
            out.fresh = self._fresh_rows()
        if len(self.wm) == len(self.legs) and min(self.wm.values()) >= self.trim_at:
            self._trim()
        return out

    def _fresh_rows(self) -> list[object]:
        """`_rows` for the common case, without a generator per row (the flow's hot path)."""
        out: list[object] = []
        on_row, every = self.stats.on_row, self.every
        n = self.since_checkpoint
        for t, row in self.aligner.rows():
            out.append(on_row(t, row))
            n += 1
            if n >= every:
                self.checkpoints.append(self._checkpoint(self.aligner.cursor))
                n = 0
        self.since_checkpoint = n
        return out

    def _rows(self) -> Iterator[tuple[int, object]]:
        """Aligned rows through the statistics, with a checkpoint every `every` rows."""
        on_row = self.stats.on_row
        for t, row in self.aligner.rows():
            yield t, on_row(t, row)
            self.since_checkpoint += 1
            if self.since_checkpoint >= self.every:
                self.checkpoints.append(self._checkpoint(self.aligner.cursor))
                self.since_checkpoint = 0

    def _checkpoint(self, cursor: int | None) -> _Checkpoint[S]:
        al = self.aligner
        stats: S = self.stats.clone()  # type: ignore[assignment]
        return _Checkpoint(cursor, dict(al.current), al.last_bar, dict(al.first), dict(al.newest), stats)

    def _revise_pending(self, sym: str, bar: BarValues) -> None:
        q = self.aligner.pending[sym]
        merged = {b[0]: b for b in q}
        merged[bar[0]] = bar
        self.aligner.pending[sym] = deque(merged[k] for k in sorted(merged))

    def _rewind(self, start: int) -> bool:
        """Back to the newest checkpoint at or before `start`, the kept bars from there pending again."""
        keys = [FAR_PAST if c.cursor is None else c.cursor for c in self.checkpoints]
        i = bisect_right(keys, start) - 1
        if i < 0:
            return False  # older than anything kept: beyond keep_closed_ms, a store merge's territory
        cp = self.checkpoints[i]
        del self.checkpoints[i + 1 :]
        self.rewinds += 1
        self.since_checkpoint = 0
        al = Aligner(list(self.legs), self.tf_ms)
        al.wm = dict(self.wm)
        if cp.cursor is None:
            for s in self.legs:
                if self.starts[s]:
                    al.add(LegBars(s, "", [self.bars[s][k] for k in self.starts[s]], self.wm.get(s, FAR_PAST)))
            al.wm = dict(self.wm)
        else:
            al.cursor, al.current, al.last_bar, al.first = cp.cursor, dict(cp.current), cp.last_bar, dict(cp.first)
            for s in self.legs:
                keys = self.starts[s]
                j = bisect_right(keys, cp.cursor - 1)
                al.pending[s] = deque(self.bars[s][k] for k in keys[j:])
                al.newest[s] = max(cp.newest.get(s, FAR_PAST), keys[-1] if keys else FAR_PAST)
        self.aligner = al
        self.stats = cp.stats.clone()  # type: ignore[assignment]
        return True

    def _trim(self) -> None:
        """Drop what no revision can reach any more (see the module docstring)."""
        if len(self.wm) < len(self.legs) or len(self.checkpoints) < 2:
            return
        cut = min(self.wm.values()) - self.horizon_ms
        keys = [FAR_PAST if c.cursor is None else c.cursor for c in self.checkpoints[1:]]
        i = bisect_right(keys, cut)  # checkpoints[i] is the newest at or before the cut
        # Nothing more to drop before the watermark passes the next checkpoint's horizon.
        self.trim_at = (keys[i] if i < len(keys) else cut + self.every * self.tf_ms) + self.horizon_ms
        if i == 0:
            return
        del self.checkpoints[:i]
        base = self.checkpoints[0].cursor
        assert base is not None
        for s in self.legs:
            keys_s = self.starts[s]
            j = bisect_right(keys_s, base - 1)
            if j:
                # Keep the newest bar before the base: `newest` and carried closes come from it.
                for k in keys_s[: j - 1]:
                    del self.bars[s][k]
                del keys_s[: j - 1]
