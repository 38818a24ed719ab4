"""Bytewax input sources: recorded files (replay) and, in `flows.live`, WebSockets."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.events import Clock, FeedStats
from ticklens.config import Config

PACED_ROWS = 5_000
# At end of input a clock this far past the last trade closes every bar.
EOF_CLOCK_MS = 3_600_000


# Set by the runner on SIGINT/SIGTERM: sources end their input, so the flow drains
# and every sink closes normally (a graceful stop is an end of input, not an exception).
STOP = threading.Event()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _ReplayPartition(StatefulSourcePartition[object, dict]):
    def __init__(
        self, paths: list[Path], speed: float | str, symbols: set[str], batch_rows: int, resume: dict | None
    ) -> None:
        from flows.replay import Replay

        self.replay = Replay(paths, positions=(resume or {}).get("positions"))
        self.speed = None if speed == "max" else float(speed)
        self.batch_rows = batch_rows
        self.symbols = symbols
        self.start_wall: float | None = None
        self.start_ts: int | None = None
        self.last_ts = 0
        self.ignored = (resume or {}).get("ignored", 0)
        self.done = False
        self.next_wake: datetime | None = None

    def _due_ts(self) -> int | None:
        if self.speed is None:
            return None
        if self.start_wall is None:
            first = self.replay.next_ts()
            if first is None:
                return None
            self.start_wall, self.start_ts = time.monotonic(), first
        assert self.start_ts is not None
        return self.start_ts + int((time.monotonic() - self.start_wall) * 1000 * self.speed)

    def next_batch(self) -> list[object]:
        if self.done or STOP.is_set():
            raise StopIteration
        due = self._due_ts()
        max_rows = self.batch_rows if self.speed is None else min(PACED_ROWS, self.batch_rows)
        chunk = self.replay.take(max_rows, until_ts=due)
        out: list[object] = list(self.replay.drain_rejects())
        if chunk is None:
            self.done = True
            stats = self.replay.stats()
            out.append(Clock(self.last_ts + EOF_CLOCK_MS))
            out.append(FeedStats("replay", connected=False, rejected=stats.rejected, skipped=stats.skipped, ended=True))
            return out
        for trades in chunk:
            if trades.symbol in self.symbols:
                out.append(trades)
                self.last_ts = max(self.last_ts, int(trades.ts_ms[-1]))
            else:
                self.ignored += len(trades)
        if chunk:
            out.append(Clock(self.last_ts))
            self.next_wake = None
        elif due is not None:
            nxt = self.replay.next_ts()
            wait_s = 0.05 if nxt is None else max(0.0, (nxt - due) / 1000 / (self.speed or 1))
            self.next_wake = _utcnow() + timedelta(seconds=min(wait_s, 0.25))
            out.append(Clock(due))
        return out

    def next_awake(self) -> datetime | None:
        return self.next_wake

    def snapshot(self) -> dict:
        return {"positions": self.replay.positions(), "ignored": self.ignored}


class ReplaySource(FixedPartitionedSource[object, dict]):
    """Recorded trades from files, merged in event time; at `speed: max` the flow ends at end of input."""

    def __init__(self, cfg: Config) -> None:
        self.paths = list(cfg.source.paths)
        self.speed = cfg.source.speed
        self.symbols = set(cfg.symbols)
        self.batch_rows = cfg.source.batch_rows

    def list_parts(self) -> list[str]:
        return ["replay"]

    def build_part(self, step_id: str, for_part: str, resume_state: dict | None) -> _ReplayPartition:
        return _ReplayPartition(self.paths, self.speed, self.symbols, self.batch_rows, resume_state)


def make_source(cfg: Config) -> FixedPartitionedSource:
    if cfg.source.kind == "replay":
        return ReplaySource(cfg)
    from flows.live import WebSocketSource

    return WebSocketSource(cfg)
