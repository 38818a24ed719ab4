"""Tier-out: a symbol's whole old days of ticks moved from the store into Parquet (storage.tier).

Its own module so that the flow's start does not load polars and pyarrow: the flow's keeper
(storage.tier_keeper) imports it at its first round. The procedure and its crash note are storage.tier's docstring.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from storage.port import TICK_COLUMNS, Store
from storage.tier import DAY_MS, READ_CHUNK, ColdTicks, TieredStore, TierError, day_ms, day_of

ROW_GROUP = 262_144  # rows per Parquet row group: large enough for zstd, small enough to skip by statistics

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


@dataclass(slots=True)
class Moved:
    """One day of one symbol moved out of the store."""

    symbol: str
    day: date
    rows: int  # ticks deleted from the store
    written: int  # of them, written to Parquet now (the rest were there already)
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _PartWriter:
    """One date partition's new file: written to a temporary name, checked, renamed."""

    def __init__(self, cold: ColdTicks, symbol: str, day: date) -> None:
        self.dir = cold.partition(symbol, day)
        self.dir.mkdir(parents=True, exist_ok=True)
        there = [f for f in cold.files(symbol, day_ms(day), day_ms(day) + DAY_MS) if f.day == day]
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
    day = day_of(before_ms - 1)
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
