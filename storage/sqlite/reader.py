"""The SQLite `StoreReader`: the queries the API uses, over one pooled read-only connection.

Parameterised SQL, plain tuples out (column orders in `storage.port`). Ticks have no time index (it would slow inserts), so a time
range on ticks is turned into a trade-id range via the bars' open/close ids and
then served by the (symbol, trade_id) primary key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import polars as pl

from storage.codec import decode_levels, decode_snapshot
from storage.port import BAR_OUT_COLUMNS, QUOTE_OUT_COLUMNS, TICK_COLUMNS, StoreHealth, SymbolSummary
from storage.sqlite.micro import read_micro_bars, read_vpin
from ticklens.domain.bars import EXACT_SUM_COLUMNS, ExactSums, exact_sums
from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate
from ticklens.domain.continuity import FlowBarIds
from ticklens.domain.stats.pair import PAIR_ROW_FIELDS, PairRow
from ticklens.domain.stats.symbol import SYMBOL_ROW_FIELDS, SymbolRow
from ticklens.domain.timeframes import TIMEFRAME_MS

FAR_PAST = -(2**62)
FAR_FUTURE = 2**62

# TICK_COLUMNS out of the compact tick_rows (schema v4).
_TICK_SELECT = (
    "SELECT trade_id, ts_ms, price, qty, is_buyer_maker, trade_id - first_off,"
    " trade_id - first_off + last_span FROM tick_rows"
)
assert TICK_COLUMNS == ("trade_id", "ts_ms", "price", "qty", "is_buyer_maker", "first_id", "last_id")
_BAR_SELECT = f"SELECT {','.join(BAR_OUT_COLUMNS)} FROM bars"
_QUOTE_SELECT = f"SELECT {','.join(QUOTE_OUT_COLUMNS)} FROM quotes"
_DEPTH_SELECT = "SELECT first_id, final_id, prev_id, event_ms, ts_ms, recv_ms, levels FROM depth_updates"
# Tables whose primary key starts with the symbol text (ticks are keyed by symbol id since v4).
_KEYED_TABLES = ("bars", "quotes", "depth_updates")


def _bounds(start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    return (FAR_PAST if start_ms is None else start_ms, FAR_FUTURE if end_ms is None else end_ms)


# --- symbols -------------------------------------------------------------------------


class SqliteReader:
    """`StoreReader` over one connection (read-only is enough; WAL: never blocks the writer)."""

    def __init__(self, conn: sqlite3.Connection, path: str = "", last_check: StoreHealth | None = None) -> None:
        self.conn = conn
        self.path = path
        self.last_check = last_check

    def _sym(self, symbol: str) -> int | None:
        """The symbol's id in `symbols` (None: it never had a tick)."""
        row = self.conn.execute("SELECT id FROM symbols WHERE symbol=?", (symbol,)).fetchone()
        return None if row is None else int(row[0])

    def _tick_symbols(self) -> list[str]:
        return [
            s
            for (s,) in self.conn.execute(
                "SELECT symbol FROM symbols WHERE EXISTS (SELECT 1 FROM tick_rows WHERE sym = symbols.id)"
            )
        ]

    def _distinct_symbols(self, table: str) -> list[str]:
        """Distinct symbols by skipping along the primary key (no full scan)."""
        assert table in _KEYED_TABLES
        out: list[str] = []
        last = ""
        while True:
            row = self.conn.execute(f"SELECT MIN(symbol) FROM {table} WHERE symbol > ?", (last,)).fetchone()
            if row is None or row[0] is None:
                return out
            last = row[0]
            out.append(last)

    def symbols_with_data(self) -> list[str]:
        keyed = set().union(*(self._distinct_symbols(t) for t in _KEYED_TABLES))
        return sorted(keyed | set(self._tick_symbols()))

    def has_data(self, symbol: str) -> bool:
        for table in _KEYED_TABLES:
            if self.conn.execute(f"SELECT 1 FROM {table} WHERE symbol=? LIMIT 1", (symbol,)).fetchone():
                return True
        sid = self._sym(symbol)
        return (
            sid is not None
            and self.conn.execute("SELECT 1 FROM tick_rows WHERE sym=? LIMIT 1", (sid,)).fetchone() is not None
        )

    def symbol_summary(self, symbol: str) -> SymbolSummary:
        tfs = [
            tf
            for tf in TIMEFRAME_MS
            if self.conn.execute("SELECT 1 FROM bars WHERE symbol=? AND timeframe=? LIMIT 1", (symbol, tf)).fetchone()
        ]
        first_ms = last_ms = None
        last_price = None
        ticks = 0
        if tfs:
            small, large = tfs[0], tfs[-1]
            first_ms = self.conn.execute(
                "SELECT start_ms FROM bars WHERE symbol=? AND timeframe=? ORDER BY start_ms LIMIT 1", (symbol, small)
            ).fetchone()[0]
            row = self.conn.execute(
                "SELECT close_ts, close, start_ms FROM bars WHERE symbol=? AND timeframe=? ORDER BY start_ms DESC LIMIT 1",
                (symbol, small),
            ).fetchone()
            last_ms, last_price = row[0], row[1]
            ticks = self.conn.execute(
                "SELECT COALESCE(SUM(messages), 0) FROM bars WHERE symbol=? AND timeframe=?", (symbol, large)
            ).fetchone()[0]
        uploaded = (
            self.conn.execute("SELECT 1 FROM bars WHERE symbol=? AND origin='upload' LIMIT 1", (symbol,)).fetchone()
            is not None
        )
        return SymbolSummary(symbol, tfs, first_ms, last_ms, last_price, int(ticks), uploaded)

    # --- ticks ---------------------------------------------------------------------------

    def trade_id_range(self, symbol: str, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
        """A trade-id range that holds every tick with start <= ts < end (a superset).

        Uses the smallest timeframe's collected bars: one bar beyond each end is taken
        so ids that are not strictly time-ordered at a bar boundary are still covered.
        """
        lo, hi = FAR_PAST, FAR_FUTURE
        for tf, tf_ms in TIMEFRAME_MS.items():
            if not self.conn.execute(
                "SELECT 1 FROM bars WHERE symbol=? AND timeframe=? AND origin='flow' LIMIT 1", (symbol, tf)
            ).fetchone():
                continue
            if start_ms is not None:
                row = self.conn.execute(
                    "SELECT open_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms < ? AND origin='flow'"
                    " ORDER BY start_ms DESC LIMIT 1",
                    (symbol, tf, start_ms - start_ms % tf_ms),
                ).fetchone()
                if row:
                    lo = row[0]
            if end_ms is not None:
                row = self.conn.execute(
                    "SELECT close_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms >= ? AND origin='flow'"
                    " ORDER BY start_ms LIMIT 1",
                    (symbol, tf, end_ms - end_ms % tf_ms + tf_ms),
                ).fetchone()
                if row:
                    hi = row[0]
            break
        return lo, hi

    def ticks(self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None) -> list[tuple]:
        """The newest `limit` ticks with start <= ts < end, oldest first (columns: TICK_COLUMNS)."""
        sid = self._sym(symbol)
        if sid is None:
            return []
        if start_ms is None and end_ms is None:
            rows = self.conn.execute(
                f"{_TICK_SELECT} WHERE sym=? ORDER BY trade_id DESC LIMIT ?", (sid, limit)
            ).fetchall()
        else:
            lo, hi = self.trade_id_range(symbol, start_ms, end_ms)
            s, e = _bounds(start_ms, end_ms)
            rows = self.conn.execute(
                f"{_TICK_SELECT} WHERE sym=? AND trade_id BETWEEN ? AND ? AND ts_ms >= ? AND ts_ms < ?"
                " ORDER BY trade_id DESC LIMIT ?",
                (sid, lo, hi, s, e, limit),
            ).fetchall()
        rows.reverse()
        return rows

    def iter_ticks(
        self,
        symbol: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        chunk: int = 50_000,
    ) -> Iterator[list[tuple]]:
        """All ticks in range, oldest first, in chunks (for streamed exports)."""
        sid = self._sym(symbol)
        if sid is None:
            return
        lo, hi = (
            self.trade_id_range(symbol, start_ms, end_ms)
            if (start_ms, end_ms) != (None, None)
            else (FAR_PAST, FAR_FUTURE)
        )
        s, e = _bounds(start_ms, end_ms)
        cur = self.conn.execute(
            f"{_TICK_SELECT} WHERE sym=? AND trade_id BETWEEN ? AND ? AND ts_ms >= ? AND ts_ms < ? ORDER BY trade_id",
            (sid, lo, hi, s, e),
        )
        while rows := cur.fetchmany(chunk):
            yield rows

    def oldest_tick(self, symbol: str) -> tuple[int, int] | None:
        sid = self._sym(symbol)
        if sid is None:
            return None
        row = self.conn.execute(
            "SELECT trade_id, ts_ms FROM tick_rows WHERE sym=? ORDER BY trade_id LIMIT 1", (sid,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    # --- books ---------------------------------------------------------------------------

    def quotes(self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None) -> list[tuple]:
        """The newest `limit` L1 rows with start <= ts < end, oldest first (QUOTE_OUT_COLUMNS)."""
        s, e = _bounds(start_ms, end_ms)
        rows = self.conn.execute(
            f"{_QUOTE_SELECT} WHERE symbol=? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms DESC, update_id DESC LIMIT ?",
            (symbol, s, e, limit),
        ).fetchall()
        rows.reverse()
        return rows

    def iter_quotes(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 50_000
    ) -> Iterator[list[tuple]]:
        s, e = _bounds(start_ms, end_ms)
        cur = self.conn.execute(
            f"{_QUOTE_SELECT} WHERE symbol=? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms, update_id", (symbol, s, e)
        )
        while rows := cur.fetchmany(chunk):
            yield rows

    def quotes_before(self, symbol: str, times_ms: Sequence[int]) -> list[tuple | None]:
        # The time index holds the key too (WITHOUT ROWID), so each probe is one descent of it.
        sql = f"{_QUOTE_SELECT} WHERE symbol=? AND ts_ms < ? ORDER BY ts_ms DESC, update_id DESC LIMIT 1"
        return [self.conn.execute(sql, (symbol, t)).fetchone() for t in times_ms]

    def last_depth_update(self, symbol: str, at_ms: int) -> tuple[int, int] | None:
        row = self.conn.execute(
            "SELECT final_id, ts_ms FROM depth_updates WHERE symbol=? AND ts_ms <= ?"
            " ORDER BY ts_ms DESC, final_id DESC LIMIT 1",
            (symbol, at_ms),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def book_snapshot_before(self, symbol: str, update_id: int, levels: bool = True) -> BookSnapshot | None:
        row = self.conn.execute(
            "SELECT update_id, ts_ms, recv_ms, kind, depth_limit, complete_low, complete_high"
            f"{', levels' if levels else ''}"
            " FROM book_snapshots WHERE symbol=? AND update_id <= ? ORDER BY update_id DESC LIMIT 1",
            (symbol, update_id),
        ).fetchone()
        if row is None:
            return None
        uid, ts, recv, kind, limit, low, high = row[:7]
        bids, asks = decode_snapshot(row[7]) if levels else ([], [])
        complete = None
        if kind == "interval":
            complete = (0.0 if low is None else low, float("inf") if high is None else high)
        return BookSnapshot(symbol, uid, None, ts, recv, bids, asks, limit, complete)

    def _depth(self, symbol: str, rows: list[tuple]) -> list[DepthUpdate]:
        return [DepthUpdate(symbol, u0, u, pu, ev, ts, recv, *decode_levels(b)) for u0, u, pu, ev, ts, recv, b in rows]

    def depth_updates(self, symbol: str, from_id: int, to_id: int) -> list[DepthUpdate]:
        rows = self.conn.execute(
            f"{_DEPTH_SELECT} WHERE symbol=? AND final_id >= ? AND final_id <= ? ORDER BY final_id",
            (symbol, from_id, to_id),
        ).fetchall()
        return self._depth(symbol, rows)

    def iter_depth_updates(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 2_000
    ) -> Iterator[list[DepthUpdate]]:
        s, e = _bounds(start_ms, end_ms)
        cur = self.conn.execute(
            f"{_DEPTH_SELECT} WHERE symbol=? AND ts_ms >= ? AND ts_ms < ? ORDER BY final_id", (symbol, s, e)
        )
        while rows := cur.fetchmany(chunk):
            yield self._depth(symbol, rows)

    def book_gaps(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> list[BookGap]:
        s, e = _bounds(start_ms, end_ms)
        rows = self.conn.execute(
            "SELECT from_update_id, from_ms, reason, to_update_id, to_ms, status, detail FROM book_gaps"
            " WHERE symbol=? AND from_ms < ? AND (to_ms IS NULL OR to_ms > ?) ORDER BY from_ms, from_update_id",
            (symbol, e, s),
        ).fetchall()
        return [BookGap(symbol, f, fm, r, t, tm, st, d) for f, fm, r, t, tm, st, d in rows]

    # --- bars ----------------------------------------------------------------------------

    def micro_bars(
        self, symbol: str, timeframe: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[tuple]:
        return read_micro_bars(self.conn, symbol, timeframe, limit, *_bounds(start_ms, end_ms))

    def vpin_buckets(
        self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[tuple]:
        return read_vpin(self.conn, symbol, limit, *_bounds(start_ms, end_ms))

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
        rows = self.conn.execute(
            f"{_BAR_SELECT} WHERE symbol=? AND timeframe=? AND start_ms >= ? AND start_ms < ?"
            " ORDER BY start_ms DESC LIMIT ?",
            (symbol, timeframe, s, e, limit),
        ).fetchall()
        rows.reverse()
        return rows

    def exact_bar_sums(
        self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[ExactSums]:
        s, e = _bounds(start_ms, end_ms)
        rows = self.conn.execute(
            f"SELECT {','.join(EXACT_SUM_COLUMNS)} FROM bars"
            " WHERE symbol=? AND timeframe=? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms",
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
        cur = self.conn.execute(
            f"{_BAR_SELECT} WHERE symbol=? AND timeframe=? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms",
            (symbol, timeframe, s, e),
        )
        while rows := cur.fetchmany(chunk):
            yield rows

    def recent_trade_rate(self, symbol: str, seconds: int = 10) -> float:
        """Trades/s over the last `seconds` of exchange time, from the 1s bars."""
        row = self.conn.execute(
            "SELECT start_ms FROM bars WHERE symbol=? AND timeframe='1s' ORDER BY start_ms DESC LIMIT 1", (symbol,)
        ).fetchone()
        if row is None:
            return 0.0
        n = self.conn.execute(
            "SELECT COALESCE(SUM(messages), 0) FROM bars WHERE symbol=? AND timeframe='1s' AND start_ms > ?",
            (symbol, row[0] - seconds * 1000),
        ).fetchone()[0]
        return n / seconds

    def missing_bars(self, symbol: str, timeframe: str) -> int:
        """Buckets without a bar between the first and last bar (no trades, or a hole in the data)."""
        n, lo, hi = self.conn.execute(
            "SELECT COUNT(*), MIN(start_ms), MAX(start_ms) FROM bars WHERE symbol=? AND timeframe=?",
            (symbol, timeframe),
        ).fetchone()
        if not n:
            return 0
        return (hi - lo) // TIMEFRAME_MS[timeframe] + 1 - n

    # --- health --------------------------------------------------------------------------

    def status_docs(self) -> dict[str, tuple[dict, int]]:
        """The flow's status documents: key → (document, updated_ms)."""
        out = {}
        for key, value, updated in self.conn.execute("SELECT key, value, updated_ms FROM status"):
            try:
                out[key] = (orjson.loads(value), updated)
            except orjson.JSONDecodeError:
                continue
        return out

    def gap_counts(self) -> dict[str, tuple[int, int]]:
        """symbol → (open gaps, all gaps ever detected)."""
        return {
            s: (int(o), int(t))
            for s, o, t in self.conn.execute("SELECT symbol, SUM(status='open'), COUNT(*) FROM gaps GROUP BY symbol")
        }

    def reject_count(self) -> int:
        # The ids held are one contiguous run (see writer._REJECTS_TRIM): two key look-ups
        # instead of a scan of up to `rejects_max_rows` rows of 4 KiB.
        return int(self.conn.execute("SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM rejects").fetchone()[0])

    def rejects_dropped(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key='rejects_dropped'").fetchone()
        return int(row[0]) if row else 0

    def rejects(self, limit: int) -> list[tuple]:
        rows = self.conn.execute(
            "SELECT recv_ms, reason, source, raw FROM rejects ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        rows.reverse()
        return rows

    def alert_trigger_counts(self) -> dict[int, int]:
        """rule id → triggers stored (one pass over the alert_events key index)."""
        return {
            int(r): int(n) for r, n in self.conn.execute("SELECT rule_id, COUNT(*) FROM alert_events GROUP BY rule_id")
        }

    def schema_version(self) -> int | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else None

    def gaps(self, symbol: str) -> list[tuple]:
        """Every trade-id gap of a symbol (columns: GAP_COLUMNS), by first missing id."""
        return self.conn.execute(
            "SELECT from_id, to_id, after_ts, detected_ms, filled_ms, status FROM gaps WHERE symbol=? ORDER BY from_id",
            (symbol,),
        ).fetchall()

    def health(self) -> StoreHealth:
        p = Path(self.path)
        sizes = {name: f.stat().st_size for name, f in (("db", p), ("wal", p.with_name(p.name + "-wal"))) if f.exists()}
        return StoreHealth(
            ok=True,  # a reader is handed out only while the last check found nothing
            problem=None,
            location=str(p),
            schema_version=self.schema_version(),
            figures={"db_size_bytes": float(sum(sizes.values())), "wal_bytes": float(sizes.get("wal", 0))},
            checked_ms=self.last_check.checked_ms if self.last_check else None,
        )

    # --- analytics -----------------------------------------------------------------------

    def closed_bars(self, symbol: str, timeframe: str, end_ms: int | None = None) -> pl.DataFrame:
        """Closed bars of one symbol (start_ms, close, volume, quote_volume), oldest first."""
        sql = "SELECT start_ms, close, volume, quote_volume FROM bars WHERE symbol=? AND timeframe=? AND closed=1"
        args: list = [symbol, timeframe]
        if end_ms is not None:
            sql += " AND start_ms < ?"
            args.append(end_ms)
        rows = self.conn.execute(sql + " ORDER BY start_ms", args).fetchall()
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
        sql = f"SELECT {','.join(PAIR_ROW_FIELDS)} FROM pair_stats WHERE pair=? AND timeframe=? AND window=?"
        args: list = [pair, timeframe, window]
        if start_ms is not None:
            sql += " AND start_ms >= ?"
            args.append(start_ms)
        if end_ms is not None:
            sql += " AND start_ms < ?"
            args.append(end_ms)
        if limit is None:
            return [PairRow(*r) for r in self.conn.execute(sql + " ORDER BY start_ms", args)]
        rows = self.conn.execute(sql + " ORDER BY start_ms DESC LIMIT ?", [*args, limit]).fetchall()
        return [PairRow(*r) for r in reversed(rows)]

    def has_pair_rows(self, pair: str, timeframe: str, window: int) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM pair_stats WHERE pair=? AND timeframe=? AND window=? LIMIT 1", (pair, timeframe, window)
        ).fetchone()
        return row is not None

    def correlation_rows(
        self, timeframe: str, window: int, sym_a: str, sym_b: str, limit: int
    ) -> list[tuple[int, float | None]]:
        rows = self.conn.execute(
            "SELECT start_ms, corr FROM correlation WHERE timeframe=? AND window=? AND sym_a=? AND sym_b=?"
            " ORDER BY start_ms DESC LIMIT ?",
            (timeframe, window, sym_a, sym_b, limit),
        ).fetchall()
        rows.reverse()
        return rows

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
        rows = self.conn.execute(
            f"SELECT {','.join(SYMBOL_ROW_FIELDS)} FROM symbol_stats WHERE symbol=? AND timeframe=? AND window=?"
            " AND start_ms >= ? AND start_ms < ? ORDER BY start_ms DESC LIMIT ?",
            (symbol, timeframe, window, s, e, limit),
        ).fetchall()
        return [SymbolRow(*r) for r in reversed(rows)]

    # --- continuity ----------------------------------------------------------------------

    def bar_span(self, symbol: str, timeframe: str) -> tuple[int | None, int | None]:
        """(first, last) bar start of a symbol and timeframe, or (None, None)."""
        lo, hi = self.conn.execute(
            "SELECT MIN(start_ms), MAX(start_ms) FROM bars WHERE symbol=? AND timeframe=?", (symbol, timeframe)
        ).fetchone()
        return lo, hi

    def flow_bar_ids(self, symbol: str, timeframe: str, lo_ms: int, hi_ms: int) -> FlowBarIds:
        """Collected bars' ids in [lo, hi), and the ids of the collected bars just outside."""
        prev = self.conn.execute(
            "SELECT last_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms<? AND origin='flow'"
            " ORDER BY start_ms DESC LIMIT 1",
            (symbol, timeframe, lo_ms),
        ).fetchone()
        rows = self.conn.execute(
            "SELECT start_ms, first_id, last_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms>=?"
            " AND start_ms<? AND origin='flow' ORDER BY start_ms",
            (symbol, timeframe, lo_ms, hi_ms),
        ).fetchall()
        nxt = self.conn.execute(
            "SELECT first_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms>=? AND origin='flow'"
            " ORDER BY start_ms LIMIT 1",
            (symbol, timeframe, hi_ms),
        ).fetchone()
        return FlowBarIds(rows, prev[0] if prev else None, nxt[0] if nxt else None)
