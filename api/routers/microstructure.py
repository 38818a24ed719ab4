"""GET /api/v1/microstructure/{symbol} and /microstructure/{symbol}/vpin: the flow's micro bars."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import Limit, Reader, State, SymbolPath, TimeRange, json_response, require_symbol
from api.models import MicroResponse, VpinResponse
from storage.port import MICRO_OUT_COLUMNS
from ticklens.domain.timeframes import Timeframe
from ticklens.domain.times import iso_ms

router = APIRouter(tags=["microstructure"])

TimeframeQuery = Annotated[Timeframe, Query(description="Bar length")]


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
def get_microstructure(
    symbol: SymbolPath,
    store: Reader,
    state: State,
    time_range: TimeRange,
    timeframe: TimeframeQuery = "1m",
    limit: Limit = 100,
) -> Response:
    """Micro bars oldest first: the newest `limit` starting within [start, end)."""
    status = require_symbol(state, store, symbol)
    rows = store.micro_bars(symbol, timeframe, limit, *time_range) if status == "ok" else []
    body = {
        "symbol": symbol,
        "timeframe": timeframe,
        "status": status,
        "count": len(rows),
        "bars": micro_rows(rows),
    }
    return json_response(body, headers={"X-Ticklens-Status": status})


@router.get("/microstructure/{symbol}/vpin", response_model=VpinResponse)
def get_vpin(symbol: SymbolPath, store: Reader, state: State, time_range: TimeRange, limit: Limit = 100) -> Response:
    """VPIN volume buckets oldest first: the newest `limit` filled within [start, end)."""
    status = require_symbol(state, store, symbol)
    rows = store.vpin_buckets(symbol, limit, *time_range) if status == "ok" else []
    buckets = [
        {"bucket": b, "time": iso_ms(t), "ts_ms": t, "buy_volume": bv, "sell_volume": sv, "vpin": v}
        for b, t, bv, sv, v in rows
    ]
    body = {"symbol": symbol, "status": status, "count": len(rows), "buckets": buckets}
    return json_response(body, headers={"X-Ticklens-Status": status})
