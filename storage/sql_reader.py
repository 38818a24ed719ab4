"""The `StoreReader` queries written once, for every SQL backend.

Both backends keep the same tables with the same keys (docs/store.md), so the API's
queries are the same text: written here with `?` placeholders and portable SQL
(`"window"` quoted, `closed` as a truth value, `CASE` instead of summing booleans).
A backend says how a query runs (`_one`, `_all`, `_chunks`), how it selects its
ticks and bars (SQLite keeps ticks compactly in `tick_rows` by a symbol id;
PostgreSQL in partitioned `ticks` by symbol), and adds what only it has (health
figures, status documents). Rows come back as plain tuples in `storage.port`'s
column orders, flags as 0/1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from storage.codec import decode_levels, decode_snapshot
from storage.port import EVER, QUOTE_OUT_COLUMNS, VPIN_OUT_COLUMNS, Span, StoreHealth, SymbolSummary
from ticklens.domain.bars import EXACT_SUM_COLUMNS, ExactSums, exact_sums
from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate
from ticklens.domain.continuity import FlowBarIds
from ticklens.domain.stats.pair import PAIR_ROW_FIELDS, PairRow
from ticklens.domain.stats.symbol import SYMBOL_ROW_FIELDS, SymbolRow
from ticklens.domain.timeframes import TIMEFRAME_MS
from ticklens.domain.times import FAR_FUTURE, FAR_PAST, bounds

if TYPE_CHECKING:  # closed_bars imports it: the flow's store never calls it (start-up ~0.1 s)
    import polars as pl

QUOTE_SELECT = f"SELECT {','.join(QUOTE_OUT_COLUMNS)} FROM quotes"
_DEPTH_SELECT = "SELECT first_id, final_id, prev_id, event_ms, ts_ms, recv_ms, levels FROM depth_updates"
# Tables whose primary key starts with the symbol's name (the backend's ticks: `_tick_symbols`).
_KEYED_TABLES = ("bars", "quotes", "depth_updates")
# The rolling-statistics tables: their key column and their row fields (keyed key, timeframe, window, start_ms).
_ROLLING_TABLES = {"pair_stats": ("pair", PAIR_ROW_FIELDS), "symbol_stats": ("symbol", SYMBOL_ROW_FIELDS)}

C = TypeVar("C")  # the backend's connection


class _Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class SqlReader(Generic[C]):
    """The shared queries over one connection `conn`; a backend subclass supplies the hooks below.

    `location` names the store in its health (a file, a server), `last_check` is the store's last
    integrity check.
    """

    BAR_SELECT: str  # SELECT BAR_OUT_COLUMNS (flags as 0/1) FROM bars
    TICK_SELECT: str  # SELECT TICK_COLUMNS (flags as 0/1) FROM the tick table
    TICK_TABLE: str  # the tick table, keyed by (TICK_KEY, trade_id)
    TICK_KEY: str  # its symbol column
    MICRO_SELECT: str  # SELECT MICRO_OUT_COLUMNS (flags as 0/1) FROM micro_bars

    def __init__(self, conn: C, location: str = "", last_check: StoreHealth | None = None) -> None:
        self.conn = conn
        self.location = location
        self.last_check = last_check

    def _one(self, query: str, args: tuple | list = ()) -> tuple | None:
        return self._execute(query, args).fetchone()

    def _all(self, query: str, args: tuple | list = ()) -> list[tuple]:
        return self._execute(query, args).fetchall()

    # --- hooks -----------------------------------------------------------------------------

    def _execute(self, query: str, args: tuple | list) -> _Cursor:
        """Run one of the shared queries (`?` placeholders) on `conn`."""
        raise NotImplementedError

    def _chunks(self, query: str, args: tuple | list, chunk: int) -> Iterator[list[tuple]]:
        """The rows of one query, `chunk` at a time (bounded memory for exports)."""
        raise NotImplementedError

    def _tick_key(self, symbol: str) -> object | None:
        """The value of TICK_KEY for a symbol (None: it has no ticks)."""
        raise NotImplementedError

    def _tick_symbols(self) -> list[str]:
        raise NotImplementedError

    # --- symbols ---------------------------------------------------------------------------

    def _distinct_symbols(self, table: str) -> list[str]:
        """Distinct symbols by skipping along the primary key (no full scan)."""
        assert table in ("ticks", *_KEYED_TABLES)
        out: list[str] = []
        last = ""
        while True:
            row = self._one(f"SELECT MIN(symbol) FROM {table} WHERE symbol > ?", (last,))
            if row is None or row[0] is None:
                return out
            last = row[0]
            out.append(last)

    def symbols_with_data(self) -> list[str]:
        keyed = set().union(*(self._distinct_symbols(t) for t in _KEYED_TABLES))
        return sorted(keyed | set(self._tick_symbols()))

    def has_data(self, symbol: str) -> bool:
        if any(self._one(f"SELECT 1 FROM {t} WHERE symbol=? LIMIT 1", (symbol,)) for t in _KEYED_TABLES):
            return True
        key = self._tick_key(symbol)
        return (
            key is not None
            and self._one(f"SELECT 1 FROM {self.TICK_TABLE} WHERE {self.TICK_KEY}=? LIMIT 1", (key,)) is not None
        )

    def symbol_summary(self, symbol: str) -> SymbolSummary:
        tfs = [
            tf
            for tf in TIMEFRAME_MS
            if self._one("SELECT 1 FROM bars WHERE symbol=? AND timeframe=? LIMIT 1", (symbol, tf))
        ]
        first_ms = last_ms = None
        last_price = None
        ticks = 0
        if tfs:
            small, large = tfs[0], tfs[-1]
            first_ms = self._one(  # type: ignore[index]
                "SELECT start_ms FROM bars WHERE symbol=? AND timeframe=? ORDER BY start_ms LIMIT 1", (symbol, small)
            )[0]
            row = self._one(
                "SELECT close_ts, close FROM bars WHERE symbol=? AND timeframe=? ORDER BY start_ms DESC LIMIT 1",
                (symbol, small),
            )
            last_ms, last_price = row[0], row[1]  # type: ignore[index]
            ticks = self._one(  # type: ignore[index]
                "SELECT COALESCE(SUM(messages), 0) FROM bars WHERE symbol=? AND timeframe=?", (symbol, large)
            )[0]
        uploaded = self._one("SELECT 1 FROM bars WHERE symbol=? AND origin='upload' LIMIT 1", (symbol,)) is not None
        return SymbolSummary(symbol, tfs, first_ms, last_ms, last_price, int(ticks), uploaded)

    # --- ticks -----------------------------------------------------------------------------

    def trade_id_range(self, symbol: str, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
        """A trade-id range that holds every tick with start <= ts < end (a superset).

        Ticks have no time index (it would slow inserts): the smallest timeframe's collected
        bars give the ids, one bar beyond each end, so ids that are not strictly time-ordered
        at a bar boundary are still covered.
        """
        lo, hi = FAR_PAST, FAR_FUTURE
        for tf, tf_ms in TIMEFRAME_MS.items():
            if not self._one(
                "SELECT 1 FROM bars WHERE symbol=? AND timeframe=? AND origin='flow' LIMIT 1", (symbol, tf)
            ):
                continue
            if start_ms is not None:
                row = self._one(
                    "SELECT open_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms < ? AND origin='flow'"
                    " ORDER BY start_ms DESC LIMIT 1",
                    (symbol, tf, start_ms - start_ms % tf_ms),
                )
                if row:
                    lo = row[0]
            if end_ms is not None:
                row = self._one(
                    "SELECT close_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms >= ? AND origin='flow'"
                    " ORDER BY start_ms LIMIT 1",
                    (symbol, tf, end_ms - end_ms % tf_ms + tf_ms),
                )
                if row:
                    hi = row[0]
            break
        return lo, hi

    def _tick_range(self, symbol: str, key: object, start_ms: int | None, end_ms: int | None) -> tuple[str, list]:
        """The WHERE clause and arguments of a symbol's ticks in [start, end)."""
        lo, hi = (
            (FAR_PAST, FAR_FUTURE)
            if (start_ms, end_ms) == (None, None)
            else self.trade_id_range(symbol, start_ms, end_ms)
        )
        s, e = bounds(start_ms, end_ms)
        where = f"WHERE {self.TICK_KEY}=? AND trade_id BETWEEN ? AND ? AND ts_ms >= ? AND ts_ms < ?"
        return where, [key, lo, hi, s, e]

    def ticks(self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None) -> list[tuple]:
        """The newest `limit` ticks with start <= ts < end, oldest first (columns: TICK_COLUMNS)."""
        key = self._tick_key(symbol)
        if key is None:
            return []
        if start_ms is None and end_ms is None:
            rows = self._all(f"{self.TICK_SELECT} WHERE {self.TICK_KEY}=? ORDER BY trade_id DESC LIMIT ?", (key, limit))
        else:
            where, args = self._tick_range(symbol, key, start_ms, end_ms)
            rows = self._all(f"{self.TICK_SELECT} {where} ORDER BY trade_id DESC LIMIT ?", [*args, limit])
        rows.reverse()
        return rows

    def iter_ticks(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 50_000
    ) -> Iterator[list[tuple]]:
        """All ticks in range, oldest first, in chunks (for streamed exports)."""
        key = self._tick_key(symbol)
        if key is None:
            return
        where, args = self._tick_range(symbol, key, start_ms, end_ms)
        yield from self._chunks(f"{self.TICK_SELECT} {where} ORDER BY trade_id", args, chunk)

    def oldest_tick(self, symbol: str) -> tuple[int, int] | None:
        """(trade_id, ts_ms) of the lowest stored trade id."""
        key = self._tick_key(symbol)
        if key is None:
            return None
        row = self._one(
            f"SELECT trade_id, ts_ms FROM {self.TICK_TABLE} WHERE {self.TICK_KEY}=? ORDER BY trade_id LIMIT 1", (key,)
        )
        return (int(row[0]), int(row[1])) if row else None

    # --- books -----------------------------------------------------------------------------

    def quotes(self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None) -> list[tuple]:
        """The newest `limit` L1 rows with start <= ts < end, oldest first (QUOTE_OUT_COLUMNS)."""
        s, e = bounds(start_ms, end_ms)
        rows = self._all(
            f"{QUOTE_SELECT} WHERE symbol=? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms DESC, update_id DESC LIMIT ?",
            (symbol, s, e, limit),
        )
        rows.reverse()
        return rows

    def iter_quotes(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 50_000
    ) -> Iterator[list[tuple]]:
        s, e = bounds(start_ms, end_ms)
        q = f"{QUOTE_SELECT} WHERE symbol=? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms, update_id"
        yield from self._chunks(q, (symbol, s, e), chunk)

    def last_depth_update(self, symbol: str, at_ms: int) -> tuple[int, int] | None:
        row = self._one(
            "SELECT final_id, ts_ms FROM depth_updates WHERE symbol=? AND ts_ms <= ?"
            " ORDER BY ts_ms DESC, final_id DESC LIMIT 1",
            (symbol, at_ms),
        )
        return None if row is None else (row[0], row[1])

    def book_snapshot_before(self, symbol: str, update_id: int, levels: bool = True) -> BookSnapshot | None:
        row = self._one(
            "SELECT update_id, ts_ms, recv_ms, kind, depth_limit, complete_low, complete_high"
            f"{', levels' if levels else ''}"
            " FROM book_snapshots WHERE symbol=? AND update_id <= ? ORDER BY update_id DESC LIMIT 1",
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
            f"{_DEPTH_SELECT} WHERE symbol=? AND final_id >= ? AND final_id <= ? ORDER BY final_id",
            (symbol, from_id, to_id),
        )
        return self._depth(symbol, rows)

    def iter_depth_updates(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 2_000
    ) -> Iterator[list[DepthUpdate]]:
        s, e = bounds(start_ms, end_ms)
        q = f"{_DEPTH_SELECT} WHERE symbol=? AND ts_ms >= ? AND ts_ms < ? ORDER BY final_id"
        for rows in self._chunks(q, (symbol, s, e), chunk):
            yield self._depth(symbol, rows)

    def book_gaps(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> list[BookGap]:
        s, e = bounds(start_ms, end_ms)
        rows = self._all(
            "SELECT from_update_id, from_ms, reason, to_update_id, to_ms, status, detail FROM book_gaps"
            " WHERE symbol=? AND from_ms < ? AND (to_ms IS NULL OR to_ms > ?) ORDER BY from_ms, from_update_id",
            (symbol, e, s),
        )
        return [BookGap(symbol, f, fm, r, t, tm, st, d) for f, fm, r, t, tm, st, d in rows]

    # --- microstructure --------------------------------------------------------------------

    def micro_bars(
        self, symbol: str, timeframe: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[tuple]:
        rows = self._all(
            f"{self.MICRO_SELECT} WHERE symbol=? AND timeframe=? AND start_ms >= ? AND start_ms < ?"
            " ORDER BY start_ms DESC LIMIT ?",
            (symbol, timeframe, *bounds(start_ms, end_ms), limit),
        )
        rows.reverse()
        return rows

    def vpin_buckets(
        self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[tuple]:
        rows = self._all(
            f"SELECT {','.join(VPIN_OUT_COLUMNS)} FROM vpin WHERE symbol=? AND end_ms >= ? AND end_ms < ?"
            " ORDER BY bucket DESC LIMIT ?",
            (symbol, *bounds(start_ms, end_ms), limit),
        )
        rows.reverse()
        return rows

    # --- bars ------------------------------------------------------------------------------

    def bars(
        self, symbol: str, timeframe: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[tuple]:
        """The newest `limit` bars starting in [start, end), oldest first (columns: BAR_OUT_COLUMNS)."""
        s, e = bounds(start_ms, end_ms)
        rows = self._all(
            f"{self.BAR_SELECT} WHERE symbol=? AND timeframe=? AND start_ms >= ? AND start_ms < ?"
            " ORDER BY start_ms DESC LIMIT ?",
            (symbol, timeframe, s, e, limit),
        )
        rows.reverse()
        return rows

    def exact_bar_sums(
        self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[ExactSums]:
        s, e = bounds(start_ms, end_ms)
        rows = self._all(
            f"SELECT {','.join(EXACT_SUM_COLUMNS)} FROM bars"
            " WHERE symbol=? AND timeframe=? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms",
            (symbol, timeframe, s, e),
        )
        return [exact_sums(r) for r in rows]

    def iter_bars(
        self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 50_000
    ) -> Iterator[list[tuple]]:
        s, e = bounds(start_ms, end_ms)
        yield from self._chunks(
            f"{self.BAR_SELECT} WHERE symbol=? AND timeframe=? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms",
            (symbol, timeframe, s, e),
            chunk,
        )

    def recent_trade_rate(self, symbol: str, seconds: int = 10) -> float:
        """Trades/s over the last `seconds` of exchange time, from the 1s bars."""
        row = self._one(
            "SELECT start_ms FROM bars WHERE symbol=? AND timeframe='1s' ORDER BY start_ms DESC LIMIT 1", (symbol,)
        )
        if row is None:
            return 0.0
        n = self._one(
            "SELECT COALESCE(SUM(messages), 0) FROM bars WHERE symbol=? AND timeframe='1s' AND start_ms > ?",
            (symbol, row[0] - seconds * 1000),
        )[0]  # type: ignore[index]
        return int(n) / seconds

    def missing_bars(self, symbol: str, timeframe: str) -> int:
        """Buckets without a bar between the first and last bar (no trades, or a hole in the data)."""
        n, lo, hi = self._one(  # type: ignore[misc]
            "SELECT COUNT(*), MIN(start_ms), MAX(start_ms) FROM bars WHERE symbol=? AND timeframe=?",
            (symbol, timeframe),
        )
        if not n:
            return 0
        return (hi - lo) // TIMEFRAME_MS[timeframe] + 1 - n

    # --- health ----------------------------------------------------------------------------

    def gap_counts(self) -> dict[str, tuple[int, int]]:
        """symbol → (open gaps, all gaps ever detected)."""
        rows = self._all(
            "SELECT symbol, SUM(CASE WHEN status='open' THEN 1 ELSE 0 END), COUNT(*) FROM gaps GROUP BY symbol"
        )
        return {s: (int(o), int(t)) for s, o, t in rows}

    def rejects_dropped(self) -> int:
        row = self._one("SELECT value FROM meta WHERE key='rejects_dropped'")
        return int(row[0]) if row else 0

    def rejects(self, limit: int) -> list[tuple]:
        rows = self._all("SELECT recv_ms, reason, source, raw FROM rejects ORDER BY id DESC LIMIT ?", (limit,))
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
            "SELECT from_id, to_id, after_ts, detected_ms, filled_ms, status FROM gaps WHERE symbol=? ORDER BY from_id",
            (symbol,),
        )

    # --- analytics -------------------------------------------------------------------------

    def closed_bars(self, symbol: str, timeframe: str, end_ms: int | None = None) -> pl.DataFrame:
        """Closed bars of one symbol (start_ms, close, volume, quote_volume), oldest first."""
        import polars as pl

        q = "SELECT start_ms, close, volume, quote_volume FROM bars WHERE symbol=? AND timeframe=? AND closed"
        args: list = [symbol, timeframe]
        if end_ms is not None:
            q += " AND start_ms < ?"
            args.append(end_ms)
        return pl.DataFrame(
            self._all(q + " ORDER BY start_ms", args),
            schema={"start_ms": pl.Int64, "close": pl.Float64, "volume": pl.Float64, "quote_volume": pl.Float64},
            orient="row",
        )

    def pair_rows(
        self, pair: str, timeframe: str, window: int, span: Span = EVER, limit: int | None = None
    ) -> list[PairRow]:
        return [PairRow(*r) for r in self._rolling("pair_stats", pair, timeframe, window, span, limit)]

    def has_pair_rows(self, pair: str, timeframe: str, window: int) -> bool:
        q = 'SELECT 1 FROM pair_stats WHERE pair=? AND timeframe=? AND "window"=? LIMIT 1'
        return self._one(q, (pair, timeframe, window)) is not None

    def correlation_rows(
        self, timeframe: str, window: int, sym_a: str, sym_b: str, limit: int
    ) -> list[tuple[int, float | None]]:
        rows = self._all(
            'SELECT start_ms, corr FROM correlation WHERE timeframe=? AND "window"=? AND sym_a=? AND sym_b=?'
            " ORDER BY start_ms DESC LIMIT ?",
            (timeframe, window, sym_a, sym_b, limit),
        )
        rows.reverse()
        return rows  # type: ignore[return-value]

    def symbol_stats_rows(
        self, symbol: str, timeframe: str, window: int, span: Span = EVER, limit: int | None = 1000
    ) -> list[SymbolRow]:
        rows = self._rolling("symbol_stats", symbol, timeframe, window, span, limit)
        return [SymbolRow(*r) for r in rows]

    def _rolling(self, table: str, key: str, timeframe: str, window: int, span: Span, limit: int | None) -> list:
        """Rows of a rolling-statistics table (keyed `key`, timeframe, window, start_ms) in `span`, oldest first."""
        key_column, fields = _ROLLING_TABLES[table]
        q = (
            f'SELECT {",".join(fields)} FROM {table} WHERE {key_column}=? AND timeframe=? AND "window"=?'
            " AND start_ms >= ? AND start_ms < ?"
        )
        args = (key, timeframe, window, *bounds(*span))
        if limit is None:
            return self._all(q + " ORDER BY start_ms", args)
        rows = self._all(q + " ORDER BY start_ms DESC LIMIT ?", (*args, limit))
        rows.reverse()
        return rows

    # --- continuity ------------------------------------------------------------------------

    def bar_span(self, symbol: str, timeframe: str) -> tuple[int | None, int | None]:
        """(first, last) bar start of a symbol and timeframe, or (None, None)."""
        lo, hi = self._one(
            "SELECT MIN(start_ms), MAX(start_ms) FROM bars WHERE symbol=? AND timeframe=?", (symbol, timeframe)
        )  # type: ignore[misc]
        return lo, hi

    def flow_bar_ids(self, symbol: str, timeframe: str, lo_ms: int, hi_ms: int) -> FlowBarIds:
        """Collected bars' ids in [lo, hi), and the ids of the collected bars just outside."""
        prev = self._one(
            "SELECT last_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms<? AND origin='flow'"
            " ORDER BY start_ms DESC LIMIT 1",
            (symbol, timeframe, lo_ms),
        )
        rows = self._all(
            "SELECT start_ms, first_id, last_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms>=?"
            " AND start_ms<? AND origin='flow' ORDER BY start_ms",
            (symbol, timeframe, lo_ms, hi_ms),
        )
        nxt = self._one(
            "SELECT first_id FROM bars WHERE symbol=? AND timeframe=? AND start_ms>=? AND origin='flow'"
            " ORDER BY start_ms LIMIT 1",
            (symbol, timeframe, hi_ms),
        )
        return FlowBarIds(rows, prev[0] if prev else None, nxt[0] if nxt else None)
