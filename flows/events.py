"""Items that travel between dataflow steps besides trade batches."""

from __future__ import annotations

from dataclasses import dataclass, field

from flows.bars import Bar
from flows.trades import Trades


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
    messages: int = 0
    rejected: int = 0
    skipped: int = 0
    queue_depth: int = 0
    clock_skew_ms: float | None = None  # local receive time minus exchange event time
    ended: bool = False


@dataclass(slots=True)
class GapEvent:
    symbol: str
    from_id: int
    to_id: int
    after_ts: int
    status: str  # open | filled


@dataclass(slots=True)
class Fresh:
    """Output of dedup: trades not seen before, and gap changes."""

    symbol: str
    trades: Trades | None = None
    clock: int | None = None
    gaps: list[GapEvent] = field(default_factory=list)
    duplicates: int = 0


@dataclass(slots=True)
class SymbolOut:
    """Everything one symbol's batch produced for the store and later steps."""

    symbol: str
    ticks: Trades | None = None
    bars: list[Bar] = field(default_factory=list)  # changed bars, full values
    merges: list[Bar] = field(default_factory=list)  # late partials for bars no longer in memory
    closed: list[Bar] = field(default_factory=list)  # bars that just became final
    gaps: list[GapEvent] = field(default_factory=list)
    duplicates: int = 0
    late_trades: int = 0
    revisions: int = 0
    watermark: int = 0
