"""What travels between the dataflow's steps besides the records of `ticklens.domain.records`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ticklens.domain.bars import Bar
from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate, Quotes, SyncCounters
from ticklens.domain.micro import BookLevels, MicroBar, VpinBucket
from ticklens.domain.records import GapEvent, Trades
from ticklens.domain.times import FAR_PAST


@dataclass(slots=True)
class Fresh:
    """Output of dedup: trades not seen before, and gap changes."""

    symbol: str
    trades: Trades | None = None
    clock: int | None = None
    gaps: list[GapEvent] = field(default_factory=list)
    duplicates: int = 0
    conflicts: int = 0  # of the duplicates, those whose values differ from the trade kept
    duplicates_total: int = 0  # since the flow first started (recovered state)
    conflicts_total: int = 0


@dataclass(slots=True)
class SymbolOut:
    """Everything one symbol's batch produced for the store and later steps."""

    symbol: str
    ticks: Trades | None = None
    bars: list[Bar] = field(default_factory=list)  # changed bars, full values
    merges: list[Bar] = field(default_factory=list)  # late partials for bars no longer in memory
    closed: list[Bar] = field(default_factory=list)  # bars that just became final
    revised: list[Bar] = field(default_factory=list)  # closed bars a late trade changed (or created)
    gaps: list[GapEvent] = field(default_factory=list)
    duplicates: int = 0
    conflicts: int = 0  # conflicting duplicates (kept in `rejects` with both versions)
    late_trades: int = 0
    revisions: int = 0
    watermark: int = 0
    clock: int | None = None  # the source clock this batch carried (exchange time now)
    # Running totals of the flow's recovered state: they go on across a resumed run.
    trades_total: int = 0
    duplicates_total: int = 0
    conflicts_total: int = 0
    last_trade_ms: int = 0


@dataclass(slots=True)
class BookClock:
    """The source's clock on a symbol's book path (microstructure): every book record of the
    symbol up to `ts_ms` has been handed on before it, as a `Clock` says for its trades."""

    symbol: str
    ts_ms: int


@dataclass(slots=True)
class BookOut:
    """What one symbol's book step produced for the store: L1 rows, applied diffs, snapshots, gaps."""

    symbol: str
    quotes: Quotes | None = None  # bookTicker rows, or the local book's L1 when no bookTicker stream is read
    applied: list[DepthUpdate] = field(default_factory=list)
    snapshots: list[BookSnapshot] = field(default_factory=list)
    gaps: list[BookGap] = field(default_factory=list)
    live: bool = False
    last_update_id: int = 0
    counters: SyncCounters | None = None
    levels: BookLevels | None = None  # the book's top levels and 10 bps depth (microstructure)
    clock: int | None = None  # a BookClock passed through


@dataclass(slots=True)
class MicroItem:
    """One symbol's microstructure step output: bars to store (new or rewritten) and VPIN buckets."""

    symbol: str
    bars: list[MicroBar] = field(default_factory=list)
    vpin: list[VpinBucket] = field(default_factory=list)
    too_late: int = 0  # events dropped this step (older than micro.keep_s behind the watermark)
    watermark: int = FAR_PAST  # bars before it are written (pair legs on mids read it)
