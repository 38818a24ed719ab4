"""Trade-id continuity of downloaded archive files: every hole, inside a file and across files.

Binance's archives are known to miss trades now and then (binance-public-data #307, #106).
Reading the `trades`/`aggTrades` files of a symbol oldest first, ids must go up by exactly
one; each jump is a gap listed with the missing ids and the times of the trades on either
side, and whether it lies inside one file or across two (a missing day shows as one gap
across it). An id that comes after a higher one is late: if it falls in a hole seen before,
it shrinks that hole (two swapped rows are no gap), otherwise it is a repeat; both are listed.
Only the id and time columns are parsed, a block at a time straight out of the zip: memory stays
constant for a month of 10^8 rows.
"""

from __future__ import annotations

import bisect
import gzip
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ticklens.ingest.archive import kind, local_files

BLOCK_BYTES = 1 << 20  # measured: larger blocks cost memory (pyarrow reads ahead) and no speed
MICROS_THRESHOLD = 10**14  # epoch ms stays below this until year 5138
MAX_LISTED = 100_000  # gaps or disorders listed one by one; beyond, only counted


@dataclass(frozen=True, slots=True)
class Gap:
    first_missing: int
    last_missing: int
    before_ms: int  # time of the trade before the hole
    after_ms: int  # time of the trade after it
    before_file: str
    after_file: str

    @property
    def missing(self) -> int:
        return self.last_missing - self.first_missing + 1

    @property
    def across_files(self) -> bool:
        return self.before_file != self.after_file


@dataclass(frozen=True, slots=True)
class Disorder:
    trade_id: int
    previous_id: int  # the highest id before it
    ts_ms: int
    file: str
    repeated: bool  # seen before (else late: it filled part of a hole)


@dataclass(slots=True)
class Continuity:
    symbol: str
    data: str
    files: list[str] = field(default_factory=list)
    rows: int = 0
    first_id: int | None = None
    last_id: int | None = None
    gaps: list[Gap] = field(default_factory=list)  # the first MAX_LISTED
    disorder: list[Disorder] = field(default_factory=list)  # the first MAX_LISTED
    gap_count: int = 0
    missing: int = 0  # ids missing in all gaps
    late_count: int = 0
    repeated_count: int = 0

    @property
    def ok(self) -> bool:
        """No id missing, none twice (late ones only mean the file is not sorted)."""
        return not self.gap_count and not self.repeated_count

    def _gap(self, gap: Gap) -> None:
        self.gap_count += 1
        self.missing += gap.missing
        if len(self.gaps) < MAX_LISTED:
            self.gaps.append(gap)

    def _late(self, trade_id: int, high: int, ts_ms: int, file: str) -> None:
        """An id below the highest so far: fills a listed hole, or is a repeat."""
        i = bisect.bisect_right(self.gaps, trade_id, key=lambda g: g.first_missing) - 1
        g = self.gaps[i] if i >= 0 else None
        repeated = g is None or not g.first_missing <= trade_id <= g.last_missing
        if not repeated:
            assert g is not None
            parts = [
                Gap(g.first_missing, trade_id - 1, g.before_ms, ts_ms, g.before_file, file),
                Gap(trade_id + 1, g.last_missing, ts_ms, g.after_ms, file, g.after_file),
            ]
            parts = [p for p in parts if p.first_missing <= p.last_missing]
            self.gaps[i : i + 1] = parts
            self.gap_count += len(parts) - 1
            self.missing -= 1
            self.late_count += 1
        else:
            self.repeated_count += 1
        if len(self.disorder) < MAX_LISTED:
            self.disorder.append(Disorder(trade_id, high, ts_ms, file, repeated))


def _open_csv_stream(path: Path) -> io.BufferedIOBase:
    name = path.name.lower()
    if name.endswith(".zip"):
        zf = zipfile.ZipFile(path)
        inner = [n for n in zf.namelist() if n.lower().endswith(".csv")]
        if len(inner) != 1:
            raise ValueError(f"{path}: expected one .csv inside, found {inner}")
        return zf.open(inner[0])  # type: ignore[return-value]
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115


def read_ids(path: Path, data: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, times in ms) a block at a time, in file order. Header or none (older files have none)."""
    k = kind(data)
    if k.id_column is None:
        raise ValueError(f"{data} has no trade ids to check")
    with _open_csv_stream(path) as raw:
        buffered = io.BufferedReader(raw, BLOCK_BYTES) if not isinstance(raw, io.BufferedReader) else raw
        first = buffered.peek(1)[:1]
        if not first:
            return
        reader = pacsv.open_csv(
            buffered,
            read_options=pacsv.ReadOptions(
                column_names=list(k.columns),
                skip_rows=0 if first.isdigit() else 1,
                block_size=BLOCK_BYTES,
                use_threads=False,
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=[k.id_column, k.time_column],
                column_types={k.id_column: pa.int64(), k.time_column: pa.int64()},
            ),
        )
        try:
            for batch in reader:
                ids = batch.column(0).to_numpy()
                ts = batch.column(1).to_numpy()
                if len(ts) and ts.max() >= MICROS_THRESHOLD:
                    ts = ts // 1000
                yield ids, ts
        finally:  # before the file closes: pyarrow's read-ahead must not outlive it (a suspected abort at exit)
            reader.close()


def check_files(symbol: str, data: str, paths: list[Path]) -> Continuity:
    """Continuity of one symbol's files, read in the order given (oldest first)."""
    out = Continuity(symbol.upper(), data)
    prev_id: int | None = None
    prev_ts = 0
    prev_file = ""
    for path in paths:
        out.files.append(path.name)
        for ids, ts in read_ids(path, data):
            if not len(ids):
                continue
            out.rows += len(ids)
            if out.first_id is None:
                out.first_id = int(ids[0])
            if prev_id is not None:
                ids_x = np.concatenate(([prev_id], ids))
                ts_x = np.concatenate(([prev_ts], ts))
            else:
                ids_x, ts_x = ids, ts
            # Against the highest id so far: one stray low id is one disorder, not a disorder and a gap.
            high = np.maximum.accumulate(ids_x)
            step = ids_x[1:] - high[:-1]
            for i in np.flatnonzero(step != 1):
                before_file = prev_file if (prev_id is not None and i == 0) else path.name
                if step[i] > 1:
                    first, last = int(high[i]) + 1, int(ids_x[i + 1]) - 1
                    out._gap(Gap(first, last, int(ts_x[i]), int(ts_x[i + 1]), before_file, path.name))
                else:
                    out._late(int(ids_x[i + 1]), int(high[i]), int(ts_x[i + 1]), path.name)
            prev_id, prev_ts = int(high[-1]), int(ts_x[-1])
            prev_file = path.name
            out.last_id = prev_id
    return out


def check_archive(root: Path, symbols: list[str], data: str, start: date, end: date) -> list[Continuity]:
    """Continuity of each symbol's verified local files for `start`..`end` (ticklens.ingest.archive.local_files),
    REST-filled days included: a hole where the archive ends and REST takes over shows too."""
    files = {sym: [p for _, p in local_files(root, sym, data, start, end, rest=True)] for sym in symbols}
    return [check_files(sym, data, paths) for sym, paths in files.items()]
