"""GET /api/v1/book/{symbol} (the order book at any past moment), /book/{symbol}/gaps, /quotes/{symbol}.

The book is rebuilt from the nearest stored snapshot plus the stored diffs after it
(`ticklens.domain.book_history`), read through the `StoreReader`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from api.book_cache import BookCache
from api.deps import (
    Limit,
    OneSymbol,
    Reader,
    State,
    SymbolPath,
    json_response,
    listing,
    param_error,
    require_symbol,
    status_header,
)
from api.models import BookGapsResponse, BookResponse, QuoteSamplesResponse, QuotesResponse
from storage.port import StoreReader
from ticklens.domain.book import OrderBook
from ticklens.domain.book_history import BookView, HistoryError, advance, view
from ticklens.domain.times import iso_ms, now_ms, parse_time

router = APIRouter(tags=["order book"])

MAX_DEPTH = 1000
MAX_SAMPLES = 2000  # moments per sampled-quotes answer (a chart has fewer pixels)
_AT_DOC = "ISO-8601 (`2024-08-08T23:57:00.250Z`) or epoch ms; default: now (the newest stored book)"


def book_at(
    reader: StoreReader, cache: BookCache, symbol: str, at_ms: int | None, update_id: int | None, depth: int
) -> BookView:
    """The stored book after the last applied event with T <= at (or after update `update_id`)."""
    if update_id is not None:
        hit = reader.depth_updates(symbol, update_id, update_id)
        if not hit:
            raise HTTPException(404, f"{symbol}: no applied depth update {update_id} is stored")
        last = (update_id, hit[0].txn_ms)
        at_ms = hit[0].txn_ms
    else:
        at_ms = now_ms() if at_ms is None else at_ms
        found = reader.last_depth_update(symbol, at_ms)
        if found is None:
            raise HTTPException(
                404, f"{symbol}: no book stored at or before {iso_ms(at_ms)} (the first depth event is later)"
            )
        last = found
    head = reader.book_snapshot_before(symbol, last[0], levels=False)
    if head is None:
        raise HTTPException(404, f"{symbol}: no stored snapshot at or before update {last[0]} (not retained)")
    book = cache.get(symbol, head.last_update_id, last[0])
    fresh = book is None
    if book is None:
        snap = reader.book_snapshot_before(symbol, last[0])
        assert snap is not None
        book = OrderBook(symbol)
        book.load_snapshot(snap)
    try:
        advance(book, reader.depth_updates(symbol, book.last_update_id, last[0]), last[0], after_snapshot=fresh)
    except HistoryError as e:
        raise HTTPException(404, f"{e} (not retained, or never stored)") from None
    cache.put(symbol, head.last_update_id, book)
    return view(book, at_ms, depth, reader.book_gaps(symbol, at_ms, at_ms + 1))


def view_body(v: BookView) -> dict:
    return {
        "symbol": v.symbol,
        "at_ms": v.at_ms,
        "at": iso_ms(v.at_ms),
        "update_id": v.update_id,
        "ts_ms": v.ts_ms,
        "time": iso_ms(v.ts_ms),
        "bids": v.bids,
        "asks": v.asks,
        "complete_range": list(v.complete_range),
        "stale": v.stale,
    }


def parse_at(at: str | None) -> int | None:
    if at is None:
        return None
    try:
        return parse_time(at)
    except ValueError as e:
        raise param_error("query", "at", str(e), at) from None


@router.get("/book/{symbol}", response_model=BookResponse)
def get_book(
    symbol: SymbolPath,
    reader: Reader,
    state: State,
    at: Annotated[str | None, Query(description=_AT_DOC, max_length=40)] = None,
    depth: Annotated[int, Query(ge=1, le=MAX_DEPTH, description="Levels per side, 1 … 1000")] = 20,
    update_id: Annotated[
        int | None, Query(ge=0, description="Instead of `at`: the book right after this applied depth update")
    ] = None,
) -> Response:
    """The order book as it was at `at`: after every applied depth event with transaction time
    T ≤ at (ties by update id), rebuilt from the nearest stored snapshot plus the stored diffs.
    `stale` is true inside a book gap (then this is the last book known before it)."""
    if at is not None and update_id is not None:
        raise param_error("query", "update_id", "give either at or update_id, not both", update_id)
    at_ms = parse_at(at)
    require_symbol(state, reader, symbol)
    return json_response(view_body(book_at(reader, state.books, symbol, at_ms, update_id, depth)))


@router.get("/book/{symbol}/gaps", response_model=BookGapsResponse)
def get_book_gaps(q: OneSymbol) -> Response:
    """Intervals in which the book was not known (chain break, reconnect, failed snapshot, crossed book)."""
    q.status()  # 404 for a symbol neither configured nor stored
    gaps = q.reader.book_gaps(q.symbol, q.start, q.end)
    rows = [
        {
            "from_update_id": g.from_update_id,
            "from_ms": g.from_ms,
            "to_update_id": g.to_update_id,
            "to_ms": g.to_ms,
            "reason": g.reason,
            "status": g.status,
            "detail": g.detail,
        }
        for g in gaps
    ]
    return json_response({"symbol": q.symbol, "count": len(rows), "gaps": rows})


def quote_rows(rows: list[tuple]) -> list[dict]:
    return [
        {
            "update_id": uid,
            "time": iso_ms(ts),
            "ts_ms": ts,
            "bid": bid,
            "bid_qty": bq,
            "ask": ask,
            "ask_qty": aq,
            "source": source,
        }
        for uid, ts, _ev, _recv, bid, bq, ask, aq, source in rows
    ]


@router.get("/quotes/{symbol}", response_model=QuotesResponse)
def get_quotes(q: OneSymbol, limit: Limit = 1000) -> Response:
    """Best bid/ask updates (L1), oldest first: the newest `limit` within [start, end)."""
    status, rows = q.newest(q.reader.quotes, limit)
    return listing(q.symbol, status, "quotes", quote_rows(rows))


@router.get("/quotes/{symbol}/sampled", response_model=QuoteSamplesResponse)
def get_quote_samples(
    q: OneSymbol,
    every_ms: Annotated[int, Query(ge=1, le=86_400_000, description="Interval length, ms (a chart's bar width)")],
) -> Response:
    """Best bid/ask at the end of each interval [start + k·every_ms, start + (k+1)·every_ms) in
    [start, end): the last L1 update before the interval's end, carried in when the interval had
    none. For lines over candles of any length without sending every update (at most 2,000)."""
    start, end = q.start, q.end
    if start is None or end is None:
        raise param_error("query", "start" if start is None else "end", "sampled quotes need start and end", None)
    n = -(-(end - start) // every_ms)
    if n > MAX_SAMPLES:
        raise param_error(
            "query", "every_ms", f"{n} intervals: at most {MAX_SAMPLES} (raise every_ms or narrow the range)", every_ms
        )
    status = q.status()
    moments = [start + k * every_ms for k in range(n)]
    found = q.reader.quotes_before(q.symbol, [min(at + every_ms, end) for at in moments]) if status == "ok" else []
    samples = [
        {
            "at_ms": at,
            "at": iso_ms(at),
            "update_id": row[0],
            "ts_ms": row[1],
            "bid": row[4],
            "bid_qty": row[5],
            "ask": row[6],
            "ask_qty": row[7],
            "source": row[8],
        }
        for at, row in zip(moments, found, strict=False)
        if row is not None
    ]
    body = {"symbol": q.symbol, "status": status, "every_ms": every_ms, "count": len(samples), "samples": samples}
    return json_response(body, headers=status_header(status))
