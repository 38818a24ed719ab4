"""Historical bars from a CSV upload: validated as a whole, then written as `origin='upload'`.

`parse_bar_csv` is pure (bytes in, bars or row errors out); `write_uploaded_bars`
is the one write. A file with any bad row writes nothing.
"""

from __future__ import annotations

import io
import math
import sqlite3
from dataclasses import dataclass, field

import polars as pl

from ticklens.domain.bars import QUOTE_SCALE
from ticklens.domain.symbols import SYMBOL_RE
from ticklens.domain.timeframes import TIMEFRAME_MS
from ticklens.domain.times import iso_ms, parse_time

REQUIRED = ("symbol", "timeframe", "timestamp", "open", "high", "low", "close", "volume")
OPTIONAL_FLOAT = ("quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
OPTIONAL_INT = ("trades",)
EARLIEST_MS = 1_483_228_800_000  # 2017-01-01: Binance did not trade before; smaller values are likely seconds
MAX_ERRORS = 100


@dataclass(slots=True)
class ParsedUpload:
    rows: list[tuple] = field(default_factory=list)  # (symbol, timeframe, start_ms, o, h, l, c, v, qv, n, tbv, tbqv)
    errors: list[tuple[int, list[str]]] = field(default_factory=list)  # (data row number, reasons)
    bad_rows: int = 0
    message: str | None = None  # a problem with the file as a whole


def _num(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_bar_csv(data: bytes, now_ms: int) -> ParsedUpload:
    """Check every row; any error anywhere means nothing may be written."""
    out = ParsedUpload()
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is fine
    except UnicodeDecodeError as e:
        out.message = f"not a UTF-8 text (CSV) file: undecodable byte at offset {e.start}"
        return out
    try:
        df = pl.read_csv(io.StringIO(text), infer_schema=False, has_header=True)
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as e:
        out.message = f"not a readable CSV file: {str(e).splitlines()[0][:200]}"
        return out
    df = df.rename({c: c.strip().lower() for c in df.columns})
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        out.message = f"missing column(s) {missing}; the header must name {list(REQUIRED)}"
        return out
    if df.height == 0:
        out.message = "the file has a header but no rows"
        return out
    cols = {c: df[c].to_list() for c in df.columns if c in REQUIRED + OPTIONAL_FLOAT + OPTIONAL_INT}
    seen: dict[tuple[str, str, int], int] = {}
    for i in range(df.height):
        errs: list[str] = []
        sym = (cols["symbol"][i] or "").strip().lower()
        if not SYMBOL_RE.match(sym):
            errs.append(f"symbol {cols['symbol'][i]!r} must match [a-z0-9]{{2,30}}")
        tf = (cols["timeframe"][i] or "").strip()
        tf_ms = TIMEFRAME_MS.get(tf)
        if tf_ms is None:
            errs.append(f"timeframe {cols['timeframe'][i]!r} is not one of {list(TIMEFRAME_MS)}")
        ts: int | None = None
        try:
            ts = parse_time(cols["timestamp"][i] or "")
        except ValueError as e:
            errs.append(f"timestamp: {e}")
        if ts is not None:
            if ts < EARLIEST_MS:
                errs.append(f"timestamp {iso_ms(ts)} is before 2017 (epoch seconds instead of milliseconds?)")
            elif ts > now_ms:
                errs.append(f"timestamp {iso_ms(ts)} is in the future")
            elif tf_ms and ts % tf_ms:
                errs.append(f"timestamp {iso_ms(ts)} is not aligned to a {tf} bar start")
        px = {}
        for name in ("open", "high", "low", "close", "volume"):
            v = _num(cols[name][i])
            if v is None or not math.isfinite(v):
                errs.append(f"{name} {cols[name][i]!r} is not a number")
            elif v < 0 or (v == 0 and name != "volume"):
                errs.append(f"{name} {v} must be {'≥ 0' if name == 'volume' else '> 0'}")
            else:
                px[name] = v
        if len(px) == 5:
            o, h, lo, c = px["open"], px["high"], px["low"], px["close"]
            if h < max(o, c, lo):
                errs.append(f"high {h} is below max(open, close, low) = {max(o, c, lo)}")
            if lo > min(o, c):
                errs.append(f"low {lo} is above min(open, close) = {min(o, c)}")
        extra: dict[str, float | None] = {}
        for name in OPTIONAL_FLOAT + OPTIONAL_INT:
            raw = cols[name][i] if name in cols else None
            if raw is None or not raw.strip():
                extra[name] = None
                continue
            v = _num(raw)
            if v is None or not math.isfinite(v) or v < 0 or (name in OPTIONAL_INT and v != int(v)):
                errs.append(f"{name} {raw!r} must be a {'whole ' if name in OPTIONAL_INT else ''}number ≥ 0")
            else:
                extra[name] = v
        if not errs and ts is not None:
            key = (sym, tf, ts)
            if key in seen:
                errs.append(f"duplicate of row {seen[key]} ({sym} {tf} {iso_ms(ts)})")
            else:
                seen[key] = i + 1
        if errs:
            out.bad_rows += 1
            if len(out.errors) < MAX_ERRORS:
                out.errors.append((i + 1, errs))
        elif not out.bad_rows:
            out.rows.append(
                (
                    sym,
                    tf,
                    ts,
                    px["open"],
                    px["high"],
                    px["low"],
                    px["close"],
                    px["volume"],
                    extra["quote_volume"],
                    extra["trades"],
                    extra["taker_buy_volume"],
                    extra["taker_buy_quote_volume"],
                )
            )
    if out.bad_rows:
        out.rows = []
    return out


def bar_row(r: tuple, now_ms: int) -> tuple:
    """A `bars` row (UPLOAD_COLUMNS) for one uploaded bar.

    Without a quote volume it is estimated from the typical price (h + l + c) / 3;
    trade ids are unknown (-1).
    """
    sym, tf, start, o, h, lo, c, v, qv, n, tbv, tbqv = r
    if qv is None:
        qv = v * (h + lo + c) / 3
    vwap = qv / v if v else c
    end = start + TIMEFRAME_MS[tf] - 1
    return (
        sym, tf, start, o, h, lo, c, v, qv, int(n or 0), tbv or 0.0, tbqv or 0.0, vwap,
        0.0, 0, start, -1, end, -1, -1, -1, 0, 1,
        round(v * VOLUME_UNIT), round(qv * int(QUOTE_SCALE)), round((tbv or 0.0) * VOLUME_UNIT),
        round((tbqv or 0.0) * int(QUOTE_SCALE)), now_ms, "upload",
    )  # fmt: skip


UPLOAD_COLUMNS = (
    "symbol", "timeframe", "start_ms", "open", "high", "low", "close", "volume", "quote_volume", "trades",
    "taker_buy_volume", "taker_buy_quote_volume", "vwap", "max_qty", "messages", "open_ts", "open_id",
    "close_ts", "close_id", "first_id", "last_id", "revision", "closed", "volume_units", "quote_units",
    "taker_buy_volume_units", "taker_buy_quote_units", "updated_ms", "origin",
)  # fmt: skip
# The exact integer sums the flow keeps beside the REAL columns (see storage/schema.py).
VOLUME_UNIT = 10**8
_INSERT = f"INSERT OR REPLACE INTO bars({','.join(UPLOAD_COLUMNS)}) VALUES({','.join('?' * len(UPLOAD_COLUMNS))})"


def write_uploaded_bars(
    conn: sqlite3.Connection, rows: list[tuple], overwrite: bool, now_ms: int
) -> tuple[int, int, int]:
    """(inserted, replaced, skipped) in one transaction.

    An earlier upload of the same bar is replaced; a bar the flow collected is
    kept (skipped) unless `overwrite`.
    """
    inserted = replaced = skipped = 0
    keep: list[tuple] = []
    groups: dict[tuple[str, str], list[tuple]] = {}
    for r in rows:
        groups.setdefault((r[0], r[1]), []).append(r)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for (sym, tf), rs in groups.items():
            lo = min(r[2] for r in rs)
            hi = max(r[2] for r in rs)
            existing = dict(
                conn.execute(
                    "SELECT start_ms, origin FROM bars WHERE symbol=? AND timeframe=? AND start_ms BETWEEN ? AND ?",
                    (sym, tf, lo, hi),
                ).fetchall()
            )
            for r in rs:
                origin = existing.get(r[2])
                if origin is None:
                    inserted += 1
                elif origin == "flow" and not overwrite:
                    skipped += 1
                    continue
                else:
                    replaced += 1
                keep.append(bar_row(r, now_ms))
        conn.executemany(_INSERT, keep)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return inserted, replaced, skipped
