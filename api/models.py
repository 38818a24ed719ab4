"""Pydantic models of every request and response: the OpenAPI page is the documentation.

Times go out twice: ISO-8601 UTC with `Z` (`time`) and epoch milliseconds (`ts_ms`).
"""

from __future__ import annotations

from typing import Annotated, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from ticklens.domain.audit import AUDIT_FIELDS, Minute
from ticklens.domain.micro import MICRO_COLUMNS
from ticklens.domain.micro import MicroBar as DomainMicroBar
from ticklens.domain.symbols import normalise_symbol
from ticklens.domain.timeframes import Timeframe

DataStatus = Literal["ok", "no_data"]
DATA_STATUS_DOC = "`ok`, or `no_data`: the symbol is configured but nothing is stored yet (the list is empty)"
Status = Annotated[DataStatus, Field(description=DATA_STATUS_DOC)]
TradesStored = Annotated[
    int, Field(description="Trades the flow stored since it first started (resumed runs included)")
]


class _SymbolRows(BaseModel):
    """What a per-symbol listing starts with; its rows follow, oldest first."""

    symbol: str
    status: Status
    count: int


class _SymbolBars(BaseModel):
    """The same for bars of one timeframe."""

    symbol: str
    timeframe: Timeframe
    status: Status
    count: int


class _BarStart(BaseModel):
    """A bar's start, in both forms."""

    time: str = Field(description="Bar start, ISO-8601 UTC")
    ts_ms: int = Field(description="Bar start, epoch ms; the bar covers [ts_ms, ts_ms + timeframe)")


class Tick(BaseModel):
    trade_id: int = Field(description="Binance trade id (aggTrade `a` or trade `t`)")
    time: str = Field(description="Exchange trade time, ISO-8601 UTC", examples=["2024-07-18T23:59:01.123Z"])
    ts_ms: int = Field(description="Exchange trade time, epoch ms")
    price: float
    qty: float
    is_buyer_maker: bool
    side: Literal["buy", "sell"] = Field(description="Taker side: `sell` when the buyer was the maker")


class TicksResponse(_SymbolRows):
    ticks: list[Tick] = Field(description="Oldest first")


class Bar(_BarStart):
    open: float
    high: float
    low: float
    close: float
    volume: float = Field(description="Base asset volume")
    quote_volume: float
    trades: int = Field(description="Exchange trade count, as in Binance klines")
    taker_buy_volume: float
    vwap: float
    in_progress: bool = Field(description="The bar is still open: later trades will change it")
    revision: int = Field(description=">0: revised by late trades after it closed")
    origin: Literal["flow", "upload"]
    span_ms: int = Field(description="Width in ms: the timeframe, or more for bars merged by `max_points`")


class OhlcResponse(_SymbolBars):
    bars: list[Bar] = Field(description="Oldest first; the newest may be in progress")


class SymbolInfo(BaseModel):
    symbol: str
    configured: bool
    has_data: bool
    timeframes: list[str] = Field(description="Timeframes with stored bars")
    first_bar_time: str | None
    first_bar_ms: int | None
    last_trade_time: str | None
    last_trade_ms: int | None
    last_price: float | None
    ticks: int = Field(description="Trade messages stored (counted from the bars)")
    uploaded_bars: bool
    price_decimals: int | None = Field(
        None,
        description="Decimals of the symbol's prices: the most that the open, high, low and close of its"
        " newest 100 bars show (its tick precision as traded; 7 for 0.0061922). The dashboard formats"
        " prices with it. null without bars.",
    )


class SymbolsResponse(BaseModel):
    symbols: list[SymbolInfo]


class StatsResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    symbol: str
    timeframe: Timeframe
    window: int = Field(description="Bars asked for")
    status: Status
    count: int = Field(description="Bars found (≤ window)")
    first_time: str | None = None
    last_time: str | None = None
    last: float | None = Field(None, description="Close of the newest bar")
    mean: float | None = Field(None, description="Mean close")
    std: float | None = Field(None, description="Sample standard deviation of the closes")
    min: float | None = Field(None, description="Lowest low")
    max: float | None = Field(None, description="Highest high")
    volume: float | None = None
    vwap: float | None = Field(None, description="Σ quote volume / Σ volume")
    return_: float | None = Field(None, alias="return", description="Last close / first open − 1")
    realised_volatility: float | None = Field(
        None, description="√Σ r², r the bar-to-bar log returns of the closes (not annualised)"
    )
    in_progress_included: bool = Field(False, description="The newest bar is still open")


class RollingStatsRow(BaseModel):
    time: str = Field(description="Bar start, ISO-8601 UTC")
    ts_ms: int
    close: float
    volume: float
    log_return: float | None = Field(None, description="log(close / previous aligned close)")
    mean: float | None = Field(None, description="Mean close over the window")
    std: float | None = Field(None, description="Sample standard deviation of the closes (ddof=1)")
    vwap: float | None = Field(None, description="Σ quote volume / Σ volume over the window")
    roll_volume: float | None = Field(None, description="Σ volume over the window")
    realised_vol: float | None = Field(None, description="√Σ r² of the window's log returns (not annualised)")


class RollingStatsResponse(BaseModel):
    symbol: str
    timeframe: Timeframe
    window: int = Field(description="`stats.window`: aligned bars per value")
    status: Status
    count: int
    rows: list[RollingStatsRow]


class SymbolStatus(BaseModel):
    symbol: str
    last_trade_time: str | None
    last_trade_ms: int | None
    trades_per_s: float = Field(description="Over the last 10 s of exchange time (1s bars)")
    trades: TradesStored
    late_trades: int
    duplicates: int
    conflicts: int = Field(0, description="Duplicates whose values differed from the trade kept (both kept in rejects)")
    revisions: int
    gaps_open: int
    gaps_total: int
    missing_bars: dict[str, int] = Field(description="1m/5m buckets without a bar between the first and last")


class StatusResponse(BaseModel):
    running: bool
    pid: int | None
    started_by: Literal["api", "external"] | None = Field(description="Who started the running flow")
    symbols: list[str]
    source: str
    started_time: str | None
    uptime_s: float | None
    trades_per_s: float = Field(description="Ingest rate of the flow at its last status write")
    trades_total: TradesStored
    reconnects: int
    connects_per_min: int = Field(
        0, description="Connection attempts in the last minute, all feeds (capped by source.max_connects_per_minute)"
    )
    malformed_messages: int = Field(description="Rejected messages kept in the store")
    rejects_dropped: int = Field(
        0, description="Rejects dropped, oldest first, to keep the store's `store.rejects_max_rows`"
    )
    gaps_open: int
    gaps_total: int
    status_time: str | None = Field(description="When the flow last wrote its status")
    per_symbol: list[SymbolStatus]
    log: str | None = Field(None, description="Log file of a flow the API started")


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbols: list[str] = Field(
        default_factory=list, max_length=200, description="Symbols to collect (added to the configured ones)"
    )

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        return sorted({normalise_symbol(s) for s in v})


class ControlResponse(BaseModel):
    action: Literal["start", "stop"]
    changed: bool = Field(description="False: nothing to do (already running / not running)")
    message: str
    pid: int | None = None
    symbols: list[str] = Field(default_factory=list)
    exit_code: int | None = None


class UploadResponse(BaseModel):
    rows: int
    inserted: int
    replaced: int = Field(description="Earlier uploaded bars replaced")
    skipped: int = Field(description="Bars already collected by the flow (kept; ?overwrite=true replaces them)")
    symbols: list[str]
    timeframes: list[str]


class RowError(BaseModel):
    row: int = Field(description="Data row, 1 = first row after the header")
    line: int = Field(description="Line in the file (the header is line 1)")
    errors: list[str]


class UploadRejected(BaseModel):
    message: str
    bad_rows: int
    errors: list[RowError] = Field(description="The first 100 bad rows")


class UploadRejectedResponse(BaseModel):
    detail: UploadRejected


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="`degraded` (HTTP 503): the store failed its check")
    problem: str | None = Field(None, description="What is wrong with the store, naming it")
    store: str
    schema_version: int | None
    checked_time: str | None = Field(None, description="When the store's integrity was last checked")
    rejects_dropped: int | None = Field(
        None, description="Rejects dropped, oldest first, to keep `store.rejects_max_rows`"
    )
    time: str


# --- analytics and data quality (documented shapes; the routers build them from rows) ---------


class CorrPoint(BaseModel):
    start_ms: int
    time: str
    corr: float | None = Field(description="Pearson correlation of log returns over the window; null until full")


class CorrMatrixOut(BaseModel):
    symbols: list[str]
    values: list[list[float | None]] = Field(description="values[i][j]: correlation of symbols i and j")


class CorrelationResponse(BaseModel):
    symbols: list[str]
    timeframe: Timeframe
    window: int
    as_of: str | None = Field(description="Newest bar of the series")
    series: dict[str, list[CorrPoint]] = Field(description="Per pair `a-b`, oldest first")
    matrix: CorrMatrixOut
    source: Literal["store", "computed"] = Field(description="The flow's stored rows, or computed from bars")


class CointOut(BaseModel):
    pair: str
    as_of: str | None = None
    as_of_ms: int | None = None
    hedge_ratio: float | None = None
    intercept: float | None = None
    correlation: float | None = None
    adf_stat: float | None = None
    adf_pvalue: float | None = Field(None, description="Plain ADF p-value (MacKinnon, no constant): reference only")
    eg_pvalue: float | None = Field(None, description="Engle-Granger cointegration p-value (MacKinnon N=2)")
    crit: dict[str, float] | None = Field(None, description="Engle-Granger critical values at 1 %, 5 %, 10 %")
    half_life: float | None = Field(None, description="Bars; null when the spread does not revert")
    lags: int | None = None
    nobs: int | None = None
    note: str | None = None


class ScreenResponse(BaseModel):
    timeframe: Timeframe
    window: int
    pairs: list[CointOut] = Field(description="Every pair, lowest Engle-Granger p-value first")


class AdfResponse(BaseModel):
    pair: str
    timeframe: Timeframe
    window: int
    result: CointOut | None = Field(description="null: fewer than window + 1 aligned bars")


class BacktestTrade(BaseModel):
    side: Literal["long_spread", "short_spread"]
    entry: str
    entry_ms: int
    exit: str | None
    exit_ms: int | None
    entry_z: float
    exit_z: float | None
    hedge_ratio: float
    entry_prices: list[float]
    exit_prices: list[float]
    pnl: float
    fees: float
    open: bool = Field(description="Still open at the last bar (marked there)")


class EquityPoint(BaseModel):
    start_ms: int
    time: str
    equity: float


class BacktestResponse(BaseModel):
    pair: str
    timeframe: Timeframe
    window: int
    entry_z: float
    exit_z: float
    fee_bps: float
    bars: int
    total_pnl: float
    mean_pnl: float | None
    win_rate: float | None
    sharpe: float | None
    max_drawdown: float
    trades: list[BacktestTrade]
    curve: list[EquityPoint] = Field(description="Marked to market at each close (at most ~5,000 points)")
    units: str


class EmptyRunOut(BaseModel):
    start: str
    start_ms: int
    end: str
    end_ms: int
    buckets: int
    status: Literal["quiet", "unknown"] = Field(description="quiet: ids run on across it; unknown: a gap spans it")
    last_id_before: int | None
    first_id_after: int | None


class GapOut(BaseModel):
    from_id: int
    to_id: int
    after_ts_ms: int
    detected_ms: int
    filled_ms: int | None
    status: Literal["open", "filled", "unfillable"]


class ContinuityResponse(BaseModel):
    symbol: str
    timeframe: Timeframe
    status: Status
    start: str | None = None
    end: str | None = None
    bars: int
    empty: list[EmptyRunOut]
    quiet_buckets: int = 0
    unknown_buckets: int = 0
    gaps: list[GapOut]


# The audited fields of a minute, named and typed as the domain's Minute has them.
_MINUTE_TYPES = get_type_hints(Minute)
AuditMinuteValues = create_model(
    "AuditMinuteValues", __module__=__name__, **{name: (_MINUTE_TYPES[name], ...) for name in AUDIT_FIELDS}
)


class AuditFieldDiff(BaseModel):
    field: str = Field(description=f"{', '.join(AUDIT_FIELDS[:-1])} or {AUDIT_FIELDS[-1]}")
    ours: float
    binance: float


class AuditMinute(BaseModel):
    start: str = Field(description="Minute start, ISO-8601 UTC")
    start_ms: int
    outcome: Literal["differs", "missing_in_store", "missing_in_klines"] = Field(
        description="differs: field values disagree; missing_in_store: Binance traded, no stored bar;"
        " missing_in_klines: a stored bar in a minute the day's kline file does not list"
    )
    fields: list[AuditFieldDiff] = Field(description="The fields that disagree (outcome differs)")
    ours: AuditMinuteValues | None = Field(description="The stored 1m bar, if any")
    binance: AuditMinuteValues | None = Field(description="Binance's kline, if any")


class AuditResponse(BaseModel):
    symbol: str
    status: Status
    start: str
    start_ms: int
    end: str
    end_ms: int
    ok: bool = Field(description="Every audited minute equal, none unaudited, at least one compared")
    compared: int = Field(description="Minutes audited: in a day with downloaded klines, with a bar or a kline")
    equal: int = Field(description="Of those, equal on every field (or quiet on both sides)")
    quiet: int = Field(description="Of the equal: no trade on either side")
    differing: int
    by_outcome: dict[str, int]
    bars: int = Field(description="Stored 1m bars in the range")
    klines: int = Field(description="Kline rows in the range")
    unaudited_bars: int = Field(description="Stored bars in days without downloaded klines")
    unaudited_days: list[str]
    klines_dir: str = Field(description="Where the klines were read (history.dir)")
    files: list[str] = Field(description="Kline files read")
    listed: int = Field(description="Differing minutes listed (at most `limit`)")
    diffs: list[AuditMinute] = Field(description="Differing minutes, oldest first")


# A micro bar is the domain's MicroBar after its key (symbol, timeframe, start_ms): the columns the store
# keeps, under the same names and types (`complete` as a boolean), a few of them explained.
_MICRO_DOCS = {
    "spread_bps_twa": "Time-weighted quoted spread, bps of mid",
    "imbalance_l1_twa": "Time-weighted (bid qty - ask qty)/(bid qty + ask qty)",
    "ofi": "Order-flow imbalance (Cont, Kukanov & Stoikov 2014), base units",
    "ofi_l5": "The same over book levels 1-5",
    "realized_spread_bps": "At the configured horizon; null until `complete`",
    "vpin_buckets": "Full VPIN volume buckets so far",
    "complete": "Realized spread and price impact are in (the horizon has passed)",
    "revision": ">0: revised by late quotes, trades or depth after it was written",
}
_MICRO_TYPES = get_type_hints(DomainMicroBar) | {"complete": bool}
MicroBar = create_model(
    "MicroBar",
    __base__=_BarStart,
    __doc__='One microstructure bar (docs/analytics.md "Microstructure"); null where a value is not defined.',
    __module__=__name__,
    **{name: (_MICRO_TYPES[name], Field(description=_MICRO_DOCS.get(name))) for name in MICRO_COLUMNS[3:]},
)


class MicroResponse(_SymbolBars):
    bars: list[MicroBar] = Field(description="Oldest first")


class VpinBucketOut(BaseModel):
    bucket: int = Field(description="Index of the volume bucket, 0 = the first the flow filled")
    time: str = Field(description="Time of the trade that filled it, ISO-8601 UTC")
    ts_ms: int
    buy_volume: float
    sell_volume: float
    vpin: float | None = Field(description="Mean |buy - sell| / V over the last n buckets; null before n")


class VpinResponse(_SymbolRows):
    buckets: list[VpinBucketOut] = Field(description="Oldest first")


class Quote(BaseModel):
    update_id: int = Field(description="Binance order-book update id `u`")
    time: str = Field(description="Transaction time (else event time; spot: receive time), ISO-8601 UTC")
    ts_ms: int = Field(description="The same, epoch ms")
    bid: float | None = Field(description="Best bid price; null when the side is empty")
    bid_qty: float | None
    ask: float | None
    ask_qty: float | None
    source: Literal["bookTicker", "book"] = Field(
        description="`bookTicker`: the exchange's stream; `book`: the local book's best after a depth event"
    )


class QuoteSample(BaseModel):
    at_ms: int = Field(
        description="Start of the interval [at_ms, at_ms + every_ms); the L1 state is the one in force at its end"
    )
    at: str = Field(description="The same, ISO-8601 UTC")
    update_id: int = Field(description="The last L1 update before the interval's end")
    ts_ms: int = Field(description="Its time, epoch ms (may be before at_ms: carried in)")
    bid: float | None
    bid_qty: float | None
    ask: float | None
    ask_qty: float | None
    source: Literal["bookTicker", "book"]


class QuoteSamplesResponse(BaseModel):
    symbol: str
    status: Status
    every_ms: int
    count: int
    samples: list[QuoteSample] = Field(
        description="Oldest first; intervals that end before the first quote are left out"
    )


class QuotesResponse(_SymbolRows):
    quotes: list[Quote] = Field(description="Oldest first")


class BookResponse(BaseModel):
    symbol: str
    at_ms: int = Field(description="The moment asked for (epoch ms)")
    at: str = Field(description="The same, ISO-8601 UTC")
    update_id: int = Field(description="The last applied depth event at or before `at` (final update id `u`)")
    ts_ms: int = Field(description="Its transaction time `T`, epoch ms")
    time: str = Field(description="The same, ISO-8601 UTC")
    bids: list[tuple[str, str]] = Field(description="[price, quantity] as the exchange's decimal strings, best first")
    asks: list[tuple[str, str]] = Field(description="[price, quantity], best first")
    complete_range: tuple[float | None, float | None] = Field(
        description="[low, high]: levels within are known complete (the last snapshot's range); null: unbounded."
        " Levels outside were seen in diffs but may be missing others."
    )
    stale: bool = Field(
        description="`at` falls inside a book gap: the book was not known then (this is the last known)"
    )


class BookGapOut(BaseModel):
    from_update_id: int = Field(description="The book was known after this update (0: never before)")
    from_ms: int
    to_update_id: int | None = Field(description="Known again after this one; null while open")
    to_ms: int | None
    reason: Literal["pu_break", "reconnect", "snapshot_failure", "crossed"]
    status: Literal["open", "closed"]
    detail: str


class BookGapsResponse(BaseModel):
    symbol: str
    count: int
    gaps: list[BookGapOut] = Field(description="Oldest first")


class HeatmapResponse(BaseModel):
    symbol: str
    times_ms: list[int] = Field(description="The moments (columns), epoch ms, oldest first")
    price_edges: list[float] = Field(description="rows + 1 bin edges, ascending")
    bid: list[list[float]] = Field(description="Per column, resting bid size per price bin (base units)")
    ask: list[list[float]] = Field(description="Per column, resting ask size per price bin")
    stale: list[bool] = Field(description="Per column: the book was not known then (empty, or the last known)")
