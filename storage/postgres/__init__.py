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

from storage.port import StoreUnavailable, UploadResult
from storage.postgres.connection import Target
from storage.postgres.reader import PostgresReader
from storage.postgres.rules import PostgresRuleFeed, PostgresRules
from storage.postgres.schema import create_schema
from storage.postgres.upload import write_uploaded_bars
from storage.postgres.writer import PostgresWriter
from ticklens.config import StoreConfig, redact
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

    def writer(self) -> PostgresWriter:
        return PostgresWriter(self.target, self.cfg.retry_s, self.cfg.retention)

    @contextmanager
    def reader(self) -> Iterator[PostgresReader]:
        try:
            if not self._ready:
                self.ensure()
            cm = self._get_pool().connection()
            conn = cm.__enter__()
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"store {self.location}: {redact(str(e))}") from None
        try:
            yield PostgresReader(conn, self.location)
        except psycopg.OperationalError as e:
            cm.__exit__(type(e), e, e.__traceback__)
            raise StoreUnavailable(f"store {self.location}: {redact(str(e))}") from None
        except BaseException as e:
            cm.__exit__(type(e), e, e.__traceback__)
            raise
        else:
            cm.__exit__(None, None, None)

    def rules(self) -> PostgresRules:
        if not self._ready:
            self.ensure()
        return PostgresRules(self.target)

    def rule_feed(self, poll_s: float = 0.25) -> PostgresRuleFeed:
        return PostgresRuleFeed(self.target)

    def upload_bars(self, bars: Sequence[UploadedBar], overwrite: bool, now_ms: int) -> UploadResult:
        if not self._ready:
            self.ensure()
        with self.target.connect() as conn:
            return UploadResult(*write_uploaded_bars(conn, bars, overwrite, now_ms))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
