"""The SQLite book tables: a v4 store (the version before them) gains them in place (v5), and `store.retention` trims each table.

Real SQLite files; expected rows computed here from what was written.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import numpy as np
from store_support import downgraded_sqlite

from storage import retention_days
from storage.port import StoreBatch
from storage.sqlite import SqliteStore
from storage.sqlite.connection import connect
from storage.sqlite.schema import SCHEMA_VERSION
from ticklens.config import StoreConfig
from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate, Quotes

DAY = 86_400_000
T0 = 1_723_000_000_000
BOOK_TABLES = {"quotes", "depth_updates", "book_snapshots", "book_gaps"}


def test_a_version_4_store_gains_the_book_tables_keeping_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "v4.db"
    downgraded_sqlite(db, 4, BOOK_TABLES)  # a v4 store (compact ticks, no book tables), as main's v4 made it
    connect(db).close()
    with sqlite3.connect(db) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        ticks = conn.execute("SELECT symbol, trade_id, ts_ms, price, qty, is_buyer_maker FROM ticks").fetchall()
    assert int(version) == SCHEMA_VERSION  # v5 (the book tables) and every step after it
    assert tables >= BOOK_TABLES | {"tick_rows", "symbols"}
    assert {"quotes_time", "depth_updates_key", "depth_updates_time", "book_snapshots_key"} <= indexes
    assert ticks == [("btcusdt", 1, 5, 1.0, 2.0, 0)]


def test_a_version_3_store_with_the_old_ticks_table_goes_through_v4_and_v5(tmp_path: Path) -> None:
    db = tmp_path / "v3.db"
    with sqlite3.connect(db) as conn:  # a v3 store: ticks keyed by symbol text, no book tables
        conn.executescript(
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES('schema_version', '3');"
            "CREATE TABLE ticks(symbol TEXT NOT NULL, trade_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL,"
            " price REAL NOT NULL, qty REAL NOT NULL, is_buyer_maker INTEGER NOT NULL, first_id INTEGER NOT NULL,"
            " last_id INTEGER NOT NULL, event_ms INTEGER NOT NULL, recv_ms INTEGER NOT NULL,"
            " PRIMARY KEY(symbol, trade_id)) WITHOUT ROWID;"
            "INSERT INTO ticks VALUES('btcusdt', 1, 5, 1.0, 2.0, 0, 1, 1, 5, 6);"
        )
    connect(db).close()
    with sqlite3.connect(db) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        ticks = conn.execute("SELECT * FROM ticks").fetchall()
    assert int(version) == SCHEMA_VERSION
    assert tables >= BOOK_TABLES | {"tick_rows"}
    assert ticks == [("btcusdt", 1, 5, 1.0, 2.0, 0, 1, 1, 5, 6)]


def _batch(symbol: str, newest: int, rng: random.Random) -> StoreBatch:
    """Book rows spread over three days up to `newest`."""
    times = sorted(rng.randint(newest - 3 * DAY, newest) for _ in range(400))
    times[-1] = newest
    ids = np.arange(1000, 1000 + 10 * len(times), 10, dtype=np.int64)
    ts = np.array(times, dtype=np.int64)
    n = len(ts)
    quotes = Quotes(symbol, ids, ts, ts, ts, np.ones(n), np.ones(n), np.full(n, 2.0), np.ones(n))
    depth = [
        DepthUpdate(symbol, int(u) - 9, int(u), int(u) - 10, t, t, t, ["1.0"], ["1"], [], [])
        for u, t in zip(ids.tolist(), times, strict=True)
    ]
    snaps = [
        BookSnapshot(symbol, int(u), None, t, t, [["1.0", "1"]], [], None, (0.0, 5.0))
        for u, t in zip(ids[::40].tolist(), times[::40], strict=True)
    ]
    gaps = [
        BookGap(symbol, int(u), t - 5, "pu_break", int(u) + 5, t, "closed")
        for u, t in zip(ids[::50].tolist(), times[::50], strict=True)
    ]
    gaps.append(BookGap(symbol, 10**9, newest - 3 * DAY - 1, "reconnect"))  # open: never cut
    return StoreBatch(quotes=[quotes], depth_updates=depth, book_snapshots=snaps, book_gaps=gaps)


def test_retention_keeps_each_table_its_days_back_from_its_newest_row(tmp_path: Path) -> None:
    cfg = StoreConfig(path=tmp_path / "r.db", retention={"days": 2, "tables": {"depth_updates": 0.5, "quotes": 1}})
    days = retention_days(cfg)
    assert days == {"ticks": 2, "quotes": 1, "depth_updates": 0.5, "book_snapshots": 2, "book_gaps": 2}
    store = SqliteStore(cfg.path, retention_days=days)
    rng = random.Random(7)
    newest = {"btcusdt": T0, "ethusdt": T0 - DAY // 3}
    batches = {s: _batch(s, t, rng) for s, t in newest.items()}
    w = store.writer()
    for b in batches.values():
        w.write(w.prepare(b))
    deleted = w.apply_retention()
    w.close()
    col = {"quotes": "ts_ms", "depth_updates": "ts_ms", "book_snapshots": "ts_ms", "book_gaps": "to_ms"}
    with sqlite3.connect(cfg.path) as conn:
        for table, c in col.items():
            for sym, b in batches.items():
                if table == "quotes":
                    times = [int(t) for t in b.quotes[0].ts_ms]
                elif table == "depth_updates":
                    times = [u.txn_ms for u in b.depth_updates]
                elif table == "book_snapshots":
                    times = [x.ts_ms for x in b.book_snapshots]
                else:
                    times = [g.to_ms for g in b.book_gaps if g.to_ms is not None]
                cut = max(times) - int(days[table] * DAY)  # from the table's own newest row of the symbol
                want = sorted(t for t in times if t >= cut)
                got = [
                    r[0]
                    for r in conn.execute(
                        f"SELECT {c} FROM {table} WHERE symbol=? AND {c} IS NOT NULL ORDER BY {c}", (sym,)
                    )
                ]
                assert got == want, (table, sym)
            assert deleted[table] > 0
        assert conn.execute("SELECT COUNT(*) FROM book_gaps WHERE status='open'").fetchone()[0] == 2
        assert conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0] == 0  # (no ticks here; SQLite keeps ticks)
