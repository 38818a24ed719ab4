"""The store interface: what the flow writes, what the API reads, where alert rules live.

Every backend (`storage/sqlite/` today) implements these protocols; nothing
outside `storage/` knows a table, a connection or SQL text. The flow hands the
writer one typed `StoreBatch` per epoch; the API gets a `StoreReader` for the
length of a request; alert rules, their live reload and webhook delivery state
go through a `RuleStore`. `tests/contract/` runs the same suite against every
backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, Protocol, TypeVar

from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.alerts.rules import AlertRule, StoredRule
from ticklens.domain.bars import KLINE_FIGURES, Bar, ExactSums
from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate, Quotes
from ticklens.domain.continuity import FlowBarIds
from ticklens.domain.micro import MICRO_COLUMNS, MicroBar, VpinBucket
from ticklens.domain.records import GapEvent, Rejected, Trades
from ticklens.domain.stats.correlation import CorrOut
from ticklens.domain.stats.pair import PairOut, PairRow
from ticklens.domain.stats.symbol import SymbolRow, SymbolStatsOut
from ticklens.domain.upload import UploadedBar

if TYPE_CHECKING:  # only in annotations; polars costs ~0.1 s of every process's start-up
    import polars as pl

# Rows the reader returns, in these column orders (the API's wire shapes build on them).
TICK_COLUMNS = ("trade_id", "ts_ms", "price", "qty", "is_buyer_maker", "first_id", "last_id")
BAR_OUT_COLUMNS = ("start_ms", *KLINE_FIGURES, "vwap", "closed", "revision", "origin")
REJECT_COLUMNS = ("recv_ms", "reason", "source", "raw")
GAP_COLUMNS = ("from_id", "to_id", "after_ts_ms", "detected_ms", "filled_ms", "status")
# Microstructure (docs/analytics.md): micro_bars from start_ms on, VPIN buckets.
MICRO_OUT_COLUMNS = MICRO_COLUMNS[2:]
VPIN_OUT_COLUMNS = ("bucket", "end_ms", "buy_volume", "sell_volume", "vpin")
# `source`: "bookTicker" (the exchange's L1 stream) or "book" (the local book's best, when no
# bookTicker stream is read); bid/ask are None for an empty side.
QUOTE_OUT_COLUMNS = ("update_id", "ts_ms", "event_ms", "recv_ms", "bid", "bid_qty", "ask", "ask_qty", "source")
EVENT_COLUMNS = (
    "id",
    "rule_id",
    "rule_name",
    "symbol",
    "metric",
    "timeframe",
    "operator",
    "value",
    "threshold",
    "event_ms",
    "ref",
    "wall_ms",
    "webhook",
    "webhook_status",
    "webhook_attempts",
)


class Span(NamedTuple):
    """A half-open time range [start_ms, end_ms) of row start times; None is an open end."""

    start_ms: int | None = None
    end_ms: int | None = None


EVER = Span()


class StoreWriteError(RuntimeError):
    """The store cannot take a write (disk or size cap full, read-only, I/O error): the batch
    was rolled back whole, so everything acknowledged before it is stored."""


class TickCountMismatch(RuntimeError):
    """`Store.delete_ticks` found another number of ticks than it was told to delete: nothing was deleted."""


class StoreUnavailable(RuntimeError):
    """A read the store cannot answer now (locked, corrupted, server down): the API answers 503."""


@dataclass(slots=True)
class StoreBatch:
    """Everything one epoch of the flow stores, written in one transaction.

    `bars` carry full values (a bar given twice ends as its later version);
    `bar_merges` are late partials folded into bars no longer held in memory.
    Books: `quotes` (L1 rows), `depth_updates` (every applied diff), `book_snapshots`
    (full books: REST snapshots the book was built from, carrying `limit`, and the flow's
    periodic ones, carrying `complete_range`), `book_gaps` (each gap when it opens and when
    it closes). All idempotent by natural key, like ticks.
    """

    ticks: list[Trades] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    bar_merges: list[Bar] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    gaps: list[GapEvent] = field(default_factory=list)
    status: dict[str, object] | None = None
    pairs: list[PairOut] = field(default_factory=list)
    symbol_stats: list[SymbolStatsOut] = field(default_factory=list)
    correlations: list[CorrOut] = field(default_factory=list)
    alerts: list[AlertFired] = field(default_factory=list)
    micro_bars: list[MicroBar] = field(default_factory=list)  # a bar given twice ends as its later version
    vpin: list[VpinBucket] = field(default_factory=list)
    quotes: list[Quotes] = field(default_factory=list)
    depth_updates: list[DepthUpdate] = field(default_factory=list)
    book_snapshots: list[BookSnapshot] = field(default_factory=list)
    book_gaps: list[BookGap] = field(default_factory=list)

    def add(self, **rows: Iterable[object]) -> None:
        """Append rows to the lists named (`batch.add(bars=…, gaps=…)`)."""
        for name, items in rows.items():
            getattr(self, name).extend(items)


@dataclass(slots=True)
class SymbolSummary:
    symbol: str
    timeframes: list[str]
    first_ms: int | None  # start of the first bar (smallest timeframe)
    last_trade_ms: int | None  # close time of the last bar
    last_price: float | None
    ticks: int  # trade messages, from the largest timeframe's bars (no tick scan)
    uploaded_bars: bool


class UploadResult(NamedTuple):
    """What an upload did, bar by bar (the counts of the domain's UploadPlan)."""

    inserted: int
    replaced: int
    skipped: int


@dataclass(slots=True)
class StoreHealth:
    """What /health and /metrics say about the backend itself."""

    ok: bool
    problem: str | None  # what is wrong, naming the store (None when ok)
    location: str  # a file path or a server address without credentials
    schema_version: int | None
    figures: dict[str, float] = field(default_factory=dict)  # backend gauges, e.g. wal_bytes
    checked_ms: int | None = None  # when the integrity check behind `ok` ran (None: not run)


Row = tuple[Any, ...]  # one row, in the column order its method names
StatusDoc = dict[str, Any]
P = TypeVar("P")


class StoreWriter(Protocol, Generic[P]):
    """Writes the flow's epochs. `prepare` runs on the flow's thread and turns the batch into
    plain values (the flow goes on changing its bars afterwards); `write` may run on another
    thread and only does I/O."""

    def prepare(self, batch: StoreBatch) -> P: ...

    def write(self, prepared: P) -> list[AlertFired]:
        """One epoch in one transaction; returns the triggers not stored before (webhooks to send)."""
        ...

    def close(self) -> None: ...


class StoreReader(Protocol):
    """The queries the API and the dashboard use; rows in the column orders above, oldest first."""

    def symbols_with_data(self) -> list[str]: ...
    def has_data(self, symbol: str) -> bool: ...
    def symbol_summary(self, symbol: str) -> SymbolSummary: ...
    def ticks(self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None) -> list[Row]: ...
    def iter_ticks(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 50_000
    ) -> Iterator[list[Row]]: ...
    def oldest_tick(self, symbol: str) -> tuple[int, int] | None:
        """(trade_id, ts_ms) of the symbol's stored tick with the lowest trade id, or None (the tier-out's start)."""
        ...

    def bars(
        self, symbol: str, timeframe: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[Row]: ...
    def iter_bars(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        chunk: int = 50_000,
    ) -> Iterator[list[Row]]: ...
    def exact_bar_sums(
        self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[ExactSums]:
        """The exact decimal sums behind bars starting in [start, end), oldest first."""
        ...

    def bar_span(self, symbol: str, timeframe: str) -> tuple[int | None, int | None]: ...
    def closed_bars(self, symbol: str, timeframe: str, end_ms: int | None = None) -> pl.DataFrame: ...
    def flow_bar_ids(self, symbol: str, timeframe: str, lo_ms: int, hi_ms: int) -> FlowBarIds: ...
    def recent_trade_rate(self, symbol: str, seconds: int = 10) -> float: ...
    def missing_bars(self, symbol: str, timeframe: str) -> int: ...
    def pair_rows(
        self, pair: str, timeframe: str, window: int, span: Span = EVER, limit: int | None = None
    ) -> list[PairRow]:
        """The flow's stored pair statistics starting in `span`, oldest first (the newest `limit`; None: all)."""
        ...

    def has_pair_rows(self, pair: str, timeframe: str, window: int) -> bool: ...
    def correlation_rows(
        self, timeframe: str, window: int, sym_a: str, sym_b: str, limit: int
    ) -> list[tuple[int, float | None]]:
        """The flow's stored rolling correlation of one pair, (start_ms, corr), newest `limit`, oldest first."""
        ...

    def symbol_stats_rows(
        self, symbol: str, timeframe: str, window: int, span: Span = EVER, limit: int | None = 1000
    ) -> list[SymbolRow]:
        """The flow's stored per-bar rolling statistics starting in `span`, oldest first (the newest `limit`)."""
        ...

    def micro_bars(
        self, symbol: str, timeframe: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[Row]:
        """The newest `limit` micro bars starting in [start, end), oldest first (MICRO_OUT_COLUMNS)."""
        ...

    def vpin_buckets(
        self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[Row]:
        """The newest `limit` VPIN buckets filled in [start, end), oldest first (VPIN_OUT_COLUMNS)."""

    def quotes(self, symbol: str, limit: int, start_ms: int | None = None, end_ms: int | None = None) -> list[Row]:
        """The newest `limit` L1 rows with start <= ts < end, oldest first (QUOTE_OUT_COLUMNS)."""
        ...

    def iter_quotes(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 50_000
    ) -> Iterator[list[Row]]: ...
    def quotes_before(self, symbol: str, times_ms: Sequence[int]) -> list[Row | None]:
        """For each time t, the L1 row in force just before t: the last with ts < t (ties: the
        greatest update id), or None before the first (QUOTE_OUT_COLUMNS). One index probe each."""
        ...

    def last_depth_update(self, symbol: str, at_ms: int) -> tuple[int, int] | None:
        """(final update id, transaction time) of the last stored diff with T <= at_ms (ties: the
        greatest id), or None."""
        ...

    def book_snapshot_before(self, symbol: str, update_id: int, levels: bool = True) -> BookSnapshot | None:
        """The newest stored snapshot with update id <= `update_id` (`levels=False`: its header only,
        bids and asks left empty)."""
        ...

    def depth_updates(self, symbol: str, from_id: int, to_id: int) -> list[DepthUpdate]:
        """Stored diffs with from_id <= final id <= to_id, in id order."""
        ...

    def iter_depth_updates(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, chunk: int = 2_000
    ) -> Iterator[list[DepthUpdate]]:
        """Stored diffs with start <= T < end, in id order, in chunks (exports)."""
        ...

    def book_gaps(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> list[BookGap]:
        """Book gaps of a symbol overlapping [start, end) (open ones reach to the end), oldest first."""
        ...

    def status_docs(self) -> dict[str, tuple[StatusDoc, int]]: ...
    def gaps(self, symbol: str) -> list[Row]: ...
    def gap_counts(self) -> dict[str, tuple[int, int]]: ...
    def reject_count(self) -> int: ...
    def rejects_dropped(self) -> int:
        """Rejects dropped, oldest first, to keep the store's `rejects_max_rows` (ever, all writers)."""
        ...

    def rejects(self, limit: int) -> list[Row]:
        """The newest `limit` rejects (columns: REJECT_COLUMNS), oldest first."""
        ...

    def alert_trigger_counts(self) -> dict[int, int]:
        """rule id → triggers stored for it (every symbol it watches)."""
        ...

    def health(self) -> StoreHealth: ...


class RuleFeed(Protocol):
    """The flow's live view of the rules, re-read when they change."""

    rules: list[StoredRule]
    ids: set[int]
    generation: int

    def refresh(self) -> None: ...
    def close(self) -> None: ...


class RuleStore(Protocol):
    """Alert rules (API CRUD, the flow's live reload) and trigger delivery state (webhooks)."""

    def create_rule(self, rule: AlertRule) -> int: ...
    def update_rule(self, rule_id: int, rule: AlertRule) -> bool: ...
    def delete_rule(self, rule_id: int) -> bool: ...
    def rule_row(self, rule_id: int) -> Row | None: ...
    def list_rules(self) -> list[Row]: ...
    def load_rules(self) -> list[StoredRule]: ...
    def list_events(
        self, limit: int, since_ms: int | None = None, rule_id: int | None = None
    ) -> list[dict[str, Any]]: ...
    def pending_webhooks(self) -> list[dict[str, Any]]: ...
    def mark_webhook(self, dedup: tuple[int, int, str, str], status: str, attempts: int) -> None: ...
    def close(self) -> None: ...


class Store(Protocol):
    """One backend: hands out writers, readers and rule stores over the same data."""

    kind: str
    # How the flow's sink may spread over workers: "one" (a single writer, SQLite) or
    # "per_worker" (each worker writes what it produced: a server store).
    sink_partitions: Literal["one", "per_worker"]
    # Exceptions of the backend's driver that mean "cannot answer now" (the API answers 503).
    unavailable_errors: tuple[type[Exception], ...]
    # At most this many rejects are kept (None: all): each write that adds rejects deletes the
    # oldest beyond it in the same transaction and counts them (`rejects_dropped`). Read when a
    # writer is made (`open_store` passes `store.rejects_max_rows`).
    rejects_max_rows: int | None

    # The answer of the last `check()` (None: not run yet). While it is not ok, `reader()`,
    # `rules()` and `upload_bars()` raise StoreUnavailable with its problem.
    last_check: StoreHealth | None

    def check(self) -> StoreHealth:
        """Check the backend's integrity now (SQLite: `PRAGMA quick_check` on a fresh connection)
        and keep the answer in `last_check`. Slow on a large store: call it off the event loop."""
        ...

    def writer(self) -> StoreWriter[Any]: ...
    def reader(self) -> AbstractContextManager[StoreReader]: ...
    def rules(self) -> RuleStore: ...
    def rule_feed(self, poll_s: float = 0.25) -> RuleFeed: ...
    def upload_bars(self, bars: Sequence[UploadedBar], overwrite: bool, now_ms: int) -> UploadResult: ...
    def delete_ticks(self, symbol: str, lo_id: int, hi_id: int, before_ms: int, expect: int) -> int:
        """In one transaction, delete the symbol's ticks with lo_id <= trade_id <= hi_id and ts_ms < before_ms
        if they are exactly `expect` (the ticks the caller has copied elsewhere); else delete nothing and
        raise TickCountMismatch. Returns the number deleted."""
        ...

    def close(self) -> None: ...
