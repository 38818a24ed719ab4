"""Binance archive 1m klines (`klines/<SYMBOL>/1m/…zip`, or the CSV inside) read as `audit.Minute`s.

Files with or without the header row (older archive files have none), open times in ms or µs.
Only the audited columns are parsed; a file that is not a kline CSV is a ValueError naming it.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from ticklens.domain.audit import Audit, Minute, audit_minutes
from ticklens.ingest.archive import KINDS, local_files

COLUMNS = KINDS["klines-1m"].columns
MICROS_THRESHOLD = 10**14
_USED = ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "count", "taker_buy_volume")


def _csv_bytes(path: Path) -> bytes:
    if path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            inner = [n for n in zf.namelist() if n.lower().endswith(".csv")]
            if not inner:
                raise ValueError(f"{path}: zip holds no .csv file")
            return zf.read(inner[0])
    return path.read_bytes()


def read_klines(path: Path) -> list[Minute]:
    """Every kline row of one file, in file order."""
    raw = _csv_bytes(path)
    has_header = not raw[:1].isdigit()
    opts = pacsv.ReadOptions(column_names=list(COLUMNS), skip_rows=1 if has_header else 0)
    conv = pacsv.ConvertOptions(
        include_columns=list(_USED),
        column_types={c: pa.float64() for c in _USED[1:] if c != "count"}
        | {"open_time": pa.int64(), "count": pa.int64()},
    )
    try:
        t = pacsv.read_csv(io.BytesIO(raw), read_options=opts, convert_options=conv)
    except pa.ArrowInvalid as e:
        raise ValueError(f"{path}: not a klines CSV ({e})") from None
    cols = [t.column(c).to_pylist() for c in _USED]
    out = []
    for open_time, o, h, lo, c, v, qv, n, tbv in zip(*cols, strict=True):
        if open_time >= MICROS_THRESHOLD:
            open_time //= 1000
        out.append(Minute(open_time, o, h, lo, c, v, qv, n, tbv))
    return out


def archive_klines(root: Path, symbol: str, start: date, end: date) -> tuple[list[Minute], set[int], list[Path]]:
    """The downloaded 1m klines of `symbol` for days `start`..`end`: (rows, day starts covered, files)."""
    rows: list[Minute] = []
    days: set[int] = set()
    files = []
    for f, path in local_files(root, symbol, "klines-1m", start, end):
        rows.extend(read_klines(path))
        files.append(path)
        d = f.first_day
        while d <= f.last_day:
            days.add((d - date(1970, 1, 1)).days * 86_400_000)
            d += timedelta(days=1)
    return rows, days, files


def archive_audit(
    root: Path, symbol: str, start_ms: int, end_ms: int, bar_rows: Iterable[Sequence]
) -> tuple[Audit, list[Path]]:
    """The stored 1m bars (`bar_rows`: rows led by start_ms, open, high, low, close, volume, quote_volume,
    trades, taker_buy_volume, as `StoreReader.iter_bars` gives them) against the downloaded klines."""
    first = datetime.fromtimestamp(start_ms / 1000, UTC).date()
    last = datetime.fromtimestamp((end_ms - 1) / 1000, UTC).date()
    klines, days, files = archive_klines(root, symbol, first, last)
    bars = (Minute(*r[:9]) for r in bar_rows)
    return audit_minutes(bars, klines, start_ms, end_ms, days), files
