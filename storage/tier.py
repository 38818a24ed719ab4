"""Tiered ticks: a symbol's old ticks in zstd Parquet files, read together with the store's as one.

Layout (hive-style, what polars and duckdb read directly; docs/store.md):

    <cold_dir>/ticks/symbol=btcusdt/date=2024-08-08/part-<first id>-<last id>.parquet

Each file holds TICK_COLUMNS of one symbol's ticks whose trade time falls on that UTC day, sorted
by trade id, zstd. A partition normally has one file; a later tier-out of the same day (ticks
stored again after they moved, e.g. by a re-ingest) adds a file with only the ids not there yet.

Tier-out (`tier_out`): per symbol, the whole UTC days that end `hot_days` or more before the
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

import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from storage.port import TICK_COLUMNS, Row, Store, StoreReader, StoreWriter, UploadResult
from ticklens.domain.upload import UploadedBar

DAY_MS = 86_400_000
READ_CHUNK = 50_000
ROW_GROUP = 262_144  # rows per Parquet row group: large enough for zstd, small enough to skip by statistics
_PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")
SCHEMA = pa.schema(
    [
        ("trade_id", pa.int64()),
        ("ts_ms", pa.int64()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
        ("is_buyer_maker", pa.bool_()),
        ("first_id", pa.int64()),
        ("last_id", pa.int64()),
    ]
)
assert tuple(SCHEMA.names) == TICK_COLUMNS
_POLARS_SCHEMA = {
    "trade_id": pl.Int64,
    "ts_ms": pl.Int64,
    "price": pl.Float64,
    "qty": pl.Float64,
    "is_buyer_maker": pl.Int64,  # as the store returns it (0/1)
    "first_id": pl.Int64,
    "last_id": pl.Int64,
}


class TierError(RuntimeError):
    """A Parquet file did not read back as written: it was removed and nothing was deleted from the store."""


def _day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _day_ms(d: date) -> int:
    return (d - date(1970, 1, 1)).days * DAY_MS


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        first = _day_of(start_ms) if start_ms is not None else date.min
        last = _day_of(end_ms - 1) if end_ms is not None else date.max
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


# --- tier-out ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Moved:
    """One day of one symbol moved out of the store."""

    symbol: str
    day: date
    rows: int  # ticks deleted from the store
    written: int  # of them, written to Parquet now (the rest were there already)
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


class _PartWriter:
    """One date partition's new file: written to a temporary name, checked, renamed."""

    def __init__(self, cold: ColdTicks, symbol: str, day: date) -> None:
        self.dir = cold.partition(symbol, day)
        self.dir.mkdir(parents=True, exist_ok=True)
        there = [f for f in cold.files(symbol, _day_ms(day), _day_ms(day) + DAY_MS) if f.day == day]
        self.existing = np.sort(np.concatenate([_ids(f.path) for f in there])) if there else None
        for stale in self.dir.glob(".part-*.parquet.tmp"):  # left by a crash an hour ago or more
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)
        self.tmp = self.dir / f".part-{uuid.uuid4().hex}.parquet.tmp"
        self.writer: pq.ParquetWriter | None = None
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.n = 0
        self.skipped = 0
        self.lo: int | None = None
        self.hi: int | None = None

    def add(self, df: pl.DataFrame) -> None:
        if self.existing is not None and len(self.existing):
            ids = df["trade_id"].to_numpy()
            pos = np.searchsorted(self.existing, ids)
            there = (pos < len(self.existing)) & (self.existing[np.minimum(pos, len(self.existing) - 1)] == ids)
            self.skipped += int(there.sum())
            df = df.filter(pl.Series(~there))
        if df.is_empty():
            return
        first, last = int(df["trade_id"][0]), int(df["trade_id"][-1])
        if self.hi is not None and first <= self.hi:
            raise TierError(f"{self.dir}: ids not increasing ({first} after {self.hi})")
        self.lo = first if self.lo is None else self.lo
        self.hi = last
        self.n += df.height
        self.buffer.append(df.with_columns(pl.col("is_buyer_maker").cast(pl.Boolean)).to_arrow().cast(SCHEMA))
        self.buffered += df.height
        if self.buffered >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, SCHEMA, compression="zstd")
        self.writer.write_table(pa.concat_tables(self.buffer), row_group_size=ROW_GROUP)
        self.buffer, self.buffered = [], 0

    def finish(self) -> Path | None:
        """The checked file under its final name (None when every row was there already)."""
        self._flush()
        if self.writer is None:
            return None
        self.writer.close()
        try:
            with open(self.tmp, "rb") as fh:
                os.fsync(fh.fileno())
            ids = _ids(self.tmp)
            rows = pq.read_metadata(self.tmp).num_rows
            if rows != self.n or len(ids) != self.n or int(ids[0]) != self.lo or int(ids[-1]) != self.hi:
                raise TierError(
                    f"{self.tmp} read back {rows} rows, ids {ids[0] if len(ids) else None}…"
                    f"{ids[-1] if len(ids) else None}; wrote {self.n}, {self.lo}…{self.hi}"
                )
            if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
                raise TierError(f"{self.tmp}: ids not strictly increasing")
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        final = self.dir / f"part-{self.lo}-{self.hi}.parquet"
        os.replace(self.tmp, final)
        _fsync_dir(self.dir)
        return final

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


def _ids(path: Path) -> np.ndarray:
    """A file's trade ids as written (ParquetFile: pq.read_table would load the dataset machinery)."""
    return pq.ParquetFile(path).read(columns=["trade_id"]).column(0).to_numpy()


def _backend(store: Store) -> Store:
    return store.inner if isinstance(store, TieredStore) else store


def move_day(store: Store, cold: ColdTicks, symbol: str, before_ms: int) -> Moved | None:
    """Move the symbol's stored ticks with trade time before `before_ms` (a day's end) to Parquet."""
    backend = _backend(store)
    t0 = time.perf_counter()
    parts: dict[int, _PartWriter] = {}
    n, lo, hi = 0, None, None
    try:
        with backend.reader() as r:
            for rows in r.iter_ticks(symbol, None, before_ms, READ_CHUNK):
                df = pl.DataFrame(rows, schema=_POLARS_SCHEMA, orient="row")
                n += df.height
                lo = int(df["trade_id"][0]) if lo is None else lo
                hi = int(df["trade_id"][-1])
                days = (df["ts_ms"] // DAY_MS).to_numpy()
                uniq = np.unique(days)
                for d in uniq.tolist():
                    part = parts.get(d)
                    if part is None:
                        part = parts[d] = _PartWriter(cold, symbol, date(1970, 1, 1) + timedelta(days=d))
                    part.add(df if len(uniq) == 1 else df.filter(pl.Series(days == d)))
        if n == 0 or lo is None or hi is None:
            return None
        files = [f for p in parts.values() if (f := p.finish()) is not None]
    except BaseException:
        for p in parts.values():
            p.abandon()
        raise
    backend.delete_ticks(symbol, lo, hi, before_ms, n)
    day = _day_of(before_ms - 1)
    return Moved(symbol, day, n, sum(p.n for p in parts.values()), files, time.perf_counter() - t0)


def tier_out(
    store: Store,
    cold_root: Path,
    hot_days: int,
    symbols: Sequence[str] | None = None,
    stop: threading.Event | None = None,
    on_moved: Callable[[Moved], None] | None = None,
) -> list[Moved]:
    """Move every whole UTC day of ticks ending `hot_days` or more before each symbol's newest trade."""
    backend = _backend(store)
    cold = ColdTicks(cold_root)
    out: list[Moved] = []
    with backend.reader() as r:
        syms = list(symbols) if symbols is not None else r.symbols_with_data()
    for sym in syms:
        with backend.reader() as r:
            newest = r.symbol_summary(sym).last_trade_ms
        if newest is None:
            continue
        cutoff = newest - hot_days * DAY_MS
        while stop is None or not stop.is_set():
            with backend.reader() as r:
                first = r.oldest_tick(sym)
            if first is None:
                break
            day_end = first[1] - first[1] % DAY_MS + DAY_MS
            if day_end > cutoff:
                break
            moved = move_day(store, cold, sym, day_end)
            if moved is None:
                break
            out.append(moved)
            if on_moved:
                on_moved(moved)
    return out


class TierKeeper:
    """Runs `tier_out` every `every_s` seconds on a thread of its own (the flow's sink starts one).

    A failed round is reported and retried at the next; it never stops the flow. Daemon: a process
    that exits mid-round leaves both tiers consistent (see the module's crash note).
    """

    def __init__(
        self,
        store: Store,
        cold_root: Path,
        hot_days: int,
        every_s: float,
        log: Callable[[str], None],
        first_after_s: float = 60.0,
    ) -> None:
        self.store, self.cold_root, self.hot_days, self.every_s, self.log = store, cold_root, hot_days, every_s, log
        self.first_after_s = min(first_after_s, every_s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tier-out", daemon=True)

    def start(self) -> TierKeeper:
        self.thread.start()
        return self

    def _run(self) -> None:
        wait = self.first_after_s
        while not self.stop.wait(wait):
            wait = self.every_s
            try:
                tier_out(self.store, self.cold_root, self.hot_days, stop=self.stop, on_moved=self._said)
            except Exception as e:  # noqa: BLE001 (reported; the next round tries again)
                self.log(f"tier-out failed: {type(e).__name__}: {e}")

    def _said(self, m: Moved) -> None:
        self.log(f"tier-out: {m.symbol} {m.day}: {m.rows:,} ticks to Parquet in {m.seconds:.1f} s")

    def close(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout_s)
