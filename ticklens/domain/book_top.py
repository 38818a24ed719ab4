"""The best few levels of a local book after every depth event, without a pass over the side.

`OrderBook.top(n)` walks the price grid from the best level, and falls back to ordering the
whole side when the levels below the best are sparse: fine for a snapshot, too dear after
every event (multi-level OFI reads the top five per event). `TopLevels` keeps the best
`keep` price keys per side from its previous answer and the prices the events since then
set. Why that is exact: every level outside the kept keys and the newly set prices ranked
below all kept keys, so once the kept keys that are gone are dropped, the survivors and the
new prices at least as good as the worst survivor are the side's true best levels, in order,
down to that survivor. Only when fewer than `n` survive (a sweep), after a snapshot, or when
the book re-keyed its prices is the side ordered afresh.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from ticklens.domain.book import ZERO_QTY, OrderBook


def _rank(key: str) -> tuple[int, str]:
    """A canonical price key's numeric order: (length, characters)."""
    return (len(key), key)


class TopLevels:
    """The best levels per side of one `OrderBook`, told what each applied event set."""

    __slots__ = ("book", "keep", "fresh", "_keys", "_events", "_odd")

    def __init__(self, book: OrderBook, keep: int = 32) -> None:
        self.book = book
        self.keep = keep
        self.fresh = 0  # sides ordered afresh (the costly case), for benchmarks and tests
        self._keys: list[list[str] | None] = [None, None]  # best first, per side (bids, asks)
        self._events: list[tuple[Iterable[Sequence[str]], Iterable[Sequence[str]]]] = []
        self._odd = book.odd_levels

    def reset(self) -> None:
        """The book was reloaded (a snapshot): order both sides afresh at the next `top`."""
        self._keys = [None, None]
        self._events.clear()

    def note(self, bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> None:
        """The levels of an event just applied to the book (held until the next `top`, not copied)."""
        self._events.append((bids, asks))

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The best n levels per side as (price, qty) strings, best first (as `OrderBook.top`)."""
        book = self.book
        if book.odd_levels != self._odd:
            # The slow path took a level: it may be keyed otherwise than the event spelled it, or the
            # book re-keyed every price (more decimals). Only the fast path's keys are the events' own.
            self._odd = book.odd_levels
            self._keys = [None, None]
        keep = max(self.keep, n)
        out = (self._side(0, book.bids, n, keep), self._side(1, book.asks, n, keep))
        self._events.clear()
        return out

    def _side(self, i: int, levels: dict[str, str], n: int, keep: int) -> list[tuple[str, str]]:
        keys = self._keys[i]
        alive = None
        if keys is not None:
            alive = self._merge(i, levels, keys, [k for k in keys if k in levels], keep)
            if alive and len(alive) < keep // 2 and len(alive) < len(levels):
                self._extend(i, levels, alive, keep)
            if len(alive) < n and len(alive) < len(levels):
                alive = None
        if alive is None:
            self.fresh += 1
            pick = heapq.nlargest if i == 0 else heapq.nsmallest
            alive = pick(keep, levels, key=_rank)
        self._keys[i] = alive
        return [(k, levels[k]) for k in alive[:n]]

    def _merge(self, i: int, levels: dict[str, str], keys: list[str], alive: list[str], keep: int) -> list[str]:
        """The surviving kept keys with the prices set since that rank at least as well as the worst
        survivor: the side's true best levels down to that survivor."""
        if not alive:
            return alive  # nothing to rank against: `_side` orders the side afresh
        worst = alive[-1]
        lw = len(worst)
        held = set(keys)
        zero = ZERO_QTY
        grew = False
        for event in self._events:
            if i == 0:
                for p, q in event[0]:
                    m = len(p)
                    if (m > lw or (m == lw and p >= worst)) and q not in zero and p not in held and p in levels:
                        held.add(p)
                        alive.append(p)
                        grew = True
            else:
                for p, q in event[1]:
                    m = len(p)
                    if (m < lw or (m == lw and p <= worst)) and q not in zero and p not in held and p in levels:
                        held.add(p)
                        alive.append(p)
                        grew = True
        if grew:
            lengths = list(map(len, alive))
            if min(lengths) == max(lengths):  # the usual case: one length, where text order is numeric
                alive.sort(reverse=i == 0)
            else:
                alive.sort(key=_rank, reverse=i == 0)
            del alive[keep:]
        return alive

    def _extend(self, i: int, levels: dict[str, str], alive: list[str], keep: int) -> None:
        """More levels after the worst kept one, by probing the book's price grid from it (every level
        lies on the grid, so what the probes find continues the exact order); a bounded number of probes."""
        book = self.book
        step = -book._step if i == 0 else book._step
        t = book._tick(alive[-1]) + step
        end = t + 2 * keep * step
        if end <= 0:
            end = 0 if t > 0 else t  # bids stop above a zero price
        for k in book._fmt_range(t, end, step):
            if k in levels:
                alive.append(k)
                if len(alive) >= keep:
                    return
