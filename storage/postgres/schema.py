"""The PostgreSQL schema of the store, created, versioned and partitioned here (see docs/store.md).

The same tables, keys and meaning as the SQLite schema (storage/sqlite/schema.py), in
PostgreSQL types: exact bar sums in `numeric` (they pass 64 bits), flags in `boolean`,
status documents in `jsonb`. `ticks` is partitioned by trade time into daily ranges
(`ticks_d20240718` holds [2024-07-18, 2024-07-19) UTC), and so are the order-book tables
`quotes`, `depth_updates` and `book_snapshots` by transaction time; `TIME_PARTITIONED` lists every such
table so the retention setting and the partition upkeep treat each the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from storage.postgres.micro import MICRO_STATEMENTS

SCHEMA_VERSION = 4
DAY_MS = 86_400_000
# Creators of the schema and of partitions take this advisory lock (one at a time, any process).
_DDL_LOCK = 0x7469636B  # "tick"
RULES_CHANNEL = "ticklens_rules"

# Time-partitioned tables: name -> the epoch-ms column its daily ranges are on.
TIME_PARTITIONED: dict[str, str] = {
    "ticks": "ts_ms",
    "quotes": "ts_ms",
    "depth_updates": "ts_ms",
    "book_snapshots": "ts_ms",
}

# Order books (docs/store.md, docs/book.md): the same tables as SQLite's. Levels stay the exchange's
# strings (storage/codec.py) in bytea. The three large tables are partitioned by day like ticks; their
# keys hold the partition column, as PostgreSQL requires (an update id comes with its one time).
BOOK_DDL = [
    """CREATE TABLE IF NOT EXISTS quotes(
    symbol text NOT NULL,
    update_id bigint NOT NULL,         -- order book update id u (bookTicker), or the depth event's u
    ts_ms bigint NOT NULL,             -- transaction time T (else E; spot bookTicker: receive time)
    event_ms bigint,                   -- event time E, NULL when the exchange sent none
    recv_ms bigint NOT NULL,           -- local receive time
    bid double precision, bid_qty double precision,   -- NULL: that side is empty
    ask double precision, ask_qty double precision,
    source text NOT NULL DEFAULT 'bookTicker',         -- bookTicker | book (the local book's best)
    PRIMARY KEY(symbol, update_id, ts_ms)
) PARTITION BY RANGE (ts_ms)""",
    "CREATE INDEX IF NOT EXISTS quotes_time ON quotes(symbol, ts_ms)",
    """CREATE TABLE IF NOT EXISTS depth_updates(
    symbol text NOT NULL,
    final_id bigint NOT NULL,          -- u
    first_id bigint NOT NULL,          -- U
    prev_id bigint,                    -- pu (USD-M); NULL on spot, where U = previous u + 1
    ts_ms bigint NOT NULL,             -- transaction time T (spot: event time E)
    event_ms bigint NOT NULL,
    recv_ms bigint NOT NULL,
    n_bids integer NOT NULL, n_asks integer NOT NULL,
    levels bytea NOT NULL,             -- storage/codec.py: four string columns, absolute quantities
    PRIMARY KEY(symbol, final_id, ts_ms)
) PARTITION BY RANGE (ts_ms)""",
    "CREATE INDEX IF NOT EXISTS depth_updates_time ON depth_updates(symbol, ts_ms, final_id)",
    """CREATE TABLE IF NOT EXISTS book_snapshots(
    symbol text NOT NULL,
    update_id bigint NOT NULL,         -- the book after this update (REST: lastUpdateId)
    ts_ms bigint NOT NULL,             -- its transaction time (REST: T, else E, else receive time)
    recv_ms bigint NOT NULL,
    kind text NOT NULL,                -- rest: the snapshot a (re)sync started from; interval: the flow's own
    depth_limit integer,               -- rest: levels per side asked for
    complete_low double precision, complete_high double precision,  -- interval: known complete (NULL: unbounded)
    n_bids integer NOT NULL, n_asks integer NOT NULL,
    levels bytea NOT NULL,             -- storage/codec.py, zlib
    PRIMARY KEY(symbol, update_id, ts_ms)
) PARTITION BY RANGE (ts_ms)""",
    """CREATE TABLE IF NOT EXISTS book_gaps(
    symbol text NOT NULL,
    from_update_id bigint NOT NULL,    -- the book was known after this update (0: never before)
    from_ms bigint NOT NULL,
    to_update_id bigint,               -- known again after this one (the first applied after the resync)
    to_ms bigint,
    reason text NOT NULL,              -- pu_break | reconnect | snapshot_failure | crossed
    status text NOT NULL DEFAULT 'open',   -- open | closed
    detail text NOT NULL DEFAULT '',
    detected_ms bigint NOT NULL,       -- wall time it was first stored
    PRIMARY KEY(symbol, from_update_id, from_ms)
)""",
]

DDL = f"""
CREATE TABLE IF NOT EXISTS meta(
    key text PRIMARY KEY,
    value text NOT NULL
);
-- One row per exchange trade message, keyed so replays never duplicate. The key holds the
-- partition column (PostgreSQL requires it); a trade id always comes with its one trade time.
CREATE TABLE IF NOT EXISTS ticks(
    symbol text NOT NULL,
    trade_id bigint NOT NULL,
    ts_ms bigint NOT NULL,             -- exchange trade time T, UTC epoch ms
    price double precision NOT NULL,
    qty double precision NOT NULL,
    is_buyer_maker boolean NOT NULL,
    first_id bigint NOT NULL,          -- aggTrade: first underlying trade id
    last_id bigint NOT NULL,
    event_ms bigint NOT NULL,          -- exchange event time E
    recv_ms bigint NOT NULL,           -- local receive time
    PRIMARY KEY(symbol, trade_id, ts_ms)
) PARTITION BY RANGE (ts_ms);
CREATE TABLE IF NOT EXISTS bars(
    symbol text NOT NULL,
    timeframe text NOT NULL,
    start_ms bigint NOT NULL,          -- bucket [start_ms, start_ms + timeframe)
    open double precision NOT NULL, high double precision NOT NULL,
    low double precision NOT NULL, close double precision NOT NULL,
    volume double precision NOT NULL,           -- base asset
    quote_volume double precision NOT NULL,     -- sum of price * qty
    trades bigint NOT NULL,                     -- exchange trade count, as in Binance klines
    taker_buy_volume double precision NOT NULL,
    taker_buy_quote_volume double precision NOT NULL,
    vwap double precision NOT NULL,
    max_qty double precision NOT NULL,
    messages bigint NOT NULL,                   -- trade messages (aggTrades) in the bar
    open_ts bigint NOT NULL, open_id bigint NOT NULL,
    close_ts bigint NOT NULL, close_id bigint NOT NULL,
    first_id bigint NOT NULL, last_id bigint NOT NULL,
    revision integer NOT NULL DEFAULT 0,        -- >0: revised by late trades after it closed
    closed boolean NOT NULL DEFAULT false,      -- false: in progress
    -- The exact decimal sums behind the float columns: value = units / 10^dp (docs/store.md).
    volume_units numeric NOT NULL DEFAULT 0,             -- / 10^qty_dp
    quote_units numeric NOT NULL DEFAULT 0,              -- / 10^quote_dp
    taker_buy_volume_units numeric NOT NULL DEFAULT 0,
    taker_buy_quote_units numeric NOT NULL DEFAULT 0,
    origin text NOT NULL DEFAULT 'flow',        -- flow | upload
    updated_ms bigint NOT NULL DEFAULT 0,
    qty_dp integer NOT NULL DEFAULT 8,          -- decimals of the volume sums
    quote_dp integer,                           -- decimals of the quote sums; NULL: units of 2^-24 (a v1 bar)
    PRIMARY KEY(symbol, timeframe, start_ms)
);
-- Messages we could not use, kept aside with the reason (dead letters).
CREATE TABLE IF NOT EXISTS rejects(
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    recv_ms bigint NOT NULL,
    reason text NOT NULL,
    source text NOT NULL DEFAULT '',
    raw bytea NOT NULL
);
-- Trade-id gaps per symbol.
CREATE TABLE IF NOT EXISTS gaps(
    symbol text NOT NULL,
    from_id bigint NOT NULL,
    to_id bigint NOT NULL,
    after_ts bigint NOT NULL,          -- trade time of the trade after the gap
    detected_ms bigint NOT NULL,       -- wall time we declared it a gap
    filled_ms bigint,
    status text NOT NULL DEFAULT 'open',  -- open | filled | unfillable
    PRIMARY KEY(symbol, from_id)
);
-- Feed and flow health, one JSON document per key ('flow' or 'flow:<worker>', 'symbol:<s>').
CREATE TABLE IF NOT EXISTS status(
    key text PRIMARY KEY,
    value jsonb NOT NULL,
    updated_ms bigint NOT NULL
);
-- Alert rules (JSON of an AlertRule); `version` grows on every edit.
CREATE TABLE IF NOT EXISTS alert_rules(
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    rule text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    version integer NOT NULL DEFAULT 1,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL
);
-- Alert triggers; the UNIQUE key makes a replay or restart store each trigger once.
CREATE TABLE IF NOT EXISTS alert_events(
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    rule_id bigint NOT NULL,
    rule_name text NOT NULL,
    symbol text NOT NULL,              -- symbol, or pair as 'a-b'
    metric text NOT NULL,
    timeframe text,                    -- NULL for per-trade metrics
    operator text NOT NULL,
    value double precision NOT NULL,
    threshold double precision NOT NULL,
    event_ms bigint NOT NULL,          -- market time: the trade's time or the bar's start
    ref text NOT NULL,                 -- trade id, or '<timeframe>:<bar start>'
    wall_ms bigint NOT NULL,           -- when the flow stored it
    webhook text,
    webhook_status text,               -- NULL (none) | pending | sent | failed
    webhook_attempts integer NOT NULL DEFAULT 0,
    UNIQUE(event_ms, rule_id, symbol, ref)
);
CREATE INDEX IF NOT EXISTS alert_events_pending ON alert_events(id) WHERE webhook_status = 'pending';
-- Pair and symbol analytics written by the flow ("window" is a reserved word here: quoted).
CREATE TABLE IF NOT EXISTS pair_stats(
    pair text NOT NULL,                -- 'a-b': a is y, b is x
    timeframe text NOT NULL,
    start_ms bigint NOT NULL,          -- aligned bar start
    leg_a text NOT NULL, leg_b text NOT NULL,
    "window" integer NOT NULL,
    close_a double precision NOT NULL, close_b double precision NOT NULL,
    beta double precision, alpha double precision, spread double precision,
    spread_mean double precision, spread_std double precision, zscore double precision,
    corr double precision,
    k_beta double precision, k_alpha double precision, k_beta_var double precision,
    k_spread double precision, k_innovation double precision, k_innovation_var double precision,
    k_zscore double precision,
    half_life double precision,
    adf_stat double precision, adf_pvalue double precision, eg_pvalue double precision,
    coint_ms bigint,
    updated_ms bigint NOT NULL,
    PRIMARY KEY(pair, timeframe, start_ms)
);
CREATE TABLE IF NOT EXISTS symbol_stats(
    symbol text NOT NULL,
    timeframe text NOT NULL,
    start_ms bigint NOT NULL,
    "window" integer NOT NULL,
    close double precision NOT NULL, volume double precision NOT NULL,
    log_return double precision, mean double precision, std double precision,
    vwap double precision, roll_volume double precision, realised_vol double precision,
    updated_ms bigint NOT NULL,
    PRIMARY KEY(symbol, timeframe, start_ms)
);
CREATE TABLE IF NOT EXISTS correlation(
    timeframe text NOT NULL,
    sym_a text NOT NULL, sym_b text NOT NULL,
    start_ms bigint NOT NULL,
    "window" integer NOT NULL,
    corr double precision,
    updated_ms bigint NOT NULL,
    PRIMARY KEY(timeframe, sym_a, sym_b, start_ms)
);
-- Every change to the rules wakes the flows' rule feeds (LISTEN {RULES_CHANNEL}).
CREATE OR REPLACE FUNCTION ticklens_rules_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{RULES_CHANNEL}', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS alert_rules_changed ON alert_rules;
CREATE TRIGGER alert_rules_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON alert_rules
    FOR EACH STATEMENT EXECUTE FUNCTION ticklens_rules_changed();
"""

# version -> statements that bring a store of version - 1 up to it, run in order before DDL.
MIGRATIONS: dict[int, list[str]] = {
    # v2: bar sums in exact decimal units with per-bar decimals. A v1 bar keeps its sums: volume in
    # 1e-8 (qty_dp 8), quote in 2^-24 (quote_dp NULL, converted exactly when a late trade merges in).
    2: [
        "ALTER TABLE bars ADD COLUMN IF NOT EXISTS qty_dp integer NOT NULL DEFAULT 8",
        "ALTER TABLE bars ADD COLUMN IF NOT EXISTS quote_dp integer",
    ],
    3: BOOK_DDL,  # v3: the order-book tables
    4: MICRO_STATEMENTS,  # v4: microstructure bars and VPIN buckets
}


class SchemaTooNew(RuntimeError):
    pass


def create_schema(conn: psycopg.Connection) -> int:
    """Create what is missing and migrate an older store; refuse one written by a newer version.

    One transaction under an advisory lock, so several processes starting at once are safe.
    Returns the schema version.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        have = conn.execute("SELECT to_regclass('meta') IS NOT NULL AND to_regclass('alert_events') IS NOT NULL")
        exists = have.fetchone()[0]  # type: ignore[index]
        version = None
        if exists:
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else None
        if version is not None and version > SCHEMA_VERSION:
            raise SchemaTooNew(f"store schema version {version} is newer than this ticklens ({SCHEMA_VERSION})")
        if version is None or version < SCHEMA_VERSION:
            for v in range((version or SCHEMA_VERSION) + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS[v]:  # an older store: its migrations, in order
                    conn.execute(stmt)
            conn.execute(DDL)  # idempotent: creates what a fresh (or migrated) store lacks
            for stmt in BOOK_DDL + MICRO_STATEMENTS:
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('schema_version', %s)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
    return SCHEMA_VERSION


# --- time partitions -------------------------------------------------------------------


def day_of(ts_ms: int) -> int:
    return ts_ms // DAY_MS


def partition_name(table: str, day: int) -> str:
    return f"{table}_d{datetime.fromtimestamp(day * DAY_MS / 1000, UTC):%Y%m%d}"


def partitions(conn: psycopg.Connection, table: str) -> dict[int, str]:
    """The table's daily partitions: day number -> partition name."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
        (table,),
    ).fetchall()
    out = {}
    for name, bound in rows:
        # "FOR VALUES FROM ('1721260800000') TO ('1721347200000')"
        lo = int(bound.split("(", 1)[1].split(")", 1)[0].strip("'"))
        out[day_of(lo)] = name
    return out


def ensure_partitions(conn: psycopg.Connection, table: str, days: Iterable[int]) -> list[int]:
    """Attach the missing daily partitions of `table` for `days`; returns the days created.

    A new partition is made as a plain table and then ATTACHed: that takes only a SHARE
    UPDATE EXCLUSIVE lock on the parent, so concurrent inserts and reads carry on (CREATE
    TABLE … PARTITION OF would block them all). Runs in its own transaction.
    """
    want = sorted(set(days))
    if not want:
        return []
    made = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        have = partitions(conn, table)
        for day in want:
            if day in have:
                continue
            name = partition_name(table, day)
            lo, hi = day * DAY_MS, (day + 1) * DAY_MS
            col = TIME_PARTITIONED[table]
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS, CHECK ({} >= {} AND {} < {}))"
                ).format(
                    sql.Identifier(name),
                    sql.Identifier(table),
                    sql.Identifier(col),
                    sql.Literal(lo),
                    sql.Identifier(col),
                    sql.Literal(hi),
                )
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(table), sql.Identifier(name), sql.Literal(lo), sql.Literal(hi)
                )
            )
            made.append(day)
    return made


def drop_expired(conn: psycopg.Connection, table: str, keep_days: int, now_ms: int) -> list[str]:
    """Drop the daily partitions whose every row is more than `keep_days` days old.

    Age is counted from the earlier of today (UTC) and the newest day holding rows: a
    replay of old data is not erased as it is written, and a bogus future trade time
    erases nothing.

    Detached CONCURRENTLY (readers and writers carry on), so `conn` must be in autocommit mode.
    """
    have = partitions(conn, table)
    if not have:
        return []
    newest = None
    for day in sorted(have, reverse=True):
        if conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(have[day]))).fetchone():
            newest = day
            break
    if newest is None:
        return []
    horizon = min(day_of(now_ms), newest)
    dropped = []
    for day, name in sorted(have.items()):
        if day + 1 + keep_days > horizon:
            continue
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(
                sql.Identifier(table), sql.Identifier(name)
            )
        )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        dropped.append(name)
    return dropped


def delete_old_book_gaps(conn: psycopg.Connection, keep_days: float) -> int:
    """Delete closed book gaps that ended more than `keep_days` before the newest gap end of the
    same symbol (as SQLite's retention does; open gaps stay). Returns the rows deleted."""
    cur = conn.execute(
        "DELETE FROM book_gaps g USING (SELECT symbol, max(to_ms) AS newest FROM book_gaps GROUP BY symbol) n"
        " WHERE g.symbol = n.symbol AND g.status = 'closed' AND g.to_ms < n.newest - %s",
        (int(keep_days * DAY_MS),),
    )
    return cur.rowcount
