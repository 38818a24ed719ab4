"""The book step's adapter: one `BookSync` per symbol in bytewax state, its outputs for the store.

Every decision (buffering, syncing on a snapshot, chaining, gaps) is `BookSync`'s and
depends on the order of the records alone, never on how they were batched, so a replay,
a second replay and a restart from a recovery snapshot store the same rows. A full
snapshot of the book is taken at the first applied event of every
`book.snapshot_interval_s` of exchange time (the store rebuilds past books from them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flows.items import BookClock, BookOut
from ticklens.config import Config
from ticklens.domain.book import (
    BookBatch,
    BookSnapshot,
    BookSync,
    DepthUpdate,
    Quote,
    Quotes,
    Reconnected,
    SnapshotFailure,
)
from ticklens.domain.micro.levels import LevelSync


@dataclass
class BookState:
    """A symbol's book across epochs (pickled into the recovery store with the flow's state)."""

    sync: BookSync | None = None
    next_snapshot_ms: int = 0  # a snapshot at the first applied event at or after this time


def book_step(cfg: Config):
    interval_ms = max(1, int(cfg.book.snapshot_interval_s * 1000))
    l1_from_book = "bookTicker" not in cfg.source.book_streams
    max_buffer = cfg.book.max_buffer

    levels = micro_enabled(cfg)

    def new_sync(symbol: str, spot: bool) -> BookSync:
        kind = LevelSync if levels else BookSync  # LevelSync also records the levels microstructure reads
        return kind(symbol, "spot" if spot else "usdm", max_buffer=max_buffer)

    def step(state: BookState | None, item: BookBatch | Quotes | BookClock) -> tuple[BookState, BookOut]:
        state = state or BookState()
        clock = item.ts_ms if isinstance(item, BookClock) else None
        # A replay hands its bookTicker rows over in columns already (Quotes): passed on as they are.
        given = item if isinstance(item, Quotes) else None
        batch = item if isinstance(item, BookBatch) else BookBatch(item.symbol, [])
        sync = state.sync
        quotes: list[Quote] = []
        snaps: list[BookSnapshot] = []
        for rec in batch.records:
            kind = type(rec)
            if kind is DepthUpdate:
                if sync is None:
                    sync = state.sync = new_sync(batch.symbol, rec.prev_final_id is None)  # type: ignore[union-attr]
                sync.on_depth(rec)  # type: ignore[arg-type]
            elif kind is Quote:
                quotes.append(rec)  # type: ignore[arg-type]
                continue
            elif kind is BookSnapshot:
                if sync is None:  # spot's REST body carries no times
                    spot = rec.txn_ms is None and rec.event_ms is None  # type: ignore[union-attr]
                    sync = state.sync = new_sync(batch.symbol, spot)
                sync.on_snapshot(rec)  # type: ignore[arg-type]
            elif kind is SnapshotFailure:
                if sync is None:
                    sync = state.sync = new_sync(batch.symbol, False)
                sync.on_snapshot_failure(rec.recv_ms, rec.detail)  # type: ignore[union-attr]
            elif kind is Reconnected and sync is not None:
                sync.on_reconnect()
            # After any record that may have applied events (a snapshot applies the buffered ones).
            if sync is not None and sync.live and sync.book.ts_ms >= state.next_snapshot_ms:
                snaps.append(sync.book.snapshot())
                state.next_snapshot_ms = (sync.book.ts_ms // interval_ms + 1) * interval_ms
        out = BookOut(batch.symbol, clock=clock)
        if quotes:
            out.quotes = Quotes.from_quotes(batch.symbol, quotes)
        elif given is not None and len(given):
            out.quotes = given
        if sync is not None:
            drained = sync.drain()
            out.applied, out.gaps = drained.applied, drained.gaps
            out.snapshots = drained.snapshots + snaps  # the REST snapshots came first
            out.live, out.last_update_id, out.counters = sync.live, sync.last_update_id, sync.counters
            if isinstance(sync, LevelSync):
                out.levels = sync.drain_levels()
            tops = drained.tops
            if l1_from_book and len(tops):
                recv = dict(
                    zip([u.final_id for u in drained.applied], [u.recv_ms for u in drained.applied], strict=True)
                )
                valid = ~(tops.bid >= tops.ask)  # a crossed row is no L1 of Binance's book (NaN: kept)
                book_l1 = Quotes.from_tops(tops, np.array([recv[u] for u in tops.update_id.tolist()], dtype=np.int64))
                out.quotes = _take(book_l1, valid) if not valid.all() else book_l1
        return state, out

    return step


def _take(q: Quotes, keep: np.ndarray) -> Quotes:
    return Quotes(
        q.symbol,
        q.update_id[keep],
        q.ts_ms[keep],
        q.event_ms[keep],
        q.recv_ms[keep],
        q.bid[keep],
        q.bid_qty[keep],
        q.ask[keep],
        q.ask_qty[keep],
        q.source,
    )


def micro_enabled(cfg: Config) -> bool:
    """Microstructure bars are computed when enabled and the source reads any book stream."""
    return cfg.micro.enabled and bool(cfg.source.book_streams)
