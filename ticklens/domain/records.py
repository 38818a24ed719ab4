"""The records every step past the exchange edge works with, one type per kind.

Trades travel through the dataflow as columnar batches of one symbol (numpy
arrays), so per-trade Python work happens only at the wire edge. Besides them:
rejected messages, the source's clock, feed counters and trade-id gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The key of the feed-wide stream (not a symbol: symbols match [a-z0-9]{2,30}).
FEED_KEY = "_feed"

COLUMNS = ("trade_id", "ts_ms", "price", "qty", "is_buyer_maker", "first_id", "last_id", "event_ms", "recv_ms")
DTYPES = {
    "trade_id": np.int64,
    "ts_ms": np.int64,
    "price": np.float64,
    "qty": np.float64,
    "is_buyer_maker": np.bool_,
    "first_id": np.int64,
    "last_id": np.int64,
    "event_ms": np.int64,
    "recv_ms": np.int64,
}


@dataclass(slots=True)
class TradeColumns:
    """The exchange's columns of a run of trades, one array each; ids are Binance's (aggTrade `a` or trade `t`).

    `ts_ms` is the exchange trade time `T`, `event_ms` the event time `E`. `first_id`/`last_id`
    are the underlying trade ids of an aggTrade (both equal `trade_id` for a plain trade).
    The emulator's tape keeps its rows in the same columns.
    """

    trade_id: np.ndarray
    ts_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    is_buyer_maker: np.ndarray
    first_id: np.ndarray
    last_id: np.ndarray
    event_ms: np.ndarray


@dataclass(slots=True)
class Trades(TradeColumns):
    """A batch of trades of one symbol, as received: `recv_ms` is the local receive time."""

    symbol: str
    recv_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.trade_id)

    @classmethod
    def from_columns(cls, symbol: str, **cols: object) -> Trades:
        arrays: dict[str, np.ndarray] = {}
        for name in COLUMNS:
            src = cols.get(name)
            if src is None:
                if name in ("first_id", "last_id"):
                    src = cols["trade_id"]
                elif name in ("event_ms", "recv_ms"):
                    src = cols["ts_ms"]
            arrays[name] = np.asarray(src, dtype=DTYPES[name])
        return cls(symbol=symbol, **arrays)

    @classmethod
    def empty(cls, symbol: str) -> Trades:
        return cls(symbol=symbol, **{n: np.empty(0, dtype=DTYPES[n]) for n in COLUMNS})

    def take(self, index: np.ndarray) -> Trades:
        return Trades(symbol=self.symbol, **{n: getattr(self, n)[index] for n in COLUMNS})

    def sorted(self) -> Trades:
        """Ordered by (trade time, trade id), the order open/close are defined by."""
        ts, ids = self.ts_ms, self.trade_id
        if len(ts) < 2 or (np.all(ts[1:] >= ts[:-1]) and np.all((ts[1:] > ts[:-1]) | (ids[1:] > ids[:-1]))):
            return self
        return self.take(np.lexsort((ids, ts)))


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message we could not use: kept aside (dead-letter table), never fatal."""

    recv_ms: int
    reason: str
    raw: bytes
    source: str = ""


@dataclass(frozen=True, slots=True)
class Clock:
    """The source's estimate of exchange time now (ms): closes bars when a symbol is quiet."""

    ts_ms: int
    symbol: str = ""  # set when routed to one symbol


@dataclass(slots=True)
class FeedStats:
    """Counters a source reports about its connections (cumulative)."""

    source: str
    connected: bool = False
    reconnects: int = 0
    rollovers: int = 0
    connects: int = 0  # connection attempts
    connects_per_min: int = 0  # connection attempts in the last 60 s (capped by source.max_connects_per_minute)
    messages: int = 0
    rejected: int = 0
    skipped: int = 0
    queue_depth: int = 0
    queue_bytes: int = 0
    clock_skew_ms: float | None = None  # local receive time minus exchange event time
    ended: bool = False
    snapshots: int = 0  # REST depth snapshots received (books)
    snapshot_failures: int = 0  # failed snapshot attempts
    book_duplicates: int = 0  # depth events delivered twice (a rollover's overlap), dropped


@dataclass(slots=True)
class GapEvent:
    symbol: str
    from_id: int
    to_id: int
    after_ts: int
    status: str  # open | filled
