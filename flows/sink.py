"""The dataflow's sink over the store interface: typed batches written on their own thread, behind the flow.

Which backend and how many partitions come from `storage.open_store`: SQLite
takes one partition (a single writer); a server store takes one per worker, so
each worker writes what it produced.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sized

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition

from flows.crash import trace_methods, traced
from flows.items import BookOut, MicroItem, SymbolOut
from flows.progress import Progress
from storage import open_store
from storage.port import Store, StoreBatch, StoreWriter
from storage.tier_keeper import TierKeeper
from ticklens.config import Config
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.records import FeedStats, GapEvent, Rejected
from ticklens.domain.stats.correlation import CorrOut
from ticklens.domain.stats.pair import PairOut
from ticklens.domain.stats.symbol import SymbolStatsOut
from ticklens.domain.times import now_ms
from ticklens.notify.webhooks import WebhookDispatcher

# Outputs stored as one row each: the StoreBatch list they go to (GapEvent: from the source's REST backfill).
_ONE_ROW: dict[type, str] = {
    PairOut: "pairs",
    SymbolStatsOut: "symbol_stats",
    CorrOut: "correlations",
    AlertFired: "alerts",
    GapEvent: "gaps",
    Rejected: "rejects",
}


def _nonempty(rows: Sized | None) -> tuple:
    """A columnar batch as a one-item list of batches, or none when it is absent or empty."""
    return (rows,) if rows is not None and len(rows) else ()


class _WriterThread:
    """The store's writes on their own thread, behind the flow.

    The flow computes the next batches while this one is written (SQLite releases the GIL
    while it inserts, psycopg while it waits for the server). `ahead_rows` bounds what
    waits (backpressure): 0 is one batch, else about that many ticks; batches that waited
    together are written as one transaction when the writer can `combine` them (one commit
    and one round of statements instead of one per batch). Rows: ticks, quotes and depth
    updates. `flush` returns once everything
    handed over is committed. The first failed batch is rolled back whole (StoreWriter),
    nothing after it is written, and its error is raised to the flow at its next call. Not
    a daemon: if the flow dies, what was handed over is still written before the process exits.
    """

    def __init__(self, writer: StoreWriter, webhooks: WebhookDispatcher, ahead_rows: int = 0) -> None:
        self.writer = writer
        self.webhooks = webhooks
        self.ahead_rows = ahead_rows
        self.error: BaseException | None = None
        self._raised = False
        self._cv = threading.Condition()
        self._pending: list[object] = []  # prepared batches not yet taken by the thread
        self._rows = 0  # ticks in _pending
        self._busy = False
        self._closing = False
        self._combine = getattr(writer, "combine", None)
        self._thread = threading.Thread(target=self._run, name="store-writer")
        self._thread.start()

    def submit(self, batch: StoreBatch) -> None:
        self._raise()
        rows = sum(len(t) for t in batch.ticks) + sum(len(q) for q in batch.quotes) + len(batch.depth_updates)
        prepared = self.writer.prepare(batch)  # on the flow's thread: see StoreWriter.prepare
        with self._cv:
            while self._pending and self._rows + rows > self.ahead_rows and self.error is None:
                self._cv.wait()
            self._pending.append(prepared)
            self._rows += rows
            self._cv.notify_all()

    def flush(self) -> None:
        with self._cv:
            while self._pending or self._busy:
                self._cv.wait()
        self._raise()

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        self.writer.close()
        self._raise()

    def _raise(self) -> None:
        """Once: bytewax closes the partition while unwinding, and a second raise there aborts."""
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error

    def _take(self) -> list[object] | None:
        """The batches waiting (all of them), or None once closed and drained."""
        main = threading.main_thread()
        with self._cv:
            while not self._pending:
                if self._closing:
                    return None
                if not self._cv.wait(timeout=0.2) and not main.is_alive():
                    return None  # the interpreter is exiting without close()
            taken, self._pending, self._rows = self._pending, [], 0
            self._busy = True
            self._cv.notify_all()
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            try:
                if self.error is None:
                    groups = [self._combine(taken)] if self._combine is not None and len(taken) > 1 else taken
                    for prepared in groups:
                        fresh = self.writer.write(prepared)
                        if fresh:  # after the commit: a stored trigger is a sent-or-pending one
                            self.webhooks.submit(fresh)
            except BaseException as e:  # noqa: BLE001 (raised to the flow at its next call)
                self.error = e
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()


def _tier_keeper(cfg: Config, store: Store) -> TierKeeper | None:
    """Moves ticks older than store.hot_days to Parquet while the flow runs (storage/tier_keeper.py)."""
    if cfg.store.hot_days is None:
        return None

    def log(msg: str) -> None:
        print(f"[ticklens] {msg}", file=sys.stderr, flush=True)

    return TierKeeper(store, cfg.store.cold_path, cfg.store.hot_days, cfg.store.tier_every_s, log).start()


class _StorePartition(StatefulSinkPartition[object, None], StatelessSinkPartition[object]):
    """One writer over the store; `snapshot` waits until everything handed over is stored.

    Bytewax calls `snapshot` at the end of every epoch before it commits that epoch's
    recovery snapshot, so a crash can lose nothing the recovery store says is done: for
    the single-writer sink as a fixed partition's snapshot, for a worker's writer through
    the `store_write` step (`WorkerStoreSink`). `ahead_rows`: ticks that may wait for the
    writer (0: one batch). `resend_pending`: this partition sends the webhooks an earlier
    run left pending (one per flow, not one per worker).
    """

    def __init__(
        self,
        store: Store,
        progress: Progress,
        webhook_allow: list[str],
        *,
        ahead_rows: int = 0,
        resend_pending: bool = True,
        tier: TierKeeper | None = None,
    ) -> None:
        self.progress = progress
        self.webhooks = WebhookDispatcher(store, allow=webhook_allow)
        if resend_pending:
            self.webhooks.start()
        self.writer = _WriterThread(store.writer(), self.webhooks, ahead_rows)
        self.tier = tier

    def write_batch(self, values: list[object]) -> None:
        batch = StoreBatch()
        outs: list[tuple[SymbolOut, int]] = []
        ended = False
        now = now_ms()
        for item in values:
            if isinstance(item, SymbolOut):
                batch.add(ticks=_nonempty(item.ticks), bars=item.bars, bar_merges=item.merges, gaps=item.gaps)
                outs.append((item, len({(b.timeframe, b.start_ms) for b in item.bars}) + len(item.merges)))
            elif isinstance(item, BookOut):
                quotes, snaps = _nonempty(item.quotes), item.snapshots
                batch.add(quotes=quotes, depth_updates=item.applied, book_snapshots=snaps, book_gaps=item.gaps)
                self.progress.on_book(item)
            elif isinstance(item, MicroItem):
                batch.add(micro_bars=item.bars, vpin=item.vpin)
            elif isinstance(item, FeedStats):
                self.progress.feeds[item.source] = item
                ended = ended or item.ended
            elif (rows := _ONE_ROW.get(type(item))) is not None:
                getattr(batch, rows).append(item)
        for out, n in outs:
            self.progress.on_symbol(out, n, now)
        self.progress.rejects_stored += len(batch.rejects)
        if self.progress.due() or ended:
            batch.status = self.progress.status_docs()
            self.progress.print_line()
        self.writer.submit(batch)

    def snapshot(self) -> None:
        # The epoch's recovery snapshot is committed after this: everything before it is stored.
        self.writer.flush()
        return None

    def close(self) -> None:
        self.writer.submit(StoreBatch(status=self.progress.status_docs()))
        self.progress.print_line()
        try:
            self.writer.close()
        finally:
            self.webhooks.close(timeout_s=5.0)
            if self.tier is not None:
                self.tier.close()


class StoreSink(FixedPartitionedSink[object, None]):
    """A single-writer store (SQLite): every output goes to one partition."""

    def __init__(self, cfg: Config, store: Store) -> None:
        self.cfg = cfg
        self.store = store

    def list_parts(self) -> list[str]:
        return ["store"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _StorePartition:
        return _StorePartition(
            self.store,
            Progress(self.cfg.progress_interval_s),
            self.cfg.alerts.webhook_allow,
            tier=_tier_keeper(self.cfg, self.store),
        )


# Each bytewax worker is one OS thread: its writer, made when its sink is built, for its `store_write`
# step. By thread id, not threading.local: a worker thread is bytewax's own, and each of its calls
# into Python may come with a fresh Python thread state (and a fresh threading.local).
_PARTS: dict[int, _StorePartition] = {}
AHEAD_ROWS = 200_000  # ticks a worker's writer may have waiting (about 4 replay batches)


class _WorkerWrite(StatefulBatchLogic[object, None, None]):
    """The `store_write` step for one key: hands the key's outputs to the worker's writer.

    Keyed by the outputs' own keys, so each key's rows are written on the worker whose
    state made them (no exchange before the write but the source's feed items). Its
    `snapshot` is the epoch barrier a per-worker sink lacks: bytewax calls it at the end
    of every epoch the key had data in, before that epoch's recovery snapshot is committed,
    and it returns only once the worker's writer has committed everything handed over.
    """

    def __init__(self, part: _StorePartition) -> None:
        self.part = part

    def on_batch(self, values: list[object]) -> tuple[list[None], bool]:
        self.part.write_batch(values)
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        self.part.snapshot()
        return None


class WorkerStoreSink(DynamicSink[object]):
    """A server store: each worker writes what it produced, on its own connection, behind its compute.

    The writes happen in the `store_write` step (`store_step`: see `_WorkerWrite`), the
    worker's writer thread overlapping the flow; this sink only closes that writer at the
    end. Each worker's status document has its own key (`flow:<worker>`, readers merge
    them); the rows themselves never collide: a symbol's, a pair's and the correlation
    matrix's state each live on one worker, and every write is idempotent by its natural key.
    """

    def __init__(self, cfg: Config, store: Store) -> None:
        self.cfg = cfg
        self.store = store

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        progress = Progress(self.cfg.progress_interval_s, worker=(worker_index, worker_count))
        tier = _tier_keeper(self.cfg, self.store) if worker_index == 0 else None  # one tier-out per store
        part = _StorePartition(
            self.store,
            progress,
            self.cfg.alerts.webhook_allow,
            ahead_rows=AHEAD_ROWS,
            resend_pending=worker_index == 0,
            tier=tier,
        )
        part = trace_methods(part, f"sink of worker {worker_index}", "write_batch", "snapshot", "close")
        _PARTS[threading.get_ident()] = part
        return _Closer(part)

    def logic(self, resume_state: None) -> _WorkerWrite:
        part = _PARTS.get(threading.get_ident())
        if part is None:  # bytewax builds sinks with the dataflow, before any item moves
            raise RuntimeError("store_write ran on a worker whose store sink was not built")
        return _WorkerWrite(part)


class _Closer(StatelessSinkPartition[object]):
    """The end of a worker's store: nothing reaches it but the end of input (its writer's last flush)."""

    def __init__(self, part: _StorePartition) -> None:
        self.part = part

    def write_batch(self, values: list[object]) -> None:
        return None

    def close(self) -> None:
        _PARTS.pop(threading.get_ident(), None)
        self.part.close()


def store_step(stored: Stream[tuple[str, object]], sink: StoreSink | WorkerStoreSink) -> None:
    """The dataflow's end: the store (a per-worker store writes in a keyed step, then closes in its sink)."""
    if isinstance(sink, WorkerStoreSink):
        done = op.stateful_batch("store_write", stored, traced("store_write", sink.logic))
        op.output("store", done, sink)
    else:
        op.output("store", stored, sink)


def make_sink(cfg: Config) -> StoreSink | WorkerStoreSink:
    """The sink the configured backend asks for (`Store.sink_partitions`)."""
    store = open_store(cfg.store)
    return StoreSink(cfg, store) if store.sink_partitions == "one" else WorkerStoreSink(cfg, store)
