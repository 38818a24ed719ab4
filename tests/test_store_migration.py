"""Older SQLite stores are migrated in place to the current schema, keeping every row (v1 → v2: alert_events'
key; v2 → v3: the compact tick layout)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from store_support import write_batch

from storage.port import Store
from storage.sqlite import SqliteStore
from storage.sqlite.connection import connect
from storage.sqlite.schema import SCHEMA_VERSION
from ticklens.domain.bars import aggregate
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


# ticks as stores before schema v4 had them: symbol text in the key, every column in full.
OLD_TICKS = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES('schema_version', '{version}');
CREATE TABLE ticks(
    symbol TEXT NOT NULL, trade_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL, price REAL NOT NULL,
    qty REAL NOT NULL, is_buyer_maker INTEGER NOT NULL, first_id INTEGER NOT NULL, last_id INTEGER NOT NULL,
    event_ms INTEGER NOT NULL, recv_ms INTEGER NOT NULL, PRIMARY KEY(symbol, trade_id)
) WITHOUT ROWID;
"""
TICK_COLS = "symbol, trade_id, ts_ms, price, qty, is_buyer_maker, first_id, last_id, event_ms, recv_ms"


@pytest.mark.parametrize("version", [2, 3])  # 3: main before the compact ticks (exact bar sums)
def test_an_older_store_keeps_every_tick_column_for_column_in_the_compact_layout(tmp_path: Path, version: int) -> None:
    db = tmp_path / f"v{version}.db"
    conn = sqlite3.connect(db)
    conn.executescript(OLD_TICKS.replace("{version}", str(version)))
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
    late = Trades.from_columns("btcusdt", trade_id=[3001], ts_ms=[1], price=[1.0], qty=[1.0], is_buyer_maker=[True])
    write_batch(store, ticks=[late])
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


# bars as version 2 stores had them: INTEGER sums, qty in 1e-8 and price * qty in 2^-24, no decimals.
V2_BARS = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES('schema_version', '2');
CREATE TABLE bars(
    symbol TEXT NOT NULL, timeframe TEXT NOT NULL, start_ms INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
    volume REAL NOT NULL, quote_volume REAL NOT NULL, trades INTEGER NOT NULL,
    taker_buy_volume REAL NOT NULL, taker_buy_quote_volume REAL NOT NULL, vwap REAL NOT NULL,
    max_qty REAL NOT NULL, messages INTEGER NOT NULL,
    open_ts INTEGER NOT NULL, open_id INTEGER NOT NULL, close_ts INTEGER NOT NULL, close_id INTEGER NOT NULL,
    first_id INTEGER NOT NULL, last_id INTEGER NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0, closed INTEGER NOT NULL DEFAULT 0,
    volume_units INTEGER NOT NULL DEFAULT 0, quote_units INTEGER NOT NULL DEFAULT 0,
    taker_buy_volume_units INTEGER NOT NULL DEFAULT 0, taker_buy_quote_units INTEGER NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT 'flow', updated_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(symbol, timeframe, start_ms)
) WITHOUT ROWID;
"""


def _merge_a_late_trade_exactly(store: Store, t0: int, fetch: object) -> None:
    """A late trade (100 at 0.0061922, a taker sell) for the stored old bar's minute merges into it
    exactly: the sums equal a Fraction computation. `fetch(sql)`: one row from the backend."""
    from fractions import Fraction

    late = Trades.from_columns(
        "pepeusdt", trade_id=[3], ts_ms=[t0 + 30], price=[0.0061922], qty=[100.0], is_buyer_maker=[True]
    )
    write_batch(store, bar_merges=aggregate(late, "1m", 60_000))
    got = fetch(  # type: ignore[operator]
        "SELECT volume, quote_volume, taker_buy_quote_volume, vwap, close, revision, volume_units, qty_dp,"
        " quote_units, quote_dp FROM bars"
    )
    volume, quote, tb_quote, vwap, close, revision, vu, qd, qu, pd = got
    exact_quote = Fraction(2) + Fraction("0.0061922") * 100
    assert Fraction(int(vu), 10**qd) == 104 and Fraction(int(qu), 10**pd) == exact_quote
    assert (volume, quote, tb_quote) == (104.0, float(exact_quote), 1.0)
    assert vwap == float(exact_quote / 104) and close == 0.0061922 and revision == 1


def test_a_version_2_store_keeps_its_bars_and_a_late_trade_merges_into_them_exactly(tmp_path: Path) -> None:

    from storage.sqlite import SqliteStore

    db = tmp_path / "v2.db"
    conn = sqlite3.connect(db)
    conn.executescript(V2_BARS)
    # Two trades of 2 at 0.5 (one taker buy) in the minute at T0: quote 2.0, 2^25 units of 2^-24.
    t0 = 1_722_000_000_000
    old = ("pepeusdt", "1m", t0, 0.5, 0.5, 0.5, 0.5, 4.0, 2.0, 2, 2.0, 1.0, 0.5, 2.0, 2, t0 + 10, 1, t0 + 20, 2, 1, 2)
    old += (0, 1, 4 * 10**8, 2 * 2**24, 2 * 10**8, 2**24, "flow", 5)
    conn.execute(f"INSERT INTO bars VALUES({','.join('?' * len(old))})", old)
    conn.commit()
    conn.close()

    store = SqliteStore(db)
    store.ensure()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        row = c.execute("SELECT * FROM bars").fetchone()
        names = [d[1] for d in c.execute("PRAGMA table_info(bars)")]
    kept = dict(zip(names, row, strict=True))
    assert tuple(kept[n] for n in names[:29]) == old  # every v2 column as it was
    assert kept["qty_dp"] == 8 and kept["quote_dp"] is None
    with store.reader() as r:
        assert [b[6] for b in r.bars("pepeusdt", "1m", 10)] == [2.0]  # quote_volume still read

    def fetch(q: str) -> tuple:
        with sqlite3.connect(db) as c:
            return c.execute(q).fetchone()

    _merge_a_late_trade_exactly(store, t0, fetch)
    store.close()


def test_a_version_1_postgres_store_keeps_its_bars_and_a_late_trade_merges_into_them_exactly() -> None:
    """PostgreSQL v1 → v2: `qty_dp`/`quote_dp` added, a v1 bar's numeric sums kept as they were."""

    import psycopg
    from pg_support import server

    from storage.postgres import PostgresStore
    from storage.postgres.schema import DDL
    from storage.postgres.schema import SCHEMA_VERSION as PG_VERSION
    from ticklens.config import StoreConfig

    pg = server()
    url = pg.url(pg.create_database("mig"))
    # A v1 store: the tables as they are, bars without the two decimals columns (as v1 made them).
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(DDL)
        c.execute("ALTER TABLE bars DROP COLUMN qty_dp, DROP COLUMN quote_dp")
        c.execute("INSERT INTO meta VALUES('schema_version', '1')")
        t0 = 1_722_000_000_000
        old = ("pepeusdt", "1m", t0, 0.5, 0.5, 0.5, 0.5, 4.0, 2.0, 2, 2.0, 1.0, 0.5, 2.0, 2, t0 + 10, 1, t0 + 20, 2)
        old += (1, 2, 0, True, 4 * 10**8, 2 * 2**24, 2 * 10**8, 2**24, "flow", 5)
        c.execute(f"INSERT INTO bars VALUES({','.join(['%s'] * len(old))})", old)

    store = PostgresStore(StoreConfig(kind="postgres", url=url))
    store.ensure()
    with psycopg.connect(url) as c:
        assert c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(PG_VERSION),)
        cur = c.execute("SELECT * FROM bars")
        kept = dict(zip([d.name for d in cur.description], cur.fetchone(), strict=True))  # type: ignore[arg-type]
    assert tuple(kept.values())[: len(old)] == old  # every v1 column as it was (numeric equal to the ints)
    assert kept["qty_dp"] == 8 and kept["quote_dp"] is None
    with store.reader() as r:
        assert [b[6] for b in r.bars("pepeusdt", "1m", 10)] == [2.0]

    def fetch(q: str) -> tuple:
        with psycopg.connect(url) as c:
            return c.execute(q).fetchone()  # type: ignore[return-value]

    _merge_a_late_trade_exactly(store, t0, fetch)
    store.close()
