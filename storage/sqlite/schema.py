"""The SQLite schema of the store, created and versioned here (see docs/store.md)."""

from __future__ import annotations

import sqlite3

from storage.sqlite.micro import MICRO_DDL

# Bump on every schema change and add the step to MIGRATIONS: an older store is migrated in place.
SCHEMA_VERSION = 6

ALERT_EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS alert_events(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id INTEGER NOT NULL,
    rule_name TEXT NOT NULL,
    symbol TEXT NOT NULL,            -- symbol, or pair as 'a-b'
    metric TEXT NOT NULL,
    timeframe TEXT,                  -- NULL for per-trade metrics
    operator TEXT NOT NULL,
    value REAL NOT NULL,
    threshold REAL NOT NULL,
    event_ms INTEGER NOT NULL,       -- market time: the trade's time or the bar's start
    ref TEXT NOT NULL,               -- trade id, or '<timeframe>:<bar start>'
    wall_ms INTEGER NOT NULL,        -- when the flow stored it
    webhook TEXT,
    webhook_status TEXT,             -- NULL (none) | pending | sent | failed
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE(event_ms, rule_id, symbol, ref)  -- also the index for time-ordered reads
);
"""

DDL = """
CREATE TABLE IF NOT EXISTS meta(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Symbols by a small integer: the tick key is two integers, not a string and an integer.
CREATE TABLE IF NOT EXISTS symbols(
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS bars(
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    start_ms INTEGER NOT NULL,       -- bucket [start_ms, start_ms + timeframe)
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
    volume REAL NOT NULL,            -- base asset
    quote_volume REAL NOT NULL,      -- sum of price * qty
    trades INTEGER NOT NULL,         -- exchange trade count, as in Binance klines
    taker_buy_volume REAL NOT NULL,
    taker_buy_quote_volume REAL NOT NULL,
    vwap REAL NOT NULL,
    max_qty REAL NOT NULL,
    messages INTEGER NOT NULL,       -- trade messages (aggTrades) in the bar
    open_ts INTEGER NOT NULL, open_id INTEGER NOT NULL,
    close_ts INTEGER NOT NULL, close_id INTEGER NOT NULL,
    first_id INTEGER NOT NULL, last_id INTEGER NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,   -- >0: revised by late trades after it closed
    closed INTEGER NOT NULL DEFAULT 0,     -- 0: in progress
    -- The exact decimal sums behind the REAL columns: value = units / 10^dp. No declared type on
    -- purpose: an integer past 64 bits is stored as its decimal text, which an INTEGER column
    -- would turn into a rounded REAL.
    volume_units NOT NULL DEFAULT 0,            -- / 10^qty_dp
    quote_units NOT NULL DEFAULT 0,             -- / 10^quote_dp
    taker_buy_volume_units NOT NULL DEFAULT 0,
    taker_buy_quote_units NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT 'flow',   -- flow | upload
    updated_ms INTEGER NOT NULL DEFAULT 0,
    qty_dp INTEGER NOT NULL DEFAULT 8,     -- decimals of the volume sums
    quote_dp INTEGER,                      -- decimals of the quote sums; NULL: units of 2^-24 (a v2 bar)
    PRIMARY KEY(symbol, timeframe, start_ms)
) WITHOUT ROWID;
-- Messages we could not use, kept aside with the reason (dead letters).
CREATE TABLE IF NOT EXISTS rejects(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recv_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    raw BLOB NOT NULL
);
-- Trade-id gaps per symbol.
CREATE TABLE IF NOT EXISTS gaps(
    symbol TEXT NOT NULL,
    from_id INTEGER NOT NULL,
    to_id INTEGER NOT NULL,
    after_ts INTEGER NOT NULL,       -- trade time of the trade after the gap
    detected_ms INTEGER NOT NULL,    -- wall time we declared it a gap
    filled_ms INTEGER,
    status TEXT NOT NULL DEFAULT 'open',  -- open | filled | unfillable
    PRIMARY KEY(symbol, from_id)
);
-- Feed and flow health, one JSON document per key (per symbol and 'flow').
CREATE TABLE IF NOT EXISTS status(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- Alert rules (JSON of flows.alerts.AlertRule); `version` grows on every edit.
CREATE TABLE IF NOT EXISTS alert_rules(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    version INTEGER NOT NULL DEFAULT 1,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- Alert triggers; the UNIQUE key makes a replay or restart store each trigger once.
"""


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

# Pair and symbol analytics written by the flow (flows/analytics.py; see docs/store.md).
ANALYTICS_DDL = """
CREATE TABLE IF NOT EXISTS pair_stats(
    pair TEXT NOT NULL,              -- 'a-b': a is y, b is x
    timeframe TEXT NOT NULL,
    start_ms INTEGER NOT NULL,       -- aligned bar start
    leg_a TEXT NOT NULL, leg_b TEXT NOT NULL,
    window INTEGER NOT NULL,
    close_a REAL NOT NULL, close_b REAL NOT NULL,   -- aligned closes (carried forward if no trade)
    beta REAL, alpha REAL, spread REAL, spread_mean REAL, spread_std REAL, zscore REAL,
    corr REAL,                       -- Pearson correlation of log returns over the window
    k_beta REAL, k_alpha REAL, k_beta_var REAL, k_spread REAL,
    k_innovation REAL, k_innovation_var REAL, k_zscore REAL,
    half_life REAL,                  -- bars
    adf_stat REAL, adf_pvalue REAL, eg_pvalue REAL,
    coint_ms INTEGER,                -- bar whose window the half-life and ADF were computed on
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY(pair, timeframe, start_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS symbol_stats(
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    window INTEGER NOT NULL,
    close REAL NOT NULL, volume REAL NOT NULL,
    log_return REAL, mean REAL, std REAL, vwap REAL, roll_volume REAL, realised_vol REAL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY(symbol, timeframe, start_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS correlation(
    timeframe TEXT NOT NULL,
    sym_a TEXT NOT NULL, sym_b TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    window INTEGER NOT NULL,
    corr REAL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY(timeframe, sym_a, sym_b, start_ms)
) WITHOUT ROWID;
"""


# Order books (docs/store.md, docs/book.md). Prices and quantities of levels stay the exchange's
# strings (storage/codec.py); L1 rows are REAL like ticks. Large blobs live in rowid tables
# (appends), keyed by a UNIQUE index on the natural key.
BOOK_DDL = [
    """CREATE TABLE IF NOT EXISTS quotes(
    symbol TEXT NOT NULL,
    update_id INTEGER NOT NULL,      -- order book update id u (bookTicker), or the depth event's u
    ts_ms INTEGER NOT NULL,          -- transaction time T (else E; spot bookTicker: receive time)
    event_ms INTEGER,                -- event time E, NULL when the exchange sent none
    recv_ms INTEGER NOT NULL,        -- local receive time
    bid REAL, bid_qty REAL, ask REAL, ask_qty REAL,   -- NULL: that side is empty
    source TEXT NOT NULL DEFAULT 'bookTicker',         -- bookTicker | book (the local book's best)
    PRIMARY KEY(symbol, update_id)
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS quotes_time ON quotes(symbol, ts_ms)",
    """CREATE TABLE IF NOT EXISTS depth_updates(
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    final_id INTEGER NOT NULL,       -- u
    first_id INTEGER NOT NULL,       -- U
    prev_id INTEGER,                 -- pu (USD-M); NULL on spot, where U = previous u + 1
    ts_ms INTEGER NOT NULL,          -- transaction time T (spot: event time E)
    event_ms INTEGER NOT NULL,
    recv_ms INTEGER NOT NULL,
    n_bids INTEGER NOT NULL, n_asks INTEGER NOT NULL,
    levels BLOB NOT NULL             -- storage/codec.py: four string columns, absolute quantities
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS depth_updates_key ON depth_updates(symbol, final_id)",
    "CREATE INDEX IF NOT EXISTS depth_updates_time ON depth_updates(symbol, ts_ms, final_id)",
    """CREATE TABLE IF NOT EXISTS book_snapshots(
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    update_id INTEGER NOT NULL,      -- the book after this update (REST: lastUpdateId)
    ts_ms INTEGER NOT NULL,          -- its transaction time (REST: T, else E, else receive time)
    recv_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,              -- rest: the snapshot a (re)sync started from; interval: the flow's own
    depth_limit INTEGER,             -- rest: levels per side asked for
    complete_low REAL, complete_high REAL,   -- interval: the price range known complete (NULL: unbounded)
    n_bids INTEGER NOT NULL, n_asks INTEGER NOT NULL,
    levels BLOB NOT NULL             -- storage/codec.py, zlib
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS book_snapshots_key ON book_snapshots(symbol, update_id)",
    "CREATE INDEX IF NOT EXISTS book_snapshots_time ON book_snapshots(symbol, ts_ms)",
    """CREATE TABLE IF NOT EXISTS book_gaps(
    symbol TEXT NOT NULL,
    from_update_id INTEGER NOT NULL, -- the book was known after this update (0: never before)
    from_ms INTEGER NOT NULL,
    to_update_id INTEGER,            -- known again after this one (the first applied after the resync)
    to_ms INTEGER,
    reason TEXT NOT NULL,            -- pu_break | reconnect | snapshot_failure | crossed
    status TEXT NOT NULL DEFAULT 'open',   -- open | closed
    detail TEXT NOT NULL DEFAULT '',
    detected_ms INTEGER NOT NULL,    -- wall time it was first stored
    PRIMARY KEY(symbol, from_update_id, from_ms)
)""",
]


def _v5_book_tables(conn: sqlite3.Connection) -> None:
    """v5: the order-book tables quotes, depth_updates, book_snapshots, book_gaps."""
    for stmt in BOOK_DDL:
        conn.execute(stmt)


def _v2_alert_events_key(conn: sqlite3.Connection) -> None:
    """v2: alert_events keyed by (event_ms, rule_id, symbol, ref) (appends; one index for dedup
    and time reads) instead of (rule_id, event_ms, …) plus an event_ms index."""
    conn.execute("DROP INDEX IF EXISTS alert_events_event")
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='alert_events'").fetchone()
    if sql is None or "UNIQUE(rule_id,event_ms" not in sql[0].replace(" ", ""):
        return  # no triggers table yet, or made by a later v1 build that already had the new key
    conn.execute("ALTER TABLE alert_events RENAME TO alert_events_v1")
    conn.execute(ALERT_EVENTS_DDL)
    cols = ",".join(c[1] for c in conn.execute("PRAGMA table_info(alert_events_v1)"))
    conn.execute(f"INSERT OR IGNORE INTO alert_events({cols}) SELECT {cols} FROM alert_events_v1 ORDER BY id")
    conn.execute("DROP TABLE alert_events_v1")


def _v3_exact_decimal_bars(conn: sqlite3.Connection) -> None:
    """v3: bar sums in exact decimal units with per-bar decimals (`qty_dp`, `quote_dp`), the sum
    columns without a declared type (text past 64 bits stays text). `bars` is rebuilt; a v2 bar
    keeps its sums: volume in 1e-8 (qty_dp 8), quote in 2^-24 (quote_dp NULL, converted exactly
    when a late trade merges into it)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='bars'").fetchone():
        return
    conn.execute("ALTER TABLE bars RENAME TO bars_v2")
    conn.execute(_table_ddl("bars"))
    cols = ",".join(c[1] for c in conn.execute("PRAGMA table_info(bars_v2)"))
    conn.execute(f"INSERT INTO bars({cols}, qty_dp, quote_dp) SELECT {cols}, 8, NULL FROM bars_v2")
    conn.execute("DROP TABLE bars_v2")


def _table_ddl(name: str) -> str:
    """The CREATE statement of one table of DDL."""
    start = DDL.index(f"CREATE TABLE IF NOT EXISTS {name}(")
    return DDL[start : DDL.index(";", DDL.index(") WITHOUT ROWID", start)) + 1]


def _v4_compact_ticks(conn: sqlite3.Connection) -> None:
    """v4: ticks keyed by (symbol id, trade id) with ids and times that repeat stored as differences
    (`tick_rows` + the `ticks` view) instead of a `ticks` table keyed by (symbol text, trade id)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='ticks'").fetchone():
        return  # a store that never had the old table
    conn.executescript("CREATE TABLE IF NOT EXISTS symbols(id INTEGER PRIMARY KEY, symbol TEXT NOT NULL UNIQUE);")
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
    for statement in MICRO_DDL.split(";"):  # executescript would commit the migration's transaction
        if statement.strip():
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
    conn.executescript(
        DDL + TICK_ROWS_DDL + ALERT_EVENTS_DDL + ANALYTICS_DDL + ";\n".join(BOOK_DDL) + ";\n" + MICRO_DDL
    )
    if version is None:
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.commit()
