"""Older SQLite stores are migrated in place to the current schema, keeping every row (v1 → v2: alert_events'
key; v2 → v3: the compact tick layout)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from storage.port import StoreBatch
from storage.sqlite import SqliteStore
from storage.sqlite.connection import connect
from storage.sqlite.schema import SCHEMA_VERSION
from ticklens.domain.records import Trades

# alert_events as stores made before 2026-11-26 had it (schema version 1).
OLD_EVENTS = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES('schema_version', '1');
CREATE TABLE alert_events(
    id INTEGER PRIMARY KEY AUTOINCREMENT, rule_id INTEGER NOT NULL, rule_name TEXT NOT NULL,
    symbol TEXT NOT NULL, metric TEXT NOT NULL, timeframe TEXT, operator TEXT NOT NULL,
    value REAL NOT NULL, threshold REAL NOT NULL, event_ms INTEGER NOT NULL, ref TEXT NOT NULL,
    wall_ms INTEGER NOT NULL, webhook TEXT, webhook_status TEXT, webhook_attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE(rule_id, event_ms, symbol, ref)
);
CREATE INDEX alert_events_event ON alert_events(event_ms);
"""


def _old_store(path: Path, new_key: bool) -> list[tuple]:
    conn = sqlite3.connect(path)
    ddl = OLD_EVENTS.replace("UNIQUE(rule_id, event_ms, symbol, ref)", "UNIQUE(event_ms, rule_id, symbol, ref)")
    conn.executescript(ddl if new_key else OLD_EVENTS)
    rows = [
        (i, 1 + i % 3, "r", "btcusdt", "price", None, ">", 1.0 * i, 0.5, 1000 + i, str(i), 5, None, None, 0)
        for i in range(1, 200)
    ]
    conn.executemany(f"INSERT INTO alert_events VALUES({','.join('?' * 15)})", rows)
    conn.commit()
    conn.close()
    return rows


@pytest.mark.parametrize("new_key", [False, True])
def test_a_version_1_store_is_migrated_keeping_every_trigger(tmp_path: Path, new_key: bool) -> None:
    db = tmp_path / "old.db"
    rows = _old_store(db, new_key)
    connect(db).close()
    with sqlite3.connect(db) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        got = conn.execute("SELECT * FROM alert_events ORDER BY id").fetchall()
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name='alert_events'").fetchone()[0]
        index = conn.execute("SELECT 1 FROM sqlite_master WHERE name='alert_events_event'").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert int(version) == SCHEMA_VERSION
    assert got == rows
    assert "UNIQUE(event_ms, rule_id, symbol, ref)" in sql and index is None
    assert {"tick_rows", "symbols", "bars", "alert_rules", "pair_stats"} <= tables and "alert_events_v1" not in tables
    connect(db).close()  # opening again changes nothing
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM alert_events ORDER BY id").fetchall() == rows


# ticks as stores before schema v3 had them: symbol text in the key, every column in full.
OLD_TICKS = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES('schema_version', '2');
CREATE TABLE ticks(
    symbol TEXT NOT NULL, trade_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL, price REAL NOT NULL,
    qty REAL NOT NULL, is_buyer_maker INTEGER NOT NULL, first_id INTEGER NOT NULL, last_id INTEGER NOT NULL,
    event_ms INTEGER NOT NULL, recv_ms INTEGER NOT NULL, PRIMARY KEY(symbol, trade_id)
) WITHOUT ROWID;
"""
TICK_COLS = "symbol, trade_id, ts_ms, price, qty, is_buyer_maker, first_id, last_id, event_ms, recv_ms"


def test_a_version_2_store_keeps_every_tick_column_for_column_in_the_compact_layout(tmp_path: Path) -> None:
    db = tmp_path / "v2.db"
    conn = sqlite3.connect(db)
    conn.executescript(OLD_TICKS)
    rng = random.Random(7)
    rows = []
    for sym in ("ethusdt", "btcusdt", "1000pepeusdt"):
        for i in range(1, 3001):
            ts = 1_721_347_022_000 + i * 37
            first = i * 3 + rng.randint(0, 2) if sym == "ethusdt" else i  # aggTrades vs plain trades
            last = first + (rng.randint(0, 5) if sym == "ethusdt" else 0)
            ev, recv = ts + rng.randint(0, 3), ts + rng.randint(-50, 400)  # a clock behind the exchange's
            rows.append((sym, i, ts, 60_000.5 + i / 10, 0.001 * i, i % 2, first, last, ev, recv))
    conn.executemany(f"INSERT INTO ticks({TICK_COLS}) VALUES({','.join('?' * 10)})", rows)
    conn.commit()
    conn.close()
    connect(db).close()
    with sqlite3.connect(db) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        got = conn.execute(f"SELECT {TICK_COLS} FROM ticks ORDER BY symbol, trade_id").fetchall()
        kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name IN ('ticks', 'tick_rows')"))
        syms = [r[0] for r in conn.execute("SELECT symbol FROM symbols ORDER BY id")]
    assert int(version) == SCHEMA_VERSION
    assert got == sorted(rows)
    assert kinds == {"ticks": "view", "tick_rows": "table"}
    assert syms == ["1000pepeusdt", "btcusdt", "ethusdt"]
    # The migrated store goes on as any other: the reader sees every tick, the writer appends.
    store = SqliteStore(db)
    with store.reader() as r:
        assert [t[0] for t in r.ticks("ethusdt", 10)] == list(range(2991, 3001))
        assert r.ticks("ethusdt", 1)[0][5:] == next((x[6], x[7]) for x in rows if x[:2] == ("ethusdt", 3000))
    w = store.writer()
    w.write(
        w.prepare(
            StoreBatch(
                ticks=[
                    Trades.from_columns(
                        "btcusdt", trade_id=[3001], ts_ms=[1], price=[1.0], qty=[1.0], is_buyer_maker=[True]
                    )
                ]
            )
        )
    )
    w.close()
    with store.reader() as r:
        assert r.oldest_tick("btcusdt") == (1, 1_721_347_022_037) and r.ticks("btcusdt", 1)[0][:2] == (3001, 1)
    store.close()


def test_a_store_from_a_newer_ticklens_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    connect(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(RuntimeError, match="newer than this ticklens"):
        connect(db)
