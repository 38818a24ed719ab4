"""The last book the API rebuilt, per symbol: a later request on the same snapshot applies only newer diffs.

A dashboard polling the live book, or a client walking through time, would otherwise load
the same snapshot (thousands of levels) and re-apply the same diffs at every request.
Stored snapshots and diffs never change once written, so a cached book stays true.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ticklens.domain.book import OrderBook


class BookCache:
    def __init__(self, max_symbols: int = 64) -> None:
        self.max_symbols = max_symbols
        self._lock = threading.Lock()
        self._books: OrderedDict[str, tuple[int, OrderBook]] = OrderedDict()

    def get(self, symbol: str, snapshot_id: int, until_id: int) -> OrderBook | None:
        """A copy of the cached book if it was built from this snapshot and is not past `until_id`."""
        with self._lock:
            hit = self._books.get(symbol)
            if hit is None or hit[0] != snapshot_id or hit[1].last_update_id > until_id:
                return None
            self._books.move_to_end(symbol)
            return hit[1].copy()

    def put(self, symbol: str, snapshot_id: int, book: OrderBook) -> None:
        """Keep `book` (the caller does not change it afterwards)."""
        with self._lock:
            self._books[symbol] = (snapshot_id, book)
            self._books.move_to_end(symbol)
            while len(self._books) > self.max_symbols:
                self._books.popitem(last=False)
