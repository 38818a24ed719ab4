"""Local order books: the book records, an exact price-level book, and Binance's sync procedure.

Pure computation (no I/O). Prices and quantities stay the decimal strings the
exchange sent: a level is keyed by its price string, so nothing is lost to float
rounding; for strings of one fixed number of decimals, numeric order is
(length, characters) order, so the best price is kept without converting a
single string. A diff event costs one dict operation per level, plus a string
comparison for each new level; only when the best level goes is the next one
looked for (a few probes of the price grid, else one pass over the side).

`BookSync` runs Binance's documented procedure (buffer diffs, apply a REST
snapshot, drop what it already covers, chain every later event to the one
before) as a state machine. It never fetches anything itself: `needs_snapshot`
tells the caller to `GET /fapi/v1/depth` (USD-M) or `/api/v3/depth` (spot), and
every interval in which the book is not known becomes a `BookGap`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from itertools import compress
from operator import itemgetter
from typing import Any, Literal

import numpy as np

try:  # built by `pip install -e .`: the per-level loop and the book's reads in C; without it, Python's
    from ticklens.domain import _bookside as _c
except ImportError:  # pragma: no cover - tests/test_book_side.py requires the extension
    _c = None  # type: ignore[assignment]

Level = list[str]  # [price, quantity] as the exchange's decimal strings
_ig0, _ig1 = itemgetter(0), itemgetter(1)
Market = Literal["usdm", "spot"]
GapReason = Literal["pu_break", "reconnect", "snapshot_failure", "crossed"]

# A quantity is zero (remove the level) exactly when it is one of these strings.
ZERO_QTY = frozenset(["0"] + ["0." + "0" * k for k in range(1, 41)])


def decimals_of(price: str) -> int:
    dot = price.find(".")
    return 0 if dot < 0 else len(price) - dot - 1


def _levels_array(levels: list[Level]) -> np.ndarray:
    if not levels:
        return np.empty((0, 2), dtype=np.float64)
    return np.array(levels, dtype=np.float64).reshape(-1, 2)


# --- records ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Quote:
    """One best bid/ask update (`bookTicker`); prices and quantities are the exchange's strings.

    Spot `bookTicker` carries no times: `event_ms` and `txn_ms` are then None.
    """

    symbol: str
    update_id: int
    event_ms: int | None
    txn_ms: int | None
    bid: str
    bid_qty: str
    ask: str
    ask_qty: str
    recv_ms: int


QUOTE_COLUMNS = ("update_id", "ts_ms", "event_ms", "recv_ms", "bid", "bid_qty", "ask", "ask_qty")


@dataclass(slots=True)
class Quotes:
    """A columnar batch of quotes of one symbol, as the flow passes them on.

    `ts_ms` is the transaction time `T` (or `E`, or the receive time on spot, which
    sends neither); `event_ms` is -1 where the exchange sent none. `source` says where the
    rows come from: "bookTicker" (the exchange's L1 stream) or "book" (the local book's best
    after each applied depth event that changed it; NaN for an empty side).
    """

    symbol: str
    update_id: np.ndarray
    ts_ms: np.ndarray
    event_ms: np.ndarray
    recv_ms: np.ndarray
    bid: np.ndarray
    bid_qty: np.ndarray
    ask: np.ndarray
    ask_qty: np.ndarray
    source: str = "bookTicker"

    def __len__(self) -> int:
        return len(self.update_id)

    def take(self, rows: slice | np.ndarray, symbol: str | None = None) -> Quotes:
        """Some rows (a slice or indices), under `symbol` when given."""
        cols = {n: getattr(self, n)[rows] for n in QUOTE_COLUMNS}
        return Quotes(symbol=self.symbol if symbol is None else symbol, source=self.source, **cols)

    def then(self, other: Quotes) -> Quotes:
        """These rows followed by `other`'s (two parts of one replay block)."""
        cols = {n: np.concatenate([getattr(self, n), getattr(other, n)]) for n in QUOTE_COLUMNS}
        return Quotes(symbol=self.symbol, source=self.source, **cols)

    @classmethod
    def from_quotes(cls, symbol: str, quotes: list[Quote]) -> Quotes:
        def ts(q: Quote) -> int:
            return q.txn_ms if q.txn_ms is not None else q.event_ms if q.event_ms is not None else q.recv_ms

        i64 = np.int64
        return cls(
            symbol=symbol,
            update_id=np.array([q.update_id for q in quotes], dtype=i64),
            ts_ms=np.array([ts(q) for q in quotes], dtype=i64),
            event_ms=np.array([-1 if q.event_ms is None else q.event_ms for q in quotes], dtype=i64),
            recv_ms=np.array([q.recv_ms for q in quotes], dtype=i64),
            bid=np.array([float(q.bid) for q in quotes]),
            bid_qty=np.array([float(q.bid_qty) for q in quotes]),
            ask=np.array([float(q.ask) for q in quotes]),
            ask_qty=np.array([float(q.ask_qty) for q in quotes]),
        )

    @classmethod
    def from_tops(cls, tops: BookTops, recv_ms: np.ndarray) -> Quotes:
        """The local book's L1 rows as quotes (`recv_ms`: each row's event's receive time)."""
        n = len(tops)
        return cls(
            tops.symbol,
            tops.update_id,
            tops.ts_ms,
            np.full(n, -1, dtype=np.int64),
            np.asarray(recv_ms, dtype=np.int64),
            tops.bid,
            tops.bid_qty,
            tops.ask,
            tops.ask_qty,
            "book",
        )


_DEPTH_IDS = ("symbol", "first_id", "final_id", "prev_final_id", "event_ms", "txn_ms", "recv_ms")
_DEPTH_FIELDS = (*_DEPTH_IDS, "bid_px", "bid_qty", "ask_px", "ask_qty")


class _Column:
    """One of a DepthUpdate's four level columns (built from the pairs on first use)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __get__(self, obj: DepthUpdate, owner: type | None = None) -> list[str]:
        return obj._columns()[self.index]


class DepthUpdate:
    """One diff-depth event: absolute quantities per price level, "0" removes the level.

    Levels are the exchange's decimal strings (exact), held in whichever form the event came
    in: the [price, qty] pairs the wire parser decoded (`from_pairs`: no per-level copy on
    the book's path) or four columns (the constructor: what the store reads back). The other
    form is built on first use; once the columns are built they are the levels. `prev_final_id` is USD-M's `pu` (None on spot); spot
    has no transaction time, so `txn_ms` is the event time there.
    """

    __slots__ = (*_DEPTH_IDS, "_bids", "_asks", "_cols")

    def __init__(
        self,
        symbol: str,
        first_id: int,  # U
        final_id: int,  # u
        prev_final_id: int | None,  # pu
        event_ms: int,
        txn_ms: int,
        recv_ms: int,
        bid_px: list[str],
        bid_qty: list[str],
        ask_px: list[str],
        ask_qty: list[str],
    ) -> None:
        self.symbol = symbol
        self.first_id = first_id
        self.final_id = final_id
        self.prev_final_id = prev_final_id
        self.event_ms = event_ms
        self.txn_ms = txn_ms
        self.recv_ms = recv_ms
        self._bids: list[Level] | None = None
        self._asks: list[Level] | None = None
        self._cols: tuple[list[str], list[str], list[str], list[str]] | None = (bid_px, bid_qty, ask_px, ask_qty)

    @classmethod
    def from_pairs(
        cls,
        symbol: str,
        first_id: int,
        final_id: int,
        prev_final_id: int | None,
        event_ms: int,
        txn_ms: int,
        recv_ms: int,
        bids: list[Level],
        asks: list[Level],
    ) -> DepthUpdate:
        """From [price, qty] pairs (held as given: the caller hands them over)."""
        u = cls.__new__(cls)
        u.symbol, u.first_id, u.final_id, u.prev_final_id = symbol, first_id, final_id, prev_final_id
        u.event_ms, u.txn_ms, u.recv_ms = event_ms, txn_ms, recv_ms
        u._bids, u._asks, u._cols = bids, asks, None
        return u

    def _columns(self) -> tuple[list[str], list[str], list[str], list[str]]:
        cols = self._cols
        if cols is None:
            b, a = self._bids or [], self._asks or []
            cols = self._cols = (list(map(_ig0, b)), list(map(_ig1, b)), list(map(_ig0, a)), list(map(_ig1, a)))
            self._bids = self._asks = None  # the columns are the levels from now on (they may be edited)
        return cols

    bid_px = _Column(0)
    bid_qty = _Column(1)
    ask_px = _Column(2)
    ask_qty = _Column(3)

    def levels(self) -> tuple[Iterable[Sequence[str]], Iterable[Sequence[str]]]:
        """(bids, asks) as iterables of (price, qty): the pairs as held, or the columns zipped."""
        if self._bids is not None:
            return self._bids, self._asks  # type: ignore[return-value]
        bp, bq, ap, aq = self._cols  # type: ignore[misc]
        return zip(bp, bq, strict=True), zip(ap, aq, strict=True)

    def _pairs(self, held: list[Level] | None, side: int) -> list[Level]:
        if held is not None:
            return held
        cols = self._cols  # one of the two forms is always held
        assert cols is not None
        return [[p, q] for p, q in zip(cols[2 * side], cols[2 * side + 1], strict=True)]

    @property
    def bids(self) -> list[Level]:
        """[price, qty] pairs, as Binance sends them."""
        return self._pairs(self._bids, 0)

    @property
    def asks(self) -> list[Level]:
        return self._pairs(self._asks, 1)

    @property
    def n_levels(self) -> int:
        if self._bids is not None:
            return len(self._bids) + len(self._asks)  # type: ignore[arg-type]
        return len(self._cols[0]) + len(self._cols[2])  # type: ignore[index]

    def bid_array(self) -> np.ndarray:
        """(n, 2) float64: price, quantity."""
        return _levels_array(self.bids)

    def ask_array(self) -> np.ndarray:
        return _levels_array(self.asks)

    def _key(self) -> tuple[object, ...]:
        return (
            self.symbol,
            self.first_id,
            self.final_id,
            self.prev_final_id,
            self.event_ms,
            self.txn_ms,
            self.recv_ms,
            *self._columns(),
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not DepthUpdate:
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={v!r}" for n, v in zip(_DEPTH_FIELDS, self._key(), strict=True))
        return f"DepthUpdate({fields})"

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Pickled with each level column as one joined string where that is exact (no price or
        quantity holds a comma): four strings to copy instead of one per level, split again
        in C on the way back (the replay's child readers hand thousands of events over)."""
        key, cols = self._key(), self._columns()
        joined = [",".join(c) for c in cols]
        if all(j.count(",") + 1 == len(c) for j, c in zip(joined, cols, strict=True) if c):
            return (_depth_from_joined, (*key[:7], *joined))
        return (DepthUpdate, key)


def _depth_from_joined(*args: Any) -> DepthUpdate:
    """A DepthUpdate from its pickled form (`DepthUpdate.__reduce__`): ids, then four joined columns."""
    return DepthUpdate(*args[:7], *(j.split(",") if j else [] for j in args[7:]))


@dataclass(slots=True)
class BookSnapshot:
    """A full book at `last_update_id` (REST depth, or one taken from a local book), best level first.

    `limit` is the number of levels per side that was asked for: a side with fewer
    levels than that is the whole side. A snapshot taken from a local book carries
    that book's `complete_range` instead. Spot snapshots carry no times.
    """

    symbol: str
    last_update_id: int
    event_ms: int | None
    txn_ms: int | None
    recv_ms: int
    bids: list[Level]
    asks: list[Level]
    limit: int | None = None
    complete_range: tuple[float, float] | None = None

    @property
    def ts_ms(self) -> int:
        return self.txn_ms if self.txn_ms is not None else self.event_ms if self.event_ms is not None else self.recv_ms


@dataclass(slots=True)
class BookGap:
    """An interval in which the book of `symbol` is not known.

    The book was known after update `from_update_id` (time `from_ms`) and is known
    again after `to_update_id` (`to_ms`), the first event applied after the resync;
    both None while the gap is open. `from_update_id` is 0 if the book was never known.
    """

    symbol: str
    from_update_id: int
    from_ms: int
    reason: GapReason
    to_update_id: int | None = None
    to_ms: int | None = None
    status: Literal["open", "closed"] = "open"
    detail: str = ""


@dataclass(slots=True)
class SnapshotFailure:
    """A depth snapshot request that failed (after its retries): the interval stays unknown."""

    symbol: str
    recv_ms: int
    detail: str


@dataclass(slots=True)
class Reconnected:
    """The connection carrying this symbol's depth stream was (re)opened: events may be missing."""

    symbol: str
    recv_ms: int


BookRecord = Quote | DepthUpdate | BookSnapshot | SnapshotFailure | Reconnected


@dataclass(slots=True)
class BookBatch:
    """What a source hands the flow for one symbol's book: its records in arrival order."""

    symbol: str
    records: list[BookRecord]

    def __len__(self) -> int:
        return len(self.records)


# --- the book --------------------------------------------------------------------------------------


PROBES = 256  # grid steps probed for the next best level before one pass over the side


def _pow10_divisor(n: int) -> int:
    """The largest power of ten dividing n (n > 0)."""
    p = 1
    while n % (p * 10) == 0:
        p *= 10
    return p


def _ordered(keys: list[str] | dict[str, str]) -> list[str]:
    """Canonical price strings in ascending numeric order: by length, then by characters.

    Exact for strings of one fixed number of decimals without leading zeros.
    """
    return sorted(sorted(keys), key=len)


class OrderBook:
    """The exact price levels of one symbol, both sides.

    `bids`/`asks` map the canonical price string (the symbol's fixed number of decimals,
    as Binance formats it) to the quantity string. For such strings numeric order is
    (length, characters) order, so the best price is kept by string comparisons alone:
    a new level is compared with the best when it is created, and when the best level
    is removed the next one is found by probing the price grid below it (the tick size
    is learned from the snapshot, every new level is checked to lie on it), or after a
    few probes by one pass over the side. No per-level ordered structure is kept.
    """

    __slots__ = (
        "symbol",
        "bids",
        "asks",
        "_bb",
        "_ba",
        "_dec",
        "_need",
        "_dot",
        "_dot1",
        "_scale",
        "_step",
        "_grid",
        "_complete",
        "_gone",
        "last_update_id",
        "ts_ms",
    )

    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self._bb: str | None = None  # best bid key
        self._ba: str | None = None  # best ask key
        self._dec = -1  # price decimals; fixed by the first price seen
        self._need = 1 << 30  # a price is canonical iff len(p) > _need and p[_dot] == "."
        self._dot = -1
        self._dot1 = 0  # p[_dot:_dot1] == "." iff p has the book's number of decimals
        self._scale = 1
        self._step = 1  # the price grid in ticks (a power of ten): every level lies on it
        self._grid = ""  # suffix every on-grid canonical price ends with
        self._complete: tuple[str | None, str | None] | None = None
        self._gone = False  # the slow path's view of apply()'s "best level removed" flag
        self.last_update_id = 0
        self.ts_ms = 0

    # -- number formats

    def _set_decimals(self, dec: int) -> None:
        self._dec = dec
        self._scale = 10**dec
        if dec > 0:
            self._need, self._dot, self._dot1 = dec + 1, -(dec + 1), -dec
        else:  # no dot at all: every new price takes the slow path, still exact
            self._need, self._dot, self._dot1 = 1 << 30, -1, -1
        self._set_step(1)

    def _set_step(self, step: int) -> None:
        self._step = step
        zeros = len(str(step)) - 1
        d = max(self._dec, 0)
        self._grid = "0" * zeros if zeros <= d else "0" * (zeros - d) + ("." + "0" * d if d else "")

    def _tick(self, key: str) -> int:
        return int(key.replace(".", ""))

    def _fmt(self, tick: int) -> str:
        d = self._dec
        if d <= 0:
            return str(tick)
        s = str(tick)
        if len(s) <= d:
            s = s.rjust(d + 1, "0")
        return f"{s[:-d]}.{s[-d:]}"

    def _fmt_range(self, start: int, stop: int, step: int) -> list[str]:
        """`_fmt` of every tick in range(start, stop, step), without a call per tick where the
        ticks all have more digits than decimals (prices of at least 1)."""
        d = self._dec
        ticks = range(start, stop, step)
        if d <= 0:
            return list(map(str, ticks))
        if ticks and min(ticks[0], ticks[-1]) >= self._scale:
            return [f"{s[:-d]}.{s[-d:]}" for s in map(str, ticks)]
        return list(map(self._fmt, ticks))

    def _grid_sum(self, side: dict[str, str], start: int, stop: int, step: int) -> float:
        """float(qty) summed over a side's levels at the ticks range(start, stop, step), in that
        order (in C where it is built)."""
        if _c is not None and (got := _c.band(side, start, stop, step, self._dec)) is not None:
            return got
        return sum(map(float, filter(None, map(side.get, self._fmt_range(start, stop, step)))))

    def _canonical(self, price: str, widen: bool = True) -> tuple[str, int] | None:
        """(canonical key, tick) of a validated decimal string.

        A price finer than the book's scale widens the scale (`widen`), or is None: no
        level of the book can have it.
        """
        if self._dec < 0:
            self._set_decimals(decimals_of(price))
        d = Decimal(price)
        exp = -d.as_tuple().exponent  # type: ignore[operator]
        if exp > self._dec and d != d.quantize(Decimal(1).scaleb(-self._dec)):
            if not widen:
                return None
            self._rescale(exp)
        tick = int(d.scaleb(self._dec))
        return self._fmt(tick), tick

    def _rescale(self, dec: int) -> None:
        """Prices with more decimals than the book's: re-key every level at the finer scale (rare)."""
        mul = 10 ** (dec - self._dec)
        sides = [[(self._tick(k) * mul, q) for k, q in book.items()] for book in (self.bids, self.asks)]
        bests = [None if k is None else self._tick(k) * mul for k in (self._bb, self._ba)]
        bounds = (
            None if self._complete is None else [None if k is None else self._tick(k) * mul for k in self._complete]
        )
        step = self._step * mul
        self._set_decimals(dec)
        self._set_step(step)
        for book, levels in zip((self.bids, self.asks), sides, strict=True):
            book.clear()
            book.update((self._fmt(t), q) for t, q in levels)
        self._bb, self._ba = (None if t is None else self._fmt(t) for t in bests)
        if bounds is not None:
            lo, hi = (None if t is None else self._fmt(t) for t in bounds)
            self._complete = (lo, hi)

    # -- loading and applying

    def copy(self) -> OrderBook:
        """An independent copy (the level dicts copied; strings are immutable and shared)."""
        other = OrderBook(self.symbol)
        other.bids = dict(self.bids)
        other.asks = dict(self.asks)
        other._bb, other._ba = self._bb, self._ba
        other._dec, other._need, other._dot, other._scale = self._dec, self._need, self._dot, self._scale
        other._dot1 = self._dot1
        other._step, other._grid = self._step, self._grid
        other._complete, other._gone = self._complete, self._gone
        other.last_update_id, other.ts_ms = self.last_update_id, self.ts_ms
        return other

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bb = self._ba = None
        self._complete = None
        self.last_update_id = 0
        self.ts_ms = 0

    def load_snapshot(self, snap: BookSnapshot) -> None:
        """Replace the whole book by a snapshot; its price range becomes the complete range."""
        self.clear()
        prices = [lv[0] for lv in snap.bids] + [lv[0] for lv in snap.asks]
        if prices:
            self._set_decimals(max(map(decimals_of, prices)))
        ticks: list[int] = []
        need, dot, zero = self._need, self._dot, ZERO_QTY
        for levels, book in ((snap.bids, self.bids), (snap.asks, self.asks)):
            for p, q in levels:
                if q in zero:
                    continue
                if len(p) > need and p[dot] == ".":  # canonical already (the exchange's own form)
                    book[p] = q
                    ticks.append(int(p.replace(".", "")))
                else:
                    key, tick = self._canonical(p)  # type: ignore[misc]
                    book[key] = q
                    ticks.append(tick)
        if ticks:
            self._set_step(_pow10_divisor(math.gcd(*ticks)) if any(ticks) else 1)
        self._bb = _extreme(self.bids, True)
        self._ba = _extreme(self.asks, False)
        if snap.complete_range is not None:
            low, high = snap.complete_range
            lo = None if low <= 0 else self._canonical(repr(low))[0]  # type: ignore[index]
            hi = None if math.isinf(high) else self._canonical(repr(high))[0]  # type: ignore[index]
        else:
            full = snap.limit is not None
            lo = None if full and len(snap.bids) < snap.limit else _extreme(self.bids, False)  # type: ignore[operator]
            hi = None if full and len(snap.asks) < snap.limit else _extreme(self.asks, True)  # type: ignore[operator]
        self._complete = (lo, hi)
        self.last_update_id = snap.last_update_id
        self.ts_ms = snap.ts_ms

    def apply_pairs(self, bids: list[Level], asks: list[Level], update_id: int = 0, ts_ms: int = 0) -> None:
        """`apply` for [price, qty] pairs."""
        self.apply_levels(bids, asks, update_id, ts_ms)

    def apply(
        self,
        bid_px: list[str],
        bid_qty: list[str],
        ask_px: list[str],
        ask_qty: list[str],
        update_id: int = 0,
        ts_ms: int = 0,
    ) -> None:
        """`apply_levels` for columns of prices and quantities (a DepthUpdate's own form): lists of
        one length per side go to the C loop."""
        if (
            _c is not None
            and type(bid_px) is list
            and type(bid_qty) is list
            and type(ask_px) is list
            and type(ask_qty) is list
            and len(bid_px) == len(bid_qty)
            and len(ask_px) == len(ask_qty)
        ):
            self._bb = self._side(True, self._bb, bid_px, bid_qty)
            self._ba = self._side(False, self._ba, ask_px, ask_qty)
            self.last_update_id = update_id
            self.ts_ms = ts_ms
            return
        self.apply_levels(zip(bid_px, bid_qty, strict=True), zip(ask_px, ask_qty, strict=True), update_id, ts_ms)

    def apply_levels(
        self,
        bids: Iterable[Sequence[str]],
        asks: Iterable[Sequence[str]],
        update_id: int = 0,
        ts_ms: int = 0,
    ) -> None:
        """Apply one diff: each level's quantity is absolute, a zero quantity removes the level.

        Levels are (price, qty) pairs of validated decimal strings (the exchange parser
        guarantees it). Removing a level the book does not hold is normal (Binance says so)
        and ignored. The common cases (a level changed, removed, or created in the book's own
        number format on its grid) cost one or two dict operations each; anything else goes
        to `_odd`. Lists of [price, qty] lists (what the wire parsers build) go to the same loop in
        C (`_bookside.c`) when it is built, anything else to the loop here.
        """
        if _c is not None and type(bids) is list and type(asks) is list:
            self._bb = self._side(True, self._bb, bids)
            self._ba = self._side(False, self._ba, asks)
        else:
            self._apply_py(bids, asks)
        self.last_update_id = update_id
        self.ts_ms = ts_ms

    def _side(self, is_bid: bool, best: str | None, levels: list[Any], qtys: list[str] | None = None) -> str | None:
        """One side through the C loop: [price, qty] lists, or (with `qtys`) a column of prices and
        one of quantities. Each level it stops at goes to `_odd`. Returns the new best."""
        gone = False
        i = 0
        book = self.bids if is_bid else self.asks
        while True:
            if qtys is None:
                best, gone, i, odd = _c.apply(book, levels, i, best, gone, is_bid, self._dec, self._grid)
            else:
                best, gone, i, odd = _c.apply_cols(book, levels, qtys, i, best, gone, is_bid, self._dec, self._grid)
            if not odd:
                break
            p, q = levels[i] if qtys is None else (levels[i], qtys[i])
            if is_bid:
                self._bb, self._gone = best, gone
                self._odd(True, p, q)
                best, gone = self._bb, self._gone
            else:
                self._ba, self._gone = best, gone
                self._odd(False, p, q)
                best, gone = self._ba, self._gone
            i += 1
        return self._next(is_bid, best) if gone else best

    def _apply_py(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]) -> None:
        """`apply_levels`' loop in Python: the reference the C loop is tested against."""
        zero = ZERO_QTY
        dot, dot1, grid = self._dot, self._dot1, self._grid
        # bids: the best is the greatest (length, string)
        book = self.bids
        pop = book.pop
        best = self._bb
        blen = -1 if best is None else len(best)
        gone = False
        for p, q in bids:
            if q in zero:
                if pop(p, None) is None:
                    if p[dot:dot1] != ".":  # another form of a price the book may hold
                        self._bb, self._gone = best, gone
                        self._odd(True, p, q)
                        best, gone = self._bb, self._gone
                        blen = -1 if best is None else len(best)
                elif p == best:
                    gone = True
            elif p in book:
                book[p] = q
            elif p[dot:dot1] == "." and p.endswith(grid):
                book[p] = q
                n = len(p)
                if n > blen or (n == blen and p >= best):  # type: ignore[operator]  # >=: the best, re-created
                    best, blen, gone = p, n, False
            else:
                self._bb, self._gone = best, gone
                self._odd(True, p, q)
                best, gone = self._bb, self._gone
                blen = -1 if best is None else len(best)
                dot, dot1, grid = self._dot, self._dot1, self._grid
        self._bb = self._next(True, best) if gone else best
        # asks: the best is the smallest (length, string)
        book = self.asks
        pop = book.pop
        best = self._ba
        blen = 1 << 30 if best is None else len(best)
        gone = False
        for p, q in asks:
            if q in zero:
                if pop(p, None) is None:
                    if p[dot:dot1] != ".":
                        self._ba, self._gone = best, gone
                        self._odd(False, p, q)
                        best, gone = self._ba, self._gone
                        blen = 1 << 30 if best is None else len(best)
                elif p == best:
                    gone = True
            elif p in book:
                book[p] = q
            elif p[dot:dot1] == "." and p.endswith(grid):
                book[p] = q
                n = len(p)
                if n < blen or (n == blen and p <= best):  # type: ignore[operator]
                    best, blen, gone = p, n, False
            else:
                self._ba, self._gone = best, gone
                self._odd(False, p, q)
                best, gone = self._ba, self._gone
                blen = 1 << 30 if best is None else len(best)
                dot, dot1, grid = self._dot, self._dot1, self._grid
        self._ba = self._next(False, best) if gone else best

    def _odd(self, is_bid: bool, p: str, q: str) -> None:
        """One level the fast path cannot take: another number of decimals, off the grid, or the first price."""
        removing = q in ZERO_QTY
        canon = self._canonical(p, widen=not removing)  # may re-key the book (and the bests)
        if canon is None:
            return  # finer than any level of the book: nothing to remove
        key, tick = canon
        book = self.bids if is_bid else self.asks
        best = self._bb if is_bid else self._ba
        if removing:
            if book.pop(key, None) is not None and key == best:
                self._gone = True
            return
        if tick % self._step:
            self._set_step(_pow10_divisor(math.gcd(tick, self._step)))
        new = key not in book
        book[key] = q
        if new and (best is None or (not _lt(key, best) if is_bid else not _lt(best, key))):
            if is_bid:
                self._bb = key
            else:
                self._ba = key
            self._gone = False

    def _next(self, is_bid: bool, removed: str | None) -> str | None:
        """The best level after the best one (`removed`) was taken out: probe the grid, then scan."""
        book = self.bids if is_bid else self.asks
        if not book or removed is None:
            return None
        step = -self._step if is_bid else self._step
        t = self._tick(removed)
        fmt = self._fmt
        for _ in range(PROBES):
            t += step
            if t <= 0:
                break
            k = fmt(t)
            if k in book:
                return k
        # one pass over the side: the longest (bids) / shortest (asks) strings, then the extreme
        lengths = list(map(len, book))
        n = max(lengths) if is_bid else min(lengths)
        same = compress(book, map(n.__eq__, lengths))
        return max(same) if is_bid else min(same)

    # -- reading

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    @property
    def decimals(self) -> int:
        return max(self._dec, 0)

    @property
    def tick_step(self) -> float:
        """The price grid the book found (the tick size, or a power-of-ten divisor of it)."""
        return self._step / self._scale

    @property
    def best_bid(self) -> tuple[str, str] | None:
        """(price, quantity) strings of the best bid, None if the side is empty."""
        k = self._bb
        return None if k is None else (k, self.bids[k])

    @property
    def best_ask(self) -> tuple[str, str] | None:
        k = self._ba
        return None if k is None else (k, self.asks[k])

    @property
    def mid(self) -> float | None:
        if self._bb is None or self._ba is None:
            return None
        return (self._tick(self._bb) + self._tick(self._ba)) / (2 * self._scale)

    @property
    def crossed(self) -> bool:
        """Best bid at or above best ask (crossed or locked): never a valid state of Binance's book."""
        b, a = self._bb, self._ba
        return b is not None and a is not None and not _lt(b, a)

    @property
    def locked(self) -> bool:
        return self._bb is not None and self._bb == self._ba

    @property
    def complete_range(self) -> tuple[float, float] | None:
        """[low, high] prices within which the levels are known complete (the last snapshot's range).

        Diffs outside it are applied too, but levels there that never changed since the
        snapshot are unknown. A snapshot side shorter than its limit is complete to 0 / inf.
        """
        if self._complete is None:
            return None
        lo, hi = self._complete
        return (0.0 if lo is None else float(lo), math.inf if hi is None else float(hi))

    def is_complete_at(self, price: str) -> bool:
        if self._complete is None:
            return False
        canon = self._canonical(price, widen=False)
        if canon is None:
            return False
        key = canon[0]
        lo, hi = self._complete
        return (lo is None or not _lt(key, lo)) and (hi is None or not _lt(hi, key))

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The best n levels per side as (price, qty) strings, best first."""
        return self._top(True, n), self._top(False, n)

    def top_floats(self, n: int) -> tuple[list[float], list[float], list[float], list[float]]:
        """`top(n)` as floats: (bid prices, bid quantities, ask prices, ask quantities), best first."""
        out: list[list[float]] = []
        for is_bid in (True, False):
            best = self._bb if is_bid else self._ba
            got = None
            if _c is not None and best is not None and n > 0:
                book = self.bids if is_bid else self.asks
                got = _c.top_floats(book, best, -self._step if is_bid else self._step, n, PROBES, self._dec)
            if got is None:
                side = self._top(is_bid, n)
                got = ([float(p) for p, _ in side], [float(q) for _, q in side])
            out.extend(got)
        return out[0], out[1], out[2], out[3]

    def _top(self, is_bid: bool, n: int) -> list[tuple[str, str]]:
        book = self.bids if is_bid else self.asks
        best = self._bb if is_bid else self._ba
        if best is None or n <= 0:
            return []
        if _c is not None:  # the same probe in C; None where the probe below must decide
            got = _c.top(book, best, -self._step if is_bid else self._step, n, PROBES, self._dec)
            if got is not None:
                return got
        return self._top_py(is_bid, n)

    def _top_py(self, is_bid: bool, n: int) -> list[tuple[str, str]]:
        """`_top` in Python: the reference the C probe is tested against."""
        book = self.bids if is_bid else self.asks
        best = self._bb if is_bid else self._ba
        if best is None or n <= 0:
            return []
        out = [(best, book[best])]
        step = -self._step if is_bid else self._step
        t = self._tick(best)
        fmt = self._fmt
        for _ in range(PROBES * n):
            if len(out) >= n or len(out) >= len(book):
                return out
            t += step
            if t <= 0:
                break
            k = fmt(t)
            if k in book:
                out.append((k, book[k]))
        if len(out) >= min(n, len(book)):
            return out
        return self.side_levels("bid" if is_bid else "ask")[:n]

    def depth_within_bps(self, bps: float) -> tuple[float, float]:
        """Total bid and ask quantity priced within `bps` basis points of the mid."""
        if self._bb is None or self._ba is None:
            return (0.0, 0.0)
        mid2 = self._tick(self._bb) + self._tick(self._ba)  # twice the mid, in ticks
        lo = self._fmt(max(math.ceil(mid2 * (1 - bps / 1e4) / 2), 0))
        hi = self._fmt(math.floor(mid2 * (1 + bps / 1e4) / 2))
        bid = sum(float(q) for k, q in self.bids.items() if not _lt(k, lo))
        ask = sum(float(q) for k, q in self.asks.items() if not _lt(hi, k))
        return (bid, ask)

    def _levels(self, is_bid: bool) -> list[Level]:
        """Every level of a side as [price, qty] lists, best first (sorted in C where it is built)."""
        book = self.bids if is_bid else self.asks
        if _c is not None and (got := _c.levels(book, is_bid)) is not None:
            return got
        keys = _ordered(book)
        if is_bid:
            keys.reverse()
        return [[k, book[k]] for k in keys]

    def side_levels(self, side: Literal["bid", "ask"]) -> list[tuple[str, str]]:
        """Every level of one side as (price, qty) strings, best first."""
        return [(k, q) for k, q in self._levels(side == "bid")]

    def snapshot(self, limit: int | None = None, recv_ms: int | None = None) -> BookSnapshot:
        """The book as a snapshot record (for storage): best `limit` levels per side, or all.

        Its time is the transaction time of the last applied event.
        """
        bid_levels, ask_levels = self._levels(True), self._levels(False)
        n_bids, n_asks = len(bid_levels), len(ask_levels)
        if limit is not None:
            bid_levels, ask_levels = bid_levels[:limit], ask_levels[:limit]
        complete = self.complete_range
        if complete is not None and limit is not None:  # cut levels: complete only as far as kept
            low, high = complete
            if n_bids > limit:
                low = max(low, float(bid_levels[-1][0]))
            if n_asks > limit:
                high = min(high, float(ask_levels[-1][0]))
            complete = (low, high)
        recv = self.ts_ms if recv_ms is None else recv_ms
        return BookSnapshot(
            self.symbol, self.last_update_id, None, self.ts_ms, recv, bid_levels, ask_levels, None, complete
        )


def _extreme(keys: dict[str, str], highest: bool) -> str | None:
    """The highest (or lowest) canonical price among the keys, in one pass of C-level scans."""
    if not keys:
        return None
    lengths = list(map(len, keys))
    n = max(lengths) if highest else min(lengths)
    same = compress(keys, map(n.__eq__, lengths))
    return max(same) if highest else min(same)


def _lt(a: str, b: str) -> bool:
    """a < b for canonical price strings."""
    return len(a) < len(b) or (len(a) == len(b) and a < b)


# --- the sync procedure ----------------------------------------------------------------------------


@dataclass(slots=True)
class BookTops:
    """The best bid/ask after applied events, columnar: one row per event that changed it.

    The L1 after any applied event is the last row at or before its update id. Prices and
    quantities are float64 (NaN for an empty side). `top_*` are (applied events, n) arrays,
    one row per applied event (`applied` of the same BookStep), NaN-padded, present when
    the sync was built with `top_n > 0`.
    """

    symbol: str
    update_id: np.ndarray
    ts_ms: np.ndarray
    bid: np.ndarray
    bid_qty: np.ndarray
    ask: np.ndarray
    ask_qty: np.ndarray
    top_bid: np.ndarray | None = None
    top_bid_qty: np.ndarray | None = None
    top_ask: np.ndarray | None = None
    top_ask_qty: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.update_id)


@dataclass(slots=True)
class BookStep:
    """What a sync produced since the last `drain()`: for storage and analytics."""

    applied: list[DepthUpdate]  # every applied diff, in order
    tops: BookTops
    gaps: list[BookGap]  # each gap when it opens and again when it closes
    snapshots: list[BookSnapshot]  # snapshots the book was (re)built from


_NAN = float("nan")


@dataclass
class SyncCounters:
    applied: int = 0
    dropped: int = 0  # buffered events the snapshot already covered
    duplicates: int = 0  # events at or before the last applied one, ignored
    overflow: int = 0  # buffered events dropped because the buffer was full
    snapshots: int = 0  # snapshots the book was built from
    stale_snapshots: int = 0  # snapshots older than the buffered events
    snapshot_failures: int = 0
    gaps: int = 0


@dataclass
class _Pending:
    update: DepthUpdate
    after_reconnect: bool


class BookSync:
    """Binance's local-book procedure for one symbol, as a state machine.

    USD-M: buffer events until a snapshot arrives; drop events with u < lastUpdateId;
    the first applied event has U <= lastUpdateId <= u; every later event's pu equals
    the previous u. Spot: drop u <= lastUpdateId; the first has U <= lastUpdateId+1 <= u;
    every later U equals the previous u + 1. A broken chain, a reconnect that lost
    events, a failed snapshot or a crossed/locked book make the book unknown: a
    `BookGap` opens, `needs_snapshot` turns true, and the gap closes at the first event
    applied on top of a new snapshot. The snapshot may arrive after the events that
    straddle it (the recordings have exactly that): buffered events are used.
    """

    def __init__(self, symbol: str, market: Market = "usdm", *, top_n: int = 0, max_buffer: int = 100_000) -> None:
        if market not in ("usdm", "spot"):
            raise ValueError(f"market must be 'usdm' or 'spot', not {market!r}")
        self.symbol = symbol
        self.market: Market = market
        self.book = OrderBook(symbol)
        self.top_n = top_n
        self.live = False
        self.counters = SyncCounters()
        self._usdm = market == "usdm"
        self._buffer: deque[_Pending] = deque()
        self._max_buffer = max_buffer
        self._snapshot: BookSnapshot | None = None  # newer than every buffered event: waiting
        self._last_u = 0  # final id of the last applied event
        self._good: tuple[int, int] | None = None  # (update id, ms) at which the book was last known
        self._gap: BookGap | None = None
        self._after_reconnect = False
        self._out_applied: list[DepthUpdate] = []
        self._out_tops: list[tuple[int, int, str | None, str | None, str | None, str | None]] = []
        self._l1: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None)
        self._out_top_n: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]] = []
        self._out_gaps: list[BookGap] = []
        self._out_snaps: list[BookSnapshot] = []

    @property
    def needs_snapshot(self) -> bool:
        """True while the book is unknown and no usable snapshot is waiting: fetch one."""
        return not self.live and self._snapshot is None

    @property
    def open_gap(self) -> BookGap | None:
        return self._gap

    # -- inputs

    def on_depth(self, update: DepthUpdate) -> bool:
        """Feed one diff event; True if it was applied to the book now."""
        if self.live and not self._after_reconnect:  # the common case, kept short
            last = self._last_u
            prev = update.prev_final_id if self._usdm else update.first_id - 1
            if prev == last and update.final_id > last:
                self._apply(update)
                return True
        after = self._after_reconnect
        self._after_reconnect = False
        if self.live:
            return self._live(update, after)
        if len(self._buffer) >= self._max_buffer:
            self._buffer.popleft()
            self.counters.overflow += 1
        self._buffer.append(_Pending(update, after))
        return self._try_sync() == "synced" and self._last_u == update.final_id

    def on_snapshot(self, snapshot: BookSnapshot) -> Literal["synced", "waiting", "stale", "ignored"]:
        """Feed a depth snapshot. "synced": the book is live; "waiting": it is newer than every
        buffered event (kept until the event that straddles it arrives); "stale": events between
        it and the buffer are missing, fetch another; "ignored": the book is live already."""
        if self.live:
            return "ignored"
        self._snapshot = snapshot
        return self._try_sync()

    def on_snapshot_failure(self, recv_ms: int, detail: str = "") -> None:
        """The caller's snapshot request failed; the interval stays unknown (recorded as a gap)."""
        self.counters.snapshot_failures += 1
        if self.live or self._gap is not None:
            return
        if self._good is not None:
            start = self._good
        elif self._buffer:
            first = self._buffer[0].update
            start = (first.first_id - 1, first.txn_ms)
        else:  # nothing seen yet: the local clock is all there is
            start = (0, recv_ms)
        self._open(start, "snapshot_failure", detail)

    def on_reconnect(self) -> None:
        """The connection was re-established: if the next event does not continue the chain,
        the gap is recorded with reason "reconnect"."""
        self._after_reconnect = True

    # -- the procedure

    def _live(self, u: DepthUpdate, after_reconnect: bool) -> bool:
        last = self._last_u
        if u.final_id <= last:
            self.counters.duplicates += 1
            return False
        prev = u.prev_final_id if self._usdm else u.first_id - 1
        if prev != last:
            why: GapReason = "reconnect" if after_reconnect else "pu_break"
            field_name = "pu" if self._usdm else "U-1"
            self._lose(why, f"{field_name} {prev} != previous u {last}")
            self._buffer.append(_Pending(u, False))
            return False
        self._apply(u)
        return True

    def _try_sync(self) -> Literal["synced", "waiting", "stale"]:
        snap = self._snapshot
        if snap is None:
            return "waiting"
        last_id = snap.last_update_id
        buf = self._buffer
        if self._usdm:
            while buf and buf[0].update.final_id < last_id:
                buf.popleft()
                self.counters.dropped += 1
            target = last_id
        else:
            while buf and buf[0].update.final_id <= last_id:
                buf.popleft()
                self.counters.dropped += 1
            target = last_id + 1
        if not buf:
            return "waiting"
        if buf[0].update.first_id > target:  # the events between snapshot and buffer are lost
            self._snapshot = None
            self.counters.stale_snapshots += 1
            return "stale"
        self._load(snap)
        self._snapshot = None
        self.counters.snapshots += 1
        self.live = True
        pending = list(buf)
        buf.clear()
        self._apply(pending[0].update)
        for p in pending[1:]:
            if self.live:
                self._live(p.update, p.after_reconnect)
            else:
                self._buffer.append(p)
        return "synced"

    def _load(self, snap: BookSnapshot) -> None:
        self.book.load_snapshot(snap)
        self._out_snaps.append(snap)

    def _apply(self, u: DepthUpdate) -> None:
        book = self.book
        if u._cols is not None:  # the event's own form: columns (pairs only if built from pairs)
            book.apply(*u._cols, u.final_id, u.txn_ms)
        else:
            book.apply_levels(u._bids, u._asks, u.final_id, u.txn_ms)  # type: ignore[arg-type]
        self._last_u = u.final_id
        self.counters.applied += 1
        self._out_applied.append(u)
        bid, ask = book._bb, book._ba
        l1 = (bid, None if bid is None else book.bids[bid], ask, None if ask is None else book.asks[ask])
        if l1 != self._l1:  # a row only when the best bid/ask (price or quantity) changed
            self._l1 = l1
            self._out_tops.append((u.final_id, u.txn_ms, *l1))
        if self.top_n:
            self._out_top_n.append(book.top(self.top_n))
        if bid is not None and ask is not None and (len(bid) > len(ask) or (len(bid) == len(ask) and bid >= ask)):
            self._lose("crossed", f"best bid {bid} >= best ask {ask} after u {u.final_id}")
            return
        self._good = (u.final_id, u.txn_ms)
        if self._gap is not None:
            gap = self._gap
            gap.to_update_id, gap.to_ms, gap.status = u.final_id, u.txn_ms, "closed"
            self._out_gaps.append(replace(gap))
            self._gap = None

    def _lose(self, reason: GapReason, detail: str) -> None:
        """The book is unknown from here: open a gap (if none is open) and ask for a snapshot."""
        self.live = False
        self._snapshot = None
        if self._gap is None:
            self._open(self._good or (0, self.book.ts_ms), reason, detail)

    def _open(self, start: tuple[int, int], reason: GapReason, detail: str) -> None:
        self._gap = BookGap(self.symbol, start[0], start[1], reason, detail=detail)
        self.counters.gaps += 1
        self._out_gaps.append(replace(self._gap))

    @property
    def last_update_id(self) -> int:
        """Final id of the last applied event (0 before the first)."""
        return self._last_u

    @property
    def buffered(self) -> int:
        """Events waiting for a snapshot."""
        return len(self._buffer)

    # -- outputs

    def drain(self) -> BookStep:
        """Everything produced since the last drain (applied diffs, tops, gaps, snapshots)."""
        rows = self._out_tops
        cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * 6

        def num(col: tuple[str | None, ...]) -> np.ndarray:
            return np.array([_NAN if x is None else float(x) for x in col], dtype=np.float64)

        tops = BookTops(
            self.symbol,
            np.array(cols[0], dtype=np.int64),
            np.array(cols[1], dtype=np.int64),
            num(cols[2]),
            num(cols[3]),
            num(cols[4]),
            num(cols[5]),
        )
        n = len(self._out_top_n)
        if self.top_n:
            k = self.top_n
            arrs = [np.full((n, k), np.nan) for _ in range(4)]
            for i, (bids, asks) in enumerate(self._out_top_n):
                for j, (p, q) in enumerate(bids):
                    arrs[0][i, j], arrs[1][i, j] = float(p), float(q)
                for j, (p, q) in enumerate(asks):
                    arrs[2][i, j], arrs[3][i, j] = float(p), float(q)
            tops.top_bid, tops.top_bid_qty, tops.top_ask, tops.top_ask_qty = arrs
        step = BookStep(self._out_applied, tops, self._out_gaps, self._out_snaps)
        self._out_applied, self._out_tops, self._out_top_n = [], [], []
        self._out_gaps, self._out_snaps = [], []
        return step


class SyncTracker(BookSync):
    """`BookSync`'s decisions on update ids alone, without a book: the live source keeps one per
    symbol to know when to fetch a REST snapshot (`needs_snapshot`) and which events repeat ones
    already handed on (`last_update_id`).

    It runs the very same procedure (buffer, drop, straddle, chain) over the same events and
    snapshots in the same order as the flow's `BookSync`, so the two agree on when a snapshot is
    needed; only a crossed book, which takes the levels to see, is the flow's alone. Nothing is
    kept for output, and the buffer holds the events themselves (no copies).
    """

    def _load(self, snap: BookSnapshot) -> None:
        pass

    def _apply(self, u: DepthUpdate) -> None:
        self._last_u = u.final_id
        self.counters.applied += 1
        self._good = (u.final_id, u.txn_ms)
        self._gap = None

    def _open(self, start: tuple[int, int], reason: GapReason, detail: str) -> None:
        self._gap = BookGap(self.symbol, start[0], start[1], reason, detail=detail)
        self.counters.gaps += 1


__all__ = [
    "ZERO_QTY",
    "BookBatch",
    "BookRecord",
    "Reconnected",
    "SnapshotFailure",
    "BookGap",
    "BookSnapshot",
    "BookStep",
    "BookSync",
    "BookTops",
    "DepthUpdate",
    "Level",
    "OrderBook",
    "Quote",
    "Quotes",
    "SyncCounters",
    "SyncTracker",
    "decimals_of",
]
