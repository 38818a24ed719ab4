"""The PostgreSQL `StoreReader`: the shared queries (storage/sql_reader.py) over one pooled connection.

What only PostgreSQL has: ticks in daily partitions of `ticks` by symbol (the time bounds of a
range prune them), booleans cast to the 0/1 flags the port promises, exports through a
server-side cursor, status documents as jsonb merged over a cluster's workers, server health
figures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import psycopg

from storage.port import BAR_OUT_COLUMNS, MICRO_OUT_COLUMNS, QUOTE_OUT_COLUMNS, TICK_COLUMNS, StoreHealth
from storage.postgres.connection import pg_placeholders
from storage.postgres.schema import partitions
from storage.sql_reader import QUOTE_SELECT, SqlReader
from ticklens.domain.status import with_merged_flow

_FLAGS = {"is_buyer_maker": "is_buyer_maker::int", "closed": "closed::int", "complete": "complete::int"}


class PostgresReader(SqlReader[psycopg.Connection]):
    """`StoreReader` over one connection (a read-only transaction for the length of a request)."""

    BAR_SELECT = f"SELECT {','.join(_FLAGS.get(c, c) for c in BAR_OUT_COLUMNS)} FROM bars"
    TICK_SELECT = f"SELECT {','.join(_FLAGS.get(c, c) for c in TICK_COLUMNS)} FROM ticks"
    TICK_TABLE = "ticks"
    TICK_KEY = "symbol"
    MICRO_SELECT = f"SELECT {','.join(_FLAGS.get(c, c) for c in MICRO_OUT_COLUMNS)} FROM micro_bars"

    def _execute(self, query: str, args: tuple | list) -> psycopg.Cursor:
        return self.conn.execute(pg_placeholders(query), args)  # type: ignore[arg-type]

    def _chunks(self, query: str, args: tuple | list, chunk: int) -> Iterator[list[tuple]]:
        with self.conn.cursor(name="ticklens_export") as cur:
            cur.itersize = chunk
            cur.execute(pg_placeholders(query), args)  # type: ignore[arg-type]
            while rows := cur.fetchmany(chunk):
                yield rows

    def _tick_key(self, symbol: str) -> str:
        return symbol

    def _tick_symbols(self) -> list[str]:
        return self._distinct_symbols("ticks")

    def quotes_before(self, symbol: str, times_ms: Sequence[int]) -> list[tuple | None]:
        if not times_ms:
            return []
        cols = ",".join(f"q.{c}" for c in QUOTE_OUT_COLUMNS)
        rows = self._all(  # one round trip: a backward index probe per moment
            f"SELECT t.i, {cols} FROM unnest(?::bigint[]) WITH ORDINALITY AS t(at, i)"
            f" CROSS JOIN LATERAL ({QUOTE_SELECT} WHERE symbol=? AND ts_ms < t.at"
            " ORDER BY ts_ms DESC, update_id DESC LIMIT 1) AS q",
            (list(times_ms), symbol),
        )
        out: list[tuple | None] = [None] * len(times_ms)
        for r in rows:
            out[r[0] - 1] = tuple(r[1:])
        return out

    def status_docs(self) -> dict[str, tuple[dict, int]]:
        """The flow's status documents: key → (document, updated_ms); `flow` merged over a cluster's workers."""
        docs = {k: (v, u) for k, v, u in self._all("SELECT key, value, updated_ms FROM status") if isinstance(v, dict)}
        return with_merged_flow(docs)

    def reject_count(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM rejects")[0])  # type: ignore[index]

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
