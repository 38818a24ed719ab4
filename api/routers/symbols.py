"""GET /api/v1/symbols and GET /api/v1/stats/{symbol}: what is stored, and a window summary."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Annotated

import polars as pl
from fastapi import APIRouter, Query

from api.deps import Limit, OneSymbol, Reader, State, SymbolPath, TimeframeQuery, configured_symbols, require_symbol
from api.models import RollingStatsResponse, RollingStatsRow, StatsResponse, SymbolInfo, SymbolsResponse
from storage.port import BAR_OUT_COLUMNS, Span, StoreReader
from ticklens.domain.bars import price_decimals
from ticklens.domain.stats.window import window_stats
from ticklens.domain.timeframes import Timeframe
from ticklens.domain.times import iso_ms

router = APIRouter(tags=["symbols"])


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


@router.get("/symbols", response_model=SymbolsResponse)
def get_symbols(store: Reader, state: State) -> SymbolsResponse:
    """Every configured symbol and every symbol with stored data."""
    configured = configured_symbols(state, store)
    stored = set(store.symbols_with_data())
    out = []
    for sym in sorted(configured | stored):
        s = store.symbol_summary(sym)
        out.append(
            SymbolInfo(
                symbol=sym,
                configured=sym in configured,
                has_data=sym in stored,
                timeframes=s.timeframes,
                first_bar_time=_iso(s.first_ms),
                first_bar_ms=s.first_ms,
                last_trade_time=_iso(s.last_trade_ms),
                last_trade_ms=s.last_trade_ms,
                last_price=s.last_price,
                ticks=s.ticks,
                uploaded_bars=s.uploaded_bars,
                price_decimals=_price_decimals(store, sym, s.timeframes),
            )
        )
    return SymbolsResponse(symbols=out)


# Columns of a bar row (BAR_OUT_COLUMNS) that are trade prices.
_PRICE_COLUMNS = [BAR_OUT_COLUMNS.index(c) for c in ("open", "high", "low", "close")]


def _price_decimals(store: StoreReader, symbol: str, timeframes: list[str]) -> int | None:
    """Decimals the symbol's newest bars' prices show (of its finest stored timeframe)."""
    if not timeframes:
        return None
    rows = store.bars(symbol, timeframes[0], 100)
    return price_decimals([r[i] for r in rows for i in _PRICE_COLUMNS])


@router.get("/stats/{symbol}", response_model=StatsResponse)
def get_stats(
    symbol: SymbolPath,
    store: Reader,
    state: State,
    window: Annotated[int, Query(ge=2, le=100_000, description="The newest this many bars")] = 60,
    timeframe: TimeframeQuery = "1m",
) -> StatsResponse:
    """count, last, mean, std, min, max, volume, VWAP, return and realised volatility over the last `window` bars."""
    status = require_symbol(state, store, symbol)
    rows = store.bars(symbol, timeframe, window) if status == "ok" else []
    df = pl.DataFrame(rows, schema=list(BAR_OUT_COLUMNS), orient="row")
    stats = window_stats(df)
    extra = {}
    if rows:
        extra = {
            "first_time": iso_ms(rows[0][0]),
            "last_time": iso_ms(rows[-1][0]),
            "in_progress_included": not rows[-1][10],
        }
    return StatsResponse.model_validate(
        {"symbol": symbol, "timeframe": timeframe, "window": window, "status": status, **stats, **extra}
    )


@router.get("/stats/{symbol}/rolling", response_model=RollingStatsResponse)
def get_rolling_stats(
    q: OneSymbol,
    timeframe: Annotated[Timeframe, Query(description="Bar length (one of `stats.timeframes`)")] = "1m",
    limit: Limit = 1000,
) -> RollingStatsResponse:
    """The flow's per-bar rolling statistics (`stats.window` aligned bars ending at each bar), as stored.

    Unlike `/stats/{symbol}` (a summary of the newest bars, in-progress one included), these are
    computed once per closed bar in the stream, over aligned bars (a bar with no trade carries its
    close with zero volume): the series an alert or a chart of rolling volatility uses.
    """
    window = q.state.cfg.stats.window
    status = q.status()
    rows = (
        q.reader.symbol_stats_rows(q.symbol, timeframe, window, Span(q.start, q.end), limit) if status == "ok" else []
    )
    return RollingStatsResponse(
        symbol=q.symbol,
        timeframe=timeframe,
        window=window,
        status=status,
        count=len(rows),
        rows=[RollingStatsRow(time=iso_ms(r.start_ms), ts_ms=r.start_ms, **_finite(asdict(r))) for r in rows],
    )


def _finite(row: dict) -> dict:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items() if k != "start_ms"
    }
