"""The one validated configuration model, loaded from `pipeline.yaml`.

Every room (flow, API, dashboard, CLI) reads its settings from here, so a bad
value fails once, at start, with the field and the value named.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ticklens.domain.stats.params import PairParams
from ticklens.domain.symbols import normalise_symbol
from ticklens.domain.timeframes import TIMEFRAME_MS, TIMEFRAMES, Timeframe

BINANCE_WS_URL = "wss://fstream.binance.com/market/stream"
BINANCE_REST_URL = "https://fapi.binance.com"
DEFAULT_CONFIG = "pipeline.yaml"
TOKEN_ENV = "TICKLENS_API_TOKEN"
DASHBOARD_PASSWORD_ENV = "TICKLENS_DASHBOARD_PASSWORD"
MIN_SECRET = 16  # characters of an API token
_SECRET_FIELDS = ("token", "password")  # never shown in an error message
_HOSTNAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?").fullmatch


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


StreamKind = Literal["aggTrade", "trade", "bookTicker", "depth"]
TRADE_STREAMS = ("aggTrade", "trade")
BOOK_STREAMS = ("bookTicker", "depth")


class SourceConfig(_Model):
    kind: Literal["binance", "feed", "replay"] = "replay"
    paths: list[Path] = Field(default_factory=list)
    speed: Literal["max"] | Annotated[float, Field(gt=0)] = "max"
    url: str | None = None
    stream: Literal["aggTrade", "trade"] = "aggTrade"
    # The stream kinds read per symbol: at most one trade stream (aggTrade or trade), `bookTicker`
    # (every best bid/ask update) and `depth` (the diff-depth stream a local order book is kept
    # from, with REST snapshots). Default: the trade stream `stream` alone. A replay uses the kinds
    # listed here of what its files hold and skips the rest.
    streams: list[StreamKind] | None = None
    # The diff-depth stream's update speed: <symbol>@depth@0ms | @100ms | @depth (250 ms) | @500ms.
    depth_speed_ms: Literal[0, 100, 250, 500] = 0
    # WebSocket client library: picows reads ~3x faster than websockets on this machine.
    client: Literal["picows", "websockets"] = "picows"
    record: Path | None = None
    # Replay: trades per emitted batch (small values exercise cross-batch lateness in tests).
    batch_rows: int = Field(50_000, ge=1, le=1_000_000)
    # Binance cuts every connection at 24 h; we roll over before that, with overlap.
    rollover_s: float = Field(23 * 3600, gt=0)
    overlap_s: float = Field(5.0, ge=0)
    # Reconnect backoff: exponential with full jitter, capped.
    backoff_initial_s: float = Field(0.2, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    # No data on a connection for this long counts as a stall and forces a reconnect.
    stall_s: float = Field(30.0, gt=0)
    max_streams_per_connection: int = Field(200, ge=1, le=200)
    # Source partitions (each symbol in exactly one; spread over the flow's workers). None: one per
    # connection group (live), one per symbol whose files name it (replay; 1 if a file holds several).
    partitions: int | None = Field(None, ge=1, le=1024)
    # The reader's hand-over queue: the sockets pause when it holds this many trades or this
    # many bytes (trades and rejected messages alike), so no flood can grow memory.
    queue_max: int = Field(1_000_000, ge=1_000)
    queue_max_bytes: int = Field(64 << 20, ge=1 << 20)
    # A WebSocket frame larger than this closes the connection (Binance's are < 1 KiB).
    max_frame_bytes: int = Field(1 << 20, ge=4096, le=64 << 20)
    # Trade and event times must lie within this of the receive time (live and recordings), else
    # the message is a reject. 0: only the absolute window (2010..2100). Default: one day for
    # `kind: binance`; 0 for `feed` (the local feed replays old recordings with their own times)
    # and `replay` (a recording of the local feed holds such times too).
    time_window_ms: int = Field(86_400_000, ge=0)
    # A connection whose last `reject_window` messages are more than `reject_ratio_max` rejects
    # is closed and backed off like a stall.
    reject_ratio_max: float = Field(0.5, gt=0, le=1)
    reject_window: int = Field(200, ge=10)
    # The backoff starts again from `backoff_initial_s` only after a connection delivered valid
    # trades for this long; and no more than this many connects per minute, whatever happens.
    healthy_after_s: float = Field(10.0, ge=0)
    max_connects_per_minute: int = Field(30, ge=1, le=300)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        return _with_scheme(v, ("ws://", "wss://"), "ws:// or wss://")

    @property
    def window_ms(self) -> int | None:
        """The time window as the parser takes it (None: absolute bounds only)."""
        return self.time_window_ms or None

    @model_validator(mode="after")
    def _streams(self) -> SourceConfig:
        if self.streams is None:
            self.streams = [self.stream]
            return self
        if not self.streams:
            raise ValueError("source.streams must name at least one stream kind")
        if len(set(self.streams)) != len(self.streams):
            raise ValueError(f"source.streams {self.streams} lists a stream twice")
        trades = [s for s in self.streams if s in TRADE_STREAMS]
        if len(trades) > 1:
            raise ValueError(f"source.streams {self.streams}: one trade stream (aggTrade or trade), not both")
        if trades and "stream" in self.model_fields_set and trades[0] != self.stream:
            raise ValueError(f"source.stream {self.stream!r} contradicts source.streams {self.streams}")
        if trades:
            self.stream = trades[0]  # type: ignore[assignment]
        return self

    @property
    def trade_stream(self) -> str | None:
        """The trade stream read (aggTrade or trade), None when only book streams are."""
        return next((s for s in self.streams or [] if s in TRADE_STREAMS), None)

    @property
    def book_streams(self) -> list[str]:
        return [s for s in self.streams or [] if s in BOOK_STREAMS]

    @model_validator(mode="after")
    def _paths_for_replay(self) -> SourceConfig:
        if self.kind == "replay" and not self.paths:
            raise ValueError("source.kind 'replay' needs source.paths (one or more files)")
        if self.kind == "feed" and not self.url:
            self.url = "ws://127.0.0.1:9443/market/stream"
        if self.kind != "binance" and "time_window_ms" not in self.model_fields_set:
            self.time_window_ms = 0
        if self.kind == "binance" and not self.url:
            self.url = BINANCE_WS_URL
        return self


# The tables `store.retention` applies to (rows older than the newest stored time minus the days).
RETENTION_TABLES = ("ticks", "quotes", "depth_updates", "book_snapshots", "book_gaps")


class RetentionConfig(_Model):
    """How long tables keep their rows: `days` for every table it applies to, `tables` per table.

    Book data is 10-100x the trade volume: e.g. `{tables: {depth_updates: 3, quotes: 7}}`.
    None: keep forever. PostgreSQL drops whole daily partitions of its time-partitioned tables
    (ticks and the book tables) once every row is older; SQLite deletes the book tables' rows
    older than the newest stored time of the symbol minus the days (ticks stay there: the
    history tiers move them out). See docs/store.md.
    """

    days: float | None = Field(None, gt=0)
    tables: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    # Partitions created this many days ahead of the wall clock, so live writes never wait on DDL.
    ahead_days: int = Field(2, ge=0, le=60)

    @field_validator("tables")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            if name not in RETENTION_TABLES:
                raise ValueError(f"store.retention.tables: {name!r} is not one of {', '.join(RETENTION_TABLES)}")
        return v

    def days_for(self, table: str) -> float | None:
        return self.tables.get(table, self.days)


_URL_PASSWORD = re.compile(r"(?P<head>postgres(?:ql)?://[^:/@\s]*):(?P<pw>[^@\s]*)@")


def redact(text: str) -> str:
    """`text` with any password in a postgresql:// URL (and password=… parameters) masked."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", text)
    text = re.sub(r"(['\"]password['\"]:\s*)(['\"]).*?\2", r"\1'***'", text)
    return re.sub(r"(password=)[^&\s'\"]*", r"\1***", text)


def _with_scheme(url: str | None, schemes: tuple[str, ...], expected: str) -> str | None:
    """`url` (None: not set) when it starts with one of `schemes`; the error shows it redacted."""
    if url is not None and not url.startswith(schemes):
        raise ValueError(f"url {redact(url)!r} must start with {expected}")
    return url


class StoreConfig(_Model):
    # sqlite: the embedded default, one writer (one machine, one flow process).
    # postgres: a server store, one writer per flow worker (a multi-process cluster, several API replicas).
    kind: Literal["sqlite", "postgres"] = "sqlite"
    path: Path = Path("data/ticklens.db")
    # A cap on the store's size: at the cap the flow stops with a clear error
    # (as on a full disk) instead of filling the disk. None: no cap.
    max_size_mb: int | None = Field(None, ge=1)
    # SQLite page cache of the flow's writer; RSS grows by up to this much as the store grows.
    cache_mb: int = Field(64, ge=1, le=4096)
    # Rows kept in `rejects`: each write that adds rejects drops the oldest beyond this and counts
    # them (`rejects_dropped` in /api/v1/status, /api/v1/health, /metrics). None: no cap.
    rejects_max_rows: int | None = Field(1_000_000, ge=1_000)
    # The API checks the store's integrity (SQLite: PRAGMA quick_check) at start and then every
    # this many seconds (0: at start only); a failed check makes /health degraded and reads 503.
    check_interval_s: float = Field(3600.0, ge=0)
    # Tiered ticks (storage/tier.py, docs/store.md): a symbol's ticks of whole UTC days that end more
    # than `hot_days` before its newest stored trade move to zstd Parquet under `cold_dir`; bars and
    # analytics stay. None: every tick stays in the store.
    hot_days: int | None = Field(7, ge=1)
    cold_dir: Path | None = None  # default: `cold/` next to the store file
    # How often the running flow moves ticks out (its sink's tier thread); `ticklens store tier-out` any time.
    tier_every_s: float = Field(600.0, gt=0)
    # postgres: postgresql://user@host:port/db. A password in the URL is moved to `password`
    # (never shown); TICKLENS_PG_PASSWORD, when set, is used instead.
    url: str | None = None
    password: SecretStr | None = Field(None, repr=False)
    # postgres: the API's connection pool, and how long a writer retries a lost server (backoff) before failing.
    pool_max: int = Field(8, ge=1, le=256)
    retry_s: float = Field(120.0, ge=0)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _with_scheme(v, ("postgresql://", "postgres://"), "postgresql://")

    @model_validator(mode="after")
    def _split_password(self) -> StoreConfig:
        if self.kind == "postgres" and not self.url:
            raise ValueError("store.kind 'postgres' needs store.url (postgresql://user@host:port/db)")
        if self.url:
            m = _URL_PASSWORD.match(self.url)
            if m:
                if self.password is None and m.group("pw"):
                    self.password = SecretStr(unquote(m.group("pw")))
                self.url = m.group("head") + "@" + self.url[m.end() :]
            base, sep, query = self.url.partition("?")
            if sep:
                params = parse_qsl(query, keep_blank_values=True)
                for k, v in params:
                    if k == "password" and self.password is None:
                        self.password = SecretStr(v)
                kept = urlencode([(k, v) for k, v in params if k != "password"])
                self.url = f"{base}?{kept}" if kept else base
        return self

    @property
    def location(self) -> str:
        """Where the store is, for messages: the file, or the server URL without any password."""
        return redact(self.url) if self.kind == "postgres" and self.url else str(self.path)

    @property
    def cold_path(self) -> Path:
        """The Parquet tier's root (`<cold_path>/ticks/symbol=…/date=…/`)."""
        return self.cold_dir or self.path.parent / "cold"


class HistoryConfig(_Model):
    # Where `ticklens history download` keeps Binance's archive files (and the API's audit finds the klines).
    dir: Path = Path("data/archive")


class BarsConfig(_Model):
    # A trade up to this much older than the newest seen still lands in an open bar;
    # bars close (final for analytics) once the watermark passes end + lateness.
    lateness_ms: int = Field(2_000, ge=0, le=600_000)
    # Closed bars stay in memory this long for cheap revisions; older late trades
    # are merged into the stored bar instead.
    keep_closed_ms: int = Field(600_000, ge=0)


class PairConfig(_Model):
    legs: tuple[str, str]
    window: int = Field(300, ge=3, le=100_000)
    timeframes: list[Timeframe] = Field(default_factory=lambda: ["1s", "1m"])
    log_prices: bool = False
    adf_every: int = Field(10, ge=1)  # Engle-Granger/ADF and half-life every N bars (cost)
    adf_lags: int = Field(1, ge=0, le=50)  # fixed lagged differences in the ADF regression
    # Kalman hedge ratio: state noise covariance delta/(1-delta)*I, observation noise variance.
    kalman_delta: float = Field(1e-4, gt=0, lt=1)
    kalman_obs_var: float = Field(1e-3, gt=0)
    # Prior variance of beta and alpha (0: certain of the start, beta = alpha = 0, as in Chan 2013).
    kalman_init_var: float = Field(0.0, ge=0)
    # Aligned bars the Kalman filter sees before its values are published (None: `window`).
    kalman_warmup: int | None = Field(None, ge=1, le=100_000)
    # The series aligned: bar closes (last trade) or, with `mid`, the micro bars' closing mid
    # (no bid-ask bounce at 1s; needs the book streams).
    price: Literal["close", "mid"] = "close"

    @field_validator("legs", mode="before")
    @classmethod
    def _legs(cls, v: Any) -> Any:
        legs = tuple(normalise_symbol(s) for s in v)
        if len(legs) != 2:
            raise ValueError("a pair has exactly two legs")
        if legs[0] == legs[1]:
            raise ValueError(f"pair {legs[0]!r} is paired with itself")
        return legs

    @property
    def name(self) -> str:
        return f"{self.legs[0]}-{self.legs[1]}"

    def params(self, window: int | None = None) -> PairParams:
        """The statistics' parameters (flow and API alike); `window` overrides the configured one."""
        return PairParams(
            window=window or self.window,
            log_prices=self.log_prices,
            adf_every=self.adf_every,
            adf_lags=self.adf_lags,
            kalman_delta=self.kalman_delta,
            kalman_obs_var=self.kalman_obs_var,
            kalman_init_var=self.kalman_init_var,
            kalman_warmup=self.kalman_warmup,
        )


class CorrelationConfig(_Model):
    symbols: list[str] = Field(default_factory=list)
    window: int = Field(300, ge=3, le=100_000)
    timeframe: Timeframe = "1m"

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, v: Any) -> Any:
        return [normalise_symbol(s) for s in v]


class StatsConfig(_Model):
    # Per-symbol rolling statistics (mean, std, VWAP, volume, realised volatility) over this many bars.
    enabled: bool = True
    window: int = Field(60, ge=2, le=100_000)
    # Stored per bar for these timeframes. 1s statistics are left to `GET /api/v1/stats`, which
    # computes any window on demand: storing them costs ~10 % of the flow's replay throughput.
    timeframes: list[Timeframe] = Field(default_factory=lambda: ["1m", "5m"])


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class MicroConfig(_Model):
    """Microstructure bars (docs/analytics.md): computed whenever book streams reach the flow."""

    enabled: bool = True
    horizon_s: float = Field(5.0, gt=0, le=3_600)  # realized spread / price impact horizon
    window: int = Field(300, ge=3, le=100_000)  # bars in the Kyle's lambda regression
    # Base units per VPIN volume bucket, one number or per symbol; None (or a symbol left out):
    # 1/50 of the symbol's volume on the previous UTC day in the store (no VPIN while there is none).
    vpin_bucket: float | dict[str, float] | None = None
    vpin_buckets: int = Field(50, ge=1, le=10_000)
    keep_s: float = Field(10.0, ge=0, le=3_600)  # how late an event may still revise a micro bar

    def bucket_for(self, symbol: str) -> float | None:
        v = self.vpin_bucket
        return v.get(symbol) if isinstance(v, dict) else v

    @field_validator("vpin_bucket")
    @classmethod
    def _bucket(cls, v: Any) -> Any:
        values = list(v.values()) if isinstance(v, dict) else [] if v is None else [v]
        for x in values:
            if not (x > 0 and math.isfinite(x)):
                raise ValueError(f"vpin_bucket must be a positive number of base units, not {x!r}")
        return v


def _env_or_secret(env_name: str, secret: SecretStr | None) -> str | None:
    """The environment variable when set (it takes precedence), else the configured secret, or None."""
    env = os.environ.get(env_name, "")
    if env:
        return env
    return secret.get_secret_value() if secret else None


Port = Annotated[int, Field(ge=1, le=65535)]


class _Listener(_Model):
    """A server ticklens starts: loopback unless configured otherwise (see Config._exposure)."""

    host: str = "127.0.0.1"


class ApiConfig(_Listener):
    port: Port = 8000
    # Only the dashboard's origin may call the API from a browser.
    cors_origins: list[str] = Field(default_factory=list)
    # When set (here or, taking precedence, in TICKLENS_API_TOKEN), every request but the OpenAPI
    # page needs `Authorization: Bearer <token>`. Required to bind a non-loopback address.
    token: Annotated[SecretStr, Field(min_length=MIN_SECRET)] | None = None

    def bearer_token(self) -> str | None:
        """The token the API requires (TICKLENS_API_TOKEN, else api.token), or None."""
        return _env_or_secret(TOKEN_ENV, self.token)


class DashboardAuth(_Model):
    """Panel's login page in front of the dashboard (`panel serve --basic-auth`)."""

    user: str = Field("ticklens", min_length=1, max_length=100, pattern=r"^[^\s:]+$")
    # Or in TICKLENS_DASHBOARD_PASSWORD (which takes precedence).
    password: Annotated[SecretStr, Field(min_length=8)] | None = None

    def secret(self) -> str | None:
        return _env_or_secret(DASHBOARD_PASSWORD_ENV, self.password)


class DashboardConfig(_Listener):
    port: Port = 5006
    auth: DashboardAuth | None = None


class FeedConfig(_Listener):
    port: Port = 9443
    paths: list[Path] = Field(default_factory=list)
    speed: float = Field(1.0, gt=0)
    simulate: bool = False


class BookConfig(_Model):
    # A full book snapshot is stored at the first applied depth event of every interval of exchange
    # time (and at every resync): `GET /api/v1/book?at=` rebuilds from the nearest one.
    snapshot_interval_s: float = Field(10.0, gt=0, le=86_400)
    # REST depth snapshot: levels per side asked for (USD-M limits) and the REST base URL
    # (None: backfill.rest_url for Binance; the local feed's own address for `kind: feed`).
    snapshot_limit: Literal[5, 10, 20, 50, 100, 500, 1000] = 1000
    rest_url: str | None = None
    # Depth events buffered while the book waits for a snapshot (oldest dropped beyond).
    max_buffer: int = Field(100_000, ge=100, le=10_000_000)


class RecoveryConfig(_Model):
    enabled: bool = True
    directory: Path | None = None  # default: next to the store (a cluster: the same path, or shared, for every process)
    snapshot_interval_s: float = Field(5.0, gt=0)
    # Recovery partitions, created once with the directory: at least the most processes the
    # flow will run as (every process must see every partition). None: 1, or the process count.
    partitions: int | None = Field(None, ge=1, le=1024)


class AlertsConfig(_Model):
    # Webhook receivers on loopback, private, link-local, multicast or reserved addresses are
    # refused unless their host name, address or network is listed here (e.g. "127.0.0.1",
    # "10.0.0.0/8", "hooks.internal").
    webhook_allow: list[str] = Field(default_factory=list)

    @field_validator("webhook_allow")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        out = []
        for item in v:
            entry = item.strip().lower().strip("[]")
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not _HOSTNAME(entry):
                    raise ValueError(f"webhook_allow entry {item!r} is not a host name, address or network") from None
            out.append(entry)
        return out


class BackfillConfig(_Model):
    enabled: bool | None = None  # None: on for live Binance, off otherwise
    rest_url: str = BINANCE_REST_URL
    # aggTrades weighs 20 of Binance's 2,400 per minute: 100 requests leave room for others.
    max_requests_per_minute: int = Field(100, ge=1, le=120)


class Config(_Model):
    symbols: list[str] = Field(min_length=1)
    source: SourceConfig
    store: StoreConfig = Field(default_factory=StoreConfig)
    timeframes: list[Timeframe] = Field(default_factory=lambda: list(TIMEFRAMES))
    bars: BarsConfig = Field(default_factory=BarsConfig)
    pairs: list[PairConfig] = Field(default_factory=list)
    correlation: CorrelationConfig | None = None
    stats: StatsConfig = Field(default_factory=StatsConfig)
    micro: MicroConfig = Field(default_factory=MicroConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    feed: FeedConfig = Field(default_factory=FeedConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    backfill: BackfillConfig = Field(default_factory=BackfillConfig)
    book: BookConfig = Field(default_factory=BookConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    progress_interval_s: float = Field(2.0, gt=0)

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        syms = [normalise_symbol(s) for s in v]
        if len(set(syms)) != len(syms):
            raise ValueError(f"symbols {v!r} has duplicates")
        return syms

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("timeframes must name at least one of 1s, 1m, 5m")
        return sorted(set(v), key=TIMEFRAME_MS.__getitem__)

    @field_validator("pairs", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        out = []
        for item in v or []:
            if isinstance(item, (list, tuple)):
                item = {"legs": list(item)}
            out.append(item)
        return out

    @model_validator(mode="after")
    def _pairs_known(self) -> Config:
        known = set(self.symbols)
        for pair in self.pairs:
            for leg in pair.legs:
                if leg not in known:
                    raise ValueError(f"pair {pair.name!r}: leg {leg!r} is not in symbols {self.symbols}")
        names = [p.name for p in self.pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"pairs {names} lists a pair twice")
        for pair in self.pairs:
            if pair.price == "mid" and not (self.micro.enabled and self.source.book_streams):
                raise ValueError(
                    f"pair {pair.name!r} has price: mid, which needs the microstructure bars: add bookTicker"
                    " (or depth) to source.streams and keep micro.enabled"
                )
        if self.correlation:
            for s in self.correlation.symbols:
                if s not in known:
                    raise ValueError(f"correlation.symbols: {s!r} is not in symbols {self.symbols}")
        return self

    @model_validator(mode="after")
    def _exposure(self) -> Config:
        """Nothing listens beyond this machine without a token (and, for the dashboard, a login)."""
        env = os.environ.get(TOKEN_ENV, "")
        if env and len(env) < MIN_SECRET:
            raise ValueError(f"{TOKEN_ENV} must be at least {MIN_SECRET} characters")
        token = self.api.bearer_token()
        need = f"set api.token or {TOKEN_ENV} (at least {MIN_SECRET} characters) or bind 127.0.0.1"
        for name, host in (("api", self.api.host), ("dashboard", self.dashboard.host)):
            if not is_loopback(host) and not token:
                raise ValueError(
                    f"{name}.host {host!r} is not a loopback address and the API has no token: {need};"
                    f" refusing to expose ticklens without one"
                )
        if not is_loopback(self.dashboard.host) and not (self.dashboard.auth and self.dashboard.auth.secret()):
            raise ValueError(
                f"dashboard.host {self.dashboard.host!r} is not a loopback address: set dashboard.auth"
                f" (user, and password or {DASHBOARD_PASSWORD_ENV}) so the dashboard asks for a login"
            )
        if self.dashboard.auth and not self.dashboard.auth.secret():
            raise ValueError(f"dashboard.auth needs a password (dashboard.auth.password or {DASHBOARD_PASSWORD_ENV})")
        if not is_loopback(self.feed.host):
            raise ValueError(
                f"feed.host {self.feed.host!r} is not a loopback address: the local feed has no token check"
                f" and binds 127.0.0.1 only (a token in {TOKEN_ENV} guards the API, not the feed)"
            )
        return self

    def pair_timeframes(self, pair: PairConfig) -> list[str]:
        """A pair's timeframes that the flow bars (others have no bars to align)."""
        return [tf for tf in pair.timeframes if tf in self.timeframes]

    @property
    def book_rest_url(self) -> str:
        """Where depth snapshots are fetched: book.rest_url, else the local feed's own address
        (`kind: feed`), else backfill.rest_url."""
        if self.book.rest_url:
            return self.book.rest_url.rstrip("/")
        if self.source.kind == "feed" and self.source.url:
            scheme, _, rest = self.source.url.partition("://")
            host = rest.split("/", 1)[0].split("?", 1)[0]
            return f"{'https' if scheme == 'wss' else 'http'}://{host}"
        return self.backfill.rest_url.rstrip("/")

    @property
    def recovery_dir(self) -> Path:
        return self.recovery.directory or self.store.path.parent / "recovery"

    def with_base(self, base: Path) -> Config:
        """Resolve relative paths against the config file's folder."""

        def fix(p: Path) -> Path:
            return p if p.is_absolute() else (base / p)

        data = self.model_copy(deep=True)
        data.source.paths = [fix(p) for p in data.source.paths]
        if data.source.record:
            data.source.record = fix(data.source.record)
        data.store.path = fix(data.store.path)
        data.feed.paths = [fix(p) for p in data.feed.paths]
        if data.recovery.directory:
            data.recovery.directory = fix(data.recovery.directory)
        if data.store.cold_dir:
            data.store.cold_dir = fix(data.store.cold_dir)
        data.history.dir = fix(data.history.dir)
        return data


def _redact(value: Any) -> Any:
    """A value to show in an error, with tokens and passwords inside it hidden."""
    if isinstance(value, dict):
        return {k: "(hidden)" if k in _SECRET_FIELDS else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _describe(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # a check across fields: its message names them (the input is the whole file)
            lines.append(redact(f"  {msg}"))
            continue
        loc = ".".join(str(p) for p in e["loc"])
        secret = any(str(p) in _SECRET_FIELDS for p in e["loc"])
        got = "(hidden)" if secret else repr(_redact(e.get("input")))
        lines.append(redact(f"  {loc}: {msg} (got {got})"))
    return "invalid configuration:\n" + "\n".join(lines)


def config_path() -> Path:
    return Path(os.environ.get("TICKLENS_CONFIG", DEFAULT_CONFIG))


def parse_config(raw: dict[str, Any], base: Path | None = None) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, raw)) from None
    return cfg.with_base(base) if base else cfg


def load_config(path: Path | str | None = None) -> Config:
    """Load and validate the pipeline file (TICKLENS_CONFIG or ./pipeline.yaml)."""
    p = Path(path) if path else config_path()
    if not p.exists():
        raise ConfigError(f"configuration file {str(p)!r} not found (set TICKLENS_CONFIG)")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(raw).__name__}")
    return parse_config(raw, base=p.resolve().parent)
