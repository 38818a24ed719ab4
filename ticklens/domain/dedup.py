"""Which trade ids of a symbol we have seen, as sorted id intervals.

Binance ids (aggTrade `a`, trade `t`) are consecutive per symbol, so the seen
set is a short list of intervals and the holes between them are the gaps.
Deduplication and gap detection share this one structure (pure computation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ticklens.domain.records import Trades

MAX_INTERVALS = 4_096  # older holes beyond this are settled (already reported)


@dataclass(slots=True)
class Hole:
    from_id: int  # first missing id
    to_id: int  # last missing id
    after_ts: int  # trade time of the trade right after the hole
    reported: bool = False


@dataclass
class SeenIds:
    lo: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    hi: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.lo)

    def fresh_mask(self, ids: np.ndarray) -> np.ndarray:
        """True for ids neither seen before nor repeated earlier in this batch."""
        n = len(ids)
        mask = np.ones(n, dtype=bool)
        if n == 0:
            return mask
        if n > 1 and not np.all(ids[1:] > ids[:-1]):
            _, first = np.unique(ids, return_index=True)
            mask[:] = False
            mask[first] = True
        if len(self.lo):
            pos = np.searchsorted(self.lo, ids, side="right") - 1
            ok = pos >= 0
            seen = np.zeros(n, dtype=bool)
            seen[ok] = ids[ok] <= self.hi[pos[ok]]
            mask &= ~seen
        return mask

    def add(self, ids: np.ndarray) -> None:
        """Add fresh ids (any order), coalescing touching intervals."""
        if len(ids) == 0:
            return
        s = np.sort(ids)
        cut = np.flatnonzero(s[1:] != s[:-1] + 1) + 1
        lo = np.concatenate((self.lo, s[np.concatenate(([0], cut))]))
        hi = np.concatenate((self.hi, s[np.concatenate((cut - 1, [len(s) - 1]))]))
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], hi[order]
        run_hi = np.maximum.accumulate(hi)
        new = np.concatenate(([True], lo[1:] > run_hi[:-1] + 1))
        starts = np.flatnonzero(new)
        self.lo = lo[starts]
        self.hi = np.maximum.reduceat(run_hi, starts)
        if len(self.lo) > MAX_INTERVALS:
            k = len(self.lo) - MAX_INTERVALS
            self.lo = np.concatenate(([self.lo[0]], self.lo[k + 1 :]))
            self.hi = np.concatenate(([self.hi[k]], self.hi[k + 1 :]))

    def holes(self) -> list[tuple[int, int]]:
        """Missing id ranges (inclusive) between what we have seen."""
        return [(int(h) + 1, int(lo) - 1) for h, lo in zip(self.hi[:-1], self.lo[1:], strict=True)]

    @property
    def max_id(self) -> int | None:
        return int(self.hi[-1]) if len(self.hi) else None


class Dedup:
    """Per-symbol dedup step state: drops repeated ids, reports gaps once they settle."""

    duplicates = 0  # all repeats dropped (recovery state; class default for older pickles)

    def __init__(self, lateness_ms: int) -> None:
        self.seen = SeenIds()
        self.lateness_ms = lateness_ms
        self.max_ts = 0
        self.holes: dict[int, Hole] = {}

    def fresh(self, trades: Trades) -> tuple[Trades, int]:
        """(the trades not seen before, how many were dropped as repeats); marks them seen."""
        mask = self.seen.fresh_mask(trades.trade_id)
        dups = int(len(mask) - mask.sum())
        self.duplicates += dups
        new = trades if dups == 0 else trades.take(np.flatnonzero(mask))
        had_holes = len(self.seen) > 1
        self.seen.add(new.trade_id)
        if len(trades):
            self.max_ts = max(self.max_ts, int(trades.ts_ms.max()))
        if had_holes or len(self.seen) > 1:
            self._track_holes(trades)
        return new, dups

    def _track_holes(self, trades: Trades) -> None:
        current = {lo: hi for lo, hi in self.seen.holes()}
        for lo, hi in current.items():
            if lo not in self.holes:
                idx = np.flatnonzero(trades.trade_id == hi + 1)
                after = int(trades.ts_ms[idx[0]]) if len(idx) else self.max_ts
                self.holes[lo] = Hole(lo, hi, after)
            else:
                self.holes[lo].to_id = hi

    def settle(self, now_ts: int) -> list[tuple[Hole, str]]:
        """Holes that became gaps (older than the lateness) or got filled since last call."""
        out: list[tuple[Hole, str]] = []
        current = {lo for lo, _ in self.seen.holes()}
        for lo in list(self.holes):
            hole = self.holes[lo]
            if lo not in current:
                del self.holes[lo]
                if hole.reported:
                    out.append((hole, "filled"))
            elif not hole.reported and now_ts - hole.after_ts > self.lateness_ms:
                hole.reported = True
                out.append((hole, "open"))
        # Holes collapsed away by the interval cap stay as recorded, not tracked.
        if len(self.holes) > MAX_INTERVALS:
            for lo in sorted(self.holes)[: len(self.holes) - MAX_INTERVALS]:
                del self.holes[lo]
        return out
