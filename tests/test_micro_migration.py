"""A store made by the previous schema version gains the microstructure tables in place, keeping
its rows and then taking micro bars: SQLite v5 → v6, PostgreSQL v3 → v4 (real files, a real server)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
from store_support import downgraded_sqlite, write_batch

from storage.port import MICRO_OUT_COLUMNS, Store
from storage.postgres import PostgresStore
from storage.postgres.schema import SCHEMA_VERSION as PG_VERSION
from storage.sqlite import SqliteStore
from storage.sqlite.schema import SCHEMA_VERSION
from ticklens.config import StoreConfig
from ticklens.domain.book import Quote, Quotes
from ticklens.domain.micro import MicroBook, MicroParams

T0 = 1_723_000_000_000
MICRO_TABLES = {"micro_bars", "vpin"}
MID = MICRO_OUT_COLUMNS.index("mid_open")


def _bars() -> list:
    book = MicroBook("btcusdt", MicroParams({"1s": 1_000}))
    book.add_quotes(Quotes.from_quotes("btcusdt", [Quote("btcusdt", 1, T0, T0, "100.0", "1", "100.1", "2", T0)]))
    return book.advance(clock_ms=T0 + 60_000).bars


def _migrated_micro_bars(store: Store) -> list:
    """Open an older store with this ticklens (migrating it), write micro bars and read them back."""
    store.ensure()
    write_batch(store, micro_bars=_bars())
    with store.reader() as r:
        got = r.micro_bars("btcusdt", "1s", 10)
    store.close()
    return got


def test_a_version_5_sqlite_store_gains_the_micro_tables(tmp_path: Path) -> None:
    db = tmp_path / "v5.db"
    downgraded_sqlite(db, 5, MICRO_TABLES)  # what the previous version wrote: no micro tables, version 5
    got = _migrated_micro_bars(SqliteStore(db))
    with sqlite3.connect(db) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        ticks = conn.execute("SELECT symbol, trade_id, ts_ms, price, qty, is_buyer_maker FROM ticks").fetchall()
    assert int(version) == SCHEMA_VERSION == 6
    assert tables >= MICRO_TABLES
    assert ticks == [("btcusdt", 1, 5, 1.0, 2.0, 0)]
    assert [g[0] for g in got] == [T0] and got[0][MID] == 100.05


def test_a_version_3_postgresql_store_gains_the_micro_tables() -> None:
    from pg_support import fresh_url

    url = fresh_url()
    store = PostgresStore(StoreConfig(kind="postgres", url=url))
    store.ensure()
    store.close()
    with psycopg.connect(url, autocommit=True) as c:  # make it what the previous version wrote
        for t in MICRO_TABLES:
            c.execute(f"DROP TABLE {t}")
        c.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
        c.execute("INSERT INTO status(key, value, updated_ms) VALUES('flow', '{}', 1)")
    got = _migrated_micro_bars(PostgresStore(StoreConfig(kind="postgres", url=url)))
    with psycopg.connect(url) as c:
        version = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]  # type: ignore[index]
        tables = {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        status = c.execute("SELECT key FROM status").fetchall()
    assert int(version) == PG_VERSION == 4
    assert tables >= MICRO_TABLES and status == [("flow",)]
    assert [g[0] for g in got] == [T0] and got[0][MID] == 100.05
