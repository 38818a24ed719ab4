"""Older SQLite stores are migrated in place to the current schema, keeping every row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.sqlite.connection import connect
from storage.sqlite.schema import SCHEMA_VERSION

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
    assert {"ticks", "bars", "alert_rules", "pair_stats"} <= tables and "alert_events_v1" not in tables
    connect(db).close()  # opening again changes nothing
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM alert_events ORDER BY id").fetchall() == rows


def test_a_store_from_a_newer_ticklens_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    connect(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(RuntimeError, match="newer than this ticklens"):
        connect(db)
