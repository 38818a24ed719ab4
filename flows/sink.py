"""The SQLite sink of the dataflow: one writer, one transaction per batch."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.items import SymbolOut
from flows.progress import Progress
from storage.sqlite import analytics
from storage.sqlite.writer import StoreWriter, TickParams, now_ms
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.records import FeedStats, GapEvent, Rejected, Trades
from ticklens.domain.stats.correlation import CorrOut
from ticklens.domain.stats.pair import PairOut
from ticklens.domain.stats.symbol import SymbolStatsOut
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
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="store-writer")
        self._thread.start()

    def submit(self, batch: dict[str, Any]) -> None:
        self._raise()
        self._queue.put(batch)

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
                    fresh = self.writer.write(**batch)
                    if fresh:  # after the commit: a stored trigger is a sent-or-pending one
                        self.webhooks.submit(fresh)
            except BaseException as e:  # noqa: BLE001 (raised to the flow at its next call)
                self.error = e
            finally:
                self._queue.task_done()


class _SqlitePartition(StatefulSinkPartition[object, None]):
    def __init__(self, path: Path, progress: Progress, max_size_mb: int | None = None, cache_mb: int = 64) -> None:
        self.progress = progress
        self.webhooks = WebhookDispatcher(path)
        self.webhooks.start()
        self.writer = _WriterThread(StoreWriter(path, max_size_mb, cache_mb), self.webhooks)

    def write_batch(self, values: list[object]) -> None:
        ticks: list[Trades] = []
        bars: list[tuple] = []
        merges: list[tuple] = []
        rejects: list[tuple] = []
        gaps: list[tuple] = []
        outs: list[tuple[SymbolOut, int]] = []
        extra: list[tuple[str, list[tuple]]] = []  # analytics tables: (INSERT head, rows)
        fired: list[AlertFired] = []
        ended = False
        now = now_ms()
        for item in values:
            if isinstance(item, SymbolOut):
                if item.ticks is not None and len(item.ticks):
                    ticks.append(item.ticks)
                # One row per bar: a batch may touch the same bar several times.
                latest = {(b.timeframe, b.start_ms): b for b in item.bars}
                rows = {k: b.row() for k, b in latest.items()}
                bars.extend(rows.values())
                merges.extend(b.row() for b in item.merges)
                gaps.extend(
                    (g.symbol, g.from_id, g.to_id, g.after_ts, now, now if g.status == "filled" else None, g.status)
                    for g in item.gaps
                )
                outs.append((item, len(rows) + len(item.merges)))
            elif isinstance(item, PairOut):
                extra.append((analytics.PAIR_INSERT, analytics.pair_rows(item, now)))
            elif isinstance(item, SymbolStatsOut):
                extra.append((analytics.SYMBOL_INSERT, analytics.symbol_rows(item, now)))
            elif isinstance(item, CorrOut):
                extra.append((analytics.CORR_INSERT, analytics.corr_rows(item, now)))
            elif isinstance(item, AlertFired):
                fired.append(item)
            elif isinstance(item, GapEvent):  # from the source's REST backfill
                filled = now if item.status == "filled" else None
                gaps.append((item.symbol, item.from_id, item.to_id, item.after_ts, now, filled, item.status))
            elif isinstance(item, Rejected):
                rejects.append((item.recv_ms, item.reason, item.source, item.raw))
            elif isinstance(item, FeedStats):
                self.progress.feeds[item.source] = item
                ended = ended or item.ended
        for out, n in outs:
            self.progress.on_symbol(out, n, now)
        self.progress.rejects_stored += len(rejects)
        status = None
        if self.progress.due() or ended:
            status = self.progress.status_docs()
            self.progress.print_line()
        self.writer.submit(
            {
                "ticks": TickParams.of(ticks),
                "bars": bars,
                "bar_merges": merges,
                "rejects": rejects,
                "gaps": gaps,
                "status": status,
                "extra": extra,
                "alerts": fired,
            }
        )

    def snapshot(self) -> None:
        # The epoch's recovery snapshot is committed after this: everything before it is stored.
        self.writer.flush()
        return None

    def close(self) -> None:
        self.writer.submit({"status": self.progress.status_docs()})
        self.progress.print_line()
        try:
            self.writer.close()
        finally:
            self.webhooks.close(timeout_s=5.0)


class SqliteSink(FixedPartitionedSink[object, None]):
    """All outputs go to one partition, so SQLite sees a single writer."""

    def __init__(
        self, path: Path, progress_interval_s: float = 2.0, max_size_mb: int | None = None, cache_mb: int = 64
    ) -> None:
        self.path = path
        self.progress_interval_s = progress_interval_s
        self.max_size_mb = max_size_mb
        self.cache_mb = cache_mb

    def list_parts(self) -> list[str]:
        return ["store"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _SqlitePartition:
        return _SqlitePartition(self.path, Progress(self.progress_interval_s), self.max_size_mb, self.cache_mb)
