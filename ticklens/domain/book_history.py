"""Book time travel: the book at a past moment, rebuilt from a stored snapshot and the diffs after it.

Pure computation over records the store hands back (`BookSnapshot`, `DepthUpdate`,
`BookGap`). The book "at time t" is the book after the last applied depth event
whose transaction time T <= t (ties broken by update id), i.e. after every applied
event up to it in update-id order; the store picks that event and the newest
snapshot at or before it, and `rebuild` applies the diffs in between, checking
that they chain (a hole, from retention or a lost write, is an error, never a
silently wrong book).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate, OrderBook

# Above this many levels per side, reading the sorted sides beats probing the price grid.
_PROBE_DEPTH = 20


class HistoryError(ValueError):
    """The stored snapshot and diffs do not rebuild the book at the asked point."""


def _continues(d: DepthUpdate, book_id: int) -> bool:
    """True if `d` may be applied to a book known at update `book_id`.

    It continues the chain (USD-M `pu`, spot `U - 1`), or straddles the id (Binance's rule for
    the first event after a snapshot), or is the event the book was taken at (applying it
    again changes nothing: quantities are absolute).
    """
    if d.final_id == book_id:
        return True
    if d.prev_final_id is None:  # spot
        return d.first_id - 1 == book_id or d.first_id <= book_id + 1 <= d.final_id
    return d.prev_final_id == book_id or d.first_id <= book_id <= d.final_id


def advance(book: OrderBook, diffs: Iterable[DepthUpdate], until_id: int, *, after_snapshot: bool = False) -> None:
    """Apply the stored diffs after the book's own update id, up to `until_id`, checking the chain.

    `after_snapshot`: the book was just loaded from a snapshot, so the first diff may straddle
    it (or be the event it was taken at). Raises HistoryError if the diffs do not reach
    `until_id` in an unbroken chain.
    """
    at = book.last_update_id
    first = after_snapshot
    for d in diffs:
        if d.final_id > until_id:
            break
        if d.final_id < at or (d.final_id == at and not first):
            continue
        ok = _continues(d, at) if first else (d.first_id - 1 if d.prev_final_id is None else d.prev_final_id) == at
        if not ok:
            raise HistoryError(
                f"{book.symbol}: stored depth updates do not chain at u {d.final_id}"
                f" (book known at {at}): history missing there"
            )
        book.apply(d.bid_px, d.bid_qty, d.ask_px, d.ask_qty, d.final_id, d.txn_ms)
        at = d.final_id
        first = False
    if at != until_id:
        raise HistoryError(f"{book.symbol}: depth update {until_id} is not stored after {at}")


def rebuild(snapshot: BookSnapshot, diffs: Iterable[DepthUpdate], until_id: int) -> OrderBook:
    """The book after update `until_id`: `snapshot` plus the stored diffs up to it, in id order.

    `diffs` are the stored events with final id >= the snapshot's id; those past `until_id`
    are ignored. Raises HistoryError if they do not chain from the snapshot to `until_id`.
    """
    book = OrderBook(snapshot.symbol)
    book.load_snapshot(snapshot)
    advance(book, diffs, until_id, after_snapshot=True)
    return book


def is_stale(gaps: Iterable[BookGap], at_ms: int) -> bool:
    """True if `at_ms` falls inside an interval in which the book was not known."""
    return any(g.from_ms < at_ms and (g.to_ms is None or at_ms < g.to_ms) for g in gaps)


@dataclass(slots=True)
class BookView:
    """The book at a moment, as the API answers it (prices and quantities as exchange strings)."""

    symbol: str
    at_ms: int
    update_id: int  # the last applied event at or before at_ms
    ts_ms: int  # its transaction time
    bids: list[tuple[str, str]]  # best first
    asks: list[tuple[str, str]]
    complete_range: tuple[float | None, float | None]  # None: unbounded (the whole side is known)
    stale: bool


def view(book: OrderBook, at_ms: int, depth: int, gaps: Iterable[BookGap]) -> BookView:
    """The best `depth` levels per side of a rebuilt book, its complete range and staleness."""
    if depth <= _PROBE_DEPTH:
        bids, asks = book.top(depth)
    else:
        bids, asks = book.side_levels("bid")[:depth], book.side_levels("ask")[:depth]
    rng = book.complete_range
    low, high = (None, None) if rng is None else rng
    complete = (None if low is None or low <= 0 else low, None if high is None or math.isinf(high) else high)
    return BookView(book.symbol, at_ms, book.last_update_id, book.ts_ms, bids, asks, complete, is_stale(gaps, at_ms))
