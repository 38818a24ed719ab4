"""Bytewax input sources: recorded files (replay) and WebSockets (Binance or the local feed).

Thin partitions over `ticklens.ingest`: they pace, batch and report; the
transport, parsing and merging live there.
"""

from __future__ import annotations

import atexit
import sys
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.crash import trace_methods
from flows.placement import local_parts
from flows.shutdown import STOP
from ticklens.config import Config
from ticklens.domain.records import Clock, FeedStats, Trades
from ticklens.exchange.binance import TRADE_KINDS, record_kinds
from ticklens.exchange.binance_rest import Backfiller, RequestBudget
from ticklens.exchange.depth_snapshots import SnapshotFetcher
from ticklens.ingest.hub import Hub
from ticklens.ingest.shards import Shard, live_shards, replay_shards
from ticklens.ingest.websocket import Reader, connections

CLOCK_EVERY_S = 0.1  # a Clock at least this often while data flows (and every 0.25 s when idle)
IDLE_CLOCK_S = 0.25
STATS_EVERY_S = 1.0
IDLE_WAKE_S = 0.02  # bytewax polls this often when nothing arrived
BUSY_WAKE_S = 0.01  # while trades flow: drain every 10 ms (larger batches), not continuously
GIL_SWITCH_S = 0.0005
PACED_ROWS = 5_000
# At end of input a clock this far past the last trade closes every bar.
EOF_CLOCK_MS = 3_600_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _clocks(ts_ms: int, shard: Shard) -> list[Clock]:
    """The source's clock for its own symbols only: one partition's time must not close the bars
    of symbols another partition (maybe further behind) still feeds."""
    if not shard.foreign:
        return [Clock(ts_ms)]  # every symbol: the router fans it out
    return [Clock(ts_ms, s) for s in shard.symbols]


class _ReplayPartition(StatefulSourcePartition[object, dict]):
    def __init__(
        self,
        shard: Shard,
        speed: float | str,
        batch_rows: int,
        resume: dict | None,
        window_ms: int | None = None,
        kinds: frozenset[str] = TRADE_KINDS,
    ) -> None:
        from ticklens.ingest.replay import Replay

        self.shard = shard
        self.replay = Replay(
            list(shard.paths),
            positions=(resume or {}).get("positions"),
            window_ms=window_ms,
            kinds=kinds,
            readahead=True,  # a large recording is parsed in a child process, on another core
        )
        self.speed = None if speed == "max" else float(speed)
        self.batch_rows = batch_rows
        self.symbols = set(shard.symbols)
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
            out.extend(_clocks(self.last_ts + EOF_CLOCK_MS, self.shard))
            out.append(
                FeedStats(self.shard.name, connected=False, rejected=stats.rejected, skipped=stats.skipped, ended=True)
            )
            return out
        for item in chunk:
            if item.symbol in self.symbols:
                out.append(item)  # trades, or a symbol's book records
                if isinstance(item, Trades):
                    self.last_ts = max(self.last_ts, int(item.ts_ms[-1]))
            elif item.symbol not in self.shard.foreign:
                self.ignored += len(item)
            elif not self.shard.shared:
                raise ValueError(
                    f"replay partition {self.shard.name} reads {', '.join(map(str, self.shard.paths))}, named for"
                    f" {', '.join(self.shard.symbols)}, and found {item.symbol} records in it: name each file for"
                    " its one symbol, or set source.partitions: 1"
                )
        if chunk:
            out.extend(_clocks(self.last_ts, self.shard))
            self.next_wake = None
        elif due is not None:
            nxt = self.replay.next_ts()
            wait_s = 0.05 if nxt is None else max(0.0, (nxt - due) / 1000 / (self.speed or 1))
            self.next_wake = _utcnow() + timedelta(seconds=min(wait_s, 0.25))
            out.extend(_clocks(due, self.shard))
        return out

    def next_awake(self) -> datetime | None:
        return self.next_wake

    def snapshot(self) -> dict:
        return {"positions": self.replay.positions(), "ignored": self.ignored}


class ReplaySource(FixedPartitionedSource[object, dict]):
    """Recorded trades from files, merged in event time; at `speed: max` the flow ends at end of input.

    One partition per group of files and symbols (`ticklens.ingest.shards`), each symbol in one.
    """

    def __init__(self, cfg: Config) -> None:
        self.shards = {s.name: s for s in replay_shards(cfg)}
        self.speed = cfg.source.speed
        self.batch_rows = cfg.source.batch_rows
        self.window_ms = cfg.source.window_ms
        self.kinds = record_kinds(cfg.source.streams)

    def list_parts(self) -> list[str]:
        return [s.name for s in local_parts(list(self.shards.values()))]

    def build_part(self, step_id: str, for_part: str, resume_state: dict | None) -> _ReplayPartition:
        part = _ReplayPartition(
            self.shards[for_part], self.speed, self.batch_rows, resume_state, self.window_ms, self.kinds
        )
        return trace_methods(part, f"source {for_part}", "next_batch")


def _record_path(record: Path | None, shard: Shard) -> Path | None:
    """One recording per partition: session.jsonl.gz -> session.p0.jsonl.gz when there are several."""
    if record is None or shard.count == 1:
        return record
    stem, dot, rest = record.name.partition(".")
    return record.with_name(f"{stem}.p{shard.index}{dot}{rest}")


class _LivePartition(StatefulSourcePartition[object, dict]):
    def __init__(self, cfg: Config, shard: Shard, resume: dict | None) -> None:
        src = cfg.source
        self.shard = shard
        symbols = list(shard.symbols)
        self.hub = Hub(
            symbols,
            shard.name,
            src.queue_max,
            _record_path(src.record, shard),
            queue_max_bytes=src.queue_max_bytes,
            window_ms=src.window_ms,
            kinds=record_kinds(src.streams),
            max_book_buffer=cfg.book.max_buffer,
        )
        last_ids = (resume or {}).get("last_ids", {})
        self.hub.emitted_last = dict(last_ids)
        # Binance's REST weight is per IP: the partitions share it, and within one the trade
        # backfill and the books' snapshots share one budget.
        per_minute = max(1, cfg.backfill.max_requests_per_minute // shard.count)
        budget = RequestBudget(per_minute)
        enabled = cfg.backfill.enabled if cfg.backfill.enabled is not None else src.kind == "binance"
        if enabled and src.trade_stream is not None:
            self.hub.backfill = Backfiller(
                cfg.backfill.rest_url,
                per_minute,
                fillable=src.stream == "aggTrade",
                on_rows=self.hub.on_backfill_rows,
                on_gap=self.hub.on_gap,
                last_ids=last_ids,
                budget=budget,
            )
        if self.hub.trackers:
            self.hub.snapshots = SnapshotFetcher(
                cfg.book_rest_url,
                cfg.book.snapshot_limit,
                budget,
                self.hub.needs_snapshot,
                self.hub.on_snapshot,
                self.hub.on_snapshot_failure,
                backoff_initial_s=src.backoff_initial_s,
                backoff_max_s=src.backoff_max_s,
            )
        self.reader = Reader(self.hub, connections(src, symbols), src)
        # GIL convoy: the reader thread gives up the GIL at every socket read and then
        # waits a whole switch interval (5 ms by default) for the busy flow thread to
        # hand it back. Measured at 100k trades/s offered: 0.5 ms stores 2-4x more.
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
        self.reader.start()
        # bytewax does not call close() when stopped by a signal; the recording must still be complete.
        atexit.register(self.reader.stop)
        self.stopped = False
        self.last_clock = 0.0
        self.last_stats = 0.0
        self.wake: datetime | None = None

    def next_batch(self) -> list[object]:
        if self.stopped:
            raise StopIteration
        if STOP.is_set():
            # Graceful stop: close the sockets, hand over what they delivered, then end.
            self.reader.stop()
            self.stopped = True
        try:
            trades, rejects = self.hub.drain()
        except Exception:
            traceback.print_exc()
            raise
        out: list[object] = [t for t in trades if len(t)]
        out.extend(rejects)  # book batches per symbol, rejects, backfill gaps
        now = time.monotonic()
        if now - self.last_clock >= (CLOCK_EVERY_S if out else IDLE_CLOCK_S):
            ts = self.hub.clock_ms()
            if ts is not None:
                out.extend(_clocks(ts, self.shard))
            self.last_clock = now
        if now - self.last_stats >= STATS_EVERY_S:
            out.append(self.hub.stats())
            self.last_stats = now
        # While trades flow, drain every BUSY_WAKE_S rather than continuously: fewer, larger
        # batches mean fewer store transactions, for a few ms of latency.
        self.wake = _utcnow() + timedelta(seconds=BUSY_WAKE_S if trades or len(out) > len(trades) else IDLE_WAKE_S)
        return out

    def next_awake(self) -> datetime | None:
        return self.wake

    def snapshot(self) -> dict:
        # A live stream cannot be rewound: on resume we reconnect, and the REST
        # backfill (when on) fetches from the newest id the flow had been given.
        return {"last_ids": dict(self.hub.emitted_last)}

    def close(self) -> None:
        self.reader.stop()


class WebSocketSource(FixedPartitionedSource[object, dict]):
    """Binance USD-M trades (or the local feed) over WebSocket: one partition per connection group
    of at most 200 streams (`ticklens.ingest.shards`), each with its own reader thread."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.shards = {s.name: s for s in live_shards(cfg)}

    def list_parts(self) -> list[str]:
        local = [s.name for s in local_parts(list(self.shards.values()))]
        # One partition keeps its old name, so an existing recovery directory resumes it.
        if len(self.shards) == 1:
            return ["ws"] if local else []
        return local

    def build_part(self, step_id: str, for_part: str, resume_state: dict | None) -> _LivePartition:
        shard = next(iter(self.shards.values())) if for_part == "ws" else self.shards[for_part]
        return trace_methods(_LivePartition(self.cfg, shard, resume_state), f"source {for_part}", "next_batch")


def make_source(cfg: Config) -> FixedPartitionedSource:
    return ReplaySource(cfg) if cfg.source.kind == "replay" else WebSocketSource(cfg)
