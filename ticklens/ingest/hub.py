"""The bounded hand-over between the WebSocket reader thread and the dataflow.

The reader thread parses every message once (`ticklens.exchange.binance`) and
stages rows per symbol; `drain` hands them to the flow as columnar `Trades`,
with the book records per symbol (`BookBatch`: quotes, depth updates, REST
snapshots, reconnect and snapshot-failure markers, in arrival order), the
rejected messages and the backfill's gaps. The queue is bounded by rows
(`source.queue_max`) and by bytes (`source.queue_max_bytes`, trades, book
records and rejects alike, each reject keeping at most 4 KiB of its message):
when full, the sockets pause (TCP pushes back on the sender) instead of
dropping anything, so no flood of any kind grows memory.

For each symbol with a depth stream a `SyncTracker` follows Binance's procedure
on the update ids of exactly what is handed on, so the source knows when the
flow's book needs a REST snapshot (fetched by `depth_snapshots.SnapshotFetcher`
within the shared REST budget) and which depth events repeat ones already
handed on (a rollover's overlap). An optional recording keeps every raw
message as `<ns> <json>` lines for an exact replay (a rejected one marked so
that it stays a reject; a REST snapshot as `{"stream":"<sym>@depthSnapshot",…}`).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import orjson

from ticklens.domain.book import (
    BookBatch,
    BookRecord,
    BookSnapshot,
    DepthUpdate,
    Reconnected,
    SnapshotFailure,
    SyncTracker,
)
from ticklens.domain.records import COLUMNS, DTYPES, FeedStats, GapEvent, Rejected, Trades
from ticklens.exchange.binance import (
    DEFAULT_WINDOW_MS,
    REJECT_RAW_MAX,
    SNAPSHOT_STREAM,
    TRADE_KINDS,
    parse_message,
    rejected,
)
from ticklens.exchange.binance_book import parse_depth_snapshot
from ticklens.exchange.binance_rest import Backfiller

# What a staged row holds in memory (a tuple of 9 Python numbers, measured with tracemalloc)
# and what a reject holds besides its kept bytes and reason: the queue's byte count uses these.
TRADE_ROW_BYTES = 272
REJECT_BYTES = 200
# Book records, measured the same way on the 2024-08-08 recordings: a quote ~430 bytes, a depth
# update ~300 + 137 per level (its four string columns), a snapshot ~200 + 192 per level.
QUOTE_BYTES = 430
DEPTH_BYTES, DEPTH_LEVEL_BYTES = 300, 137
SNAPSHOT_BYTES, SNAPSHOT_LEVEL_BYTES = 200, 192
BOOK_STATUSES = frozenset({"quote", "depth"})


def book_record_bytes(rec: BookRecord) -> int:
    t = type(rec)
    if t is DepthUpdate:
        return DEPTH_BYTES + DEPTH_LEVEL_BYTES * rec.n_levels  # type: ignore[union-attr]
    if t is BookSnapshot:
        return SNAPSHOT_BYTES + SNAPSHOT_LEVEL_BYTES * (len(rec.bids) + len(rec.asks))  # type: ignore[union-attr]
    return QUOTE_BYTES


_ROW_DTYPE = np.dtype([(name, DTYPES[name]) for name in COLUMNS])


def rows_to_trades(symbol: str, rows: list[tuple]) -> Trades:
    """Parsed rows → a columnar batch via one structured array (5x faster than zip(*rows))."""
    arr = np.array(rows, dtype=_ROW_DTYPE)
    return Trades(symbol=symbol, **{name: np.ascontiguousarray(arr[name]) for name in COLUMNS})


class Hub:
    """State shared by the reader thread (writes) and the bytewax thread (drains)."""

    def __init__(
        self,
        symbols: list[str],
        label: str,
        queue_max: int,
        record: Path | None,
        *,
        queue_max_bytes: int = 64 << 20,
        window_ms: int | None = DEFAULT_WINDOW_MS,
        kinds: frozenset[str] = TRADE_KINDS,
        max_book_buffer: int = 100_000,
    ) -> None:
        self.symbols = set(symbols)
        self.kinds = kinds
        self.label = label
        self.queue_max = queue_max
        self.queue_max_bytes = queue_max_bytes
        self.window_ms = window_ms
        self.lock = threading.Lock()
        self.buffers: dict[str, list[tuple]] = {s: [] for s in symbols}
        self.rejects: list[Rejected] = []
        self.depth = 0
        self.depth_bytes = 0
        self.paused = False
        # Reader-thread-only staging, moved under the lock once per socket read.
        self.staged: dict[str, list[tuple]] = {s: [] for s in symbols}
        self.n_staged = 0
        self.n_staged_bytes = 0
        self.staged_rejects: list[Rejected] = []
        self.book_buffers: dict[str, list[BookRecord]] = {s: [] for s in symbols}
        self.staged_book: dict[str, list[BookRecord]] = {s: [] for s in symbols}
        # One tracker per symbol whose depth stream is read (reader thread only).
        self.trackers: dict[str, SyncTracker] = (
            {s: SyncTracker(s, "usdm", max_buffer=max_book_buffer) for s in symbols} if "depth" in kinds else {}
        )
        self.snapshots: object | None = None  # a SnapshotFetcher, set by the source: .request(symbol)
        self.book_duplicates = 0  # depth events already handed on (a rollover overlap), dropped here
        self.snapshot_failures = 0
        self.snapshots_received = 0
        self.gaps: list[GapEvent] = []  # from the backfiller, under the lock
        self.backfill: Backfiller | None = None
        # Newest id per symbol handed to the flow: the resume point after a crash.
        self.emitted_last: dict[str, int] = {}
        self.messages = 0
        self.rejected = 0
        self.skipped = 0
        self.reconnects = 0
        self.rollovers = 0
        self.connects = 0  # connection attempts, cumulative
        self.connect_times: deque[float] = deque()  # monotonic times of the attempts of the last minute
        self.newest_event_ms = 0
        self.newest_event_wall = 0.0
        self.skew_ms: float | None = None
        self.connected: dict[int, bool] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.transports: set = set()
        self.ws_conns: set = set()  # connections of the websockets client, if chosen
        self.record: io.BufferedWriter | None = None
        if record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
            raw = gzip.open(record, "ab")  # noqa: SIM115 (open for the life of the source; closed in close_record)
            self.record = io.BufferedWriter(raw, buffer_size=1 << 20)  # type: ignore[arg-type]

    # -- reader thread
    def on_message(self, raw: bytes, hold: list | None = None) -> str:
        """Parse and stage one message; returns its status ("trade" | "quote" | "depth" | "skip" | "reject").

        `hold`: a list to keep the message's book record in instead of staging it (a new
        connection during a rollover: its book events are handed on at the switch, `release`).
        """
        recv_ns = time.time_ns()
        recv_ms = recv_ns // 1_000_000
        self.messages += 1
        status, what, row = parse_message(raw, recv_ms, self.window_ms, self.kinds)
        if hold is not None and status in BOOK_STATUSES:
            hold.append((recv_ns, raw, status, what, row))
            return status
        if self.record is not None:
            self._record(recv_ns, raw, status)
        if status == "trade":
            staged = self.staged.get(what)  # type: ignore[arg-type]
            if staged is None:  # a symbol we did not ask for
                self.skipped += 1
                return "skip"
            staged.append(row)  # type: ignore[arg-type]
            self.n_staged += 1
            self.n_staged_bytes += TRADE_ROW_BYTES
            if self.backfill is not None:
                self.backfill.note(what, row[0], row[1])  # type: ignore[index]
            ev = row[7]  # type: ignore[index]
            if ev >= self.newest_event_ms:
                self.newest_event_ms = ev
                self.newest_event_wall = recv_ns / 1e9
                self.skew_ms = float(recv_ms - ev)
        elif status in BOOK_STATUSES:
            if not self._stage_book(what, row):
                self.skipped += 1
                return "skip"
        elif status == "skip":
            self.skipped += 1
        else:
            self.rejected += 1
            r = rejected(raw, what, recv_ms, self.label)
            self.staged_rejects.append(r)
            self.n_staged_bytes += len(r.raw) + len(r.reason) + REJECT_BYTES
        return status

    def _stage_book(self, symbol: str, rec: BookRecord) -> bool:
        """Stage one book record of `symbol` in arrival order; False if the symbol is not ours."""
        staged = self.staged_book.get(symbol)
        if staged is None:
            return False
        if type(rec) is DepthUpdate:
            tracker = self.trackers.get(symbol)
            if tracker is not None:
                if tracker.live and rec.final_id <= tracker.last_update_id:
                    self.book_duplicates += 1  # handed on already (two connections overlapped)
                    return True
                tracker.on_depth(rec)
                if tracker.needs_snapshot and self.snapshots is not None:
                    self.snapshots.request(symbol)  # type: ignore[attr-defined]
        staged.append(rec)
        self.n_staged += 1
        self.n_staged_bytes += book_record_bytes(rec)
        return True

    def on_connected(self, symbols: list[str]) -> None:
        """A connection carrying these symbols' depth streams was (re)opened: the flow's book and the
        tracker learn it before the connection's first event."""
        now = time.time_ns() // 1_000_000
        for sym in symbols:
            if sym in self.trackers:
                self.trackers[sym].on_reconnect()
                self._stage_book(sym, Reconnected(sym, now))

    def release(self, held: list, symbols: list[str]) -> None:
        """A rollover's new connection takes over: its book events held so far are handed on now
        (those already delivered by the old connection are dropped by the trackers)."""
        self.on_connected(symbols)
        for recv_ns, raw, status, what, rec in held:
            if self.record is not None:
                self._record(recv_ns, raw, status)
            if not self._stage_book(what, rec):
                self.skipped += 1
        held.clear()
        self.publish()

    def on_snapshot(self, symbol: str, body: bytes, recv_ns: int, limit: int) -> str:
        """A REST depth body arrived: parsed, handed on, and its verdict for the tracker."""
        recv_ms = recv_ns // 1_000_000
        snap = parse_depth_snapshot(body, symbol, recv_ms, limit=limit, source=self.label)
        if self.record is not None:
            line = b'{"stream":"%s%s","data":%s}' % (symbol.encode(), SNAPSHOT_STREAM.encode(), body)
            self._record(recv_ns, line, "reject" if isinstance(snap, Rejected) else "snapshot")
        if isinstance(snap, Rejected):
            self.rejected += 1
            self.staged_rejects.append(snap)
            self.n_staged_bytes += len(snap.raw) + len(snap.reason) + REJECT_BYTES
            self.on_snapshot_failure(symbol, f"bad snapshot body: {snap.reason}", record=False)
            return "rejected"
        self.snapshots_received += 1
        verdict = self.trackers[symbol].on_snapshot(snap) if symbol in self.trackers else "ignored"
        self._stage_book(symbol, snap)
        self.publish()
        return verdict

    def on_snapshot_failure(self, symbol: str, detail: str, record: bool = True) -> None:
        now_ns = time.time_ns()
        self.snapshot_failures += 1
        if self.record is not None and record:
            body = b'{"code":-1,"msg":%s}' % orjson.dumps(detail[:200])
            self._record(now_ns, b'{"stream":"%s%s","data":%s}' % (symbol.encode(), SNAPSHOT_STREAM.encode(), body), "")
        if symbol in self.trackers:
            self.trackers[symbol].on_snapshot_failure(now_ns // 1_000_000, detail)
        self._stage_book(symbol, SnapshotFailure(symbol, now_ns // 1_000_000, detail))
        self.publish()

    def needs_snapshot(self, symbol: str) -> bool:
        t = self.trackers.get(symbol)
        return t is not None and t.needs_snapshot

    def poll_snapshots(self) -> None:
        """Ask for the snapshots books need and have events buffered for (the reader calls this often)."""
        if self.snapshots is None:
            return
        for sym, t in self.trackers.items():
            if t.needs_snapshot and t.buffered:
                self.snapshots.request(sym)  # type: ignore[attr-defined]

    def _record(self, recv_ns: int, raw: bytes, status: str) -> None:
        # One message per line, whatever it holds: a newline can only be JSON whitespace in a
        # message that parsed, and a reject is kept (capped) behind a "!" so that a replay
        # rejects it again instead of reading a trade into it.
        if status == "reject":
            raw = b"!" + raw[:REJECT_RAW_MAX]
        if b"\n" in raw:
            raw = raw.replace(b"\n", b" ")
        assert self.record is not None
        self.record.write(b"%d %s\n" % (recv_ns, raw))

    def publish(self) -> None:
        """Move staged rows to the shared buffers; pause the sockets when the queue is full."""
        if not self.n_staged and not self.staged_rejects:
            return
        with self.lock:
            bufs = self.buffers
            for sym, rows in self.staged.items():
                if rows:
                    bufs[sym].extend(rows)
                    rows.clear()
            books = self.book_buffers
            for sym, recs in self.staged_book.items():
                if recs:
                    books[sym].extend(recs)
                    recs.clear()
            self.depth += self.n_staged
            self.depth_bytes += self.n_staged_bytes
            self.n_staged = self.n_staged_bytes = 0
            if self.staged_rejects:
                self.rejects.extend(self.staged_rejects)
                self.staged_rejects = []
            full = (self.depth >= self.queue_max or self.depth_bytes >= self.queue_max_bytes) and not self.paused
            if full:
                self.paused = True
        if full:
            for t in list(self.transports):
                t.underlying_transport.pause_reading()

    def _resume(self) -> None:
        with self.lock:
            if not self.paused or self.depth >= self.queue_max // 2 or self.depth_bytes >= self.queue_max_bytes // 2:
                return
            self.paused = False
        for t in list(self.transports):
            if not t.is_disconnected:
                t.underlying_transport.resume_reading()

    def on_backfill_rows(self, symbol: str, rows: list[tuple]) -> None:
        self.staged[symbol].extend(rows)
        self.n_staged += len(rows)
        self.n_staged_bytes += len(rows) * TRADE_ROW_BYTES
        self.publish()

    def connects_last_minute(self) -> int:
        """Read from either thread; only the reader thread (`websocket._Slot`) changes the deque."""
        now = time.monotonic()
        return sum(1 for t in list(self.connect_times) if now - t <= 60.0)

    def on_gap(self, gap: GapEvent) -> None:
        with self.lock:
            self.gaps.append(gap)

    # -- bytewax thread
    def drain(self) -> tuple[list[Trades], list[object]]:
        """Trades per symbol; then book batches per symbol, rejects and backfill gaps."""
        with self.lock:
            rows = {s: b for s, b in self.buffers.items() if b}
            for s in rows:
                self.buffers[s] = []
            books = [BookBatch(s, b) for s, b in self.book_buffers.items() if b]
            for batch in books:
                self.book_buffers[batch.symbol] = []
            rejects, self.rejects = self.rejects, []
            gaps, self.gaps = self.gaps, []
            self.depth = self.depth_bytes = 0
            resume = self.paused
        if resume and self.loop is not None:
            self.loop.call_soon_threadsafe(self._resume)
        trades = [rows_to_trades(s, r) for s, r in rows.items()]
        for t in trades:
            if len(t):
                self.emitted_last[t.symbol] = max(self.emitted_last.get(t.symbol, 0), int(t.trade_id.max()))
        return trades, [*books, *rejects, *gaps]

    def clock_ms(self) -> int | None:
        """Exchange time now, estimated: newest event time plus wall time since it arrived."""
        if not self.newest_event_ms:
            return None
        return self.newest_event_ms + int((time.time() - self.newest_event_wall) * 1000)

    def stats(self) -> FeedStats:
        return FeedStats(
            source=self.label,
            connected=bool(self.connected) and all(self.connected.values()),
            reconnects=self.reconnects,
            rollovers=self.rollovers,
            connects=self.connects,
            connects_per_min=self.connects_last_minute(),
            messages=self.messages,
            rejected=self.rejected,
            skipped=self.skipped,
            queue_depth=self.depth,
            queue_bytes=self.depth_bytes,
            clock_skew_ms=self.skew_ms,
            snapshots=self.snapshots_received,
            snapshot_failures=self.snapshot_failures,
            book_duplicates=self.book_duplicates,
        )

    def close_record(self) -> None:
        if self.record is not None:
            self.record.close()
            self.record = None
