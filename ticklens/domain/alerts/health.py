"""Feed-health readings that alert rules can watch (pure: the flow hands in what the feed reports).

Per symbol (`StreamHealth`, in the symbol's alert state): `stale_s`, seconds of
exchange time since the symbol's last trade, read at every batch or source
clock; `gaps_open`, its trade-id gaps detected and not (yet) filled.

Feed-wide (`FeedHealth`, under the feed key): `reconnects_per_min` and
`rejected_per_min`, counted over the last 60 s of feed time (rejects by the
second they were received in: the 60 seconds ending with the current one).
Feed time is local receive time: the newest of the rejected messages' receive
times and the source's clocks (its estimate of exchange time now) shifted by
the clock skew the source measured (receive time minus event time). A replay
of a recording has its recorded receive times, so it reads as the live run did.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from ticklens.domain.records import FeedStats, GapEvent

RATE_WINDOW_MS = 60_000


@dataclass
class StreamHealth:
    """One symbol's stream: when it last traded, which gaps are open."""

    last_trade_ms: int = 0
    seen_ms: int = 0  # newest clock or trade time seen
    open_gaps: set[int] = field(default_factory=set)  # first missing id of each open gap

    def on_gaps(self, gaps: list[GapEvent]) -> None:
        for g in gaps:
            if g.status == "open":
                self.open_gaps.add(g.from_id)
            else:  # filled, or given up on (unfillable): no longer open
                self.open_gaps.discard(g.from_id)

    def read(self, now_ms: int, last_trade_ms: int, jump_ms: int) -> dict[str, float] | None:
        """Readings at `now_ms`; None for a clock that jumped `jump_ms` or more at once
        (a replay's end-of-input clock, which closes every bar, is not a stall)."""
        prev = max(self.seen_ms, self.last_trade_ms)
        self.last_trade_ms = max(self.last_trade_ms, last_trade_ms)
        if now_ms < self.seen_ms:
            return None
        self.seen_ms = now_ms
        if prev and now_ms - prev >= jump_ms:
            return None
        stale = (now_ms - self.last_trade_ms) / 1000 if self.last_trade_ms else math.nan
        return {"stale_s": max(stale, 0.0), "gaps_open": float(len(self.open_gaps))}


@dataclass
class FeedHealth:
    """The whole feed: reconnects and rejected messages over the last minute of feed time."""

    now_ms: int = 0
    rejects: deque[list[int]] = field(default_factory=deque)  # [receive second (ms), count], oldest first
    reconnects: deque[tuple[int, int]] = field(default_factory=deque)  # (feed time, reconnects then)
    reported: dict[str, int] = field(default_factory=dict)  # source -> cumulative reconnects last reported
    skew_ms: float = 0.0  # receive time minus exchange event time, as the source last measured it

    def on_clock(self, ts_ms: int) -> None:
        self.now_ms = max(self.now_ms, ts_ms + int(self.skew_ms))

    def on_rejected(self, recv_ms: int) -> None:
        sec = recv_ms - recv_ms % 1000
        if self.rejects and self.rejects[-1][0] == sec:
            self.rejects[-1][1] += 1
        elif self.rejects and self.rejects[-1][0] > sec:  # out of order across connections: rare
            for b in self.rejects:
                if b[0] == sec:
                    b[1] += 1
                    break
            else:
                self.rejects.append([sec, 1])
                self.rejects = deque(sorted(self.rejects))
        else:
            self.rejects.append([sec, 1])
        self.now_ms = max(self.now_ms, recv_ms)

    def on_stats(self, stats: FeedStats) -> None:
        if stats.clock_skew_ms is not None and math.isfinite(stats.clock_skew_ms):
            self.skew_ms = stats.clock_skew_ms
        before = self.reported.get(stats.source)
        self.reported[stats.source] = stats.reconnects
        # A restarted source counts from zero again: everything it reports is new.
        new = stats.reconnects if before is None or stats.reconnects < before else stats.reconnects - before
        if new > 0:
            self.reconnects.append((self.now_ms, new))

    def read(self) -> dict[str, float]:
        now_sec = self.now_ms - self.now_ms % 1000
        while self.rejects and self.rejects[0][0] <= now_sec - RATE_WINDOW_MS:
            self.rejects.popleft()
        lo = self.now_ms - RATE_WINDOW_MS
        while self.reconnects and self.reconnects[0][0] <= lo:
            self.reconnects.popleft()
        return {
            "rejected_per_min": float(sum(n for _, n in self.rejects)),
            "reconnects_per_min": float(sum(n for _, n in self.reconnects)),
        }
