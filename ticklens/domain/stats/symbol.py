"""Rolling statistics of one symbol over its aligned bars (flow: `symbol_stats` rows)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, fields

from ticklens.domain.stats.rolling import RollingSums1


@dataclass(slots=True)
class SymbolRow:
    """Rolling statistics of one symbol at one bar (window of `window` bars ending here)."""

    start_ms: int
    close: float
    volume: float
    log_return: float | None = None
    mean: float | None = None  # of closes
    std: float | None = None  # of closes, ddof=1
    vwap: float | None = None  # sum(quote volume) / sum(volume)
    roll_volume: float | None = None
    realised_vol: float | None = None  # sqrt(sum of squared log returns), not annualised


SYMBOL_ROW_FIELDS = tuple(f.name for f in fields(SymbolRow))


@dataclass(slots=True)
class SymbolStats:
    """Incremental per-symbol statistics over aligned bars (an empty bar: close carried, volume 0)."""

    window: int
    closes: RollingSums1 = field(init=False)
    vol: deque[float] = field(init=False)
    quote: deque[float] = field(init=False)
    r2: RollingSums1 = field(init=False)
    prev: float | None = None

    def __post_init__(self) -> None:
        self.closes = RollingSums1(self.window)
        self.vol = deque(maxlen=self.window)
        self.quote = deque(maxlen=self.window)
        self.r2 = RollingSums1(self.window)

    def clone(self) -> SymbolStats:
        """An independent copy (a checkpoint to rewind to when a bar it used is revised)."""
        new = SymbolStats.__new__(SymbolStats)
        new.window, new.prev = self.window, self.prev
        new.closes, new.r2 = self.closes.clone(), self.r2.clone()
        new.vol, new.quote = self.vol.copy(), self.quote.copy()
        return new

    def update(self, start_ms: int, close: float, volume: float, quote_volume: float) -> SymbolRow:
        row = SymbolRow(start_ms, close, volume)
        self.closes.push(close)
        self.vol.append(volume)
        self.quote.append(quote_volume)
        if self.prev is not None:
            row.log_return = math.log(close / self.prev)
            self.r2.push(row.log_return * row.log_return)
        self.prev = close
        if len(self.closes) == self.window:
            row.mean, row.std = self.closes.mean_std()
            v = math.fsum(self.vol)
            row.roll_volume = v
            row.vwap = math.fsum(self.quote) / v if v > 0 else None
        if len(self.r2) == self.window:
            row.realised_vol = math.sqrt(max(sum(self.r2.xs), 0.0))
        return row


@dataclass(slots=True)
class SymbolStatsOut:
    symbol: str
    timeframe: str
    window: int
    rows: list[SymbolRow]
