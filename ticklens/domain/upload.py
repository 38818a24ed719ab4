"""Historical bars from a CSV upload, validated as a whole (pure: bytes in, bars or row errors out).

A file with any bad row writes nothing; the store writes the good ones as
`origin='upload'` (`Store.upload_bars`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ticklens.domain.bars import float_sums
from ticklens.domain.symbols import SYMBOL_RE
from ticklens.domain.timeframes import TIMEFRAME_MS
from ticklens.domain.times import iso_ms, parse_time

REQUIRED = ("symbol", "timeframe", "timestamp", "open", "high", "low", "close", "volume")
OPTIONAL_FLOAT = ("quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
OPTIONAL_INT = ("trades",)
EARLIEST_MS = 1_483_228_800_000  # 2017-01-01: Binance did not trade before; smaller values are likely seconds
MAX_ERRORS = 100
# Sanity bounds far beyond any real bar (BTCUSDT's busiest minutes trade < 1e5 BTC and < 1e10
# USDT): prices as the exchange edge takes them; a value past these is a typo or an attack, and
# trade counts must fit the store's 64-bit integer.
MAX_PRICE = 1e15
MAX_VOLUME = 1e12
MAX_QUOTE = 1e15
MAX_TRADES = 10**15
LIMITS = {
    "open": MAX_PRICE,
    "high": MAX_PRICE,
    "low": MAX_PRICE,
    "close": MAX_PRICE,
    "volume": MAX_VOLUME,
    "taker_buy_volume": MAX_VOLUME,
    "quote_volume": MAX_QUOTE,
    "taker_buy_quote_volume": MAX_QUOTE,
    "trades": float(MAX_TRADES),
}


class UploadedBar(NamedTuple):
    symbol: str
    timeframe: str
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float | None
    trades: float | None
    taker_buy_volume: float | None
    taker_buy_quote_volume: float | None


@dataclass(slots=True)
class ParsedUpload:
    rows: list[UploadedBar] = field(default_factory=list)
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


def parse_bar_csv(data: bytes, now_ms: int, default_timeframe: str | None = None) -> ParsedUpload:
    """Check every row; any error anywhere means nothing may be written.

    `default_timeframe`: a file without a `timeframe` column holds bars of this
    timeframe (the original design's upload: 1m bars, no timeframe column).
    """
    import polars as pl  # here, not at the top: every process imports this module, few parse an upload

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
    required = list(REQUIRED)
    if default_timeframe is not None and "timeframe" not in df.columns:
        df = df.with_columns(timeframe=pl.lit(default_timeframe))
        required.remove("timeframe")
    missing = [c for c in required if c not in df.columns]
    if missing:
        out.message = f"missing column(s) {missing}; the header must name {required}"
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
            elif v > LIMITS[name]:
                errs.append(f"{name} {v:g} is too large: at most {LIMITS[name]:.4g}")
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
            elif v > LIMITS[name]:
                errs.append(f"{name} {v:g} is too large: at most {LIMITS[name]:.4g}")
            else:
                extra[name] = v
        qv_cell = cols["quote_volume"][i] if "quote_volume" in cols else None
        if len(px) == 5 and not (qv_cell or "").strip():
            # The store estimates a missing quote volume from the typical price: it must fit too.
            est = px["volume"] * (px["high"] + px["low"] + px["close"]) / 3
            if est > MAX_QUOTE:
                errs.append(
                    f"quote volume {est:g} (volume x typical price, no quote_volume given) is too large:"
                    f" at most {MAX_QUOTE:.4g}"
                )
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
            assert ts is not None  # no error means the timestamp parsed
            out.rows.append(
                UploadedBar(
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


@dataclass(slots=True)
class UploadPlan:
    """Which uploaded bars get written, and how many are new, replace an upload, or are kept out."""

    keep: list[UploadedBar]
    inserted: int = 0
    replaced: int = 0
    skipped: int = 0


def plan_upload(
    rows: Sequence[UploadedBar], overwrite: bool, stored_origins: Callable[[str, str, int, int], dict[int, str]]
) -> UploadPlan:
    """An earlier upload of the same bar is replaced; a bar the flow collected is kept (skipped)
    unless `overwrite`. `stored_origins(symbol, timeframe, lo, hi)`: start_ms → origin of the bars
    stored in [lo, hi] (one query per symbol and timeframe, inside the writer's transaction)."""
    plan = UploadPlan([])
    groups: dict[tuple[str, str], list[UploadedBar]] = {}
    for r in rows:
        groups.setdefault((r.symbol, r.timeframe), []).append(r)
    for (sym, tf), rs in groups.items():
        existing = stored_origins(sym, tf, min(r.start_ms for r in rs), max(r.start_ms for r in rs))
        for r in rs:
            origin = existing.get(r.start_ms)
            if origin is None:
                plan.inserted += 1
            elif origin == "flow" and not overwrite:
                plan.skipped += 1
                continue
            else:
                plan.replaced += 1
            plan.keep.append(r)
    return plan


# The `bars` columns an uploaded bar fills, in `upload_row` order (both backends' insert).
UPLOAD_COLUMNS = (
    "symbol", "timeframe", "start_ms", "open", "high", "low", "close", "volume", "quote_volume", "trades",
    "taker_buy_volume", "taker_buy_quote_volume", "vwap", "max_qty", "messages", "open_ts", "open_id",
    "close_ts", "close_id", "first_id", "last_id", "revision", "closed", "volume_units", "quote_units",
    "taker_buy_volume_units", "taker_buy_quote_units", "qty_dp", "quote_dp", "updated_ms", "origin",
)  # fmt: skip
UNIT_COLUMNS = slice(23, 27)  # the exact sums, as integers of 10^-dp units


def upload_row(r: UploadedBar, now_ms: int) -> tuple[object, ...]:
    """A `bars` row (UPLOAD_COLUMNS) for one uploaded bar.

    Without a quote volume it is estimated from the typical price (h + l + c) / 3; trade ids are
    unknown (-1); the exact sums are the floats' shortest decimal text (`float_sums`).
    """
    sym, tf, start, o, h, lo, c, v, qv, n, tbv, tbqv = r
    if qv is None:
        qv = v * (h + lo + c) / 3
    vwap = qv / v if v else c
    end = start + TIMEFRAME_MS[tf] - 1
    return (
        sym, tf, start, o, h, lo, c, v, qv, int(n or 0), tbv or 0.0, tbqv or 0.0, vwap,
        0.0, 0, start, -1, end, -1, -1, -1, 0, True,
        *float_sums(v, qv, tbv or 0.0, tbqv or 0.0), now_ms, "upload",
    )  # fmt: skip
