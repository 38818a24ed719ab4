"""Tiered ticks: a symbol's old ticks in zstd Parquet files, read together with the store's as one.

Layout (hive-style, what polars and duckdb read directly; docs/store.md):

    <cold_dir>/ticks/symbol=btcusdt/date=2024-08-08/part-<first id>-<last id>.parquet

Each file holds TICK_COLUMNS of one symbol's ticks whose trade time falls on that UTC day, sorted
by trade id, zstd. A partition normally has one file; a later tier-out of the same day (ticks
stored again after they moved, e.g. by a re-ingest) adds a file with only the ids not there yet.

Tier-out (`storage.tier_out.tier_out`): per symbol, the whole UTC days that end `hot_days` or more before the
symbol's newest stored trade, oldest first. A day's ticks are read through the StoreReader
(`iter_ticks`), written to a temporary file per date, read back and checked (row count, first and
last id, ids strictly increasing), renamed into place, and only then deleted from the store in one
transaction (`Store.delete_ticks`, which deletes nothing unless it finds exactly those ticks). A
crash at any point leaves every tick in at least one tier; readers drop duplicates.

Reading (`TieredStore`, `TieredReader`): `ticks` and `iter_ticks` merge the Parquet tier with the
store by trade id (the store's row wins on a duplicate); everything else is the backend's.

Backend-agnostic: only the port is used (StoreReader.iter_ticks, oldest_tick, symbol_summary;
Store.delete_ticks), so every backend gets the same tier.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from storage.port import TICK_COLUMNS, Row, Store, StoreReader, StoreWriter, UploadResult
from ticklens.domain.upload import UploadedBar

if TYPE_CHECKING:  # polars is imported by the first read of Parquet: most processes never read one
    import polars as pl

DAY_MS = 86_400_000
READ_CHUNK = 50_000
_PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")


class TierError(RuntimeError):
    """A Parquet file did not read back as written: it was removed and nothing was deleted from the store."""


def day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def day_ms(d: date) -> int:
    return (d - date(1970, 1, 1)).days * DAY_MS


@dataclass(frozen=True, slots=True)
class ColdFile:
    day: date
    lo: int
    hi: int
    path: Path


class ColdTicks:
    """The Parquet tier under `root` (`<root>/ticks/symbol=…/date=…/part-….parquet`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def partition(self, symbol: str, day: date) -> Path:
        return self.root / "ticks" / f"symbol={symbol}" / f"date={day.isoformat()}"

    def files(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> list[ColdFile]:
        """The symbol's files whose day overlaps [start, end), by first id."""
        base = self.root / "ticks" / f"symbol={symbol}"
        if not base.is_dir():
            return []
        first = day_of(start_ms) if start_ms is not None else date.min
        last = day_of(end_ms - 1) if end_ms is not None else date.max
        out = []
        for d in base.iterdir():
            if not d.name.startswith("date="):
                continue
            try:
                day = date.fromisoformat(d.name[5:])
            except ValueError:
                continue
            if not first <= day <= last:
                continue
            for f in d.iterdir():
                if m := _PART.match(f.name):
                    out.append(ColdFile(day, int(m.group(1)), int(m.group(2)), f))
        return sorted(out, key=lambda f: (f.lo, f.hi))

    @staticmethod
    def _read(files: Sequence[ColdFile], start_ms: int | None, end_ms: int | None, min_id: int | None) -> pl.LazyFrame:
        import polars as pl

        lf = pl.scan_parquet([str(f.path) for f in files]).select(TICK_COLUMNS)
        if start_ms is not None:
            lf = lf.filter(pl.col("ts_ms") >= start_ms)
        if end_ms is not None:
            lf = lf.filter(pl.col("ts_ms") < end_ms)
        if min_id is not None:
            lf = lf.filter(pl.col("trade_id") >= min_id)
        lf = lf.with_columns(pl.col("is_buyer_maker").cast(pl.Int64))
        if _overlapping(files):  # a day tiered twice: drop the ids both files hold
            lf = lf.unique("trade_id", keep="first")
        return lf.sort("trade_id")

    def rows(
        self,
        symbol: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
        min_id: int | None = None,
    ) -> list[Row]:
        """Ticks in [start, end) (with trade_id >= min_id), the newest `limit` of them, oldest first."""
        files = [f for f in self.files(symbol, start_ms, end_ms) if min_id is None or f.hi >= min_id]
        if not files:
            return []
        lf = self._read(files, start_ms, end_ms, min_id)
        if limit is not None:
            lf = lf.tail(limit)
        return lf.collect().rows()

    def iter_rows(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = READ_CHUNK
    ) -> Iterator[list[Row]]:
        """Ticks in [start, end), oldest first, file by file, in chunks (bounded memory)."""
        files = self.files(symbol, start_ms, end_ms)
        groups: list[list[ColdFile]] = []
        for f in files:  # files whose id ranges overlap are read together (and deduplicated)
            if groups and f.lo <= max(g.hi for g in groups[-1]):
                groups[-1].append(f)
            else:
                groups.append([f])
        for group in groups:
            df = self._read(group, start_ms, end_ms, None).collect()
            for i in range(0, df.height, chunk):
                yield df.slice(i, chunk).rows()

    def max_id(self, symbol: str) -> int | None:
        files = self.files(symbol)
        return max(f.hi for f in files) if files else None


def _overlapping(files: Sequence[ColdFile]) -> bool:
    hi = -1
    for f in files:  # sorted by lo
        if f.lo <= hi:
            return True
        hi = max(hi, f.hi)
    return False


# --- reading both tiers ---------------------------------------------------------------------------


class TieredReader:
    """A StoreReader whose `ticks` and `iter_ticks` also read the Parquet tier; the rest is the backend's."""

    def __init__(self, inner: StoreReader, cold: ColdTicks) -> None:
        self.inner = inner
        self.cold = cold

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def ticks(self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None) -> list[Row]:
        rows = self.inner.ticks(symbol, limit, start_ms, end_ms)
        files = self.cold.files(symbol, start_ms, end_ms)
        if not files:
            return rows
        full = len(rows) >= limit
        if full and rows[0][0] > max(f.hi for f in files):
            return rows  # the newest `limit` are all in the store
        cold = self.cold.rows(symbol, start_ms, end_ms, limit=limit, min_id=rows[0][0] if full else None)
        merged = {r[0]: r for r in cold}
        merged.update((r[0], r) for r in rows)
        return [merged[k] for k in sorted(merged)][-limit:]

    def iter_ticks(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 50_000
    ) -> Iterator[list[Row]]:
        store = self.inner.iter_ticks(symbol, start_ms, end_ms, chunk)
        head = next(store, None)
        if not self.cold.files(symbol, start_ms, end_ms):
            if head:
                yield head
                yield from store
            return
        first_stored = head[0][0] if head else None
        overlap: list[Row] = []  # cold rows at or past the store's first id (only after a re-ingest)
        for rows in self.cold.iter_rows(symbol, start_ms, end_ms, chunk):
            if first_stored is not None and rows[-1][0] >= first_stored:
                cut = next(i for i, r in enumerate(rows) if r[0] >= first_stored)
                overlap.extend(rows[cut:])
                rows = rows[:cut]
            if rows:
                yield rows
        if head is None:
            return
        pending = {r[0]: r for r in overlap}
        for rows in _chain(head, store):
            if pending:
                top = rows[-1][0]
                ids = {r[0] for r in rows}
                extra = [r for k, r in pending.items() if k <= top and k not in ids]
                for k in [k for k in pending if k <= top]:
                    del pending[k]
                if extra:
                    rows = sorted([*rows, *extra], key=lambda r: r[0])
            yield rows
        if pending:
            yield [pending[k] for k in sorted(pending)]


def _chain(head: list[Row], rest: Iterator[list[Row]]) -> Iterator[list[Row]]:
    yield head
    yield from rest


class TieredStore:
    """A Store whose readers see both tiers (`open_store` hands these out); writes go to the backend."""

    def __init__(self, inner: Store, cold_root: Path) -> None:
        self.inner = inner
        self.cold = ColdTicks(cold_root)
        self.kind: str = inner.kind
        self.sink_partitions: Literal["one", "per_worker"] = inner.sink_partitions
        self.unavailable_errors: tuple[type[Exception], ...] = inner.unavailable_errors

    def __getattr__(self, name: str) -> Any:  # backend extras (SqliteStore.ensure, …)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def writer(self) -> StoreWriter[Any]:
        return self.inner.writer()

    @contextmanager
    def _reader(self) -> Iterator[StoreReader]:
        with self.inner.reader() as r:
            yield TieredReader(r, self.cold)  # type: ignore[misc]

    def reader(self) -> AbstractContextManager[StoreReader]:
        return self._reader()

    def rules(self) -> Any:
        return self.inner.rules()

    def rule_feed(self, poll_s: float = 0.25) -> Any:
        return self.inner.rule_feed(poll_s)

    def upload_bars(self, bars: Sequence[UploadedBar], overwrite: bool, now_ms: int) -> UploadResult:
        return self.inner.upload_bars(bars, overwrite, now_ms)

    def delete_ticks(self, symbol: str, lo_id: int, hi_id: int, before_ms: int, expect: int) -> int:
        return self.inner.delete_ticks(symbol, lo_id, hi_id, before_ms, expect)

    def close(self) -> None:
        self.inner.close()
