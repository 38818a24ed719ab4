"""Exact OHLCV bars from trades, in exchange event time (pure computation).

A bar covers [start, start + timeframe) of trade time `T`. Open and close are
the first and last trade by (time, id). Trade count follows Binance klines:
1 per plain trade, `last_id - first_id + 1` per aggTrade. Partial bars merge
associatively, so arrival order never changes the result.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass

import numpy as np

from ticklens.domain.records import Trades

# Sums are kept as exact integers so that any arrival order gives bit-identical bars:
# quantities (at most 8 decimals on Binance) in units of 1e-8, and price*qty in
# units of 2**-24 (a per-trade rounding below 6e-8 USDT, far under the archive's 0.01).
# In memory the sums are Python ints (unbounded); see `_sums` for the batch side and
# `Bar.row` for sums beyond SQLite's 64-bit INTEGER.
QTY_SCALE = 100_000_000
QUOTE_SCALE = float(2**24)
INT64_SAFE = 2**62

# How two partials of one bucket combine: associative and commutative, so arrival order never
# matters. The one definition of the rule: `Bar.merge` applies it in memory, and each store
# generates its late-trade upsert from it (storage/sqlite/writer.py). "first"/"last": the field
# goes with the partial whose FIRST_KEY is smaller / LAST_KEY is larger.
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
    "volume_units": "sum",
    "quote_units": "sum",
    "taker_buy_volume_units": "sum",
    "taker_buy_quote_units": "sum",
    "trades": "sum",
    "messages": "sum",
}
FIRST_KEY = ("open_ts", "open_id")
LAST_KEY = ("close_ts", "close_id")
# Stored columns derived from the exact sums: column -> (sum column, scale); vwap = quote / volume.
DERIVED: dict[str, tuple[str, float]] = {
    "volume": ("volume_units", QTY_SCALE),
    "quote_volume": ("quote_units", QUOTE_SCALE),
    "taker_buy_volume": ("taker_buy_volume_units", QTY_SCALE),
    "taker_buy_quote_volume": ("taker_buy_quote_units", QUOTE_SCALE),
}


@dataclass(slots=True)
class Bar:
    symbol: str
    timeframe: str
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume_units: int
    quote_units: int
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
    revision: int = 0
    closed: bool = False

    def merge(self, other: Bar) -> None:
        """Fold another partial of the same bucket into this one (by MERGE_RULES)."""
        earlier = (other.open_ts, other.open_id) < (self.open_ts, self.open_id)
        later = (other.close_ts, other.close_id) > (self.close_ts, self.close_id)
        for name, rule in MERGE_RULES.items():
            mine, theirs = getattr(self, name), getattr(other, name)
            if rule == "sum":
                setattr(self, name, mine + theirs)
            elif rule == "max":
                setattr(self, name, max(mine, theirs))
            elif rule == "min":
                setattr(self, name, min(mine, theirs))
            elif (rule == "first" and earlier) or (rule == "last" and later):
                setattr(self, name, theirs)

    @property
    def volume(self) -> float:
        return self.volume_units / QTY_SCALE

    @property
    def quote_volume(self) -> float:
        return self.quote_units / QUOTE_SCALE

    @property
    def vwap(self) -> float:
        return self.quote_units / QUOTE_SCALE / self.volume if self.volume_units else self.close

    def row(self) -> tuple[object, ...]:
        """Row for the `bars` table, in BAR_COLUMNS order."""
        return (
            self.symbol,
            self.timeframe,
            self.start_ms,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.quote_volume,
            self.trades,
            self.taker_buy_volume_units / QTY_SCALE,
            self.taker_buy_quote_units / QUOTE_SCALE,
            self.vwap,
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
            _db_int(self.volume_units),
            _db_int(self.quote_units),
            _db_int(self.taker_buy_volume_units),
            _db_int(self.taker_buy_quote_units),
        )


BAR_COLUMNS = (
    "symbol",
    "timeframe",
    "start_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
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
)


def _units(scaled: np.ndarray) -> np.ndarray:
    """Per-trade integer units; Python ints (object) when a batch's sum could pass int64,
    so huge-quantity symbols and busy 5m bars never wrap around silently."""
    total = float(np.abs(scaled).sum())
    if total < INT64_SAFE:
        return np.asarray(np.rint(scaled), dtype=np.int64)
    return np.array([int(round(x)) for x in scaled.tolist()], dtype=object)


def _db_int(units: int) -> int | str:
    """SQLite INTEGER is 64-bit: a larger exact sum is stored as its decimal text."""
    return units if -INT64_SAFE < units < INT64_SAFE else str(units)


def aggregate(trades: Trades, timeframe: str, tf_ms: int) -> list[Bar]:
    """Partial bars of one batch, one per bucket it touches (vectorised)."""
    n = len(trades)
    if n == 0:
        return []
    t = trades.sorted()
    ts, price, qty = t.ts_ms, t.price, t.qty
    bucket = ts - ts % tf_ms
    cut = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [n])) - 1
    qty_u = _units(qty * QTY_SCALE)
    quote_u = _units(price * qty * QUOTE_SCALE)
    taker = ~t.is_buyer_maker
    tb_qty = np.where(taker, qty_u, 0)
    tb_quote = np.where(taker, quote_u, 0)
    counts = t.last_id - t.first_id + 1
    cols = (
        bucket[starts].tolist(),
        price[starts].tolist(),
        np.maximum.reduceat(price, starts).tolist(),
        np.minimum.reduceat(price, starts).tolist(),
        price[ends].tolist(),
        np.add.reduceat(qty_u, starts).tolist(),
        np.add.reduceat(quote_u, starts).tolist(),
        np.add.reduceat(counts, starts).tolist(),
        np.add.reduceat(tb_qty, starts).tolist(),
        np.add.reduceat(tb_quote, starts).tolist(),
        np.maximum.reduceat(qty, starts).tolist(),
        np.diff(np.concatenate((starts, [n]))).tolist(),
        ts[starts].tolist(),
        t.trade_id[starts].tolist(),
        ts[ends].tolist(),
        t.trade_id[ends].tolist(),
        np.minimum.reduceat(t.first_id, starts).tolist(),
        np.maximum.reduceat(t.last_id, starts).tolist(),
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

    trades = 0  # class default: a book pickled before the counter existed starts from zero

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
        self.watermark = -(2**62)
        self.late_trades = 0
        self.revisions = 0

    def add(self, trades: Trades) -> tuple[list[Bar], list[Bar]]:
        """Fold trades in; returns (changed bars, partials for evicted bars)."""
        changed: list[Bar] = []
        merges: list[Bar] = []
        if len(trades) == 0:
            return changed, merges
        self.late_trades += int(np.count_nonzero(trades.ts_ms < self.watermark))
        self.trades += len(trades)
        for tf, tf_ms in self.timeframes.items():
            book = self.book[tf]
            for part in aggregate(trades, tf, tf_ms):
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
