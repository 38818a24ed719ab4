"""The SQLite `StoreReader`: the shared queries (storage/sql_reader.py) over one read-only connection.

What only SQLite has: ticks stored compactly in `tick_rows` under a symbol id (schema v4; the
first/last ids as offsets), the `-wal` file's size, status documents as JSON text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from storage.port import BAR_OUT_COLUMNS, MICRO_OUT_COLUMNS, TICK_COLUMNS, StoreHealth
from storage.sql_reader import QUOTE_SELECT, SqlReader

assert TICK_COLUMNS == ("trade_id", "ts_ms", "price", "qty", "is_buyer_maker", "first_id", "last_id")


class SqliteReader(SqlReader[sqlite3.Connection]):
    """`StoreReader` over one connection (read-only is enough; WAL: never blocks the writer)."""

    BAR_SELECT = f"SELECT {','.join(BAR_OUT_COLUMNS)} FROM bars"
    TICK_SELECT = (
        "SELECT trade_id, ts_ms, price, qty, is_buyer_maker, trade_id - first_off,"
        " trade_id - first_off + last_span FROM tick_rows"
    )
    TICK_TABLE = "tick_rows"
    TICK_KEY = "sym"
    MICRO_SELECT = f"SELECT {','.join(MICRO_OUT_COLUMNS)} FROM micro_bars"

    def _execute(self, query: str, args: tuple | list) -> sqlite3.Cursor:
        return self.conn.execute(query, args)

    def _chunks(self, query: str, args: tuple | list, chunk: int) -> Iterator[list[tuple]]:
        cur = self.conn.execute(query, args)
        while rows := cur.fetchmany(chunk):
            yield rows

    def _tick_key(self, symbol: str) -> int | None:
        """The symbol's id in `symbols` (None: it never had a tick)."""
        row = self._one("SELECT id FROM symbols WHERE symbol=?", (symbol,))
        return None if row is None else int(row[0])

    def _tick_symbols(self) -> list[str]:
        q = "SELECT symbol FROM symbols WHERE EXISTS (SELECT 1 FROM tick_rows WHERE sym = symbols.id)"
        return [s for (s,) in self._all(q)]

    def quotes_before(self, symbol: str, times_ms: Sequence[int]) -> list[tuple | None]:
        # The time index holds the key too (WITHOUT ROWID), so each probe is one descent of it.
        sql = f"{QUOTE_SELECT} WHERE symbol=? AND ts_ms < ? ORDER BY ts_ms DESC, update_id DESC LIMIT 1"
        return [self._one(sql, (symbol, t)) for t in times_ms]

    def status_docs(self) -> dict[str, tuple[dict, int]]:
        """The flow's status documents: key → (document, updated_ms)."""
        out = {}
        for key, value, updated in self._all("SELECT key, value, updated_ms FROM status"):
            try:
                out[key] = (orjson.loads(value), updated)
            except orjson.JSONDecodeError:
                continue
        return out

    def reject_count(self) -> int:
        # The ids held are one contiguous run (see writer._REJECTS_TRIM): two key look-ups
        # instead of a scan of up to `rejects_max_rows` rows of 4 KiB.
        return int(self._one("SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM rejects")[0])  # type: ignore[index]

    def health(self) -> StoreHealth:
        p = Path(self.location)
        sizes = {name: f.stat().st_size for name, f in (("db", p), ("wal", p.with_name(p.name + "-wal"))) if f.exists()}
        return StoreHealth(
            ok=True,  # a reader is handed out only while the last check found nothing
            problem=None,
            location=str(p),
            schema_version=self.schema_version(),
            figures={"db_size_bytes": float(sum(sizes.values())), "wal_bytes": float(sizes.get("wal", 0))},
            checked_ms=self.last_check.checked_ms if self.last_check else None,
        )
