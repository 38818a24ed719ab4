"""The dataflow's sink over the store interface: one typed batch per epoch, written on its own thread.

Which backend and how many partitions come from `storage.open_store`: SQLite
takes one partition (a single writer); a server store takes one per worker, so
each worker writes what it produced.
"""

from __future__ import annotations

import queue
import sys
import threading

from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition

from flows.crash import trace_methods
from flows.items import BookOut, MicroItem, SymbolOut
from flows.progress import Progress
from storage import open_store
from storage.port import Store, StoreBatch, StoreWriter
from storage.tier import TierKeeper
from ticklens.config import Config
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.records import FeedStats, GapEvent, Rejected
from ticklens.domain.stats.correlation import CorrOut
from ticklens.domain.stats.pair import PairOut
from ticklens.domain.stats.symbol import SymbolStatsOut
from ticklens.domain.times import now_ms
from ticklens.notify.webhooks import WebhookDispatcher


class _WriterThread:
    """The store's writes on their own thread, one batch behind the flow.

    SQLite releases the GIL while it inserts, so the flow computes the next batch
    on one core while this one is written on the other. One batch waits at most
    (backpressure); `flush` returns once everything handed over is committed. The
    first failed batch is rolled back whole (StoreWriter), nothing after it is
    written, and its error is raised to the flow at its next call. Not a daemon:
    if the flow dies, what was handed over is still written before the process exits.
    """

    def __init__(self, writer: StoreWriter, webhooks: WebhookDispatcher) -> None:
        self.writer = writer
        self.webhooks = webhooks
        self.error: BaseException | None = None
        self._raised = False
        self._queue: queue.Queue[object | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="store-writer")
        self._thread.start()

    def submit(self, batch: StoreBatch) -> None:
        self._raise()
        self._queue.put(self.writer.prepare(batch))  # on the flow's thread: see StoreWriter.prepare

    def flush(self) -> None:
        self._queue.join()
        self._raise()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.writer.close()
        self._raise()

    def _raise(self) -> None:
        """Once: bytewax closes the partition while unwinding, and a second raise there aborts."""
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error

    def _run(self) -> None:
        main = threading.main_thread()
        while True:
            try:
                batch = self._queue.get(timeout=0.2)
            except queue.Empty:
                if not main.is_alive():  # the interpreter is exiting without close()
                    return
                continue
            try:
                if batch is None:
                    return
                if self.error is None:
                    fresh = self.writer.write(batch)
                    if fresh:  # after the commit: a stored trigger is a sent-or-pending one
                        self.webhooks.submit(fresh)
            except BaseException as e:  # noqa: BLE001 (raised to the flow at its next call)
                self.error = e
            finally:
                self._queue.task_done()


def _tier_keeper(cfg: Config, store: Store) -> TierKeeper | None:
    """Moves ticks older than store.hot_days to Parquet while the flow runs (storage/tier.py)."""
    if cfg.store.hot_days is None:
        return None

    def log(msg: str) -> None:
        print(f"[ticklens] {msg}", file=sys.stderr, flush=True)

    return TierKeeper(store, cfg.store.cold_path, cfg.store.hot_days, cfg.store.tier_every_s, log).start()


class _StorePartition(StatefulSinkPartition[object, None], StatelessSinkPartition[object]):
    """One writer over the store; `snapshot` (fixed partitions) waits until the epoch is stored.

    `synchronous`: every batch is stored before `write_batch` returns. A per-worker
    (dynamic) sink has no snapshot to wait in, and bytewax commits an epoch's recovery
    snapshot without waiting for stateless outputs, so a batch still queued on the writer
    thread could be lost to a crash after that commit. `keyed`: handed (key, value) pairs (a
    dynamic sink) rather than values. `resend_pending`: this partition sends the webhooks an
    earlier run left pending (one per flow, not one per worker).
    """

    def __init__(
        self,
        store: Store,
        progress: Progress,
        webhook_allow: list[str],
        *,
        synchronous: bool = False,
        keyed: bool = False,
        resend_pending: bool = True,
        tier: TierKeeper | None = None,
    ) -> None:
        self.progress = progress
        self.synchronous = synchronous
        self.keyed = keyed
        self.webhooks = WebhookDispatcher(store, allow=webhook_allow)
        if resend_pending:
            self.webhooks.start()
        self.writer = _WriterThread(store.writer(), self.webhooks)
        self.tier = tier

    def write_batch(self, values: list[object]) -> None:
        if self.keyed:
            values = [kv[1] for kv in values]  # type: ignore[index]
        batch = StoreBatch()
        outs: list[tuple[SymbolOut, int]] = []
        ended = False
        now = now_ms()
        for item in values:
            if isinstance(item, SymbolOut):
                if item.ticks is not None and len(item.ticks):
                    batch.ticks.append(item.ticks)
                batch.bars.extend(item.bars)
                batch.bar_merges.extend(item.merges)
                batch.gaps.extend(item.gaps)
                outs.append((item, len({(b.timeframe, b.start_ms) for b in item.bars}) + len(item.merges)))
            elif isinstance(item, BookOut):
                if item.quotes is not None and len(item.quotes):
                    batch.quotes.append(item.quotes)
                batch.depth_updates.extend(item.applied)
                batch.book_snapshots.extend(item.snapshots)
                batch.book_gaps.extend(item.gaps)
                self.progress.on_book(item)
            elif isinstance(item, MicroItem):
                batch.micro_bars.extend(item.bars)
                batch.vpin.extend(item.vpin)
            elif isinstance(item, PairOut):
                batch.pairs.append(item)
            elif isinstance(item, SymbolStatsOut):
                batch.symbol_stats.append(item)
            elif isinstance(item, CorrOut):
                batch.correlations.append(item)
            elif isinstance(item, AlertFired):
                batch.alerts.append(item)
            elif isinstance(item, GapEvent):  # from the source's REST backfill
                batch.gaps.append(item)
            elif isinstance(item, Rejected):
                batch.rejects.append(item)
            elif isinstance(item, FeedStats):
                self.progress.feeds[item.source] = item
                ended = ended or item.ended
        for out, n in outs:
            self.progress.on_symbol(out, n, now)
        self.progress.rejects_stored += len(batch.rejects)
        if self.progress.due() or ended:
            batch.status = self.progress.status_docs()
            self.progress.print_line()
        self.writer.submit(batch)
        if self.synchronous:
            self.writer.flush()

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


class WorkerStoreSink(DynamicSink[object]):
    """A server store: each worker writes what it produced, on its own connection (no exchange).

    Each worker's status document has its own key (`flow:<worker>`, readers merge them);
    the rows themselves never collide: a symbol's, a pair's and the correlation matrix's
    state each live on one worker, and every write is idempotent by its natural key.
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
            synchronous=True,
            keyed=True,
            resend_pending=worker_index == 0,
            tier=tier,
        )
        return trace_methods(part, f"sink of worker {worker_index}", "write_batch", "close")


def make_sink(cfg: Config) -> StoreSink | WorkerStoreSink:
    """The sink the configured backend asks for (`Store.sink_partitions`)."""
    store = open_store(cfg.store)
    return StoreSink(cfg, store) if store.sink_partitions == "one" else WorkerStoreSink(cfg, store)
