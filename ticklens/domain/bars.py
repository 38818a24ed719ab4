"""Exact OHLCV bars from trades, in exchange event time (pure computation).

A bar covers [start, start + timeframe) of trade time `T`. Open and close are
the first and last trade by (time, id). Trade count follows Binance klines:
1 per plain trade, `last_id - first_id + 1` per aggTrade. Partial bars merge
associatively, so arrival order never changes the result.

Sums are exact decimals for any price and quantity precision: a value is kept
as integer `units` and decimals `dp` (value = units / 10**dp). Prices and
quantities arrive as decimal text and are parsed to float64 at the edge; the
decimal is recovered here (`decimal_units`): a float read from text with d
decimals and at most 15 significant digits is exactly `round(x * 10**d) / 10**d`.
Each group of sums (base volumes; quote volumes) is reduced to the fewest
decimals it needs, so one value has one (units, dp) and any arrival order stores
bit-identical rows. The REAL columns are the exact values correctly rounded
(Python's int / int is), so they equal a `decimal` computation to the last bit.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from ticklens.domain.records import Trades
from ticklens.domain.times import FAR_PAST

# Decimals tried on the vectorised path; past them (or past 2**50 units: beyond 15 digits a
# float no longer tells neighbouring decimals apart at that scale) each value's shortest
# repr is read as a Decimal instead. Binance sends at most 8 decimals.
FAST_DECIMALS = 12
_FAST_UNITS = 2**50
# Sums stay 64-bit integers below this (two of them still add without overflow); a larger
# exact sum is a Python int in memory and decimal text in a store.
INT64_SAFE = 2**62
# Every float's shortest decimal has fewer than 350 decimals; a quote sum adds two of them.
_POW10: list[int] = [10**k for k in range(700)]
_POW10F = [float(10**k) for k in range(FAST_DECIMALS + 1)]
# v2 stores kept price * qty in units of 2**-24 (`quote_dp` NULL); exactly units * 5**24 / 10**24.
LEGACY_QUOTE_DP = 24
_LEGACY_QUOTE_FACTOR = 5**24

# How two partials of one bucket combine: associative and commutative, so arrival order never
# matters. The one definition of the rule: `Bar.merge` applies it in memory, and each store
# merges late partials into stored bars by it (storage/sqlite/writer.py reads the stored bar
# back with `Bar.from_row` and merges there). Rules:
#   "first"/"last": the field goes with the partial whose FIRST_KEY is smaller / LAST_KEY is larger;
#   "max"/"min"/"sum": as named;
#   "decimal_sum": exact decimal sums of a DECIMAL_GROUPS group, added at the larger of the two
#     partials' `dp` (units * 10**(dp_max - dp)), then the group is reduced: while dp > 0 and
#     every units of the group ends in 0, units //= 10 and dp -= 1 (`reduce_decimals`);
#   "decimals": a group's dp, set by that reduction.
MERGE_RULES: dict[str, str] = {
    "open": "first",
    "open_ts": "first",
    "open_id": "first",
    "close": "last",
    "close_ts": "last",
    "close_id": "last",
    "high": "max",
    "low": "min",
    "max_qty": "max",
    "first_id": "min",
    "last_id": "max",
    "volume_units": "decimal_sum",
    "taker_buy_volume_units": "decimal_sum",
    "qty_dp": "decimals",
    "quote_units": "decimal_sum",
    "taker_buy_quote_units": "decimal_sum",
    "quote_dp": "decimals",
    "trades": "sum",
    "messages": "sum",
}
FIRST_KEY = ("open_ts", "open_id")
LAST_KEY = ("close_ts", "close_id")
# dp column -> the exact sums that share it.
DECIMAL_GROUPS: dict[str, tuple[str, ...]] = {
    "qty_dp": ("volume_units", "taker_buy_volume_units"),
    "quote_dp": ("quote_units", "taker_buy_quote_units"),
}
# Stored REAL columns derived from the exact sums: column -> (units column, dp column), the value
# units / 10**dp correctly rounded; and vwap = quote_volume / volume, the exact ratio correctly
# rounded (the close when the volume is 0). `Bar.row` computes them.
DERIVED: dict[str, tuple[str, str]] = {
    "volume": ("volume_units", "qty_dp"),
    "quote_volume": ("quote_units", "quote_dp"),
    "taker_buy_volume": ("taker_buy_volume_units", "qty_dp"),
    "taker_buy_quote_volume": ("taker_buy_quote_units", "quote_dp"),
}


def reduce_decimals(units: list[int], dp: int) -> tuple[list[int], int]:
    """The group's fewest decimals: strip trailing zeros common to every units while dp > 0."""
    while dp > 0 and all(u % 10 == 0 for u in units):
        units = [u // 10 for u in units]
        dp -= 1
    return units, dp


def decimal_of(x: float) -> tuple[int, int]:
    """(units, dp) of the shortest decimal that reads back as x (what a CSV or wire value said)."""
    sign, digits, exp = Decimal(repr(float(x))).as_tuple()
    if not isinstance(exp, int):
        raise ValueError(f"{x!r} is not a finite number")
    units = int("".join(map(str, digits))) * (-1 if sign else 1)
    return (units * 10**exp, 0) if exp >= 0 else (units, -exp)


def decimal_units(x: np.ndarray, start: int = 0) -> tuple[np.ndarray, int]:
    """(units, d): integers with x == units / 10**d exactly for every value, d >= start.

    int64 units when they fit the fast path, else Python ints (object array).
    """
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64), start
    for d in range(start, FAST_DECIMALS + 1):
        s = _POW10F[d]
        u = np.rint(x * s)
        if float(np.abs(u).max()) >= _FAST_UNITS:
            break
        if np.array_equal(u / s, x):
            return u.astype(np.int64), d
    decs = [decimal_of(v) for v in x.tolist()]
    d = max(start, max(dp for _, dp in decs))
    return np.array([u * _POW10[d - dp] for u, dp in decs], dtype=object), d


_DECIMAL_RULES = ("decimal_sum", "decimals")
_PLAIN_RULES = [(name, rule) for name, rule in MERGE_RULES.items() if rule not in _DECIMAL_RULES]
assert {n for n, r in MERGE_RULES.items() if r == "decimals"} == set(DECIMAL_GROUPS)
assert {n for n, r in MERGE_RULES.items() if r == "decimal_sum"} == {n for g in DECIMAL_GROUPS.values() for n in g}


@dataclass(slots=True)
class Bar:
    """One bar, or a partial of one; sums in exact decimal units (see the module docstring)."""

    symbol: str
    timeframe: str
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume_units: int  # Σ qty = volume_units / 10**qty_dp
    quote_units: int  # Σ price * qty = quote_units / 10**quote_dp
    trades: int
    taker_buy_volume_units: int
    taker_buy_quote_units: int
    max_qty: float
    messages: int
    open_ts: int
    open_id: int
    close_ts: int
    close_id: int
    first_id: int
    last_id: int
    qty_dp: int = 0
    quote_dp: int = 0
    revision: int = 0
    closed: bool = False

    def merge(self, other: Bar) -> None:
        """Fold another partial of the same bucket into this one (by MERGE_RULES)."""
        earlier = (other.open_ts, other.open_id) < (self.open_ts, self.open_id)
        later = (other.close_ts, other.close_id) > (self.close_ts, self.close_id)
        for name, rule in _PLAIN_RULES:
            mine, theirs = getattr(self, name), getattr(other, name)
            if rule == "sum":
                setattr(self, name, mine + theirs)
            elif rule == "max":
                setattr(self, name, max(mine, theirs))
            elif rule == "min":
                setattr(self, name, min(mine, theirs))
            elif (rule == "first" and earlier) or (rule == "last" and later):
                setattr(self, name, theirs)
        for dp_name, names in DECIMAL_GROUPS.items():
            a, b = getattr(self, dp_name), getattr(other, dp_name)
            dp = max(a, b)
            fa, fb = _POW10[dp - a], _POW10[dp - b]
            units, dp = reduce_decimals([getattr(self, n) * fa + getattr(other, n) * fb for n in names], dp)
            for n, u in zip(names, units, strict=True):
                setattr(self, n, u)
            setattr(self, dp_name, dp)

    @property
    def volume(self) -> float:
        return self.volume_units / _POW10[self.qty_dp]  # int / int: correctly rounded

    @property
    def quote_volume(self) -> float:
        return self.quote_units / _POW10[self.quote_dp]

    @property
    def vwap(self) -> float:
        if not self.volume_units:
            return self.close
        return (self.quote_units * _POW10[self.qty_dp]) / (self.volume_units * _POW10[self.quote_dp])

    def row(self) -> tuple[object, ...]:
        """Row for the `bars` table, in BAR_COLUMNS order (the DERIVED columns computed here)."""
        p = _POW10
        qd, pd = self.qty_dp, self.quote_dp
        vu, qu = self.volume_units, self.quote_units
        tvu, tqu = self.taker_buy_volume_units, self.taker_buy_quote_units
        return (
            self.symbol,
            self.timeframe,
            self.start_ms,
            self.open,
            self.high,
            self.low,
            self.close,
            vu / p[qd],
            qu / p[pd],
            self.trades,
            tvu / p[qd],
            tqu / p[pd],
            (qu * p[qd]) / (vu * p[pd]) if vu else self.close,
            self.max_qty,
            self.messages,
            self.open_ts,
            self.open_id,
            self.close_ts,
            self.close_id,
            self.first_id,
            self.last_id,
            self.revision,
            int(self.closed),
            vu if -INT64_SAFE < vu < INT64_SAFE else str(vu),
            qu if -INT64_SAFE < qu < INT64_SAFE else str(qu),
            tvu if -INT64_SAFE < tvu < INT64_SAFE else str(tvu),
            tqu if -INT64_SAFE < tqu < INT64_SAFE else str(tqu),
            qd,
            pd,
        )

    @classmethod
    def from_row(cls, row: Sequence[object]) -> Bar:
        """A stored `bars` row (BAR_COLUMNS order) back as a Bar; the derived columns are not read.

        A v2 row (`quote_dp` NULL) has its 2**-24 quote units converted to the exact decimal they are.
        """
        r = dict(zip(BAR_COLUMNS, row, strict=True))
        units = {n: _int(r[n]) for g in DECIMAL_GROUPS.values() for n in g}
        qty_dp = int(r["qty_dp"])  # type: ignore[call-overload]
        quote_dp = r["quote_dp"]
        if quote_dp is None:
            names = DECIMAL_GROUPS["quote_dp"]
            vals, quote_dp = reduce_decimals([units[n] * _LEGACY_QUOTE_FACTOR for n in names], LEGACY_QUOTE_DP)
            units.update(zip(names, vals, strict=True))
        kw = {n: r[n] for n in BAR_COLUMNS if n not in DERIVED and n != "vwap"}
        kw.update(units, qty_dp=qty_dp, quote_dp=int(quote_dp), closed=bool(r["closed"]))  # type: ignore[call-overload]
        return cls(**kw)  # type: ignore[arg-type]


def float_sums(volume: float, quote: float, tb_volume: float, tb_quote: float) -> tuple[int, int, int, int, int, int]:
    """Bar sums given as floats (an uploaded CSV's) as exact decimal units: (volume_units,
    quote_units, taker_buy_volume_units, taker_buy_quote_units, qty_dp, quote_dp), each group
    with the fewest decimals the values' shortest text needs."""

    def group(a: float, b: float) -> tuple[list[int], int]:
        (ua, da), (ub, db) = decimal_of(a), decimal_of(b)
        dp = max(da, db)
        return reduce_decimals([ua * _POW10[dp - da], ub * _POW10[dp - db]], dp)

    (vu, tvu), qty_dp = group(volume, tb_volume)
    (qu, tqu), quote_dp = group(quote, tb_quote)
    return vu, qu, tvu, tqu, qty_dp, quote_dp


def exact_sums(row: Sequence[object]) -> ExactSums:
    """The exact decimal sums of a stored bar (`EXACT_SUM_COLUMNS` order: start_ms, then each
    sum's units and its decimals); a v2 quote (decimals NULL, units of 2**-24) converted exactly."""
    start, vu, tvu, qty_dp, qu, tqu, quote_dp = row
    if quote_dp is None:
        (qu, tqu), quote_dp = reduce_decimals(
            [_int(qu) * _LEGACY_QUOTE_FACTOR, _int(tqu) * _LEGACY_QUOTE_FACTOR], LEGACY_QUOTE_DP
        )
    qd, pd = int(qty_dp), int(quote_dp)  # type: ignore[call-overload]
    return ExactSums(int(start), *(_dec(_int(u), d) for u, d in ((vu, qd), (qu, pd), (tvu, qd), (tqu, pd))))  # type: ignore[call-overload]


def _dec(units: int, dp: int) -> Decimal:
    return Decimal(f"{units}e{-dp}")  # from text: exact, never rounded to the context's precision


@dataclass(frozen=True, slots=True)
class ExactSums:
    """A bar's sums as exact decimals (what the REAL columns round)."""

    start_ms: int
    volume: Decimal
    quote_volume: Decimal
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal


# Columns `exact_sums` reads, in its order.
EXACT_SUM_COLUMNS = (
    "start_ms",
    "volume_units",
    "taker_buy_volume_units",
    "qty_dp",
    "quote_units",
    "taker_buy_quote_units",
    "quote_dp",
)


def _int(v: object) -> int:
    """A stored exact sum: an INTEGER, its decimal text past 64 bits (or a v2 store's lossy REAL)."""
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, Decimal):  # PostgreSQL numeric
        if v != v.to_integral_value():
            raise ValueError(f"stored bar sum {v} is not an integer")
        return int(v)
    if not isinstance(v, int | float | str):
        raise TypeError(f"stored bar sum {v!r} is not a number")
    return int(v)


# A bar's figures that Binance's klines print too, in their order (the audit compares these).
KLINE_FIGURES = ("open", "high", "low", "close", "volume", "quote_volume", "trades", "taker_buy_volume")
BAR_COLUMNS = (
    "symbol",
    "timeframe",
    "start_ms",
    *KLINE_FIGURES,
    "taker_buy_quote_volume",
    "vwap",
    "max_qty",
    "messages",
    "open_ts",
    "open_id",
    "close_ts",
    "close_id",
    "first_id",
    "last_id",
    "revision",
    "closed",
    "volume_units",
    "quote_units",
    "taker_buy_volume_units",
    "taker_buy_quote_units",
    "qty_dp",
    "quote_dp",
)


def price_decimals(prices: Sequence[float] | np.ndarray) -> int | None:
    """The most decimals any of these prices shows (what a display of the symbol's prices needs)."""
    x = np.asarray(prices, dtype=np.float64)
    x = x[np.isfinite(x)]
    return decimal_units(np.abs(x))[1] if len(x) else None


@dataclass(slots=True)
class Units:
    """A batch sorted by (time, id) and its trades' exact integers (computed once for every timeframe).

    qty = q / 10**qty_dp and price * qty = pq / 10**(price_dp + qty_dp), exactly; int64 when every
    sum of the batch stays below INT64_SAFE, else Python ints, so nothing wraps around silently.
    """

    trades: Trades
    q: np.ndarray
    pq: np.ndarray
    price_dp: int
    qty_dp: int

    @classmethod
    def of(cls, trades: Trades, price_dp: int = 0, qty_dp: int = 0) -> Units:
        t = trades.sorted()
        p, price_dp = decimal_units(t.price, price_dp)
        q, qty_dp = decimal_units(t.qty, qty_dp)
        n = len(t)
        fast = p.dtype == np.int64 and q.dtype == np.int64 and n > 0
        qmax = int(np.abs(q).max()) if n else 0
        if fast and int(np.abs(p).max()) * qmax * n < INT64_SAFE:
            return cls(t, q, p * q, price_dp, qty_dp)
        qo = q.astype(object)
        q = q if fast and qmax * n < INT64_SAFE else qo
        return cls(t, q, p.astype(object) * qo, price_dp, qty_dp)


def _reduce_columns(a: np.ndarray, b: np.ndarray, dp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`reduce_decimals` per bar over two sum columns (a, b new arrays, changed in place)."""
    dps = np.full(len(a), dp, dtype=np.int64)
    idx = np.flatnonzero((a % 10 == 0) & (b % 10 == 0)) if dp else np.zeros(0, dtype=np.int64)
    for _ in range(dp):
        if not idx.size:
            break
        a[idx] //= 10
        b[idx] //= 10
        dps[idx] -= 1
        idx = idx[(a[idx] % 10 == 0) & (b[idx] % 10 == 0)]
    return a, b, dps


def aggregate(trades: Trades, timeframe: str, tf_ms: int, units: Units | None = None) -> list[Bar]:
    """Partial bars of one batch, one per bucket it touches (vectorised).

    `units`: the batch's `Units`, when several timeframes share them (else computed here).
    """
    n = len(trades)
    if n == 0:
        return []
    u = units if units is not None else Units.of(trades)
    t = u.trades
    ts, price, qty = t.ts_ms, t.price, t.qty
    bucket = ts - ts % tf_ms
    cut = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [n])) - 1
    taker = ~t.is_buyer_maker
    vol, tb_vol, qty_dps = _reduce_columns(
        np.add.reduceat(u.q, starts), np.add.reduceat(np.where(taker, u.q, 0), starts), u.qty_dp
    )
    quote, tb_quote, quote_dps = _reduce_columns(
        np.add.reduceat(u.pq, starts), np.add.reduceat(np.where(taker, u.pq, 0), starts), u.price_dp + u.qty_dp
    )
    counts = t.last_id - t.first_id + 1
    cols = (
        bucket[starts].tolist(),
        price[starts].tolist(),
        np.maximum.reduceat(price, starts).tolist(),
        np.minimum.reduceat(price, starts).tolist(),
        price[ends].tolist(),
        vol.tolist(),
        quote.tolist(),
        np.add.reduceat(counts, starts).tolist(),
        tb_vol.tolist(),
        tb_quote.tolist(),
        np.maximum.reduceat(qty, starts).tolist(),
        np.diff(np.concatenate((starts, [n]))).tolist(),
        ts[starts].tolist(),
        t.trade_id[starts].tolist(),
        ts[ends].tolist(),
        t.trade_id[ends].tolist(),
        np.minimum.reduceat(t.first_id, starts).tolist(),
        np.maximum.reduceat(t.last_id, starts).tolist(),
        qty_dps.tolist(),
        quote_dps.tolist(),
    )
    sym = t.symbol
    return [Bar(sym, timeframe, *vals) for vals in zip(*cols, strict=True)]


class BarBook:
    """Open and recently closed bars of one symbol, for all timeframes.

    The watermark is the newest trade time (or source clock) minus the allowed
    lateness. A bar closes once the watermark passes its end; a later trade
    revises it (revision + 1). Bars older than `keep_closed_ms` leave memory;
    a trade that late becomes a merge into the stored bar. `trades` counts every
    trade folded in (kept in the flow's recovery state, so a resumed run goes on counting).
    """

    # Class defaults: a book pickled before these existed starts from zero.
    trades = 0
    price_dp = 0
    qty_dp = 0

    def __init__(self, symbol: str, timeframes: dict[str, int], lateness_ms: int, keep_closed_ms: int) -> None:
        self.symbol = symbol
        self.timeframes = timeframes
        self.lateness_ms = lateness_ms
        self.keep_closed_ms = keep_closed_ms
        self.book: dict[str, dict[int, Bar]] = {tf: {} for tf in timeframes}
        # Sorted bucket starts per timeframe: all held bars, and those still open.
        self.starts: dict[str, list[int]] = {tf: [] for tf in timeframes}
        self.open_starts: dict[str, list[int]] = {tf: [] for tf in timeframes}
        self.newest_ts = 0
        self.watermark = FAR_PAST
        self.late_trades = 0
        self.revisions = 0
        # Decimals seen so far: where the next batch's exact-units search starts (it only grows).
        self.price_dp = 0
        self.qty_dp = 0

    def add(self, trades: Trades) -> tuple[list[Bar], list[Bar]]:
        """Fold trades in; returns (changed bars, partials for evicted bars)."""
        changed: list[Bar] = []
        merges: list[Bar] = []
        if len(trades) == 0:
            return changed, merges
        self.late_trades += int(np.count_nonzero(trades.ts_ms < self.watermark))
        self.trades += len(trades)
        units = Units.of(trades, self.price_dp, self.qty_dp)
        self.price_dp, self.qty_dp = units.price_dp, units.qty_dp
        for tf, tf_ms in self.timeframes.items():
            book = self.book[tf]
            for part in aggregate(units.trades, tf, tf_ms, units):
                bar = book.get(part.start_ms)
                if bar is not None:
                    bar.merge(part)
                    if bar.closed:
                        bar.revision += 1
                        self.revisions += 1
                    changed.append(bar)
                elif part.start_ms + tf_ms + self.keep_closed_ms <= self.watermark:
                    part.closed = True
                    part.revision = 1
                    self.revisions += 1
                    merges.append(part)
                else:
                    if part.start_ms + tf_ms <= self.watermark:
                        part.closed = True
                        part.revision = 1
                        self.revisions += 1
                    else:
                        insort(self.open_starts[tf], part.start_ms)
                    insort(self.starts[tf], part.start_ms)
                    book[part.start_ms] = part
                    changed.append(part)
        self.newest_ts = max(self.newest_ts, int(trades.ts_ms.max()))
        return changed, merges

    def advance(self, clock_ms: int | None = None) -> list[Bar]:
        """Move the watermark; returns bars that just closed (oldest first)."""
        newest = max(self.newest_ts, clock_ms or 0)
        wm = newest - self.lateness_ms
        if wm <= self.watermark:
            return []
        self.watermark = wm
        closed: list[Bar] = []
        for tf, tf_ms in self.timeframes.items():
            book, opened, starts = self.book[tf], self.open_starts[tf], self.starts[tf]
            n = 0
            while n < len(opened) and opened[n] + tf_ms <= wm:
                bar = book[opened[n]]
                bar.closed = True
                closed.append(bar)
                n += 1
            del opened[:n]
            n = 0
            while n < len(starts) and starts[n] + tf_ms + self.keep_closed_ms <= wm:
                del book[starts[n]]
                n += 1
            del starts[:n]
        return closed
