"""Which trade ids of a symbol we have seen, as sorted id intervals.

Binance ids (aggTrade `a`, trade `t`) are consecutive per symbol, so the seen
set is a short list of intervals and the holes between them are the gaps.
Deduplication and gap detection share this one structure (pure computation).

The values of the newest trades are kept too (`Recent`: the lateness window,
at least `RECENT_MIN_ROWS` trades), so a duplicate that differs from the trade
kept (price, qty, time or side) is reported as a `Conflict` instead of being
dropped without a trace. Older duplicates are dropped uncompared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ticklens.domain.records import Trades

MAX_INTERVALS = 4_096  # older holes beyond this are settled (already reported)
RECENT_MIN_ROWS = 4_096  # trades whose values are kept whatever their age
RECENT_MAX_ROWS = 262_144  # and at most this many, however many fall in the lateness window
_COMPACT_CHUNKS = 64
_VALUES = ("trade_id", "ts_ms", "price", "qty", "is_buyer_maker")


@dataclass(frozen=True, slots=True)
class Conflict:
    """A duplicate id whose values differ from the trade kept; `kept`/`other` are
    (ts_ms, price, qty, is_buyer_maker, recv_ms)."""

    symbol: str
    trade_id: int
    kept: tuple[int, float, float, bool, int]
    other: tuple[int, float, float, bool, int]


def _values(cols: dict[str, np.ndarray], i: int) -> tuple[int, float, float, bool, int]:
    return (
        int(cols["ts_ms"][i]),
        float(cols["price"][i]),
        float(cols["qty"][i]),
        bool(cols["is_buyer_maker"][i]),
        int(cols["recv_ms"][i]),
    )


class Recent:
    """The values of the newest fresh trades, as a few column chunks (no per-trade objects)."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, dict[str, np.ndarray]]] = []  # (max ts, columns), oldest first
        self.rows = 0

    def add(self, trades: Trades, max_ts: int, lateness_ms: int) -> None:
        if len(trades):
            cols = {n: getattr(trades, n) for n in (*_VALUES, "recv_ms")}
            self.chunks.append((int(trades.ts_ms.max()), cols))
            self.rows += len(trades)
        # Drop the oldest chunks once the rest still hold the minimum and they left the window.
        while len(self.chunks) > 1:
            chunk_ts, cols = self.chunks[0]
            n = len(cols["trade_id"])
            rest = self.rows - n
            if rest >= RECENT_MAX_ROWS or (rest >= RECENT_MIN_ROWS and chunk_ts < max_ts - lateness_ms):
                self.chunks.pop(0)
                self.rows = rest
            else:
                break
        if len(self.chunks) > _COMPACT_CHUNKS:  # live batches are small: keep the list short
            merged = {n: np.concatenate([c[n] for _, c in self.chunks]) for n in self.chunks[0][1]}
            self.chunks = [(max(t for t, _ in self.chunks), merged)]

    def columns(self) -> dict[str, np.ndarray]:
        if not self.chunks:
            return {n: getattr(Trades.empty(""), n) for n in (*_VALUES, "recv_ms")}
        if len(self.chunks) == 1:
            return self.chunks[0][1]
        return {n: np.concatenate([c[n] for _, c in self.chunks]) for n in self.chunks[0][1]}


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
    conflicts = 0  # of them, repeats whose values differed from the trade kept

    def __init__(self, lateness_ms: int) -> None:
        self.seen = SeenIds()
        self.lateness_ms = lateness_ms
        self.max_ts = 0
        self.holes: dict[int, Hole] = {}
        self.recent = Recent()

    def __setstate__(self, state: dict[str, object]) -> None:  # a snapshot from before `recent` existed
        self.__dict__.update(state)
        self.__dict__.setdefault("recent", Recent())

    def fresh(self, trades: Trades) -> tuple[Trades, int, list[Conflict]]:
        """(the trades not seen before, how many were dropped as repeats, the repeats whose
        values differ from the trade kept); marks them seen."""
        mask = self.seen.fresh_mask(trades.trade_id)
        dups = int(len(mask) - mask.sum())
        self.duplicates += dups
        new = trades if dups == 0 else trades.take(np.flatnonzero(mask))
        conflicts = self._conflicts(trades, new, mask) if dups else []
        self.conflicts += len(conflicts)
        had_holes = len(self.seen) > 1
        self.seen.add(new.trade_id)
        if len(trades):
            self.max_ts = max(self.max_ts, int(trades.ts_ms.max()))
        self.recent.add(new, self.max_ts, self.lateness_ms)
        if had_holes or len(self.seen) > 1:
            self._track_holes(trades)
        return new, dups, conflicts

    def _conflicts(self, trades: Trades, new: Trades, mask: np.ndarray) -> list[Conflict]:
        """Compare each repeat with the kept trade of its id (this batch's or a recent one)."""
        old = self.recent.columns()
        kept = {n: np.concatenate((old[n], getattr(new, n))) for n in old}
        order = np.argsort(kept["trade_id"], kind="stable")
        keys = kept["trade_id"][order]
        dup_idx = np.flatnonzero(~mask)
        ids = trades.trade_id[dup_idx]
        if not len(keys):
            return []
        pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
        found = keys[pos] == ids
        i, j = dup_idx[found], order[pos[found]]
        differ = np.zeros(len(i), dtype=bool)
        for n in ("ts_ms", "price", "qty", "is_buyer_maker"):
            differ |= getattr(trades, n)[i] != kept[n][j]
        out: list[Conflict] = []
        for a, b in zip(i[differ].tolist(), j[differ].tolist(), strict=True):
            out.append(
                Conflict(
                    trades.symbol,
                    int(trades.trade_id[a]),
                    _values(kept, b),
                    _values({n: getattr(trades, n) for n in kept}, a),
                )
            )
        return out

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
