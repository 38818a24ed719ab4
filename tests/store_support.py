"""A store under test, either backend: its `store:` config section, direct SQL reads of it, and
writes through its own writer.

Tests that run on both backends take a `StoreRef` and read the store themselves with
`ref.rows(sql, params)` (SQLite's `?` placeholders; on PostgreSQL they become `%s` and
booleans come back as 0/1, as SQLite stores them), independent of the code under test.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from storage.port import Store, StoreBatch
from storage.sqlite import SqliteStore
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.records import Trades

BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class StoreRef:
    kind: str
    path: Path | None = None
    url: str | None = None

    def config(self) -> dict:
        """The pipeline file's `store:` section."""
        if self.kind == "postgres":
            return {"kind": "postgres", "url": self.url}
        return {"path": str(self.path)}

    @property
    def location(self) -> str:
        """What /health names as the store."""
        return str(self.url if self.kind == "postgres" else self.path)

    @property
    def schema_version(self) -> int:
        """The schema version this ticklens writes for the backend."""
        if self.kind == "postgres":
            from storage.postgres.schema import SCHEMA_VERSION
        else:
            from storage.sqlite.schema import SCHEMA_VERSION
        return SCHEMA_VERSION

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                out = conn.execute(sql.replace("?", "%s"), params).fetchall()  # type: ignore[arg-type]
            return [tuple(int(v) if isinstance(v, bool) else v for v in r) for r in out]
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def size_bytes(self) -> int:
        if self.kind == "postgres":
            return int(self.rows("SELECT pg_database_size(current_database())")[0][0])
        assert self.path is not None
        return self.path.stat().st_size


def new_store(kind: str, tmp: Path) -> StoreRef:
    """An empty store: a file in `tmp`, or a new database on the session's PostgreSQL server."""
    if kind == "postgres":
        from pg_support import fresh_url

        return StoreRef("postgres", url=fresh_url())
    return StoreRef("sqlite", path=tmp / "ticklens.db")


def write_batch(store: Store, **parts: object) -> list[AlertFired]:
    """One `StoreBatch(**parts)` through the store's writer (prepare + write, as the flow's sink
    does), the writer closed afterwards; returns the alerts the write fired."""
    w = store.writer()
    try:
        return w.write(w.prepare(StoreBatch(**parts)))  # type: ignore[arg-type]
    finally:
        w.close()


def downgraded_sqlite(db: Path, version: int, drop: set[str]) -> None:
    """A SQLite store at `db` as an older ticklens left it: made by this one with one tick
    (btcusdt id 1 at 5 ms, 2.0 at 1.0, taker buy), then the tables `drop` dropped and `version` recorded."""
    store = SqliteStore(db)
    tick = Trades.from_columns("btcusdt", trade_id=[1], ts_ms=[5], price=[1.0], qty=[2.0], is_buyer_maker=[False])
    write_batch(store, ticks=[tick])
    store.close()
    with sqlite3.connect(db) as conn:
        for table in sorted(drop):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
