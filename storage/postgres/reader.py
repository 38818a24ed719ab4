"""The PostgreSQL `StoreReader`: the queries the API uses, over one pooled read-only connection.

The same queries and results as the SQLite reader (storage/sqlite/reader.py): flags come
back as 0/1, rows as tuples in the column orders of `storage.port`. A time range on ticks
is turned into a trade-id range via the bars (as in SQLite) and the time bounds prune the
daily partitions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import polars as pl
import psycopg

from storage.codec import decode_levels, decode_snapshot
from storage.port import BAR_OUT_COLUMNS, QUOTE_OUT_COLUMNS, TICK_COLUMNS, StoreHealth, SymbolSummary
from storage.postgres.micro import MICRO_QUERY, VPIN_QUERY
from storage.postgres.schema import partitions
from ticklens.domain.bars import EXACT_SUM_COLUMNS, ExactSums, exact_sums
from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate
from ticklens.domain.continuity import FlowBarIds
from ticklens.domain.stats.pair import PAIR_ROW_FIELDS, PairRow
from ticklens.domain.stats.symbol import SYMBOL_ROW_FIELDS, SymbolRow
from ticklens.domain.status import with_merged_flow
from ticklens.domain.timeframes import TIMEFRAME_MS

FAR_PAST = -(2**62)
FAR_FUTURE = 2**62

_FLAGS = {"is_buyer_maker": "is_buyer_maker::int", "closed": "closed::int"}
_TICK_SELECT = f"SELECT {','.join(_FLAGS.get(c, c) for c in TICK_COLUMNS)} FROM ticks"
_BAR_SELECT = f"SELECT {','.join(_FLAGS.get(c, c) for c in BAR_OUT_COLUMNS)} FROM bars"
_QUOTE_SELECT = f"SELECT {','.join(QUOTE_OUT_COLUMNS)} FROM quotes"
_DEPTH_SELECT = "SELECT first_id, final_id, prev_id, event_ms, ts_ms, recv_ms, levels FROM depth_updates"
_DATA_TABLES = ("bars", "ticks", "quotes", "depth_updates")


def _bounds(start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    return (FAR_PAST if start_ms is None else start_ms, FAR_FUTURE if end_ms is None else end_ms)


class PostgresReader:
    """`StoreReader` over one connection (a read-only transaction for the length of a request)."""

    def __init__(self, conn: psycopg.Connection, location: str = "", last_check: StoreHealth | None = None) -> None:
        self.conn = conn
        self.location = location
        self.last_check = last_check

    def _one(self, query: str, args: tuple | list = ()) -> tuple | None:
        return self.conn.execute(query, args).fetchone()  # type: ignore[arg-type]

    def _all(self, query: str, args: tuple | list = ()) -> list[tuple]:
        return self.conn.execute(query, args).fetchall()  # type: ignore[arg-type]

    # --- symbols -------------------------------------------------------------------------

    def _distinct_symbols(self, table: str) -> list[str]:
        """Distinct symbols by skipping along the primary key (no full scan)."""
        assert table in _DATA_TABLES
        out: list[str] = []
        last = ""
        while True:
            row = self._one(f"SELECT MIN(symbol) FROM {table} WHERE symbol > %s", (last,))
            if row is None or row[0] is None:
                return out
            last = row[0]
            out.append(last)

    def symbols_with_data(self) -> list[str]:
        return sorted(set().union(*(self._distinct_symbols(t) for t in _DATA_TABLES)))

    def has_data(self, symbol: str) -> bool:
        return any(self._one(f"SELECT 1 FROM {t} WHERE symbol=%s LIMIT 1", (symbol,)) for t in _DATA_TABLES)

    def symbol_summary(self, symbol: str) -> SymbolSummary:
        tfs = [
            tf
            for tf in TIMEFRAME_MS
            if self._one("SELECT 1 FROM bars WHERE symbol=%s AND timeframe=%s LIMIT 1", (symbol, tf))
        ]
        first_ms = last_ms = None
        last_price = None
        ticks = 0
        if tfs:
            small, large = tfs[0], tfs[-1]
            first_ms = self._one(  # type: ignore[index]
                "SELECT start_ms FROM bars WHERE symbol=%s AND timeframe=%s ORDER BY start_ms LIMIT 1", (symbol, small)
            )[0]
            row = self._one(
                "SELECT close_ts, close FROM bars WHERE symbol=%s AND timeframe=%s ORDER BY start_ms DESC LIMIT 1",
                (symbol, small),
            )
            last_ms, last_price = row[0], row[1]  # type: ignore[index]
            ticks = self._one(  # type: ignore[index]
                "SELECT COALESCE(SUM(messages), 0) FROM bars WHERE symbol=%s AND timeframe=%s", (symbol, large)
            )[0]
        uploaded = self._one("SELECT 1 FROM bars WHERE symbol=%s AND origin='upload' LIMIT 1", (symbol,)) is not None
        return SymbolSummary(symbol, tfs, first_ms, last_ms, last_price, int(ticks), uploaded)

    # --- ticks ---------------------------------------------------------------------------

    def trade_id_range(self, symbol: str, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
        """A trade-id range that holds every tick with start <= ts < end (a superset), from the
        smallest timeframe's collected bars, one bar beyond each end."""
        lo, hi = FAR_PAST, FAR_FUTURE
        for tf, tf_ms in TIMEFRAME_MS.items():
            if not self._one(
                "SELECT 1 FROM bars WHERE symbol=%s AND timeframe=%s AND origin='flow' LIMIT 1", (symbol, tf)
            ):
                continue
            if start_ms is not None:
                row = self._one(
                    "SELECT open_id FROM bars WHERE symbol=%s AND timeframe=%s AND start_ms < %s AND origin='flow'"
                    " ORDER BY start_ms DESC LIMIT 1",
                    (symbol, tf, start_ms - start_ms % tf_ms),
                )
                if row:
                    lo = row[0]
            if end_ms is not None:
                row = self._one(
                    "SELECT close_id FROM bars WHERE symbol=%s AND timeframe=%s AND start_ms >= %s AND origin='flow'"
                    " ORDER BY start_ms LIMIT 1",
                    (symbol, tf, end_ms - end_ms % tf_ms + tf_ms),
                )
                if row:
                    hi = row[0]
            break
        return lo, hi

    def ticks(self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None) -> list[tuple]:
        """The newest `limit` ticks with start <= ts < end, oldest first (columns: TICK_COLUMNS)."""
        if start_ms is None and end_ms is None:
            rows = self._all(f"{_TICK_SELECT} WHERE symbol=%s ORDER BY trade_id DESC LIMIT %s", (symbol, limit))
        else:
            lo, hi = self.trade_id_range(symbol, start_ms, end_ms)
            s, e = _bounds(start_ms, end_ms)
            rows = self._all(
                f"{_TICK_SELECT} WHERE symbol=%s AND trade_id BETWEEN %s AND %s AND ts_ms >= %s AND ts_ms < %s"
                " ORDER BY trade_id DESC LIMIT %s",
                (symbol, lo, hi, s, e, limit),
            )
        rows.reverse()
        return rows

    def iter_ticks(
        self,
        symbol: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        chunk: int = 50_000,
    ) -> Iterator[list[tuple]]:
        """All ticks in range, oldest first, in chunks (a server-side cursor: bounded memory)."""
        lo, hi = (
            self.trade_id_range(symbol, start_ms, end_ms)
            if (start_ms, end_ms) != (None, None)
            else (FAR_PAST, FAR_FUTURE)
        )
        s, e = _bounds(start_ms, end_ms)
        with self.conn.cursor(name="ticklens_export_ticks") as cur:
            cur.itersize = chunk
            cur.execute(
                f"{_TICK_SELECT} WHERE symbol=%s AND trade_id BETWEEN %s AND %s AND ts_ms >= %s AND ts_ms < %s"
                " ORDER BY trade_id",
                (symbol, lo, hi, s, e),
            )
            while rows := cur.fetchmany(chunk):
                yield rows

    def oldest_tick(self, symbol: str) -> tuple[int, int] | None:
        """(trade_id, ts_ms) of the lowest stored trade id (a merge of each partition's key index)."""
        row = self._one("SELECT trade_id, ts_ms FROM ticks WHERE symbol=%s ORDER BY trade_id LIMIT 1", (symbol,))
        return (int(row[0]), int(row[1])) if row else None

    # --- books ---------------------------------------------------------------------------

    def quotes(self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None) -> list[tuple]:
        """The newest `limit` L1 rows with start <= ts < end, oldest first (QUOTE_OUT_COLUMNS)."""
        s, e = _bounds(start_ms, end_ms)
        rows = self._all(
            f"{_QUOTE_SELECT} WHERE symbol=%s AND ts_ms >= %s AND ts_ms < %s"
            " ORDER BY ts_ms DESC, update_id DESC LIMIT %s",
            (symbol, s, e, limit),
        )
        rows.reverse()
        return rows

    def iter_quotes(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 50_000
    ) -> Iterator[list[tuple]]:
        s, e = _bounds(start_ms, end_ms)
        with self.conn.cursor(name="ticklens_export_quotes") as cur:
            cur.itersize = chunk
            cur.execute(
                f"{_QUOTE_SELECT} WHERE symbol=%s AND ts_ms >= %s AND ts_ms < %s ORDER BY ts_ms, update_id",
                (symbol, s, e),
            )
            while rows := cur.fetchmany(chunk):
                yield rows

    def quotes_before(self, symbol: str, times_ms: Sequence[int]) -> list[tuple | None]:
        if not times_ms:
            return []
        cols = ",".join(f"q.{c}" for c in QUOTE_OUT_COLUMNS)
        rows = self._all(  # one round trip: a backward index probe per moment
            f"SELECT t.i, {cols} FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(at, i)"
            f" CROSS JOIN LATERAL ({_QUOTE_SELECT} WHERE symbol=%s AND ts_ms < t.at"
            " ORDER BY ts_ms DESC, update_id DESC LIMIT 1) AS q",
            (list(times_ms), symbol),
        )
        out: list[tuple | None] = [None] * len(times_ms)
        for r in rows:
            out[r[0] - 1] = tuple(r[1:])
        return out

    def last_depth_update(self, symbol: str, at_ms: int) -> tuple[int, int] | None:
        row = self._one(
            "SELECT final_id, ts_ms FROM depth_updates WHERE symbol=%s AND ts_ms <= %s"
            " ORDER BY ts_ms DESC, final_id DESC LIMIT 1",
            (symbol, at_ms),
        )
        return None if row is None else (row[0], row[1])

    def book_snapshot_before(self, symbol: str, update_id: int, levels: bool = True) -> BookSnapshot | None:
        row = self._one(
            "SELECT update_id, ts_ms, recv_ms, kind, depth_limit, complete_low, complete_high"
            f"{', levels' if levels else ''}"
            " FROM book_snapshots WHERE symbol=%s AND update_id <= %s ORDER BY update_id DESC LIMIT 1",
            (symbol, update_id),
        )
        if row is None:
            return None
        uid, ts, recv, kind, limit, low, high = row[:7]
        bids, asks = decode_snapshot(bytes(row[7])) if levels else ([], [])
        complete = None
        if kind == "interval":
            complete = (0.0 if low is None else low, float("inf") if high is None else high)
        return BookSnapshot(symbol, uid, None, ts, recv, bids, asks, limit, complete)

    def _depth(self, symbol: str, rows: list[tuple]) -> list[DepthUpdate]:
        return [
            DepthUpdate(symbol, u0, u, pu, ev, ts, recv, *decode_levels(bytes(b)))
            for u0, u, pu, ev, ts, recv, b in rows
        ]

    def depth_updates(self, symbol: str, from_id: int, to_id: int) -> list[DepthUpdate]:
        rows = self._all(
            f"{_DEPTH_SELECT} WHERE symbol=%s AND final_id >= %s AND final_id <= %s ORDER BY final_id",
            (symbol, from_id, to_id),
        )
        return self._depth(symbol, rows)

    def iter_depth_updates(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 2_000
    ) -> Iterator[list[DepthUpdate]]:
        s, e = _bounds(start_ms, end_ms)
        with self.conn.cursor(name="ticklens_export_depth") as cur:
            cur.itersize = chunk
            cur.execute(
                f"{_DEPTH_SELECT} WHERE symbol=%s AND ts_ms >= %s AND ts_ms < %s ORDER BY final_id", (symbol, s, e)
            )
            while rows := cur.fetchmany(chunk):
                yield self._depth(symbol, rows)

    def book_gaps(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> list[BookGap]:
        s, e = _bounds(start_ms, end_ms)
        rows = self._all(
            "SELECT from_update_id, from_ms, reason, to_update_id, to_ms, status, detail FROM book_gaps"
            " WHERE symbol=%s AND from_ms < %s AND (to_ms IS NULL OR to_ms > %s) ORDER BY from_ms, from_update_id",
            (symbol, e, s),
        )
        return [BookGap(symbol, f, fm, r, t, tm, st, d) for f, fm, r, t, tm, st, d in rows]

    # --- bars ----------------------------------------------------------------------------

    def micro_bars(
        self, symbol: str, timeframe: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[tuple]:
        rows = self._all(MICRO_QUERY, (symbol, timeframe, *_bounds(start_ms, end_ms), limit))
        rows.reverse()
        return rows

    def vpin_buckets(
        self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[tuple]:
        rows = self._all(VPIN_QUERY, (symbol, *_bounds(start_ms, end_ms), limit))
        rows.reverse()
        return rows

    def bars(
        self,
        symbol: str,
        timeframe: str,
        limit: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> list[tuple]:
        """The newest `limit` bars starting in [start, end), oldest first (columns: BAR_OUT_COLUMNS)."""
        s, e = _bounds(start_ms, end_ms)
        rows = self._all(
            f"{_BAR_SELECT} WHERE symbol=%s AND timeframe=%s AND start_ms >= %s AND start_ms < %s"
            " ORDER BY start_ms DESC LIMIT %s",
            (symbol, timeframe, s, e, limit),
        )
        rows.reverse()
        return rows

    def exact_bar_sums(
        self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[ExactSums]:
        s, e = _bounds(start_ms, end_ms)
        rows = self._all(
            f"SELECT {','.join(EXACT_SUM_COLUMNS)} FROM bars"
            " WHERE symbol=%s AND timeframe=%s AND start_ms >= %s AND start_ms < %s ORDER BY start_ms",
            (symbol, timeframe, s, e),
        )
        return [exact_sums(r) for r in rows]

    def iter_bars(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        chunk: int = 50_000,
    ) -> Iterator[list[tuple]]:
        s, e = _bounds(start_ms, end_ms)
        with self.conn.cursor(name="ticklens_export_bars") as cur:
            cur.itersize = chunk
            cur.execute(
                f"{_BAR_SELECT} WHERE symbol=%s AND timeframe=%s AND start_ms >= %s AND start_ms < %s ORDER BY start_ms",
                (symbol, timeframe, s, e),
            )
            while rows := cur.fetchmany(chunk):
                yield rows

    def recent_trade_rate(self, symbol: str, seconds: int = 10) -> float:
        """Trades/s over the last `seconds` of exchange time, from the 1s bars."""
        row = self._one(
            "SELECT start_ms FROM bars WHERE symbol=%s AND timeframe='1s' ORDER BY start_ms DESC LIMIT 1", (symbol,)
        )
        if row is None:
            return 0.0
        n = self._one(
            "SELECT COALESCE(SUM(messages), 0) FROM bars WHERE symbol=%s AND timeframe='1s' AND start_ms > %s",
            (symbol, row[0] - seconds * 1000),
        )[0]  # type: ignore[index]
        return int(n) / seconds

    def missing_bars(self, symbol: str, timeframe: str) -> int:
        """Buckets without a bar between the first and last bar (no trades, or a hole in the data)."""
        n, lo, hi = self._one(  # type: ignore[misc]
            "SELECT COUNT(*), MIN(start_ms), MAX(start_ms) FROM bars WHERE symbol=%s AND timeframe=%s",
            (symbol, timeframe),
        )
        if not n:
            return 0
        return (hi - lo) // TIMEFRAME_MS[timeframe] + 1 - n

    # --- health --------------------------------------------------------------------------

    def status_docs(self) -> dict[str, tuple[dict, int]]:
        """The flow's status documents: key → (document, updated_ms); `flow` merged over a cluster's workers."""
        docs = {k: (v, u) for k, v, u in self._all("SELECT key, value, updated_ms FROM status") if isinstance(v, dict)}
        return with_merged_flow(docs)

    def gap_counts(self) -> dict[str, tuple[int, int]]:
        """symbol → (open gaps, all gaps ever detected)."""
        return {
            s: (int(o), int(t))
            for s, o, t in self._all("SELECT symbol, SUM((status='open')::int), COUNT(*) FROM gaps GROUP BY symbol")
        }

    def reject_count(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM rejects")[0])  # type: ignore[index]

    def rejects_dropped(self) -> int:
        row = self._one("SELECT value FROM meta WHERE key='rejects_dropped'")
        return int(row[0]) if row else 0

    def rejects(self, limit: int) -> list[tuple]:
        rows = self._all("SELECT recv_ms, reason, source, raw FROM rejects ORDER BY id DESC LIMIT %s", (limit,))
        rows.reverse()
        return rows

    def alert_trigger_counts(self) -> dict[int, int]:
        """rule id → triggers stored (one pass over the alert_events key index)."""
        return {int(r): int(n) for r, n in self._all("SELECT rule_id, COUNT(*) FROM alert_events GROUP BY rule_id")}

    def schema_version(self) -> int | None:
        row = self._one("SELECT value FROM meta WHERE key='schema_version'")
        return int(row[0]) if row else None

    def gaps(self, symbol: str) -> list[tuple]:
        """Every trade-id gap of a symbol (columns: GAP_COLUMNS), by first missing id."""
        return self._all(
            "SELECT from_id, to_id, after_ts, detected_ms, filled_ms, status FROM gaps WHERE symbol=%s ORDER BY from_id",
            (symbol,),
        )

    def health(self) -> StoreHealth:
        size, conns = self._one(
            "SELECT pg_database_size(current_database()),"
            " (SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database())"
        )  # type: ignore[misc]
        stats = self._one(
            "SELECT xact_commit, xact_rollback, deadlocks, blks_hit, blks_read FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
        figures = {
            "db_size_bytes": float(size),
            "connections": float(conns),
            "tick_partitions": float(len(partitions(self.conn, "ticks"))),
        }
        if stats:
            commit, rollback, deadlocks, hit, read = stats
            figures |= {
                "xact_commit": float(commit),
                "xact_rollback": float(rollback),
                "deadlocks": float(deadlocks),
                "cache_hit_ratio": float(hit) / (hit + read) if hit + read else 1.0,
            }
        return StoreHealth(
            ok=True,  # a reader is handed out only while the last check found nothing
            problem=None,
            location=self.location,
            schema_version=self.schema_version(),
            figures=figures,
            checked_ms=self.last_check.checked_ms if self.last_check else None,
        )

    # --- analytics -----------------------------------------------------------------------

    def closed_bars(self, symbol: str, timeframe: str, end_ms: int | None = None) -> pl.DataFrame:
        """Closed bars of one symbol (start_ms, close, volume, quote_volume), oldest first."""
        q = "SELECT start_ms, close, volume, quote_volume FROM bars WHERE symbol=%s AND timeframe=%s AND closed"
        args: list = [symbol, timeframe]
        if end_ms is not None:
            q += " AND start_ms < %s"
            args.append(end_ms)
        rows = self._all(q + " ORDER BY start_ms", args)
        return pl.DataFrame(
            rows,
            schema={"start_ms": pl.Int64, "close": pl.Float64, "volume": pl.Float64, "quote_volume": pl.Float64},
            orient="row",
        )

    def pair_rows(
        self,
        pair: str,
        timeframe: str,
        window: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[PairRow]:
        """Stored pair statistics in [start_ms, end_ms), oldest first (the newest `limit` of them)."""
        q = f'SELECT {",".join(PAIR_ROW_FIELDS)} FROM pair_stats WHERE pair=%s AND timeframe=%s AND "window"=%s'
        args: list = [pair, timeframe, window]
        if start_ms is not None:
            q += " AND start_ms >= %s"
            args.append(start_ms)
        if end_ms is not None:
            q += " AND start_ms < %s"
            args.append(end_ms)
        if limit is None:
            return [PairRow(*r) for r in self._all(q + " ORDER BY start_ms", args)]
        rows = self._all(q + " ORDER BY start_ms DESC LIMIT %s", [*args, limit])
        return [PairRow(*r) for r in reversed(rows)]

    def has_pair_rows(self, pair: str, timeframe: str, window: int) -> bool:
        row = self._one(
            'SELECT 1 FROM pair_stats WHERE pair=%s AND timeframe=%s AND "window"=%s LIMIT 1', (pair, timeframe, window)
        )
        return row is not None

    def correlation_rows(
        self, timeframe: str, window: int, sym_a: str, sym_b: str, limit: int
    ) -> list[tuple[int, float | None]]:
        rows = self._all(
            'SELECT start_ms, corr FROM correlation WHERE timeframe=%s AND "window"=%s AND sym_a=%s AND sym_b=%s'
            " ORDER BY start_ms DESC LIMIT %s",
            (timeframe, window, sym_a, sym_b, limit),
        )
        rows.reverse()
        return rows  # type: ignore[return-value]

    def symbol_stats_rows(
        self,
        symbol: str,
        timeframe: str,
        window: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1000,
    ) -> list[SymbolRow]:
        s, e = _bounds(start_ms, end_ms)
        rows = self._all(
            f'SELECT {",".join(SYMBOL_ROW_FIELDS)} FROM symbol_stats WHERE symbol=%s AND timeframe=%s AND "window"=%s'
            " AND start_ms >= %s AND start_ms < %s ORDER BY start_ms DESC LIMIT %s",
            (symbol, timeframe, window, s, e, limit),
        )
        return [SymbolRow(*r) for r in reversed(rows)]

    # --- continuity ----------------------------------------------------------------------

    def bar_span(self, symbol: str, timeframe: str) -> tuple[int | None, int | None]:
        """(first, last) bar start of a symbol and timeframe, or (None, None)."""
        lo, hi = self._one(  # type: ignore[misc]
            "SELECT MIN(start_ms), MAX(start_ms) FROM bars WHERE symbol=%s AND timeframe=%s", (symbol, timeframe)
        )
        return lo, hi

    def flow_bar_ids(self, symbol: str, timeframe: str, lo_ms: int, hi_ms: int) -> FlowBarIds:
        """Collected bars' ids in [lo, hi), and the ids of the collected bars just outside."""
        prev = self._one(
            "SELECT last_id FROM bars WHERE symbol=%s AND timeframe=%s AND start_ms<%s AND origin='flow'"
            " ORDER BY start_ms DESC LIMIT 1",
            (symbol, timeframe, lo_ms),
        )
        rows = self._all(
            "SELECT start_ms, first_id, last_id FROM bars WHERE symbol=%s AND timeframe=%s AND start_ms>=%s"
            " AND start_ms<%s AND origin='flow' ORDER BY start_ms",
            (symbol, timeframe, lo_ms, hi_ms),
        )
        nxt = self._one(
            "SELECT first_id FROM bars WHERE symbol=%s AND timeframe=%s AND start_ms>=%s AND origin='flow'"
            " ORDER BY start_ms LIMIT 1",
            (symbol, timeframe, hi_ms),
        )
        return FlowBarIds(rows, prev[0] if prev else None, nxt[0] if nxt else None)
