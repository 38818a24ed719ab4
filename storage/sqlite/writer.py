"""SQLite connections and the writes the dataflow makes (the embedded store)."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from storage.sqlite.schema import create_schema
from ticklens.domain.bars import BAR_COLUMNS, QTY_SCALE, QUOTE_SCALE
from ticklens.domain.records import COLUMNS as TRADE_COLUMNS
from ticklens.domain.records import Trades

if TYPE_CHECKING:
    from ticklens.domain.alerts.engine import AlertFired

_BAR_PLACEHOLDERS = ",".join("?" * (len(BAR_COLUMNS) + 1))
_BAR_HEAD = f"INSERT OR REPLACE INTO bars({','.join(BAR_COLUMNS)},updated_ms)"
# A late trade for a bar no longer held in memory is folded into the stored bar.
_Q, _P = float(QTY_SCALE), float(QUOTE_SCALE)
_BAR_MERGE = f"""
INSERT INTO bars({",".join(BAR_COLUMNS)},updated_ms) VALUES({_BAR_PLACEHOLDERS})
ON CONFLICT(symbol, timeframe, start_ms) DO UPDATE SET
  open = CASE WHEN excluded.open_ts < open_ts OR (excluded.open_ts = open_ts AND excluded.open_id < open_id)
              THEN excluded.open ELSE open END,
  open_id = CASE WHEN excluded.open_ts < open_ts OR (excluded.open_ts = open_ts AND excluded.open_id < open_id)
              THEN excluded.open_id ELSE open_id END,
  open_ts = MIN(open_ts, excluded.open_ts),
  close = CASE WHEN excluded.close_ts > close_ts OR (excluded.close_ts = close_ts AND excluded.close_id > close_id)
              THEN excluded.close ELSE close END,
  close_id = CASE WHEN excluded.close_ts > close_ts OR (excluded.close_ts = close_ts AND excluded.close_id > close_id)
              THEN excluded.close_id ELSE close_id END,
  close_ts = MAX(close_ts, excluded.close_ts),
  high = MAX(high, excluded.high),
  low = MIN(low, excluded.low),
  volume_units = volume_units + excluded.volume_units,
  quote_units = quote_units + excluded.quote_units,
  taker_buy_volume_units = taker_buy_volume_units + excluded.taker_buy_volume_units,
  taker_buy_quote_units = taker_buy_quote_units + excluded.taker_buy_quote_units,
  volume = (volume_units + excluded.volume_units) / {_Q},
  quote_volume = (quote_units + excluded.quote_units) / {_P},
  taker_buy_volume = (taker_buy_volume_units + excluded.taker_buy_volume_units) / {_Q},
  taker_buy_quote_volume = (taker_buy_quote_units + excluded.taker_buy_quote_units) / {_P},
  trades = trades + excluded.trades,
  vwap = ((quote_units + excluded.quote_units) / {_P}) / ((volume_units + excluded.volume_units) / {_Q}),
  max_qty = MAX(max_qty, excluded.max_qty),
  messages = messages + excluded.messages,
  first_id = MIN(first_id, excluded.first_id),
  last_id = MAX(last_id, excluded.last_id),
  revision = revision + 1,
  closed = 1,
  origin = 'flow',
  updated_ms = excluded.updated_ms
"""
_TICK_COLUMNS = ("symbol", *TRADE_COLUMNS)
_TICK_HEAD = f"INSERT OR IGNORE INTO ticks({','.join(_TICK_COLUMNS)})"
# Multi-row VALUES: one statement step per up to 2,048 rows instead of one per row is ~35 %
# faster than executemany over row tuples, and SQLite releases the GIL for the whole step
# (docs/performance.md). The tail goes in smaller statements.
_CHUNK_ROWS = (2048, 128, 8, 1)


@functools.cache
def _values_sql(head: str, width: int, rows: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return f"{head} VALUES{','.join([one] * rows)}"


def insert_flat(conn: sqlite3.Connection, head: str, width: int, flat: list[object]) -> None:
    """`head VALUES (…),(…)` over `flat`: the rows' parameters one after another, `width` per row."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    pos, end = 0, len(flat)
    for rows in _CHUNK_ROWS:
        if rows > limit:
            continue
        step = rows * width
        stop = pos + (end - pos) // step * step
        if stop > pos:
            conn.executemany(_values_sql(head, width, rows), [flat[i : i + step] for i in range(pos, stop, step)])
            pos = stop


@dataclass(slots=True)
class TickParams:
    """Ticks as one flat parameter list in `ticks` column order (no row tuples).

    The sink builds it on the flow's thread, so the writer thread only binds and inserts.
    """

    flat: list[object]

    @classmethod
    def of(cls, batches: Iterable[Trades]) -> TickParams:
        width = len(_TICK_COLUMNS)
        flat: list[object] = []
        for t in batches:
            n = len(t)
            if not n:
                continue
            part: list[object] = [None] * (n * width)
            part[0::width] = [t.symbol] * n
            done: list[tuple[np.ndarray, list]] = []
            for j, name in enumerate(TRADE_COLUMNS, start=1):
                col = getattr(t, name)
                # A trade's first/last id and event/receive times often repeat its id and time:
                # one Python list for equal columns (tolist is most of the cost here).
                same = next((v for a, v in done if a.dtype == col.dtype and np.array_equal(a, col)), None)
                values = same if same is not None else col.tolist()  # bools bind as 0/1
                done.append((col, values))
                part[j::width] = values
            flat += part
        return cls(flat)


def insert_ticks(conn: sqlite3.Connection, ticks: TickParams) -> None:
    """A tick already stored (same symbol and id) is skipped."""
    insert_flat(conn, _TICK_HEAD, len(_TICK_COLUMNS), ticks.flat)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def connect(path: Path | str, *, readonly: bool = False, create: bool = True) -> sqlite3.Connection:
    """Open the store in WAL mode; readers never block the single writer."""
    p = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=10, check_same_thread=False)
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        new = not p.exists() or p.stat().st_size == 0
        conn = sqlite3.connect(p, timeout=30, check_same_thread=False)
        if new:  # larger pages: fewer B-tree splits for the append-mostly tick inserts
            p.chmod(0o600)  # private to this user; SQLite gives -wal/-shm the same mode
            conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-65536")
    if create and not readonly:
        create_schema(conn)
    return conn


class StoreWriteError(RuntimeError):
    """The store cannot take a write (disk or size cap full, read-only, I/O error): the batch
    was rolled back whole, so everything acknowledged before it is stored."""


class StoreWriter:
    """Batched, transactional writes of the dataflow's outputs."""

    def __init__(self, path: Path | str, max_size_mb: int | None = None, cache_mb: int = 64) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        self.conn.execute(f"PRAGMA cache_size={-int(cache_mb) * 1024}")
        # Checkpoint the WAL every ~40 MB rather than every 4 MB: fewer stalls in bulk ingest.
        self.conn.execute("PRAGMA wal_autocheckpoint=2500")
        if max_size_mb is not None:
            page = self.conn.execute("PRAGMA page_size").fetchone()[0]
            self.conn.execute(f"PRAGMA max_page_count={int(max_size_mb * 1024 * 1024 // page)}")
        self.conn.isolation_level = None  # explicit BEGIN/COMMIT

    def write(
        self,
        ticks: TickParams | Iterable[Trades] = (),
        bars: Iterable[tuple] = (),
        bar_merges: Iterable[tuple] = (),
        rejects: Iterable[tuple] = (),
        gaps: Iterable[tuple] = (),
        status: dict[str, object] | None = None,
        extra: Iterable[tuple[str, Sequence[tuple]]] = (),
        alerts: Sequence[AlertFired] = (),
    ) -> list[AlertFired]:
        """All of one dataflow batch in one transaction: a crash leaves none of it.

        `extra`: (INSERT head without VALUES, rows) pairs of other tables (analytics), written
        in the same transaction.
        Returns the webhook alert triggers not stored before (a replay finds the rest already there).
        """
        ts = now_ms()
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            insert_ticks(c, ticks if isinstance(ticks, TickParams) else TickParams.of(ticks))
            # Rows in order: a bar given twice ends as its later row, as with one INSERT per row.
            insert_flat(c, _BAR_HEAD, len(BAR_COLUMNS) + 1, [v for r in bars for v in (*r, ts)])
            c.executemany(_BAR_MERGE, (r + (ts,) for r in bar_merges))
            c.executemany("INSERT INTO rejects(recv_ms, reason, source, raw) VALUES(?,?,?,?)", rejects)
            c.executemany(
                "INSERT INTO gaps(symbol, from_id, to_id, after_ts, detected_ms, filled_ms, status)"
                " VALUES(?,?,?,?,?,?,?) ON CONFLICT(symbol, from_id) DO UPDATE SET"
                " to_id=excluded.to_id,"
                " filled_ms=COALESCE(gaps.filled_ms, excluded.filled_ms),"
                # Two reporters (the source's backfill, the dedup step) may tell the same gap
                # in any order: filled outranks unfillable, which outranks open.
                " status=CASE WHEN gaps.status='filled' OR excluded.status='filled' THEN 'filled'"
                " WHEN gaps.status='unfillable' OR excluded.status='unfillable' THEN 'unfillable'"
                " ELSE excluded.status END",
                gaps,
            )
            fresh = insert_alert_events(c, alerts, ts) if alerts else []
            for head, rows in extra:
                if rows:
                    insert_flat(c, head, len(rows[0]), [v for r in rows for v in r])
            if status:
                c.executemany(
                    "INSERT OR REPLACE INTO status(key, value, updated_ms) VALUES(?,?,?)",
                    [(k, orjson.dumps(v).decode(), ts) for k, v in status.items()],
                )
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
        return fresh

    def close(self) -> None:
        self.conn.close()


def insert_alert_events(conn: sqlite3.Connection, alerts: Sequence[AlertFired], ts: int) -> list[AlertFired]:
    from storage.sqlite.rules import insert_events  # storage.alerts imports this module

    return insert_events(conn, alerts, ts)
