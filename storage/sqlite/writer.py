"""The writes the dataflow makes into SQLite: one transaction per epoch's `StoreBatch`."""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson

from storage.codec import DEPTH_COLUMNS, QUOTE_COLUMNS, SNAPSHOT_COLUMNS, encode_levels, encode_snapshot
from storage.port import StoreBatch, StoreWriteError
from storage.sqlite.analytics import analytics_rows
from storage.sqlite.connection import connect
from storage.sqlite.micro import micro_params, write_micro
from storage.sqlite.rules import insert_events
from storage.sqlite.sql import insert_flat
from storage.sqlite.ticks import TickColumns, TickParams, use_c_insert
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.bars import BAR_COLUMNS, Bar
from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate, Quotes
from ticklens.domain.times import now_ms

_BAR_PLACEHOLDERS = ",".join("?" * (len(BAR_COLUMNS) + 1))
_BAR_HEAD = f"INSERT OR REPLACE INTO bars({','.join(BAR_COLUMNS)},updated_ms)"


_BAR_KEY = "symbol=? AND timeframe=? AND start_ms=?"
_BAR_SELECT = f"SELECT {','.join(BAR_COLUMNS)}, origin FROM bars WHERE {_BAR_KEY}"
_BAR_MERGED = f"INSERT OR REPLACE INTO bars({','.join(BAR_COLUMNS)},updated_ms,origin) VALUES({_BAR_PLACEHOLDERS},?)"


def merge_bars(conn: sqlite3.Connection, partials: Iterable[tuple], ts: int) -> None:
    """Late partials (BAR_COLUMNS rows) for bars no longer held in memory, folded into the stored bars.

    The stored bar is read back and merged by the domain's rule (`Bar.merge`, from
    `ticklens.domain.bars.MERGE_RULES`): exact at any size, which SQL arithmetic on
    64-bit integers is not. Rare (trades later than `bars.keep_closed_ms`), so one
    read per partial costs nothing that matters. The merged bar counts a revision, is
    closed and belongs to the flow; a partial with no stored bar is stored as it is.
    """
    for row in partials:
        part = Bar.from_row(row)
        stored = conn.execute(_BAR_SELECT, (part.symbol, part.timeframe, part.start_ms)).fetchone()
        if stored is None:
            conn.execute(_BAR_MERGED, (*row, ts, "flow"))
            continue
        bar = Bar.from_row(stored[:-1])
        bar.merge(part)
        bar.revision += 1
        bar.closed = True
        conn.execute(_BAR_MERGED, (*bar.row(), ts, "flow"))


_GAP_UPSERT = (
    "INSERT INTO gaps(symbol, from_id, to_id, after_ts, detected_ms, filled_ms, status)"
    " VALUES(?,?,?,?,?,?,?) ON CONFLICT(symbol, from_id) DO UPDATE SET"
    " to_id=excluded.to_id,"
    " filled_ms=COALESCE(gaps.filled_ms, excluded.filled_ms),"
    # Two reporters (the source's backfill, the dedup step) may tell the same gap
    # in any order: filled outranks unfillable, which outranks open.
    " status=CASE WHEN gaps.status='filled' OR excluded.status='filled' THEN 'filled'"
    " WHEN gaps.status='unfillable' OR excluded.status='unfillable' THEN 'unfillable'"
    " ELSE excluded.status END"
)
# The oldest rejects beyond the cap. Ids are AUTOINCREMENT and only this trim deletes, oldest
# first, so the ids held are one contiguous run and the cut is one range delete on the key.
_REJECTS_TRIM = "DELETE FROM rejects WHERE id <= (SELECT MAX(id) FROM rejects) - ?"
_REJECTS_DROPPED = (
    "INSERT INTO meta(key, value) VALUES('rejects_dropped', ?) ON CONFLICT(key) DO UPDATE SET"
    " value = CAST(CAST(meta.value AS INTEGER) + CAST(excluded.value AS INTEGER) AS TEXT)"
)
# Books: every write is idempotent by its natural key (a replay or a restart stores nothing twice).
_QUOTE_HEAD = f"INSERT OR IGNORE INTO quotes({','.join(QUOTE_COLUMNS)})"
_DEPTH_HEAD = f"INSERT OR IGNORE INTO depth_updates({','.join(DEPTH_COLUMNS)})"
_SNAPSHOT_INSERT = f"INSERT OR IGNORE INTO book_snapshots({','.join(SNAPSHOT_COLUMNS)}) VALUES({','.join('?' * len(SNAPSHOT_COLUMNS))})"
# A gap is told when it opens and again when it closes, maybe in different batches: closed wins.
_BOOK_GAP_UPSERT = (
    "INSERT INTO book_gaps(symbol, from_update_id, from_ms, to_update_id, to_ms, reason, status, detail, detected_ms)"
    " VALUES(?,?,?,?,?,?,?,?,?) ON CONFLICT(symbol, from_update_id, from_ms) DO UPDATE SET"
    " to_update_id=COALESCE(excluded.to_update_id, book_gaps.to_update_id),"
    " to_ms=COALESCE(excluded.to_ms, book_gaps.to_ms),"
    " status=CASE WHEN book_gaps.status='closed' OR excluded.status='closed' THEN 'closed' ELSE excluded.status END"
)
# Table -> the time column its retention cuts on (closed gaps by their end; open ones stay).
RETENTION_COLUMNS = {"quotes": "ts_ms", "depth_updates": "ts_ms", "book_snapshots": "ts_ms", "book_gaps": "to_ms"}
RETENTION_EVERY_S = 60.0
DAY_MS = 86_400_000


def _symbols(conn: sqlite3.Connection, table: str) -> list[str]:
    """Distinct symbols by skipping along an index that starts with the symbol (no full scan)."""
    out: list[str] = []
    while True:
        row = conn.execute(f"SELECT MIN(symbol) FROM {table} WHERE symbol > ?", (out[-1] if out else "",)).fetchone()
        if row[0] is None:
            return out
        out.append(row[0])


def _quote_params(batches: Iterable[Quotes]) -> list[object]:
    width = len(QUOTE_COLUMNS)
    flat: list[object] = []
    for q in batches:
        n = len(q)
        if not n:
            continue
        part: list[object] = [None] * (n * width)
        part[0::width] = [q.symbol] * n
        part[1::width] = q.update_id.tolist()
        part[2::width] = q.ts_ms.tolist()
        part[3::width] = [None if e < 0 else e for e in q.event_ms.tolist()]
        part[4::width] = q.recv_ms.tolist()
        for j, col in enumerate((q.bid, q.bid_qty, q.ask, q.ask_qty), start=5):
            part[j::width] = [None if math.isnan(x) else x for x in col.tolist()]
        part[9::width] = [q.source] * n
        flat += part
    return flat


def _depth_params(updates: Iterable[DepthUpdate]) -> list[object]:
    flat: list[object] = []
    for u in updates:
        flat += (
            u.symbol,
            u.final_id,
            u.first_id,
            u.prev_final_id,
            u.txn_ms,
            u.event_ms,
            u.recv_ms,
            len(u.bid_px),
            len(u.ask_px),
            encode_levels(u.bid_px, u.bid_qty, u.ask_px, u.ask_qty),
        )
    return flat


def _snapshot_row(s: BookSnapshot) -> tuple:
    kind = "rest" if s.complete_range is None else "interval"
    low = high = None
    if s.complete_range is not None:
        lo, hi = s.complete_range
        low, high = (lo if lo > 0 else None), (None if math.isinf(hi) else hi)
    return (
        s.symbol,
        s.last_update_id,
        s.ts_ms,
        s.recv_ms,
        kind,
        s.limit,
        low,
        high,
        len(s.bids),
        len(s.asks),
        encode_snapshot(s.bids, s.asks),
    )


def _book_gap_row(g: BookGap, ts: int) -> tuple:
    return (g.symbol, g.from_update_id, g.from_ms, g.to_update_id, g.to_ms, g.reason, g.status, g.detail, ts)


@dataclass(slots=True)
class _Prepared:
    ts: int
    ticks: TickParams | TickColumns  # TickColumns when the writer inserts ticks in C
    bars: list[object]  # flat, BAR_COLUMNS + updated_ms per bar
    merges: list[tuple]
    rejects: list[tuple]
    gaps: list[tuple]
    analytics: list[tuple[str, list[tuple]]]  # (INSERT head, rows)
    alerts: list[AlertFired]
    status: list[tuple]
    quotes: list[object]  # flat, QUOTE_COLUMNS per row
    depth: list[object]  # flat, DEPTH_COLUMNS per row
    snapshots: list[tuple]
    book_gaps: list[tuple]
    micro: tuple[list[object], list[object]]  # flat micro_bars and vpin parameters


def symbol_ids(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT symbol, id FROM symbols"))


def add_symbol(conn: sqlite3.Connection, symbol: str) -> int:
    """The symbol's id, made in a transaction of its own (an id once given is never taken back)."""
    conn.execute("INSERT OR IGNORE INTO symbols(symbol) VALUES(?)", (symbol,))
    return int(conn.execute("SELECT id FROM symbols WHERE symbol=?", (symbol,)).fetchone()[0])


class WriterSettings(Protocol):
    """What a writer is made from: the store's settings at the time (`SqliteStore` has them)."""

    path: Path
    max_size_mb: int | None
    cache_mb: int
    rejects_max_rows: int | None
    retention_days: Mapping[str, float]


class SqliteWriter:
    """Batched, transactional writes of the dataflow's outputs (`StoreWriter` of the port)."""

    def __init__(self, settings: WriterSettings) -> None:
        self.path = Path(settings.path)
        self.rejects_max_rows = settings.rejects_max_rows
        self.retention_days = {t: d for t, d in settings.retention_days.items() if t in RETENTION_COLUMNS}
        self._retained_at = 0.0
        self.conn = connect(self.path)
        self.conn.execute(f"PRAGMA cache_size={-int(settings.cache_mb) * 1024}")
        # Another writer's transaction (a tier-out's one-transaction delete of a day, an upload) may
        # hold the lock for seconds on a loaded machine: the flow waits for it rather than failing.
        self.conn.execute("PRAGMA busy_timeout=120000")
        # Checkpoint the WAL every ~40 MB rather than every 4 MB: fewer stalls in bulk ingest.
        self.conn.execute("PRAGMA wal_autocheckpoint=2500")
        if settings.max_size_mb is not None:
            page = self.conn.execute("PRAGMA page_size").fetchone()[0]
            self.conn.execute(f"PRAGMA max_page_count={int(settings.max_size_mb * 1024 * 1024 // page)}")
        self.conn.isolation_level = None  # explicit BEGIN/COMMIT
        self.symbol_ids = symbol_ids(self.conn)  # read by prepare (flow thread), grown by write
        # Ticks from numpy columns in C, the GIL released (storage/sqlite/ticks.py), where it can be used.
        self.c_ticks = use_c_insert(self.conn, self.path)

    def prepare(self, batch: StoreBatch) -> _Prepared:
        """Rows and flat parameter lists, built on the flow's thread (bars are copied by value here,
        so the flow may go on changing them while the writer thread inserts)."""
        ts = now_ms()
        # One row per bar: a batch may touch the same bar several times; the later value wins.
        latest = {(b.symbol, b.timeframe, b.start_ms): b for b in batch.bars}
        return _Prepared(
            ts=ts,
            ticks=(TickColumns if self.c_ticks else TickParams).of(batch.ticks, self.symbol_ids),
            bars=[v for b in latest.values() for v in (*b.row(), ts)],
            merges=[b.row() for b in batch.bar_merges],
            rejects=[(r.recv_ms, r.reason, r.source, r.raw) for r in batch.rejects],
            gaps=[
                (g.symbol, g.from_id, g.to_id, g.after_ts, ts, ts if g.status == "filled" else None, g.status)
                for g in batch.gaps
            ],
            analytics=analytics_rows(batch, ts),
            alerts=list(batch.alerts),
            status=[(k, orjson.dumps(v).decode(), ts) for k, v in batch.status.items()] if batch.status else [],
            quotes=_quote_params(batch.quotes),
            depth=_depth_params(batch.depth_updates),
            snapshots=[_snapshot_row(s) for s in batch.book_snapshots],
            book_gaps=[_book_gap_row(g, ts) for g in batch.book_gaps],
            micro=micro_params(batch.micro_bars, batch.vpin, ts),
        )

    def write(self, prepared: _Prepared) -> list[AlertFired]:
        """All of one dataflow batch in one transaction: a crash leaves none of it.

        Returns the webhook alert triggers not stored before (a replay finds the rest already there).
        """
        p = prepared
        c = self.conn
        try:
            for sym in p.ticks.symbols():  # before the batch's transaction: ids outlive a rolled-back batch
                if sym not in self.symbol_ids:
                    self.symbol_ids[sym] = add_symbol(c, sym)
            p.ticks.set_ids(self.symbol_ids)
            c.execute("BEGIN IMMEDIATE")
            p.ticks.insert(c)
            insert_flat(c, _BAR_HEAD, len(BAR_COLUMNS) + 1, p.bars)
            merge_bars(c, p.merges, p.ts)
            if p.rejects:
                c.executemany("INSERT INTO rejects(recv_ms, reason, source, raw) VALUES(?,?,?,?)", p.rejects)
                if self.rejects_max_rows is not None:
                    dropped = c.execute(_REJECTS_TRIM, (self.rejects_max_rows,)).rowcount
                    if dropped > 0:
                        c.execute(_REJECTS_DROPPED, (str(dropped),))
            c.executemany(_GAP_UPSERT, p.gaps)
            fresh = insert_events(c, p.alerts, p.ts) if p.alerts else []
            for head, rows in p.analytics:
                if rows:
                    insert_flat(c, head, len(rows[0]), [v for r in rows for v in r])
            write_micro(c, *p.micro)
            c.executemany("INSERT OR REPLACE INTO status(key, value, updated_ms) VALUES(?,?,?)", p.status)
            insert_flat(c, _QUOTE_HEAD, len(QUOTE_COLUMNS), p.quotes)
            insert_flat(c, _DEPTH_HEAD, len(DEPTH_COLUMNS), p.depth)
            c.executemany(_SNAPSHOT_INSERT, p.snapshots)
            c.executemany(_BOOK_GAP_UPSERT, p.book_gaps)
            c.execute("COMMIT")
        except BaseException as e:
            if c.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # a failing disk may refuse this too
                    c.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StoreWriteError(
                    f"store {self.path} cannot be written ({e}); the last batch was rolled back whole,"
                    " everything before it is stored"
                ) from e
            raise
        if self.retention_days and time.monotonic() - self._retained_at >= RETENTION_EVERY_S:
            self.apply_retention()
        return fresh

    def apply_retention(self) -> dict[str, int]:
        """Delete rows older than each table's retention, relative to the newest row of the same
        symbol (exchange time: a replay of old data keeps what a live run would). Rows deleted per table."""
        self._retained_at = time.monotonic()
        c = self.conn
        out: dict[str, int] = {}
        for table, days in self.retention_days.items():
            col = RETENTION_COLUMNS[table]
            n = 0
            c.execute("BEGIN IMMEDIATE")
            try:
                for sym in _symbols(c, table):
                    newest = c.execute(f"SELECT MAX({col}) FROM {table} WHERE symbol=?", (sym,)).fetchone()[0]
                    if newest is None:
                        continue
                    cut = newest - int(days * DAY_MS)
                    n += c.execute(f"DELETE FROM {table} WHERE symbol=? AND {col} < ?", (sym, cut)).rowcount
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        c.execute("ROLLBACK")
                raise
            out[table] = n
        return out

    def close(self) -> None:
        self.conn.close()
