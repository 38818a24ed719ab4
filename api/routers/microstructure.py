"""GET /api/v1/microstructure/{symbol}, its /vpin buckets, and /heatmap (resting size by price and time)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from api.deps import Limit, OneSymbol, TimeframeQuery, json_response, listing
from api.models import HeatmapResponse, MicroResponse, VpinResponse
from api.routers.book import book_at
from storage.port import MICRO_OUT_COLUMNS
from ticklens.domain.micro.heatmap import bin_levels, column_times, price_bins
from ticklens.domain.times import FAR_FUTURE, iso_ms

router = APIRouter(tags=["microstructure"])

ALL_LEVELS = 1 << 30  # a heatmap column bins every level of the book


def micro_rows(rows: list[tuple]) -> list[dict]:
    """Rows keyed like /ohlc's bars: `time` and `ts_ms` for the bucket start, then the columns."""
    names = MICRO_OUT_COLUMNS[1:]
    out = []
    for row in rows:
        item: dict[str, object] = {"time": iso_ms(row[0]), "ts_ms": row[0]}
        item.update(zip(names, row[1:], strict=True))
        item["complete"] = bool(item["complete"])
        out.append(item)
    return out


@router.get("/microstructure/{symbol}", response_model=MicroResponse)
def get_microstructure(q: OneSymbol, timeframe: TimeframeQuery = "1m", limit: Limit = 100) -> Response:
    """Micro bars oldest first: the newest `limit` starting within [start, end)."""
    status, rows = q.newest(q.reader.micro_bars, timeframe, limit)
    return listing(q.symbol, status, "bars", micro_rows(rows), timeframe=timeframe)


@router.get("/microstructure/{symbol}/vpin", response_model=VpinResponse)
def get_vpin(q: OneSymbol, limit: Limit = 100) -> Response:
    """VPIN volume buckets oldest first: the newest `limit` filled within [start, end)."""
    status, rows = q.newest(q.reader.vpin_buckets, limit)
    buckets = [
        {"bucket": b, "time": iso_ms(t), "ts_ms": t, "buy_volume": bv, "sell_volume": sv, "vpin": v}
        for b, t, bv, sv, v in rows
    ]
    return listing(q.symbol, status, "buckets", buckets)


@router.get("/microstructure/{symbol}/heatmap", response_model=HeatmapResponse)
def get_heatmap(
    q: OneSymbol,
    columns: Annotated[int, Query(ge=1, le=400, description="Moments (image columns), evenly over the range")] = 120,
    rows: Annotated[int, Query(ge=2, le=200, description="Price bins (image rows)")] = 60,
    band_bps: Annotated[float, Query(gt=0, le=500, description="Price range: the last mid ± this many bps")] = 20.0,
) -> Response:
    """Resting size per price bin at `columns` moments in [start, end] (default: the 5 minutes up to the
    newest stored depth update, or from the first), each the stored book then (snapshot plus diffs, as /book), summed
    into `rows` equal price bins around the last column's mid. Sized for a screen: at most 400 × 200."""
    q.status()  # 404 for a symbol neither configured nor stored
    symbol, store, start, end = q.symbol, q.reader, q.start, q.end
    if end is None:
        newest = store.last_depth_update(symbol, FAR_FUTURE)
        if newest is None:
            raise HTTPException(404, f"{symbol}: no depth updates stored")
        end = newest[1]
    if start is None:  # the last 5 minutes, from the first stored depth update if that is later
        first = next(store.iter_depth_updates(symbol, None, None, chunk=1), [])
        start = max(end - 300_000, first[0].txn_ms if first else end)
    times = column_times(start, end, columns)
    views = []
    for t in times:
        try:
            views.append(book_at(store, q.state.books, symbol, t, None, ALL_LEVELS))
        except HTTPException:  # before the first stored book, or not retained there: an empty column
            views.append(None)
    last = next((v for v in reversed(views) if v is not None and v.bids and v.asks), None)
    if last is None:
        raise HTTPException(404, f"{symbol}: no stored book in the range")
    mid = (float(last.bids[0][0]) + float(last.asks[0][0])) / 2
    edges = price_bins(mid, band_bps, rows)
    empty = [0.0] * rows
    bid = [empty if v is None else bin_levels(v.bids, edges).tolist() for v in views]
    ask = [empty if v is None else bin_levels(v.asks, edges).tolist() for v in views]
    body = {
        "symbol": symbol,
        "times_ms": times,
        "price_edges": edges.tolist(),
        "bid": bid,
        "ask": ask,
        "stale": [v is None or v.stale for v in views],
    }
    return json_response(body)
