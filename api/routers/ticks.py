"""GET /api/v1/ticks/{symbol}: the newest trades, optionally within a time range."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import Limit, OneSymbol, listing
from api.models import TicksResponse
from ticklens.domain.times import iso_ms

router = APIRouter(tags=["ticks"])


def tick_rows(rows: list[tuple]) -> list[dict]:
    return [
        {
            "trade_id": tid,
            "time": iso_ms(ts),
            "ts_ms": ts,
            "price": price,
            "qty": qty,
            "is_buyer_maker": bool(ibm),
            "side": "sell" if ibm else "buy",
        }
        for tid, ts, price, qty, ibm, _first, _last in rows
    ]


@router.get("/ticks/{symbol}", response_model=TicksResponse)
def get_ticks(q: OneSymbol, limit: Limit = 100) -> Response:
    """Trades of one symbol, oldest first: the newest `limit` within [start, end)."""
    status, rows = q.newest(q.reader.ticks, limit)
    return listing(q.symbol, status, "ticks", tick_rows(rows))
