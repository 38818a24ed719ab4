"""GET /api/v1/export/{symbol} (streamed CSV or Parquet) and POST /api/v1/upload/ohlc (validated bars).

Export kinds: bars (`ohlc`), trades (`ticks`), L1 (`quotes`), every applied diff one row per
level (`depth`), and the book at one moment (`book`, one row per level).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Annotated, Literal

import polars as pl
import pyarrow.parquet as pq
from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.responses import Response, StreamingResponse

from api.deps import OneSymbol, State, json_response, param_error
from api.models import UploadRejected, UploadRejectedResponse, UploadResponse
from api.routers.book import book_at, parse_at
from api.streaming import guarded, prefetched
from storage.port import Store, StoreReader
from ticklens.domain.book import DepthUpdate
from ticklens.domain.timeframes import Timeframe
from ticklens.domain.times import now_ms
from ticklens.domain.upload import ParsedUpload, parse_bar_csv

router = APIRouter(tags=["export and upload"])

UPLOAD_MAX_BYTES = 20 * 1024 * 1024


def read_upload(file: UploadFile, now: int, default_timeframe: str | None = None) -> ParsedUpload | Response:
    """The uploaded CSV parsed whole, or the 422 naming every bad row (nothing is written then).

    Read bounded: a file past UPLOAD_MAX_BYTES is refused (413) without reading the rest.
    """
    data = file.file.read(UPLOAD_MAX_BYTES + 1)
    if len(data) > UPLOAD_MAX_BYTES:
        raise HTTPException(413, f"file larger than {UPLOAD_MAX_BYTES} bytes")
    parsed = parse_bar_csv(data, now, default_timeframe)
    if parsed.message or parsed.bad_rows:
        body = UploadRejected(
            message=parsed.message or f"{parsed.bad_rows} bad row(s); nothing was written",
            bad_rows=parsed.bad_rows,
            errors=[{"row": r, "line": r + 1, "errors": errs} for r, errs in parsed.errors],
        )
        return json_response({"detail": body.model_dump()}, status_code=422)
    return parsed


CHUNK_ROWS = 50_000
EXPORT_MAX_DEPTH = 100_000  # levels per side of a kind=book export: every level of any real book
ISO_FMT = "%Y-%m-%dT%H:%M:%S%.3fZ"

_BAR_SCHEMA = {
    "ts_ms": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "quote_volume": pl.Float64,
    "trades": pl.Int64,
    "taker_buy_volume": pl.Float64,
    "vwap": pl.Float64,
    "closed": pl.Int64,
    "revision": pl.Int64,
    "origin": pl.String,
}
_TICK_SCHEMA = {
    "trade_id": pl.Int64,
    "ts_ms": pl.Int64,
    "price": pl.Float64,
    "qty": pl.Float64,
    "is_buyer_maker": pl.Int64,
    "first_id": pl.Int64,
    "last_id": pl.Int64,
}


_QUOTE_SCHEMA = {
    "update_id": pl.Int64,
    "ts_ms": pl.Int64,
    "event_ms": pl.Int64,
    "recv_ms": pl.Int64,
    "bid": pl.Float64,
    "bid_qty": pl.Float64,
    "ask": pl.Float64,
    "ask_qty": pl.Float64,
    "source": pl.String,
}
# Levels stay the exchange's decimal strings (exact); cast them as needed.
_DEPTH_SCHEMA = {
    "update_id": pl.Int64,
    "first_id": pl.Int64,
    "prev_id": pl.Int64,
    "ts_ms": pl.Int64,
    "side": pl.String,
    "price": pl.String,
    "qty": pl.String,
}
_BOOK_SCHEMA = {
    "update_id": pl.Int64,
    "ts_ms": pl.Int64,
    "side": pl.String,
    "level": pl.Int64,
    "price": pl.String,
    "qty": pl.String,
}
_SCHEMAS = {
    "ohlc": _BAR_SCHEMA,
    "ticks": _TICK_SCHEMA,
    "quotes": _QUOTE_SCHEMA,
    "depth": _DEPTH_SCHEMA,
    "book": _BOOK_SCHEMA,
}
ExportKind = Literal["ohlc", "ticks", "quotes", "depth", "book"]


def _depth_rows(updates: list[DepthUpdate]) -> list[tuple]:
    rows: list[tuple] = []
    for u in updates:
        head = (u.final_id, u.first_id, u.prev_final_id, u.txn_ms)
        rows += [(*head, "bid", p, q) for p, q in zip(u.bid_px, u.bid_qty, strict=True)]
        rows += [(*head, "ask", p, q) for p, q in zip(u.ask_px, u.ask_qty, strict=True)]
    return rows


def _frame(rows: list[tuple], kind: str, symbol: str, timeframe: str) -> pl.DataFrame:
    """One chunk as the export's columns: symbol, [timeframe], timestamp (UTC), ts_ms, values."""
    schema = _SCHEMAS[kind]
    df = pl.DataFrame(rows, schema=schema, orient="row")
    lead = [pl.lit(symbol).alias("symbol")]
    if kind == "ohlc":
        lead.append(pl.lit(timeframe).alias("timeframe"))
    lead.append(pl.col("ts_ms").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").alias("timestamp"))
    df = df.select(*lead, pl.all())
    if kind == "ohlc":
        return df.with_columns(in_progress=pl.col("closed") == 0).drop("closed")
    if kind == "ticks":
        return df.with_columns(pl.col("is_buyer_maker").cast(pl.Boolean))
    return df


def _rows(reader: StoreReader, kind: str, symbol: str, timeframe: str, s: int | None, e: int | None):
    if kind == "ohlc":
        return reader.iter_bars(symbol, timeframe, s, e, CHUNK_ROWS)
    if kind == "ticks":
        return reader.iter_ticks(symbol, s, e, CHUNK_ROWS)
    if kind == "quotes":
        return reader.iter_quotes(symbol, s, e, CHUNK_ROWS)
    return map(_depth_rows, reader.iter_depth_updates(symbol, s, e, CHUNK_ROWS // 100))


def _chunks(
    store: Store, kind: str, symbol: str, timeframe: str, s: int | None, e: int | None, empty: bool
) -> Iterator[pl.DataFrame]:
    """Frames of at most CHUNK_ROWS from a reader of their own (the stream outlives the request scope)."""
    if empty:
        yield _frame([], kind, symbol, timeframe)
        return
    with store.reader() as reader:
        it = _rows(reader, kind, symbol, timeframe, s, e)
        first = True
        for rows in it:
            first = False
            yield _frame(rows, kind, symbol, timeframe)
        if first:
            yield _frame([], kind, symbol, timeframe)


def _csv_stream(frames: Iterator[pl.DataFrame]) -> Iterator[bytes]:
    header = True
    for df in frames:
        yield df.write_csv(include_header=header, datetime_format=ISO_FMT).encode()
        header = False


def _parquet_stream(frames: Iterator[pl.DataFrame]) -> Iterator[bytes]:
    """Row groups into a spooled temp file (memory stays bounded), then streamed out."""
    spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 - closed below
    writer = None
    try:
        for df in frames:
            table = df.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(spool, table.schema, compression="zstd")
            writer.write_table(table)
        if writer is not None:
            writer.close()
        spool.seek(0)
        while block := spool.read(1 << 20):
            yield block
    finally:
        spool.close()


@router.get(
    "/export/{symbol}",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}}},
)
def export(
    q: OneSymbol,
    format: Annotated[Literal["csv", "parquet"], Query(description="File format")] = "csv",  # noqa: A002
    kind: Annotated[
        ExportKind,
        Query(description="Bars, trades, L1 quotes, every applied depth diff (a row per level), or the book at `at`"),
    ] = "ohlc",
    timeframe: Annotated[Timeframe, Query(description="Bar length (ohlc only)")] = "1m",
    at: Annotated[str | None, Query(description="kind=book: the moment (ISO-8601 or epoch ms)", max_length=40)] = None,
    depth: Annotated[
        int, Query(ge=1, le=EXPORT_MAX_DEPTH, description="kind=book: levels per side (the whole book by default)")
    ] = EXPORT_MAX_DEPTH,
) -> StreamingResponse:
    """Every bar (trade, quote, depth diff) in [start, end), oldest first, streamed in chunks; or,
    for `kind=book`, the book at `at` (one row per level, best first); timestamps in UTC."""
    if kind == "book" and at is None:
        raise param_error("query", "at", "kind=book needs at (ISO-8601 or epoch ms)", None)
    status = q.status()
    symbol, state = q.symbol, q.state
    if kind == "book":
        v = book_at(q.reader, state.books, symbol, parse_at(at), None, depth)
        levels = [(v.update_id, v.ts_ms, "bid", i, price, qty) for i, (price, qty) in enumerate(v.bids)]
        levels += [(v.update_id, v.ts_ms, "ask", i, price, qty) for i, (price, qty) in enumerate(v.asks)]
        frames: Iterator[pl.DataFrame] = iter([_frame(levels, kind, symbol, timeframe)])
    else:
        frames = _chunks(state.store, kind, symbol, timeframe, q.start, q.end, empty=status != "ok")
    what = f"export of {symbol} {timeframe + ' bars' if kind == 'ohlc' else kind}"
    name = f"{symbol}-{timeframe if kind == 'ohlc' else kind}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Ticklens-Status": status}
    if format == "csv":
        # The first chunk before the status line (a store that cannot be read is a 503); a failure
        # after it aborts the connection (api/streaming.py).
        body = guarded(prefetched(_csv_stream(frames)), what, state.recheck)
        return StreamingResponse(body, media_type="text/csv", headers=headers)
    # Parquet needs its footer before it can be read, so the file is built before the first byte.
    body = guarded(prefetched(_parquet_stream(frames)), what, state.recheck)
    return StreamingResponse(body, media_type="application/vnd.apache.parquet", headers=headers)


@router.post(
    "/upload/ohlc",
    response_model=UploadResponse,
    responses={
        413: {"description": f"File larger than {UPLOAD_MAX_BYTES // (1 << 20)} MB"},
        422: {"model": UploadRejectedResponse, "description": "Bad rows: nothing was written"},
    },
)
def upload_ohlc(
    file: Annotated[UploadFile, File(description="CSV: symbol,timeframe,timestamp,open,high,low,close,volume")],
    state: State,
    overwrite: Annotated[bool, Query(description="Replace bars the flow collected")] = False,
) -> UploadResponse | Response:
    """Historical bars from CSV. Every row is checked; one bad row rejects the file and nothing is written.

    Timestamps are bar starts (ISO-8601 or epoch ms, aligned to the timeframe). Optional columns:
    quote_volume, trades, taker_buy_volume, taker_buy_quote_volume. Bars are stored with origin `upload`.
    """
    now = now_ms()
    parsed = read_upload(file, now)
    if isinstance(parsed, Response):
        return parsed
    result = state.store.upload_bars(parsed.rows, overwrite, now)
    return UploadResponse(
        rows=len(parsed.rows),
        inserted=result.inserted,
        replaced=result.replaced,
        skipped=result.skipped,
        symbols=sorted({r[0] for r in parsed.rows}),
        timeframes=sorted({r[1] for r in parsed.rows}),
    )
