"""The writes the dataflow makes into PostgreSQL: one transaction per epoch's `StoreBatch`.

Ticks go by binary COPY into a temporary staging table, then one `INSERT … SELECT … ON
CONFLICT DO NOTHING` into the partitioned `ticks`; bars likewise (binary COPY, then one
upsert from staging); every other table takes one statement per batch over `unnest`
arrays (late-trade merges, analytics, triggers, status), gaps one upsert per gap in a
pipeline. Batches that waited for the writer together go as one (`combine`). Every write is idempotent by its natural
key, so a replayed epoch (recovery, reconnect) changes nothing. A lost server (restart,
network) is retried with backoff on a new connection for `store.retry_s`, the batch
whole again; any other error is a `StoreWriteError`.
"""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field, replace

import orjson
import psycopg
from psycopg import sql

from storage.codec import DEPTH_COLUMNS, QUOTE_COLUMNS, SNAPSHOT_COLUMNS, encode_levels, encode_snapshot
from storage.port import StoreBatch, StoreWriteError
from storage.postgres import schema
from storage.postgres.connection import Backoff, Target, is_transient
from storage.postgres.copy import HEADER, TICK_COLUMNS, TRAILER, first_copies, ticks_copy_data
from storage.postgres.micro import MICRO_COLS, VPIN_COLS, micro_rows
from ticklens.config import RetentionConfig, redact
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.bars import BAR_COLUMNS, DECIMAL_GROUPS, Bar
from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate, Quotes
from ticklens.domain.stats.pair import PAIR_ROW_FIELDS
from ticklens.domain.stats.symbol import SYMBOL_ROW_FIELDS
from ticklens.domain.times import now_ms

_BAR_COLS = (*BAR_COLUMNS, "updated_ms")
_PAIR_COLS = ("pair", "timeframe", "leg_a", "leg_b", "window", *PAIR_ROW_FIELDS, "updated_ms")
_SYM_COLS = ("symbol", "timeframe", "window", *SYMBOL_ROW_FIELDS, "updated_ms")
_CORR_COLS = ("timeframe", "sym_a", "sym_b", "start_ms", "window", "corr", "updated_ms")
_EVENT_COLS = (
    "rule_id", "rule_name", "symbol", "metric", "timeframe", "operator", "value", "threshold",
    "event_ms", "ref", "wall_ms", "webhook", "webhook_status",
)  # fmt: skip
_REJECT_COLS = ("recv_ms", "reason", "source", "raw")
# The oldest rejects beyond the cap (store.rejects_max_rows). Ids come from one identity
# sequence and only this trim deletes, oldest first: the cut is one range delete on the key.
# Ids of a rolled-back batch leave holes, so the table keeps at most the cap (the count is
# exact: COUNT(*)). Writers of several workers trim one at a time (an advisory lock held to
# commit), so each dropped row is counted once.
_REJECTS_LOCK = 0x72656A65  # "reje"
_REJECTS_TRIM = "DELETE FROM rejects WHERE id <= (SELECT MAX(id) FROM rejects) - %s"
_REJECTS_DROPPED = (
    "INSERT INTO meta(key, value) VALUES('rejects_dropped', %s) ON CONFLICT(key) DO UPDATE SET"
    " value = (meta.value::bigint + excluded.value::bigint)::text"
)
_STATUS_COLS = ("key", "value", "updated_ms")
# A book gap is told when it opens and again when it closes, maybe in different batches: closed wins.
_BOOK_GAP_UPSERT = (
    "INSERT INTO book_gaps(symbol, from_update_id, from_ms, to_update_id, to_ms, reason, status, detail, detected_ms)"
    " VALUES(%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT(symbol, from_update_id, from_ms) DO UPDATE SET"
    " to_update_id=COALESCE(excluded.to_update_id, book_gaps.to_update_id),"
    " to_ms=COALESCE(excluded.to_ms, book_gaps.to_ms),"
    " status=CASE WHEN book_gaps.status='closed' OR excluded.status='closed' THEN 'closed' ELSE excluded.status END"
)
UPKEEP_EVERY_S = 3600.0
_BOOK_PARTITIONED = ("quotes", "depth_updates", "book_snapshots")


def _columns(conn: psycopg.Connection) -> dict[str, dict[str, str]]:
    """table -> column -> SQL type, from the live schema (the DDL is the one place types are written)."""
    out: dict[str, dict[str, str]] = {}
    for table, col, typ in conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND a.attnum > 0 AND NOT a.attisdropped"
    ):
        out.setdefault(table, {})[col] = typ
    return out


def _unnest(types: dict[str, str], cols: tuple[str, ...]) -> sql.Composed:
    """`SELECT * FROM unnest(%s::t1[], …)`: one array parameter per column."""
    args = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(types[c])) for c in cols)
    return sql.SQL("SELECT * FROM unnest({})").format(args)


def _insert(table: str, cols: tuple[str, ...], types: dict[str, str], tail: str = "") -> sql.Composed:
    return sql.SQL("INSERT INTO {} AS t ({}) {} {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, cols)),
        _unnest(types, cols),
        sql.SQL(tail),  # type: ignore[arg-type]
    )


def _replace_all(key: tuple[str, ...], cols: tuple[str, ...], extra: str = "") -> str:
    """ON CONFLICT … DO UPDATE every non-key column (SQLite's INSERT OR REPLACE)."""
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in cols if c not in key)
    return f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}{extra}"


# Late partials are merged into the stored bars in Python (`_merge_bars`): the stored rows are
# read back, locked, and folded in by the domain's rule (`Bar.merge`), exact at any size and
# bit-identical to the SQLite backend, then written back by the plain upsert.
_BAR_KEYS = "(symbol, timeframe, start_ms) IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]))"
_BAR_LOCK = f"SELECT {', '.join(BAR_COLUMNS)} FROM bars WHERE {_BAR_KEYS} FOR UPDATE"
_UNITS = {n for g in DECIMAL_GROUPS.values() for n in g}
_BAR_COPY = f"COPY bars_stage ({', '.join(_BAR_COLS)}) FROM STDIN (FORMAT BINARY)"

_GAP_UPSERT = (
    "INSERT INTO gaps(symbol, from_id, to_id, after_ts, detected_ms, filled_ms, status)"
    " VALUES(%s,%s,%s,%s,%s,%s,%s) ON CONFLICT(symbol, from_id) DO UPDATE SET"
    " to_id=excluded.to_id,"
    " filled_ms=COALESCE(gaps.filled_ms, excluded.filled_ms),"
    # Two reporters (the source's backfill, the dedup step) may tell the same gap
    # in any order: filled outranks unfillable, which outranks open.
    " status=CASE WHEN gaps.status='filled' OR excluded.status='filled' THEN 'filled'"
    " WHEN gaps.status='unfillable' OR excluded.status='unfillable' THEN 'unfillable'"
    " ELSE excluded.status END"
)


# A trade is stored once by (symbol, trade id), whatever its time. The key of `ticks` must hold the
# partition column, so the ids a batch brings are first looked up in every partition: one index
# range per symbol (the batch's lowest to highest id), not one probe per row. A batch none of whose
# ids is stored (the usual case) goes in by a plain INSERT … SELECT; one that overlaps the store (a
# replay, a recovery restart) by the anti-join below, with ON CONFLICT DO NOTHING. The key stays the
# backstop: a plain insert that meets a stored row after all is redone the careful way.
_TICKS = ", ".join(TICK_COLUMNS)
_OVERLAP = """SELECT EXISTS (
    SELECT 1 FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS span(symbol, lo, hi)
    WHERE EXISTS (SELECT 1 FROM ticks t WHERE t.symbol = span.symbol AND t.trade_id BETWEEN span.lo AND span.hi)
)"""
_TICK_INSERT_NEW = f"INSERT INTO ticks ({_TICKS}) SELECT {_TICKS} FROM ticks_stage"
_TICK_INSERT = f"""
WITH span AS MATERIALIZED (
    SELECT symbol, min(trade_id) AS lo, max(trade_id) AS hi FROM ticks_stage GROUP BY symbol
), have AS MATERIALIZED (
    SELECT t.symbol, t.trade_id FROM span,
    LATERAL (SELECT symbol, trade_id FROM ticks WHERE symbol = span.symbol AND trade_id BETWEEN span.lo AND span.hi) t
)
INSERT INTO ticks ({_TICKS})
SELECT {_TICKS} FROM ticks_stage s
WHERE NOT EXISTS (SELECT 1 FROM have h WHERE h.symbol = s.symbol AND h.trade_id = s.trade_id)
ON CONFLICT DO NOTHING
"""


def _nan_none(v: object) -> object:
    """SQLite stores NaN as NULL; so does this backend, so both read back the same."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _bar_row(b: Bar, ts: int) -> tuple:
    """A `bars` row in _BAR_COLS order with the exact sums as Python ints (numeric) and a boolean flag."""
    return (*(_pg_value(c, v, b) for c, v in zip(BAR_COLUMNS, b.row(), strict=True)), ts)


def _pg_value(col: str, v: object, b: Bar) -> object:
    if col == "closed":
        return bool(b.closed)
    if col in _UNITS:
        return getattr(b, col)  # Bar.row gives text past 64 bits (for SQLite); numeric takes the int
    return v


def _merge_bars(c: psycopg.Connection, partials: list[Bar], ts: int) -> list[tuple]:
    """Rows of the stored bars with the late partials folded in (one partial per bar, its
    `revision` the count of partials folded into it); a partial with no stored bar stays as it is."""
    keys = [[b.symbol for b in partials], [b.timeframe for b in partials], [b.start_ms for b in partials]]
    stored = {(r[0], r[1], r[2]): r for r in c.execute(_BAR_LOCK, keys).fetchall()}
    out = []
    for part in partials:
        row = stored.get((part.symbol, part.timeframe, part.start_ms))
        if row is None:
            bar = replace(part, closed=True)
        else:
            bar = Bar.from_row(row)
            bar.merge(part)
            bar.revision += part.revision
            bar.closed = True
        out.append(_bar_row(bar, ts))
    return out


def _fold_merges(merges: list[Bar]) -> list[Bar]:
    """One partial per bar (an upsert may touch a row once): later partials of the same bar
    are folded into the first, and `revision` counts them, as one merge each would."""
    out: dict[tuple[str, str, int], Bar] = {}
    for m in merges:
        key = (m.symbol, m.timeframe, m.start_ms)
        have = out.get(key)
        if have is None:
            out[key] = replace(m, revision=1)
        else:
            have.merge(m)
            have.revision += 1
    return list(out.values())


def _last_by(rows: list[tuple], key: tuple[int, ...]) -> list[tuple]:
    """Rows with a repeated key reduced to the last one (INSERT OR REPLACE applied in order)."""
    return list({tuple(r[i] for i in key): r for r in rows}.values())


def _columns_of(rows: list[tuple]) -> list[list]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else []


def _quote_rows(batches: list[Quotes]) -> list[tuple]:
    rows: list[tuple] = []
    for q in batches:
        if not len(q):
            continue
        cols = [
            q.update_id.tolist(),
            q.ts_ms.tolist(),
            [None if e < 0 else e for e in q.event_ms.tolist()],
            q.recv_ms.tolist(),
            *([_nan_none(x) for x in c.tolist()] for c in (q.bid, q.bid_qty, q.ask, q.ask_qty)),
        ]
        rows += [(q.symbol, *r, q.source) for r in zip(*cols, strict=True)]
    return rows


def _depth_row(u: DepthUpdate) -> tuple:
    levels = encode_levels(u.bid_px, u.bid_qty, u.ask_px, u.ask_qty)
    return (u.symbol, u.final_id, u.first_id, u.prev_final_id, u.txn_ms, u.event_ms, u.recv_ms,
            len(u.bid_px), len(u.ask_px), levels)  # fmt: skip


def _snapshot_row(s: BookSnapshot) -> tuple:
    kind, low, high = "rest", None, None
    if s.complete_range is not None:
        kind = "interval"
        lo, hi = s.complete_range
        low, high = (lo if lo > 0 else None), (None if math.isinf(hi) else hi)
    return (s.symbol, s.last_update_id, s.ts_ms, s.recv_ms, kind, s.limit, low, high, len(s.bids), len(s.asks),
            encode_snapshot(s.bids, s.asks))  # fmt: skip


def _book_gap_row(g: BookGap, ts: int) -> tuple:
    return (g.symbol, g.from_update_id, g.from_ms, g.to_update_id, g.to_ms, g.reason, g.status, g.detail, ts)


def _days_of(times: list[int]) -> set[int]:
    return {t // schema.DAY_MS for t in times}


@dataclass(slots=True)
class _Prepared:
    ts: int
    copy: bytes = b""
    nticks: int = 0
    spans: list[list] = field(default_factory=list)  # [symbols, lowest ids, highest ids]
    day_symbols: set[tuple[int, str]] = field(default_factory=set)  # (day, symbol) of the ticks: a tick partition each
    bars: list[tuple] = field(default_factory=list)
    merges: list[Bar] = field(default_factory=list)
    rejects: list[tuple] = field(default_factory=list)
    gaps: list[tuple] = field(default_factory=list)
    pairs: list[tuple] = field(default_factory=list)
    symbols: list[tuple] = field(default_factory=list)
    corr: list[tuple] = field(default_factory=list)
    alerts: list[AlertFired] = field(default_factory=list)
    status: list[tuple] = field(default_factory=list)
    quotes: list[tuple] = field(default_factory=list)
    depth: list[tuple] = field(default_factory=list)
    snapshots: list[tuple] = field(default_factory=list)
    book_gaps: list[tuple] = field(default_factory=list)
    book_days: dict[str, set[int]] = field(default_factory=dict)  # partitioned book table -> days written
    micro: list[tuple] = field(default_factory=list)
    vpin: list[tuple] = field(default_factory=list)


class PostgresWriter:
    """Batched, transactional writes of the dataflow's outputs (`StoreWriter` of the port)."""

    def __init__(
        self, target: Target, retry_s: float, retention: RetentionConfig, rejects_max_rows: int | None = None
    ) -> None:
        self.target = target
        self.retry_s = retry_s
        self.rejects_max_rows = rejects_max_rows
        self.conn: psycopg.Connection | None = None
        self._days: set[int] = set()
        self._day_symbols: set[tuple[int, str]] = set()  # (day, symbol) tick partitions known to exist
        self._book_days: dict[str, set[int]] = {}  # the book tables' partitions known to exist
        self._sql: dict[str, sql.Composed] = {}
        self._bar_types: list[str] = []
        self.upkeep = PartitionUpkeep(target, retention)
        self._connect(Backoff(retry_s))
        self.upkeep.start()

    # --- connection ----------------------------------------------------------------------

    def _connect(self, backoff: Backoff) -> psycopg.Connection:
        while True:
            try:
                conn = self.target.connect(app="ticklens-writer")
                conn.execute("SET work_mem = '64MB'")  # the overlap anti-join sorts a batch in memory
                # The staging tables hold a whole (combined) batch: in memory, not spilled to temp files
                # (the default 8 MB is ~80,000 ticks). Settable only before the session's first temp table.
                conn.execute("SET temp_buffers = '64MB'")
                conn.commit()
                schema.create_schema(conn)
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS ticks_stage (LIKE ticks) ON COMMIT DELETE ROWS")
                conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS bars_stage (LIKE bars INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                conn.commit()
                self._days = set(schema.partitions(conn, "ticks"))
                self._day_symbols = set()  # checked again (one catalog query a day) at the next write
                self._book_days = {t: set(schema.partitions(conn, t)) for t in _BOOK_PARTITIONED}
                conn.commit()
                if not self._sql:
                    self._build_sql(_columns(conn))
                    conn.commit()
                self.conn = conn
                return conn
            except psycopg.Error as e:
                if not is_transient(e) or backoff.expired:
                    raise StoreWriteError(f"store {self.target.location} cannot be opened: {redact(str(e))}") from None
                backoff.wait(f"store {self.target.location} unreachable", e)

    def _build_sql(self, types: dict[str, dict[str, str]]) -> None:
        self._bar_types = [types["bars"][c] for c in _BAR_COLS]
        self._sql = {
            "bars_staged": sql.SQL("INSERT INTO bars AS t ({cols}) SELECT {cols} FROM bars_stage {tail}").format(
                cols=sql.SQL(", ").join(map(sql.Identifier, _BAR_COLS)),
                tail=sql.SQL(_replace_all(("symbol", "timeframe", "start_ms"), _BAR_COLS, ", origin = 'flow'")),  # type: ignore[arg-type]
            ),
            "bars": _insert("bars", _BAR_COLS, types["bars"], _replace_all(("symbol", "timeframe", "start_ms"), _BAR_COLS, ", origin = 'flow'")),
            "rejects": _insert("rejects", _REJECT_COLS, types["rejects"]),
            "pairs": _insert("pair_stats", _PAIR_COLS, types["pair_stats"], _replace_all(("pair", "timeframe", "start_ms"), _PAIR_COLS)),
            "symbols": _insert("symbol_stats", _SYM_COLS, types["symbol_stats"], _replace_all(("symbol", "timeframe", "start_ms"), _SYM_COLS)),
            "corr": _insert("correlation", _CORR_COLS, types["correlation"], _replace_all(("timeframe", "sym_a", "sym_b", "start_ms"), _CORR_COLS)),
            "status": _insert("status", _STATUS_COLS, types["status"], _replace_all(("key",), _STATUS_COLS)),
            "events": _insert("alert_events", _EVENT_COLS, types["alert_events"], "ON CONFLICT DO NOTHING RETURNING rule_id, event_ms, symbol, ref"),
            # Books: stored once by natural key, whatever a replay or a restart repeats.
            "quotes": _insert("quotes", QUOTE_COLUMNS, types["quotes"], "ON CONFLICT DO NOTHING"),
            "depth": _insert("depth_updates", DEPTH_COLUMNS, types["depth_updates"], "ON CONFLICT DO NOTHING"),
            "snapshots": _insert("book_snapshots", SNAPSHOT_COLUMNS, types["book_snapshots"], "ON CONFLICT DO NOTHING"),
            # Microstructure: a bar written again (complete, revised) replaces its earlier version.
            "micro": _insert("micro_bars", MICRO_COLS, types["micro_bars"], _replace_all(("symbol", "timeframe", "start_ms"), MICRO_COLS)),
            "vpin": _insert("vpin", VPIN_COLS, types["vpin"], _replace_all(("symbol", "bucket"), VPIN_COLS)),
        }  # fmt: skip

    # --- the port --------------------------------------------------------------------------

    def prepare(self, batch: StoreBatch) -> _Prepared:
        """Rows and the COPY data, built on the flow's thread (bars copied by value here)."""
        ts = now_ms()
        p = _Prepared(ts=ts)
        if batch.ticks:
            ticks = first_copies(batch.ticks)
            p.copy, p.nticks = ticks_copy_data(ticks)
            span: dict[str, tuple[int, int]] = {}
            for t in ticks:
                if len(t):
                    lo_id, hi_id = int(t.trade_id.min()), int(t.trade_id.max())
                    was = span.get(t.symbol, (lo_id, hi_id))
                    span[t.symbol] = (min(was[0], lo_id), max(was[1], hi_id))
                    lo, hi = int(t.ts_ms.min()) // schema.DAY_MS, int(t.ts_ms.max()) // schema.DAY_MS
                    p.day_symbols.update((d, t.symbol) for d in range(lo, hi + 1))
            p.spans = [list(span), [v[0] for v in span.values()], [v[1] for v in span.values()]]
        # One row per bar: a batch may touch the same bar several times; the later value wins.
        latest = {(b.symbol, b.timeframe, b.start_ms): b for b in batch.bars}
        p.bars = [_bar_row(b, ts) for b in latest.values()]
        p.merges = _fold_merges(batch.bar_merges)  # merged with the stored bars in `write`
        p.rejects = [(r.recv_ms, r.reason, r.source, r.raw) for r in batch.rejects]
        p.gaps = [
            (g.symbol, g.from_id, g.to_id, g.after_ts, ts, ts if g.status == "filled" else None, g.status)
            for g in batch.gaps
        ]
        for o in batch.pairs:
            head = (o.pair, o.timeframe, o.legs[0], o.legs[1], o.window)
            p.pairs += [(*head, *(_nan_none(getattr(r, f)) for f in PAIR_ROW_FIELDS), ts) for r in o.rows]
        for s in batch.symbol_stats:
            head = (s.symbol, s.timeframe, s.window)
            p.symbols += [(*head, *(_nan_none(getattr(r, f)) for f in SYMBOL_ROW_FIELDS), ts) for r in s.rows]
        for c in batch.correlations:
            p.corr += [(c.timeframe, a, b, t, c.window, _nan_none(v), ts) for t, a, b, v in c.rows]
        p.pairs = _last_by(p.pairs, (0, 1, 5))
        p.symbols = _last_by(p.symbols, (0, 1, 3))
        p.corr = _last_by(p.corr, (0, 1, 2, 3))
        p.alerts = list(batch.alerts)
        if batch.status:
            p.status = [(k, orjson.dumps(v).decode(), ts) for k, v in batch.status.items()]
        p.quotes = _quote_rows(batch.quotes)
        p.depth = [_depth_row(u) for u in batch.depth_updates]
        p.snapshots = [_snapshot_row(s) for s in batch.book_snapshots]
        p.book_gaps = [_book_gap_row(g, ts) for g in batch.book_gaps]
        p.micro, p.vpin = micro_rows(batch.micro_bars, batch.vpin, ts)
        for table, rows in (("quotes", p.quotes), ("depth_updates", p.depth), ("book_snapshots", p.snapshots)):
            if rows:
                p.book_days[table] = _days_of([r[2] if table != "depth_updates" else r[4] for r in rows])
        return p

    def combine(self, parts: list[_Prepared]) -> _Prepared:
        """Batches prepared apart, as one (written in one transaction): later rows win, as they would
        written one after the other; late partials of the same bar fold together (their revisions add)."""
        out = _Prepared(ts=max(p.ts for p in parts))
        copies = [p.copy for p in parts if p.nticks]
        if copies:
            out.copy = HEADER + b"".join(c[len(HEADER) : -len(TRAILER)] for c in copies) + TRAILER
        span: dict[str, tuple[int, int]] = {}
        for p in parts:
            out.nticks += p.nticks
            out.day_symbols |= p.day_symbols
            if p.spans:
                for sym, lo, hi in zip(*p.spans, strict=True):
                    was = span.get(sym, (lo, hi))
                    span[sym] = (min(was[0], lo), max(was[1], hi))
            for name in (
                "bars", "rejects", "gaps", "pairs", "symbols", "corr", "alerts", "status",
                "quotes", "depth", "snapshots", "book_gaps", "micro", "vpin",
            ):  # fmt: skip
                getattr(out, name).extend(getattr(p, name))
            for table, days in p.book_days.items():
                out.book_days.setdefault(table, set()).update(days)
        if span:
            out.spans = [list(span), [v[0] for v in span.values()], [v[1] for v in span.values()]]
        folded: dict[tuple[str, str, int], Bar] = {}
        for m in (m for p in parts for m in p.merges):
            key = (m.symbol, m.timeframe, m.start_ms)
            if (have := folded.get(key)) is None:
                folded[key] = m
            else:
                have.merge(m)
                have.revision += m.revision
        out.merges = list(folded.values())
        out.bars = _last_by(out.bars, (0, 1, 2))
        out.pairs = _last_by(out.pairs, (0, 1, 5))
        out.symbols = _last_by(out.symbols, (0, 1, 3))
        out.corr = _last_by(out.corr, (0, 1, 2, 3))
        out.status = _last_by(out.status, (0,))
        out.micro = _last_by(out.micro, (0, 1, 2))  # quotes, depth, snapshots: DO NOTHING keeps the first
        out.vpin = _last_by(out.vpin, (0, 1))
        return out

    def write(self, prepared: _Prepared) -> list[AlertFired]:
        """All of one dataflow batch in one transaction: a crash leaves none of it.

        Returns the webhook alert triggers not stored before (a replay finds the rest already there).
        """
        backoff = Backoff(self.retry_s)
        while True:
            conn = self.conn if self.conn is not None and not self.conn.closed else self._connect(backoff)
            try:
                new = prepared.day_symbols - self._day_symbols
                missing = {day for day, _ in new} - self._days
                if missing:
                    schema.ensure_partitions(conn, "ticks", missing)
                    self._days |= missing
                if new:
                    schema.ensure_symbol_partitions(conn, new)
                    self._day_symbols |= new
                for table, days in prepared.book_days.items():
                    have = self._book_days.setdefault(table, set())
                    if days - have:
                        schema.ensure_partitions(conn, table, days - have)
                        have |= days
                with conn.transaction():
                    fresh = self._write(conn, prepared)
                return fresh
            except psycopg.Error as e:
                if is_transient(e, conn) and not backoff.expired:
                    self._drop(conn)
                    backoff.wait(f"store {self.target.location}: write failed", e)
                    continue
                self._drop(conn)
                raise StoreWriteError(
                    f"store {self.target.location} cannot be written ({redact(str(e))}); the last batch was"
                    " rolled back whole, everything before it is stored"
                ) from None

    def _drop(self, conn: psycopg.Connection) -> None:
        try:
            conn.close()
        finally:
            self.conn = None

    def _write(self, c: psycopg.Connection, p: _Prepared) -> list[AlertFired]:
        q = self._sql
        if p.nticks:
            with c.cursor().copy(f"COPY ticks_stage ({', '.join(TICK_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(p.copy)
            overlap = c.execute(_OVERLAP, p.spans).fetchone()[0]  # type: ignore[index]
            if overlap:
                c.execute(_TICK_INSERT)
            else:
                try:
                    with c.transaction():  # a savepoint: a stored row met after all rolls back only this
                        c.execute(_TICK_INSERT_NEW)
                except psycopg.errors.UniqueViolation:
                    c.execute(_TICK_INSERT)
        if p.bars:  # binary COPY into staging, then one upsert: no per-value dumping into arrays
            with c.cursor().copy(_BAR_COPY) as cp:
                cp.set_types(self._bar_types)
                for row in p.bars:
                    cp.write_row(row)
            c.execute(q["bars_staged"])
        if p.merges:
            c.execute(q["bars"], _columns_of(_merge_bars(c, p.merges, p.ts)))
        if p.rejects:
            c.execute(q["rejects"], _columns_of(p.rejects))
            if self.rejects_max_rows is not None:
                c.execute("SELECT pg_advisory_xact_lock(%s)", (_REJECTS_LOCK,))
                dropped = c.execute(_REJECTS_TRIM, (self.rejects_max_rows,)).rowcount
                if dropped > 0:
                    c.execute(_REJECTS_DROPPED, (str(dropped),))
        if p.gaps:
            c.cursor().executemany(_GAP_UPSERT, p.gaps)
        fresh = self._events(c, p.alerts, p.ts) if p.alerts else []
        for name in ("pairs", "symbols", "corr", "status", "quotes", "depth", "snapshots", "micro", "vpin"):
            rows = getattr(p, name)
            if rows:
                c.execute(q[name], _columns_of(rows))
        if p.book_gaps:
            c.cursor().executemany(_BOOK_GAP_UPSERT, p.book_gaps)
        return fresh

    def _events(self, c: psycopg.Connection, events: list[AlertFired], wall_ms: int) -> list[AlertFired]:
        """Store triggers (webhook ones first, as SQLite does); returns the webhook ones not stored before."""
        ordered = [e for e in events if e.webhook] + [e for e in events if not e.webhook]
        rows = [
            (e.rule_id, e.rule_name, e.key, e.metric, e.timeframe, e.operator, _nan_none(e.value), e.threshold,
             e.event_ms, e.ref, wall_ms, e.webhook, "pending" if e.webhook else None)
            for e in ordered
        ]  # fmt: skip
        new = {tuple(r) for r in c.execute(self._sql["events"], _columns_of(rows)).fetchall()}
        fresh = []
        for e in ordered:
            key = (e.rule_id, e.event_ms, e.key, e.ref)
            if e.webhook and key in new:
                new.discard(key)
                fresh.append(e)
        return fresh

    def close(self) -> None:
        self.upkeep.stop()
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class PartitionUpkeep:
    """Creates the coming days' partitions and drops the expired ones, hourly, on its own connection.

    Several writers (one per flow worker) may run one each: a session advisory lock lets
    one of them work at a time; a failed round (server away) is tried again next hour.
    """

    LOCK = 0x7570_6B70  # "upkp"

    def __init__(self, target: Target, retention: RetentionConfig, every_s: float = UPKEEP_EVERY_S) -> None:
        self.target = target
        self.retention = retention
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-partition-upkeep", daemon=True)
        self.dropped: list[str] = []
        self.gaps_deleted = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self, now: int | None = None) -> list[str]:
        now = now_ms() if now is None else now
        dropped: list[str] = []
        with self.target.connect(app="ticklens-upkeep") as conn:
            today = schema.day_of(now)
            for table in schema.TIME_PARTITIONED:
                schema.ensure_partitions(conn, table, range(today, today + self.retention.ahead_days + 1))
            conn.commit()
            conn.autocommit = True
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (self.LOCK,)).fetchone()[0]:  # type: ignore[index]
                return dropped
            try:
                for table in schema.TIME_PARTITIONED:
                    keep = self.retention.days_for(table)
                    if keep is not None:
                        dropped += schema.drop_expired(conn, table, keep, now)
                keep = self.retention.days_for("book_gaps")
                if keep is not None:  # small, not partitioned: closed gaps older than the days are deleted
                    self.gaps_deleted += schema.delete_old_book_gaps(conn, keep)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.LOCK,))
        self.dropped += dropped
        return dropped

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except psycopg.Error as e:
                print(f"[ticklens] partition upkeep: {redact(str(e))}", file=sys.stderr, flush=True)
            self._stop.wait(self.every_s)
