"""The original API's /api/export/{symbol} (CSV or JSON bars) and /api/upload/ohlc (CSV of 1m bars)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

import orjson
import polars as pl
from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.responses import Response, StreamingResponse

from api.compat.common import TAG, richer
from api.compat.market import ohlc_rows
from api.compat.models import ExportJson, UploadAnswer
from api.deps import Reader, State, SymbolPath, json_response, require_symbol
from api.models import UploadRejected
from api.routers.data import CHUNK_ROWS, UPLOAD_MAX_BYTES
from api.streaming import guarded, prefetched
from storage.port import Store
from ticklens.domain.times import now_ms
from ticklens.domain.upload import parse_bar_csv

router = APIRouter(tags=[TAG])

COLUMNS = ["symbol", "timeframe", "timestamp", "open", "high", "low", "close", "volume"]


def _rows(store: Store, symbol: str, timeframe: str, empty: bool) -> Iterator[list[dict]]:
    """Chunks of the original's bar rows, from a reader of their own (the stream outlives the request)."""
    if empty:
        return
    with store.reader() as reader:
        for chunk in reader.iter_bars(symbol, timeframe, chunk=CHUNK_ROWS):
            yield ohlc_rows(symbol, timeframe, chunk)


def _csv(chunks: Iterator[list[dict]]) -> Iterator[bytes]:
    yield (",".join(COLUMNS) + "\n").encode()
    for rows in chunks:
        yield pl.DataFrame(rows, schema=COLUMNS, orient="row").write_csv(include_header=False).encode()


def _json(chunks: Iterator[list[dict]]) -> Iterator[bytes]:
    yield b'{"data":['
    first = True
    for rows in chunks:
        if rows:
            body = orjson.dumps(rows)[1:-1]  # the list's items, without its brackets
            yield body if first else b"," + body
            first = False
    yield b"]}"


@router.get(
    "/api/export/{symbol}",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {"schema": ExportJson.model_json_schema()}}}},
    description=richer(
        "/api/v1/export/{symbol}",
        "Every bar of `timeframe`, oldest first: CSV (attachment `{symbol}_{timeframe}.csv`) or JSON "
        '`{"data": [rows]}`, with the /api/ohlc row fields. v1 adds Parquet, ticks, time ranges and all bar fields.',
    ),
)
def export(
    symbol: SymbolPath,
    reader: Reader,
    state: State,
    format: Annotated[Literal["csv", "json"], Query(description="File format")] = "csv",  # noqa: A002
    timeframe: Annotated[Literal["1s", "1m", "5m"], Query(description="Bar length")] = "1m",
) -> StreamingResponse:
    status = require_symbol(state, reader, symbol)
    chunks = prefetched(_rows(state.store, symbol, timeframe, empty=status != "ok"))  # a dead store: 503
    what = f"export of {symbol} {timeframe} bars"
    if format == "json":
        return StreamingResponse(guarded(_json(chunks), what, state.recheck), media_type="application/json")
    headers = {"Content-Disposition": f'attachment; filename="{symbol}_{timeframe}.csv"'}
    return StreamingResponse(guarded(_csv(chunks), what, state.recheck), media_type="text/csv", headers=headers)


@router.post(
    "/api/upload/ohlc",
    response_model=UploadAnswer,
    responses={422: {"description": "Bad rows: nothing was written (rows and reasons in `detail`)"}},
    description=richer(
        "/api/v1/upload/ohlc",
        "CSV with columns symbol,timestamp,open,high,low,close,volume: 1m bars (a `timeframe` column, if "
        "present, is honoured). Every row is checked; one bad row rejects the file and nothing is written. "
        "Bars the flow collected are kept (v1: `?overwrite=true` replaces them).",
    ),
)
def upload(file: Annotated[UploadFile, File(description="The CSV file")], state: State) -> Response:
    data = file.file.read(UPLOAD_MAX_BYTES + 1)
    if len(data) > UPLOAD_MAX_BYTES:
        raise HTTPException(413, f"file larger than {UPLOAD_MAX_BYTES} bytes")
    now = now_ms()
    parsed = parse_bar_csv(data, now, default_timeframe="1m")
    if parsed.message or parsed.bad_rows:
        body = UploadRejected(
            message=parsed.message or f"{parsed.bad_rows} bad row(s); nothing was written",
            bad_rows=parsed.bad_rows,
            errors=[{"row": r, "line": r + 1, "errors": errs} for r, errs in parsed.errors],
        )
        return json_response({"detail": body.model_dump()}, status_code=422)
    result = state.store.upload_bars(parsed.rows, False, now)
    return json_response(
        {
            "status": "success",
            "rows": len(parsed.rows),
            "symbols": sorted({r[0] for r in parsed.rows}),
            "inserted": result.inserted,
            "replaced": result.replaced,
            "skipped": result.skipped,
        }
    )
