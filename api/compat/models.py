"""Response models of the original design's API, field for field as its clients read them
(`../shared/seed/seed-api.md`); for the OpenAPI page. Times are ISO-8601 UTC strings with `Z`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorAnswer(BaseModel):
    """HTTP 200 with an `error` key: too little data for the answer (clients test for the key)."""

    error: str


class CompatHealth(_Out):
    status: str = Field(description='"healthy"; "degraded" (HTTP 503) when the store failed its integrity check')
    timestamp: str
    collecting: bool = Field(description="A dataflow process is running")
    store: str = Field(description="ticklens: where the store is")
    schema_version: int | None = Field(description="ticklens: the store's schema version")
    problem: str | None = Field(None, description="ticklens: what is wrong with the store, when degraded")


class StartAnswer(_Out):
    status: str = Field(description='"started"')
    symbols: list[str] = Field(description="What the flow collects (the configured symbols plus the ones asked for)")
    message: str


class StopAnswer(_Out):
    status: str = Field(description='"stopped"')
    message: str


class StatusAnswer(_Out):
    is_collecting: bool
    active_symbols: list[str]
    connections: int = Field(description="Open exchange/feed WebSocket connections (0 for a file replay)")
    uptime: str | None = Field(description='Time since the flow started, e.g. "0:12:31"; null when stopped')


class SymbolList(_Out):
    symbols: list[str] = Field(description="Symbols with stored data")


class TickRow(_Out):
    symbol: str
    timestamp: str = Field(description="Exchange trade time")
    price: float
    size: float = Field(description="Quantity (base asset)")


class TicksAnswer(_Out):
    symbol: str
    count: int
    data: list[TickRow] = Field(description="Oldest first")


class OhlcRow(_Out):
    symbol: str
    timeframe: str
    timestamp: str = Field(description="Bar start")
    open: float
    high: float
    low: float
    close: float
    volume: float


class OhlcAnswer(_Out):
    symbol: str
    timeframe: str
    count: int
    data: list[OhlcRow] = Field(description="Oldest first; the newest bar may be in progress")


class StatsAnswer(_Out):
    symbol: str
    count: int = Field(description="Ticks in the window (≤ window)")
    last_price: float
    mean: float = Field(description="Mean trade price")
    std: float = Field(description="Sample standard deviation of the trade prices (0 for one trade)")
    min: float
    max: float
    volume: float
    vwap: float


class SpreadPoint(_Out):
    timestamp: str
    spread: float | None
    z_score: float | None


class _PairAnswer(_Out):
    """An answer about two symbols: the pair first."""

    symbol1: str
    symbol2: str


class SpreadAnswer(_PairAnswer):
    method: str
    hedge_ratio: float = Field(description="β of symbol1 = α + β symbol2, latest")
    spread_mean: float
    spread_std: float
    current_spread: float
    z_score: float = Field(description="Latest z-score, against past spreads only")
    half_life: float | None = Field(description="Ticks; null when the spread does not revert")
    data_points: int = Field(description="Aligned tick times used")
    spread_series: list[SpreadPoint] = Field(description="The last 50 points")


class AdfAnswer(_PairAnswer):
    adf_statistic: float
    p_value: float = Field(description="Engle-Granger p-value (MacKinnon, cointegration of a fitted spread)")
    n_lags: int
    n_obs: int = Field(description="Observations in the ADF regression")
    critical_values: dict[str, float] = Field(description='{"1%": …, "5%": …, "10%": …}')
    is_cointegrated: bool = Field(description="p_value < 0.05")
    interpretation: str


class CorrelationPoint(_Out):
    timestamp: str
    correlation: float | None


class CorrelationAnswer(_Out):
    symbols: list[str]
    window: int = Field(description="Bars per correlation (shrunk to what is stored, at least 4 returns)")
    rolling_correlations: dict[str, list[CorrelationPoint]] = Field(description='"a_b" → the last 50 points')
    correlation_matrix: dict[str, dict[str, float | None]]
    timestamp: str = Field(description="Bar the matrix is for")


class BacktestTrade(_Out):
    entry_time: str
    entry_z: float
    entry_spread: float | None
    type: str = Field(description="long (the spread) or short")
    exit_time: str
    exit_z: float
    exit_spread: float | None
    pnl: float


class BacktestAnswer(_PairAnswer):
    entry_z: float
    exit_z: float
    total_trades: int = Field(description="Completed trades")
    winning_trades: int
    win_rate: float = Field(description="Percent of completed trades with pnl > 0")
    total_pnl: float = Field(description="Sum over completed trades (quote currency, 1 unit of symbol1)")
    avg_pnl: float
    sharpe: float = Field(description="Mean / std of the per-point equity changes (not annualised)")
    max_win: float
    max_loss: float
    trades: list[BacktestTrade] = Field(description="The last 10 completed trades")


class AlertCreated(_Out):
    alert_id: str
    status: str = Field(description='"created"')


class AlertItem(_Out):
    id: str
    name: str
    condition: str = Field(description='e.g. "price > 50000"')
    symbols: list[str]
    enabled: bool
    created_at: str
    trigger_count: int = Field(description="Triggers stored for the rule, over all its symbols")


class AlertItems(_Out):
    alerts: list[AlertItem]


class AlertDeleted(_Out):
    status: str = Field(description='"deleted"')


class TriggerItem(_Out):
    rule_id: str
    rule_name: str
    symbol: str = Field(description="Symbol (a pair as a-b; the feed as _feed)")
    price: float = Field(description="The trade's price for trade rules; else the metric's value (see value)")
    timestamp: str = Field(description="Market time: the trade's time or the bar's start")
    triggered_at: str = Field(description="When the flow stored it")
    condition: str


class TriggerItems(_Out):
    alerts: list[TriggerItem] = Field(description="Newest first")


class UploadAnswer(_Out):
    status: str = Field(description='"success"')
    rows: int
    symbols: list[str]


class ExportJson(_Out):
    data: list[OhlcRow]


class TimeseriesRow(_Out):
    timestamp: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    returns: float | None = Field(description="Close over the previous close − 1, percent")
    volatility: float | None = Field(description="Sample std of the last 20 returns, percent")
    range_pct: float = Field(description="(high − low) / close, percent")


class TimeseriesAnswer(_Out):
    symbol: str
    timeframe: str
    data: list[TimeseriesRow]
