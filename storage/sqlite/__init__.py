"""The SQLite backend of the store interface: one file, one writer, many readers (WAL).

The only code in ticklens that knows SQLite: schema, writer, reader, rules,
upload and the file's own health figures.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from storage.port import StoreHealth, StoreUnavailable, TickCountMismatch, UploadResult
from storage.sqlite.connection import connect
from storage.sqlite.reader import SqliteReader
from storage.sqlite.rules import SqliteRuleFeed, SqliteRules
from storage.sqlite.upload import write_uploaded_bars
from storage.sqlite.writer import SqliteWriter
from ticklens.domain.times import now_ms
from ticklens.domain.upload import UploadedBar

QUICK_CHECK_ERRORS = 20  # problems quick_check lists before it stops
PROBLEM_MAX = 2_000  # characters of a problem kept (a damaged file can list many)


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
        rejects_max_rows: int | None = None,
        retention_days: dict[str, float] | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_size_mb = max_size_mb
        self.cache_mb = cache_mb
        self.rejects_max_rows = rejects_max_rows
        self.retention_days = dict(retention_days or {})
        self.last_check: StoreHealth | None = None
        self._free: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()

    def check(self) -> StoreHealth:
        """PRAGMA quick_check on a connection of its own: no page it reads comes from a cache
        that predates damage to the file."""
        if not self.path.exists():
            self.ensure()
        version = None
        check = "failed its integrity check (PRAGMA quick_check): "
        try:
            conn = connect(self.path, readonly=True)
        except sqlite3.DatabaseError as e:
            problem = f"cannot be opened ({e})"
        else:
            try:
                # Badly damaged pages make quick_check itself raise rather than list them.
                found = [r[0] for r in conn.execute(f"PRAGMA quick_check({QUICK_CHECK_ERRORS})")]
            except sqlite3.DatabaseError as e:
                found = [str(e)]
            problem = None if found == ["ok"] else check + "; ".join(found)
            with contextlib.suppress(sqlite3.DatabaseError):  # the meta page may be intact
                version = SqliteReader(conn, str(self.path)).schema_version()
            conn.close()
        text = f"store {self.path} {problem}"[:PROBLEM_MAX] if problem else None
        self.last_check = StoreHealth(
            ok=problem is None, problem=text, location=str(self.path), schema_version=version, checked_ms=now_ms()
        )
        if problem:  # pooled connections may hold pages of the damaged file
            self.close()
        return self.last_check

    def _refuse_if_damaged(self) -> None:
        if self.last_check is not None and not self.last_check.ok:
            raise StoreUnavailable(self.last_check.problem or f"store {self.path} failed its last check")

    def ensure(self) -> None:
        """Create the file and its schema (or migrate an older one); readers need it to exist."""
        connect(self.path).close()

    def writer(self) -> SqliteWriter:
        return SqliteWriter(self)  # the store's settings as they are when the writer is made

    @contextmanager
    def reader(self) -> Iterator[SqliteReader]:
        self._refuse_if_damaged()
        try:
            conn = self._free.get_nowait()
        except queue.Empty:
            if not self.path.exists():
                self.ensure()
            conn = connect(self.path, readonly=True)
        try:
            yield SqliteReader(conn, str(self.path), self.last_check)
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"store {self.path}: {e}") from e
        finally:
            if conn.in_transaction:
                conn.rollback()
            self._free.put(conn)

    def rules(self) -> SqliteRules:
        self._refuse_if_damaged()
        return SqliteRules(self.path)

    def rule_feed(self, poll_s: float = 0.25) -> SqliteRuleFeed:
        return SqliteRuleFeed(self.path, poll_s)

    def upload_bars(self, bars: Sequence[UploadedBar], overwrite: bool, now_ms: int) -> UploadResult:
        self._refuse_if_damaged()
        conn = connect(self.path)
        conn.isolation_level = None
        try:
            return UploadResult(*write_uploaded_bars(conn, bars, overwrite, now_ms))
        finally:
            conn.close()

    def delete_ticks(self, symbol: str, lo_id: int, hi_id: int, before_ms: int, expect: int) -> int:
        conn = connect(self.path)
        conn.isolation_level = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "DELETE FROM tick_rows WHERE sym=(SELECT id FROM symbols WHERE symbol=?)"
                " AND trade_id BETWEEN ? AND ? AND ts_ms < ?",
                (symbol, lo_id, hi_id, before_ms),
            )
            if cur.rowcount != expect:
                conn.execute("ROLLBACK")
                raise TickCountMismatch(
                    f"{symbol} ids {lo_id}…{hi_id} before {before_ms}: {cur.rowcount} ticks stored, {expect} expected;"
                    " nothing deleted"
                )
            conn.execute("COMMIT")
            return expect
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._free.get_nowait().close()
            except queue.Empty:
                return
