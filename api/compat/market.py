"""The original API's /api/symbols, /api/ticks, /api/ohlc, /api/stats and /api/timeseries.

`window` of /api/stats counts ticks, as the original did; the numbers come from
`ticklens.domain.stats` (the same `window_stats` as /api/v1/stats, over trades).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import polars as pl
from fastapi import APIRouter, Query, Response

from api.compat.common import TAG, error_answer, num, or_error, richer
from api.compat.models import OhlcAnswer, StatsAnswer, SymbolList, TicksAnswer, TimeseriesAnswer
from api.deps import MAX_LIMIT, Reader, State, SymbolPath, json_response, require_symbol
from storage.port import BAR_OUT_COLUMNS, TICK_COLUMNS
from ticklens.domain.stats.changes import VOLATILITY_WINDOW, bar_changes
from ticklens.domain.stats.window import tick_window_stats
from ticklens.domain.times import iso_ms

router = APIRouter(tags=[TAG])

Timeframe = Annotated[Literal["1s", "1m", "5m"], Query(description="Bar length")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many rows, 1 … 100,000 (the newest ones)")]


def ohlc_rows(symbol: str, timeframe: str, rows: list[tuple]) -> list[dict]:
    """Stored bars (BAR_OUT_COLUMNS) as the original's rows."""
    return [
        {
            "symbol": symbol,
            "timeframe": timeframe,
            "timestamp": iso_ms(r[0]),
            "open": r[1],
            "high": r[2],
            "low": r[3],
            "close": r[4],
            "volume": r[5],
        }
        for r in rows
    ]


@router.get(
    "/api/symbols",
    response_model=SymbolList,
    description=richer("/api/v1/symbols", "Symbols with stored data, as a list of strings."),
)
def symbols(reader: Reader) -> Response:
    return json_response({"symbols": sorted(reader.symbols_with_data())})


@router.get(
    "/api/ticks/{symbol}",
    response_model=TicksAnswer,
    description=richer(
        "/api/v1/ticks/{symbol}", "The newest `limit` trades, oldest first (v1 adds trade ids, sides, time ranges)."
    ),
)
def ticks(symbol: SymbolPath, reader: Reader, state: State, limit: Limit = 100) -> Response:
    status = require_symbol(state, reader, symbol)
    rows = reader.ticks(symbol, limit) if status == "ok" else []
    i_ts, i_px, i_qty = (TICK_COLUMNS.index(c) for c in ("ts_ms", "price", "qty"))
    data = [{"symbol": symbol, "timestamp": iso_ms(r[i_ts]), "price": r[i_px], "size": r[i_qty]} for r in rows]
    return json_response({"symbol": symbol, "count": len(data), "data": data})


@router.get(
    "/api/ohlc/{symbol}",
    response_model=OhlcAnswer,
    description=richer(
        "/api/v1/ohlc/{symbol}",
        "The newest `limit` bars, oldest first (v1 adds quote volume, trade count, VWAP, in-progress and revision "
        "flags, time ranges and chart thinning).",
    ),
)
def ohlc(symbol: SymbolPath, reader: Reader, state: State, timeframe: Timeframe = "1m", limit: Limit = 100) -> Response:
    status = require_symbol(state, reader, symbol)
    rows = reader.bars(symbol, timeframe, limit) if status == "ok" else []
    data = ohlc_rows(symbol, timeframe, rows)
    return json_response({"symbol": symbol, "timeframe": timeframe, "count": len(data), "data": data})


@router.get(
    "/api/stats/{symbol}",
    **or_error(
        StatsAnswer,
        "/api/v1/stats/{symbol}",
        "Over the newest `window` trades: last price, mean and sample std of the prices, min, max, volume, VWAP. "
        '`{"error": "No data available"}` when none is stored. (v1: over bars, with return and realised volatility.)',
    ),
)
def stats(
    symbol: SymbolPath,
    reader: Reader,
    state: State,
    window: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="The newest this many trades")] = 100,
) -> Response:
    status = require_symbol(state, reader, symbol)
    rows = reader.ticks(symbol, window) if status == "ok" else []
    if not rows:
        return error_answer("No data available", symbol=symbol)
    df = pl.DataFrame(rows, schema=list(TICK_COLUMNS), orient="row")
    s = tick_window_stats(df["price"], df["qty"])
    std = s["std"] if s["count"] > 1 else 0.0  # one trade: no spread at all (clients format a number)
    return json_response(
        {
            "symbol": symbol,
            "count": s["count"],
            "last_price": s["last"],
            "mean": s["mean"],
            "std": std,
            "min": s["min"],
            "max": s["max"],
            "volume": s["volume"],
            "vwap": s["vwap"] if s["vwap"] is not None else s["last"],
            "window": window,
            "first_time": iso_ms(rows[0][1]),
            "last_time": iso_ms(rows[-1][1]),
        }
    )


@router.get(
    "/api/timeseries/{symbol}",
    response_model=TimeseriesAnswer,
    description=richer(
        "/api/v1/ohlc/{symbol}",
        f"The newest `limit` bars with returns (close over the previous close − 1), volatility (sample std of the "
        f"last {VOLATILITY_WINDOW} returns) and range (high − low over close), all in percent; null where undefined. "
        "(Rolling statistics per bar: /api/v1/stats/{symbol}.)",
    ),
)
def timeseries(
    symbol: SymbolPath, reader: Reader, state: State, timeframe: Timeframe = "1m", limit: Limit = 100
) -> Response:
    status = require_symbol(state, reader, symbol)
    # Enough bars before the first one returned that its return and volatility are defined.
    rows = reader.bars(symbol, timeframe, limit + VOLATILITY_WINDOW) if status == "ok" else []
    if not rows:
        return json_response({"symbol": symbol, "timeframe": timeframe, "count": 0, "data": []})
    df = bar_changes(pl.DataFrame(rows, schema=list(BAR_OUT_COLUMNS), orient="row")).tail(limit)
    data = [
        {
            "timestamp": iso_ms(r["start_ms"]),
            "open": r["open"],
            "high": r["high"],
            "low": r["low"],
            "close": r["close"],
            "volume": r["volume"],
            "returns": num(r["returns"]),
            "volatility": num(r["volatility"]),
            "range_pct": r["range_pct"] if r["range_pct"] is not None and math.isfinite(r["range_pct"]) else 0.0,
        }
        for r in df.iter_rows(named=True)
    ]
    return json_response({"symbol": symbol, "timeframe": timeframe, "count": len(data), "data": data})
