"""The local book's rows for microstructure: `BookSync` that also records `BookLevels`.

After every applied depth event it keeps the best `LEVELS` levels per side (what
multi-level OFI needs). The depth within 10 bps of the book's mid costs a pass over
the levels, and bars only read it at the end of each second, so it is taken only
for an event that is the last of its second: just before an event of a later second
is applied, and at `drain_levels()` for the newest event. Outside the price range the
snapshot covered the levels are not known complete: the depth is NaN there. When the
book becomes unknown (a gap) a row of NaN marks the moment.
"""

from __future__ import annotations

import numpy as np

from ticklens.domain.book import BookSync, DepthUpdate, GapReason, OrderBook
from ticklens.domain.micro.engine import LEVELS, BookLevels

DEPTH_BPS = 10.0
_NAN = float("nan")
_NAN_LEVELS = (_NAN,) * (4 * LEVELS)


def depth_within(sync: BookSync, bps: float = DEPTH_BPS) -> tuple[float, float]:
    """(bid, ask) base quantity within `bps` of the book's mid; NaN unless the band lies in the
    range the last snapshot covered (levels beyond it that never changed are unknown)."""
    book = sync.book
    mid = book.mid
    complete = book.complete_range
    if mid is None or complete is None:
        return (float("nan"), float("nan"))
    low, high = complete
    if mid * (1 - bps / 1e4) < low or mid * (1 + bps / 1e4) > high:
        return (float("nan"), float("nan"))
    return _band(book, bps)


def _band(book: OrderBook, bps: float) -> tuple[float, float]:
    """Quantity per side priced within `bps` of the mid, in exact ticks.

    A narrow band is read by walking the book's price grid from the best level (a few hundred
    dict look-ups), a wide one by one pass over the side, whichever touches fewer prices.
    """
    best_bid, best_ask = book._bb, book._ba  # the book keeps its bests as canonical price strings
    assert best_bid is not None and best_ask is not None
    tb, ta = book._tick(best_bid), book._tick(best_ask)
    mid2 = tb + ta  # twice the mid, in ticks
    scale = 10_000 * 2
    num = round(bps * 1_000_000)  # bps in millionths keeps the bound exact for bps like 10 or 2.5
    lo = -((-mid2 * (10_000 * 1_000_000 - num)) // (scale * 1_000_000))  # ceil
    hi = (mid2 * (10_000 * 1_000_000 + num)) // (scale * 1_000_000)  # floor
    step = book._step
    out = []
    for side, start, stop, direction in ((book.bids, tb, lo, -1), (book.asks, ta, hi, 1)):
        span = abs(start - stop) // step + 1
        total = 0.0
        if span <= len(side):
            if span > 0:
                total = book._grid_sum(side, start, stop + direction, direction * step)
        else:
            for k, q in side.items():
                t = book._tick(k)
                if (t >= lo) if direction < 0 else (t <= hi):
                    total += float(q)
        out.append(total)
    return (out[0], out[1])


class LevelSync(BookSync):
    """`BookSync` whose applied events also become `BookLevels` rows (see the module docstring)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._rows: list[list[float]] = []  # ts, update id, 4 x LEVELS levels, depth bid, depth ask
        self._current: DepthUpdate | None = None

    def on_depth(self, update: DepthUpdate) -> bool:
        self._current = update
        try:
            return super().on_depth(update)
        finally:
            self._current = None

    def _apply(self, u: DepthUpdate) -> None:
        rows = self._rows
        last = rows[-1] if rows else None
        if (
            last is not None
            and last[-1] != last[-1]
            and last[2] == last[2]
            and u.txn_ms // 1000 != int(last[0]) // 1000
        ):
            rows[-1][-2:] = depth_within(self)  # the state after the previous event ends its second
        super()._apply(u)
        if not self.live:  # the event crossed the book: its state is no valid book
            return
        bp, bq, ap, aq = self.book.top_floats(LEVELS)
        nb, na = _NAN_LEVELS[: LEVELS - len(bp)], _NAN_LEVELS[: LEVELS - len(ap)]
        rows.append([float(u.txn_ms), float(2 * u.final_id), *bp, *nb, *bq, *nb, *ap, *na, *aq, *na, _NAN, _NAN])

    def _lose(self, reason: GapReason, detail: str) -> None:
        was_live = self.live
        super()._lose(reason, detail)
        if was_live:
            u = self._current
            ts = u.txn_ms if u is not None else self.book.ts_ms
            # An odd key sorts after the last applied event's row and is never an event's own.
            seq = 2 * self._last_u + 1  # final id of the last applied event
            self._rows.append([float(ts), float(seq), *_NAN_LEVELS, float("nan"), float("nan")])

    def drain_levels(self) -> BookLevels:
        """The rows since the last call (the newest one with its depth)."""
        rows = self._rows
        if rows and self.live and rows[-1][-1] != rows[-1][-1] and rows[-1][2] == rows[-1][2]:
            rows[-1][-2:] = depth_within(self)
        a = np.array(rows, dtype=np.float64).reshape(len(rows), 2 + 4 * LEVELS + 2)
        self._rows = []
        k = LEVELS
        return BookLevels(
            self.symbol,
            a[:, 0].astype(np.int64),
            a[:, 1].astype(np.int64),
            a[:, 2 : 2 + k],
            a[:, 2 + k : 2 + 2 * k],
            a[:, 2 + 2 * k : 2 + 3 * k],
            a[:, 2 + 3 * k : 2 + 4 * k],
            a[:, -2],
            a[:, -1],
        )
