"""The SQLite schema of the store, created and versioned here (see docs/store.md)."""

from __future__ import annotations

import sqlite3

from storage.tables import (
    ALERT_EVENTS,
    ANALYTICS_TABLES,
    BARS,
    BOOK_TABLES,
    CORE_TABLES,
    MICRO_TABLES,
    Dialect,
    Table,
    create_statements,
    statements,
)

# Bump on every schema change and add the step to MIGRATIONS: an older store is migrated in place.
SCHEMA_VERSION = 6

SQLITE = Dialect(
    types={
        "text": "TEXT",
        "int": "INTEGER",
        "int32": "INTEGER",
        "real": "REAL",
        "flag": "INTEGER",
        "bytes": "BLOB",
        "json": "TEXT",
        "units": "",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
    },
    flags={"true": "1", "false": "0"},
    compact_suffix=" WITHOUT ROWID",
    partitioned=False,
    append_id="id INTEGER PRIMARY KEY",
)

# Symbols by a small integer: the tick key is two integers, not a string and an integer.
SYMBOLS_DDL = "CREATE TABLE IF NOT EXISTS symbols(id INTEGER PRIMARY KEY, symbol TEXT NOT NULL UNIQUE)"

# One row per exchange trade message, keyed so replays never duplicate. Compact (schema v4): the
# symbol's integer id, and what usually equals the id or the trade time stored as a difference from
# it (0 costs no byte in SQLite's record format). The `ticks` view shows the documented columns.
TICK_ROWS_DDL = """
CREATE TABLE IF NOT EXISTS tick_rows(
    sym INTEGER NOT NULL,            -- symbols.id
    trade_id INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,          -- exchange trade time T, UTC epoch ms
    price REAL NOT NULL,
    qty REAL NOT NULL,
    is_buyer_maker INTEGER NOT NULL,
    first_off INTEGER NOT NULL DEFAULT 0,   -- trade_id - first_id (aggTrade: first underlying trade id)
    last_span INTEGER NOT NULL DEFAULT 0,   -- last_id - first_id
    event_lag INTEGER NOT NULL DEFAULT 0,   -- event_ms - ts_ms (exchange event time E)
    recv_lag INTEGER NOT NULL DEFAULT 0,    -- recv_ms - ts_ms (local receive time)
    PRIMARY KEY(sym, trade_id)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS ticks AS
SELECT s.symbol AS symbol, t.trade_id AS trade_id, t.ts_ms AS ts_ms, t.price AS price, t.qty AS qty,
       t.is_buyer_maker AS is_buyer_maker, t.trade_id - t.first_off AS first_id,
       t.trade_id - t.first_off + t.last_span AS last_id, t.ts_ms + t.event_lag AS event_ms,
       t.ts_ms + t.recv_lag AS recv_ms
FROM tick_rows AS t JOIN symbols AS s ON s.id = t.sym;
"""

BOOK_STATEMENTS = [
    *statements(BOOK_TABLES, SQLITE),
    "CREATE INDEX IF NOT EXISTS book_snapshots_time ON book_snapshots(symbol, ts_ms)",
]
MICRO_STATEMENTS = statements(MICRO_TABLES, SQLITE)
# Every statement of a fresh store, in order.
STATEMENTS = [
    *statements(CORE_TABLES, SQLITE),
    SYMBOLS_DDL,
    *(s.strip() for s in TICK_ROWS_DDL.split(";") if s.strip()),
    *statements(ANALYTICS_TABLES, SQLITE),
    *BOOK_STATEMENTS,
    *MICRO_STATEMENTS,
]


def _v5_book_tables(conn: sqlite3.Connection) -> None:
    """v5: the order-book tables quotes, depth_updates, book_snapshots, book_gaps."""
    for stmt in BOOK_STATEMENTS:
        conn.execute(stmt)


def _v2_alert_events_key(conn: sqlite3.Connection) -> None:
    """v2: alert_events keyed by (event_ms, rule_id, symbol, ref) (appends; one index for dedup
    and time reads) instead of (rule_id, event_ms, …) plus an event_ms index."""
    conn.execute("DROP INDEX IF EXISTS alert_events_event")
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='alert_events'").fetchone()
    if sql is None or "UNIQUE(rule_id,event_ms" not in sql[0].replace(" ", ""):
        return  # no triggers table yet, or made by a later v1 build that already had the new key
    _rebuild(
        conn,
        ALERT_EVENTS,
        "alert_events_v1",
        "INSERT OR IGNORE INTO alert_events({cols}) SELECT {cols} FROM {old} ORDER BY id",
    )


def _v3_exact_decimal_bars(conn: sqlite3.Connection) -> None:
    """v3: bar sums in exact decimal units with per-bar decimals (`qty_dp`, `quote_dp`), the sum
    columns without a declared type (text past 64 bits stays text). `bars` is rebuilt; a v2 bar
    keeps its sums: volume in 1e-8 (qty_dp 8), quote in 2^-24 (quote_dp NULL, converted exactly
    when a late trade merges into it)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='bars'").fetchone():
        return
    _rebuild(conn, BARS, "bars_v2", "INSERT INTO bars({cols}, qty_dp, quote_dp) SELECT {cols}, 8, NULL FROM {old}")


def _rebuild(conn: sqlite3.Connection, table: Table, old: str, copy: str) -> None:
    """Make `table` anew as this version has it, the old one renamed `old` until its rows are
    copied over by `copy` (an INSERT … SELECT; {cols}: the old table's columns, {old}: its name)."""
    conn.execute(f"ALTER TABLE {table.name} RENAME TO {old}")
    conn.execute(create_statements(table, SQLITE)[0])
    cols = ",".join(c[1] for c in conn.execute(f"PRAGMA table_info({old})"))
    conn.execute(copy.format(cols=cols, old=old))
    conn.execute(f"DROP TABLE {old}")


def _v4_compact_ticks(conn: sqlite3.Connection) -> None:
    """v4: ticks keyed by (symbol id, trade id) with ids and times that repeat stored as differences
    (`tick_rows` + the `ticks` view) instead of a `ticks` table keyed by (symbol text, trade id)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='ticks'").fetchone():
        return  # a store that never had the old table
    conn.execute(SYMBOLS_DDL)
    conn.execute(TICK_ROWS_DDL.split("CREATE VIEW")[0])
    conn.execute("INSERT OR IGNORE INTO symbols(symbol) SELECT DISTINCT symbol FROM ticks ORDER BY symbol")
    conn.execute(
        "INSERT OR IGNORE INTO tick_rows(sym, trade_id, ts_ms, price, qty, is_buyer_maker, first_off, last_span,"
        " event_lag, recv_lag) SELECT s.id, t.trade_id, t.ts_ms, t.price, t.qty, t.is_buyer_maker,"
        " t.trade_id - t.first_id, t.last_id - t.first_id, t.event_ms - t.ts_ms, t.recv_ms - t.ts_ms"
        " FROM ticks AS t JOIN symbols AS s ON s.symbol = t.symbol ORDER BY s.id, t.trade_id"
    )
    conn.execute("DROP TABLE ticks")


# version -> the step that brings a store from version - 1 to it (run in order, one transaction each).
def _v6_micro_tables(conn: sqlite3.Connection) -> None:
    """v6: microstructure bars and VPIN buckets (new tables only)."""
    for statement in MICRO_STATEMENTS:  # executescript would commit the migration's transaction
        conn.execute(statement)


MIGRATIONS = {
    2: _v2_alert_events_key,
    3: _v3_exact_decimal_bars,
    4: _v4_compact_ticks,
    5: _v5_book_tables,
    6: _v6_micro_tables,
}


def create_schema(conn: sqlite3.Connection) -> None:
    """Create what is missing, migrate an older store; refuse a store written by a newer version."""
    row = None
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = int(row[0]) if row else None
    if version is not None and version > SCHEMA_VERSION:
        raise RuntimeError(f"store schema version {version} is newer than this ticklens ({SCHEMA_VERSION})")
    if version is not None and version < SCHEMA_VERSION:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[target](conn)
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(target),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    conn.executescript(";\n".join(STATEMENTS) + ";")
    if version is None:
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.commit()
