"""The SQLite backend of the store interface: one file, one writer, many readers (WAL).

The only code in ticklens that knows SQLite: schema, writer, reader, rules,
upload and the file's own health figures.
"""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from storage.port import StoreUnavailable, UploadResult
from storage.sqlite.connection import connect
from storage.sqlite.reader import SqliteReader
from storage.sqlite.rules import SqliteRuleFeed, SqliteRules
from storage.sqlite.upload import write_uploaded_bars
from storage.sqlite.writer import SqliteWriter
from ticklens.domain.upload import UploadedBar


class SqliteStore:
    """`Store` over one SQLite file; read-only connections are pooled for the API."""

    kind = "sqlite"
    sink_partitions: Literal["one", "per_worker"] = "one"
    unavailable_errors: tuple[type[Exception], ...] = (sqlite3.OperationalError, sqlite3.DatabaseError)

    def __init__(
        self,
        path: Path | str,
        *,
        max_size_mb: int | None = None,
        cache_mb: int = 64,
        retention_days: dict[str, float] | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_size_mb = max_size_mb
        self.cache_mb = cache_mb
        self.retention_days = dict(retention_days or {})
        self._free: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()

    def ensure(self) -> None:
        """Create the file and its schema (or migrate an older one); readers need it to exist."""
        connect(self.path).close()

    def writer(self) -> SqliteWriter:
        return SqliteWriter(self.path, self.max_size_mb, self.cache_mb, self.retention_days)

    @contextmanager
    def reader(self) -> Iterator[SqliteReader]:
        try:
            conn = self._free.get_nowait()
        except queue.Empty:
            if not self.path.exists():
                self.ensure()
            conn = connect(self.path, readonly=True)
        try:
            yield SqliteReader(conn, str(self.path))
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"store {self.path}: {e}") from e
        finally:
            if conn.in_transaction:
                conn.rollback()
            self._free.put(conn)

    def rules(self) -> SqliteRules:
        return SqliteRules(self.path)

    def rule_feed(self, poll_s: float = 0.25) -> SqliteRuleFeed:
        return SqliteRuleFeed(self.path, poll_s)

    def upload_bars(self, bars: Sequence[UploadedBar], overwrite: bool, now_ms: int) -> UploadResult:
        conn = connect(self.path)
        conn.isolation_level = None
        try:
            return UploadResult(*write_uploaded_bars(conn, bars, overwrite, now_ms))
        finally:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._free.get_nowait().close()
            except queue.Empty:
                return
