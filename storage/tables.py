"""The store's tables, written once for both SQL backends (see docs/store.md).

Both backends keep the same tables, keys and meaning; they differ in types and in how a table
is laid out. A table is given here by its columns, one a line, `name type constraints -- comment`,
in these types, which each backend's `Dialect` (storage/sqlite/schema.py,
storage/postgres/schema.py) spells in its own:

- `text`, `real` (a double), `bytes`, `json` (a document: SQLite keeps its text);
- `int` (64 bits), `int32` (small counts and settings: PostgreSQL's `integer`);
- `flag` (a truth value: `boolean`, or SQLite's 0/1; `DEFAULT true|false`);
- `units`: an exact decimal sum, which passes 64 bits (PostgreSQL `numeric`; SQLite declares no
  type, so an integer past 64 bits is kept as its decimal text where an INTEGER column would
  turn it into a rounded REAL);
- `serial`: a generated `id` primary key.

How a table is laid out: `compact` tables are SQLite's WITHOUT ROWID (the key is where the row
lives); `by_time` tables are PostgreSQL's daily partitions on `ts_ms` (their key gains `ts_ms`,
as PostgreSQL requires: an update id comes with its one time); `appended` tables hold large
blobs that SQLite appends in a rowid table, the key a UNIQUE index `<table>_key`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ticklens.domain.micro import MICRO_COLUMNS

COMMENT_AT = 36  # where a column's comment starts in the rendered statement


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: str  # one a line: `name type constraints -- comment`
    key: tuple[str, ...] = ()  # PRIMARY KEY(...), when not a single column's
    unique: tuple[str, ...] = ()
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (name, columns)
    compact: bool = False
    by_time: bool = False
    appended: bool = False


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one backend spells the tables."""

    types: dict[str, str]  # every type above -> its own ('' declares none)
    flags: dict[str, str]  # DEFAULT true/false -> its own
    compact_suffix: str  # after a compact table's closing parenthesis
    partitioned: bool  # by_time tables are partitioned by day (else plain tables)
    append_id: str | None  # the rowid column of an appended table (None: the key is the primary key)


def _column(line: str, dialect: Dialect) -> tuple[str, str]:
    """(definition, comment) of one column line in this dialect."""
    body, _, comment = line.partition(" -- ")
    name, kind, *rest = body.split(None, 2)
    spec = rest[0] if rest else ""
    if kind == "flag":
        for word, value in dialect.flags.items():
            spec = spec.replace(f"DEFAULT {word}", f"DEFAULT {value}")
    return " ".join(p for p in (name, dialect.types[kind], spec) if p), comment.strip()


def create_statements(table: Table, dialect: Dialect) -> list[str]:
    """The CREATE TABLE and CREATE INDEX statements of one table, in this dialect (idempotent)."""
    items = [_column(c, dialect) for c in table.columns.strip().splitlines()]
    key, after = table.key, ""
    appended = table.appended and dialect.append_id is not None
    if appended:
        items.insert(0, (str(dialect.append_id), ""))
    elif table.by_time and dialect.partitioned:
        key, after = (*key, "ts_ms"), " PARTITION BY RANGE (ts_ms)"
    elif table.compact:
        after = dialect.compact_suffix
    if key and not appended:
        items.append((f"PRIMARY KEY({', '.join(key)})", ""))
    if table.unique:
        items.append((f"UNIQUE({', '.join(table.unique)})", ""))
    lines = []
    for i, (text, comment) in enumerate(items):
        text = f"    {text}{',' if i < len(items) - 1 else ''}"
        lines.append(f"{text:<{COMMENT_AT}} -- {comment}" if comment else text)
    out = [f"CREATE TABLE IF NOT EXISTS {table.name}(\n" + "\n".join(lines) + f"\n){after}"]
    if appended:
        out.append(f"CREATE UNIQUE INDEX IF NOT EXISTS {table.name}_key ON {table.name}({', '.join(key)})")
    out += [f"CREATE INDEX IF NOT EXISTS {n} ON {table.name}({', '.join(cols)})" for n, cols in table.indexes]
    return out


META = Table("meta", columns="key text PRIMARY KEY\nvalue text NOT NULL")


def _per_bar(name: str, columns: str) -> Table:
    """A table of one row per bar of a symbol, keyed as `bars` are."""
    key = "symbol text NOT NULL\ntimeframe text NOT NULL\nstart_ms int NOT NULL -- bucket [start_ms, start_ms + timeframe)"
    return Table(name, key=("symbol", "timeframe", "start_ms"), compact=True, columns=f"{key}\n{columns.strip()}")


BARS = _per_bar(
    "bars",
    """
open real NOT NULL
high real NOT NULL
low real NOT NULL
close real NOT NULL
volume real NOT NULL -- base asset
quote_volume real NOT NULL -- sum of price * qty
trades int NOT NULL -- exchange trade count, as in Binance klines
taker_buy_volume real NOT NULL
taker_buy_quote_volume real NOT NULL
vwap real NOT NULL
max_qty real NOT NULL
messages int NOT NULL -- trade messages (aggTrades) in the bar
open_ts int NOT NULL
open_id int NOT NULL
close_ts int NOT NULL
close_id int NOT NULL
first_id int NOT NULL
last_id int NOT NULL
revision int32 NOT NULL DEFAULT 0 -- >0: revised by late trades after it closed
closed flag NOT NULL DEFAULT false -- false: in progress
volume_units units NOT NULL DEFAULT 0 -- the exact sums behind the float columns: / 10^qty_dp
quote_units units NOT NULL DEFAULT 0 -- / 10^quote_dp
taker_buy_volume_units units NOT NULL DEFAULT 0
taker_buy_quote_units units NOT NULL DEFAULT 0
origin text NOT NULL DEFAULT 'flow' -- flow | upload
updated_ms int NOT NULL DEFAULT 0
qty_dp int32 NOT NULL DEFAULT 8 -- decimals of the volume sums
quote_dp int32 -- decimals of the quote sums; NULL: units of 2^-24 (a bar from before exact sums)
""",
)

# Messages we could not use, kept aside with the reason (dead letters).
REJECTS = Table(
    "rejects",
    columns="""
id serial
recv_ms int NOT NULL
reason text NOT NULL
source text NOT NULL DEFAULT ''
raw bytes NOT NULL
""",
)

# Trade-id gaps per symbol.
GAPS = Table(
    "gaps",
    key=("symbol", "from_id"),
    columns="""
symbol text NOT NULL
from_id int NOT NULL
to_id int NOT NULL
after_ts int NOT NULL -- trade time of the trade after the gap
detected_ms int NOT NULL -- wall time we declared it a gap
filled_ms int
status text NOT NULL DEFAULT 'open' -- open | filled | unfillable
""",
)

# Feed and flow health, one JSON document per key ('flow' or 'flow:<worker>', 'symbol:<s>').
STATUS = Table("status", columns="key text PRIMARY KEY\nvalue json NOT NULL\nupdated_ms int NOT NULL")

# Alert rules (JSON of an AlertRule); `version` grows on every edit.
ALERT_RULES = Table(
    "alert_rules",
    columns="""
id serial
rule text NOT NULL
enabled flag NOT NULL DEFAULT true
version int32 NOT NULL DEFAULT 1
created_ms int NOT NULL
updated_ms int NOT NULL
""",
)

# Alert triggers; the UNIQUE key makes a replay or restart store each trigger once (and on SQLite
# is the index for time-ordered reads).
ALERT_EVENTS = Table(
    "alert_events",
    unique=("event_ms", "rule_id", "symbol", "ref"),
    columns="""
id serial
rule_id int NOT NULL
rule_name text NOT NULL
symbol text NOT NULL -- symbol, or pair as 'a-b'
metric text NOT NULL
timeframe text -- NULL for per-trade metrics
operator text NOT NULL
value real NOT NULL
threshold real NOT NULL
event_ms int NOT NULL -- market time: the trade's time or the bar's start
ref text NOT NULL -- trade id, or '<timeframe>:<bar start>'
wall_ms int NOT NULL -- when the flow stored it
webhook text
webhook_status text -- NULL (none) | pending | sent | failed
webhook_attempts int32 NOT NULL DEFAULT 0
""",
)

# The tables of every store version but its ticks (each backend keeps those its own way).
CORE_TABLES = (META, BARS, REJECTS, GAPS, STATUS, ALERT_RULES, ALERT_EVENTS)

# Pair and symbol analytics written by the flow ("window" is a reserved word in PostgreSQL: quoted).
PAIR_STATS = Table(
    "pair_stats",
    key=("pair", "timeframe", "start_ms"),
    compact=True,
    columns="""
pair text NOT NULL -- 'a-b': a is y, b is x
timeframe text NOT NULL
start_ms int NOT NULL -- aligned bar start
leg_a text NOT NULL
leg_b text NOT NULL
"window" int32 NOT NULL
close_a real NOT NULL -- aligned closes (carried forward if no trade)
close_b real NOT NULL
beta real
alpha real
spread real
spread_mean real
spread_std real
zscore real
corr real -- Pearson correlation of log returns over the window
k_beta real
k_alpha real
k_beta_var real
k_spread real
k_innovation real
k_innovation_var real
k_zscore real
half_life real -- bars
adf_stat real
adf_pvalue real
eg_pvalue real
coint_ms int -- bar whose window the half-life and ADF were computed on
updated_ms int NOT NULL
""",
)
SYMBOL_STATS = _per_bar(
    "symbol_stats",
    """
"window" int32 NOT NULL
close real NOT NULL
volume real NOT NULL
log_return real
mean real
std real
vwap real
roll_volume real
realised_vol real
updated_ms int NOT NULL
""",
)
CORRELATION = Table(
    "correlation",
    key=("timeframe", "sym_a", "sym_b", "start_ms"),
    compact=True,
    columns="""
timeframe text NOT NULL
sym_a text NOT NULL
sym_b text NOT NULL
start_ms int NOT NULL
"window" int32 NOT NULL
corr real
updated_ms int NOT NULL
""",
)
ANALYTICS_TABLES = (PAIR_STATS, SYMBOL_STATS, CORRELATION)

# Order books (docs/book.md). Prices and quantities of levels stay the exchange's strings
# (storage/codec.py); L1 rows are reals like ticks.
QUOTES = Table(
    "quotes",
    key=("symbol", "update_id"),
    compact=True,
    by_time=True,
    indexes=(("quotes_time", ("symbol", "ts_ms")),),
    columns="""
symbol text NOT NULL
update_id int NOT NULL -- order book update id u (bookTicker), or the depth event's u
ts_ms int NOT NULL -- transaction time T (else E; spot bookTicker: receive time)
event_ms int -- event time E, NULL when the exchange sent none
recv_ms int NOT NULL -- local receive time
bid real -- NULL: that side is empty
bid_qty real
ask real
ask_qty real
source text NOT NULL DEFAULT 'bookTicker' -- bookTicker | book (the local book's best)
""",
)
DEPTH_UPDATES = Table(
    "depth_updates",
    key=("symbol", "final_id"),
    by_time=True,
    appended=True,
    indexes=(("depth_updates_time", ("symbol", "ts_ms", "final_id")),),
    columns="""
symbol text NOT NULL
final_id int NOT NULL -- u
first_id int NOT NULL -- U
prev_id int -- pu (USD-M); NULL on spot, where U = previous u + 1
ts_ms int NOT NULL -- transaction time T (spot: event time E)
event_ms int NOT NULL
recv_ms int NOT NULL
n_bids int32 NOT NULL
n_asks int32 NOT NULL
levels bytes NOT NULL -- storage/codec.py: four string columns, absolute quantities
""",
)
BOOK_SNAPSHOTS = Table(
    "book_snapshots",
    key=("symbol", "update_id"),
    by_time=True,
    appended=True,
    columns="""
symbol text NOT NULL
update_id int NOT NULL -- the book after this update (REST: lastUpdateId)
ts_ms int NOT NULL -- its transaction time (REST: T, else E, else receive time)
recv_ms int NOT NULL
kind text NOT NULL -- rest: the snapshot a (re)sync started from; interval: the flow's own
depth_limit int32 -- rest: levels per side asked for
complete_low real -- interval: the price range known complete (NULL: unbounded)
complete_high real
n_bids int32 NOT NULL
n_asks int32 NOT NULL
levels bytes NOT NULL -- storage/codec.py, zlib
""",
)
BOOK_GAPS = Table(
    "book_gaps",
    key=("symbol", "from_update_id", "from_ms"),
    columns="""
symbol text NOT NULL
from_update_id int NOT NULL -- the book was known after this update (0: never before)
from_ms int NOT NULL
to_update_id int -- known again after this one (the first applied after the resync)
to_ms int
reason text NOT NULL -- pu_break | reconnect | snapshot_failure | crossed
status text NOT NULL DEFAULT 'open' -- open | closed
detail text NOT NULL DEFAULT ''
detected_ms int NOT NULL -- wall time it was first stored
""",
)
BOOK_TABLES = (QUOTES, DEPTH_UPDATES, BOOK_SNAPSHOTS, BOOK_GAPS)


# Microstructure (docs/analytics.md): a micro bar written again (complete, or revised by late
# data) replaces its earlier version; a VPIN bucket is keyed by (symbol, bucket index).
def _micro_column(name: str) -> str:
    if name in ("quote_updates", "depth_updates", "trades", "vpin_buckets", "revision"):
        return f"{name} int NOT NULL"
    if name == "complete":
        return "complete flag NOT NULL"
    return f"{name} real"  # NULL where the value is not defined


assert MICRO_COLUMNS[:3] == ("symbol", "timeframe", "start_ms")
MICRO_BARS = _per_bar(
    "micro_bars", "\n".join([*(_micro_column(c) for c in MICRO_COLUMNS[3:]), "updated_ms int NOT NULL"])
)
VPIN = Table(
    "vpin",
    key=("symbol", "bucket"),
    compact=True,
    indexes=(("vpin_time", ("symbol", "end_ms")),),
    columns="""
symbol text NOT NULL
bucket int NOT NULL -- 0 = the first volume bucket the flow filled
end_ms int NOT NULL -- time of the trade that filled it
buy_volume real NOT NULL
sell_volume real NOT NULL
vpin real -- NULL before the first n buckets
""",
)
MICRO_TABLES = (MICRO_BARS, VPIN)


def statements(tables: tuple[Table, ...], dialect: Dialect) -> list[str]:
    return [s for t in tables for s in create_statements(t, dialect)]
