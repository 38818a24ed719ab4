"""GET /api/v1/ohlc/{symbol}: bars of one timeframe, the in-progress one flagged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import Limit, OneSymbol, TimeframeQuery, listing
from api.models import OhlcResponse
from storage.port import BAR_OUT_COLUMNS
from ticklens.domain.stats.thinning import thin_bars
from ticklens.domain.timeframes import TIMEFRAME_MS
from ticklens.domain.times import iso_ms

router = APIRouter(tags=["bars"])


def bar_rows(rows: list[tuple], spans: list[int]) -> list[dict]:
    return [
        {
            "time": iso_ms(start),
            "ts_ms": start,
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": v,
            "quote_volume": qv,
            "trades": n,
            "taker_buy_volume": tbv,
            "vwap": vwap,
            "in_progress": not closed,
            "revision": rev,
            "origin": origin,
            "span_ms": span,
        }
        for (start, o, h, lo, c, v, qv, n, tbv, vwap, closed, rev, origin), span in zip(rows, spans, strict=True)
    ]


@router.get("/ohlc/{symbol}", response_model=OhlcResponse)
def get_ohlc(
    q: OneSymbol,
    timeframe: TimeframeQuery = "1m",
    limit: Limit = 100,
    max_points: Annotated[
        int | None,
        Query(
            ge=10,
            le=100_000,
            description="Merge consecutive bars so at most this many come back (for charts): first open, "
            "highest high, lowest low, last close, summed volume; `span_ms` is each one's width",
        ),
    ] = None,
) -> Response:
    """Bars oldest first: the newest `limit` starting within [start, end); `in_progress` marks an open bar."""
    status, rows = q.newest(q.reader.bars, timeframe, limit)
    tf_ms = TIMEFRAME_MS[timeframe]
    if max_points is not None and len(rows) > max_points:
        rows, spans = thin_bars(rows, BAR_OUT_COLUMNS, max_points, tf_ms)
    else:
        spans = [tf_ms] * len(rows)
    return listing(q.symbol, status, "bars", bar_rows(rows, spans), timeframe=timeframe)
