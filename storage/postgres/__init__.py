"""The PostgreSQL backend of the store interface: a server many writers and readers share.

The only code in ticklens that knows PostgreSQL: schema and partitions, the writer
(COPY + upserts, retried across a server restart), the reader, rules (LISTEN/NOTIFY),
upload and the server's own health figures. Each flow worker writes on its own
connection (`sink_partitions = "per_worker"`); the API reads through a connection pool.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import psycopg
from psycopg_pool import ConnectionPool

from storage.port import StoreHealth, StoreUnavailable, TickCountMismatch, UploadResult
from storage.postgres.connection import Target
from storage.postgres.reader import PostgresReader
from storage.postgres.rules import PostgresRuleFeed, PostgresRules
from storage.postgres.schema import create_schema
from storage.postgres.upload import write_uploaded_bars
from storage.postgres.writer import PostgresWriter
from ticklens.config import StoreConfig, redact
from ticklens.domain.times import now_ms
from ticklens.domain.upload import UploadedBar


def _read_only(conn: psycopg.Connection) -> None:
    conn.read_only = True


class PostgresStore:
    """`Store` over one PostgreSQL database (`store.url`)."""

    kind = "postgres"
    sink_partitions: Literal["one", "per_worker"] = "per_worker"
    # psycopg_pool.PoolTimeout is an OperationalError too: a pool exhausted for 10 s answers 503.
    unavailable_errors: tuple[type[Exception], ...] = (psycopg.OperationalError,)

    def __init__(self, cfg: StoreConfig) -> None:
        self.cfg = cfg
        self.target = Target.of(cfg)
        self._pool: ConnectionPool | None = None
        self._ready = False
        self.rejects_max_rows = cfg.rejects_max_rows
        self.last_check: StoreHealth | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.target.location!r})"

    @property
    def location(self) -> str:
        return self.target.location

    def ensure(self) -> None:
        """Create the schema (or migrate an older one)."""
        with self.target.connect() as conn:
            create_schema(conn)
        self._ready = True

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.target.url,
                kwargs={"application_name": "ticklens-api", "connect_timeout": 10, **self.target.kwargs},
                min_size=1,
                max_size=self.cfg.pool_max,
                configure=_read_only,
                check=ConnectionPool.check_connection,  # a server restart must not cost a failed request
                timeout=10,
                open=True,
                name="ticklens-readers",
            )
        return self._pool

    def check(self) -> StoreHealth:
        """The server answers on a connection of its own and the schema is readable.

        PostgreSQL guards its own pages (WAL, checksums); a server that cannot be reached is
        not damage: this raises StoreUnavailable and the answer of the last check stands.
        """
        try:
            if not self._ready:
                self.ensure()  # a new database gets its schema first, as readers do
            with self.target.connect(app="ticklens-check") as conn:
                conn.read_only = True
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"store {self.location}: {redact(str(e))}") from None
        except psycopg.Error as e:  # reachable, but the schema cannot be read
            self.last_check = StoreHealth(
                ok=False,
                problem=f"store {self.location} failed its check: {redact(str(e))}",
                location=self.location,
                schema_version=None,
                checked_ms=now_ms(),
            )
            return self.last_check
        self.last_check = StoreHealth(
            ok=True,
            problem=None,
            location=self.location,
            schema_version=int(row[0]) if row else None,
            checked_ms=now_ms(),
        )
        return self.last_check

    def _refuse_if_damaged(self) -> None:
        if self.last_check is not None and not self.last_check.ok:
            raise StoreUnavailable(self.last_check.problem or f"store {self.location} failed its last check")

    def writer(self) -> PostgresWriter:
        return PostgresWriter(self.target, self.cfg.retry_s, self.cfg.retention, self.rejects_max_rows)

    @contextmanager
    def reader(self) -> Iterator[PostgresReader]:
        self._refuse_if_damaged()
        try:
            if not self._ready:
                self.ensure()
            cm = self._get_pool().connection()
            conn = cm.__enter__()
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"store {self.location}: {redact(str(e))}") from None
        try:
            yield PostgresReader(conn, self.location, self.last_check)
        except psycopg.OperationalError as e:
            cm.__exit__(type(e), e, e.__traceback__)
            raise StoreUnavailable(f"store {self.location}: {redact(str(e))}") from None
        except BaseException as e:
            cm.__exit__(type(e), e, e.__traceback__)
            raise
        else:
            cm.__exit__(None, None, None)

    def rules(self) -> PostgresRules:
        self._refuse_if_damaged()
        if not self._ready:
            self.ensure()
        return PostgresRules(self.target)

    def rule_feed(self, poll_s: float = 0.25) -> PostgresRuleFeed:
        return PostgresRuleFeed(self.target)

    def upload_bars(self, bars: Sequence[UploadedBar], overwrite: bool, now_ms: int) -> UploadResult:
        self._refuse_if_damaged()
        if not self._ready:
            self.ensure()
        with self.target.connect() as conn:
            return UploadResult(*write_uploaded_bars(conn, bars, overwrite, now_ms))

    def delete_ticks(self, symbol: str, lo_id: int, hi_id: int, before_ms: int, expect: int) -> int:
        """One transaction: the DELETE is rolled back unless it removed exactly `expect` ticks (the
        partitions past `before_ms` are pruned from it; writers of newer ticks are not blocked)."""
        if not self._ready:
            self.ensure()
        with self.target.connect(app="ticklens-tier-out") as conn, conn.transaction():
            cur = conn.execute(
                "DELETE FROM ticks WHERE symbol=%s AND trade_id BETWEEN %s AND %s AND ts_ms < %s",
                (symbol, lo_id, hi_id, before_ms),
            )
            if cur.rowcount != expect:  # raised inside the transaction: rolled back
                raise TickCountMismatch(
                    f"{symbol} ids {lo_id}…{hi_id} before {before_ms}: {cur.rowcount} ticks stored, {expect} expected;"
                    " nothing deleted"
                )
        return expect

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
