"""The dashboard's only door to the data: a thin, typed client of the REST API.

Pages never open the store. Every response shape the dashboard relies on is
read here, so an API change touches this module and nothing else. A refused
connection or a timeout becomes `ApiDown` (pages show a banner instead of a
blank chart); an HTTP error becomes `ApiError` carrying the API's own message.

GET answers are shared by the browser sessions of one dashboard process for
under a second (`SHARED_TTL_S`; the symbol list for a few seconds): tabs
opening together, or pages asking the same thing in the same second, cost the
API one request. A session's own once-a-second refresh is never served its
previous answer.
"""

from __future__ import annotations

import functools
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd

from ticklens.config import TOKEN_ENV, config_path, load_config
from ticklens.domain.timeframes import TIMEFRAME_MS

DEFAULT_TIMEOUT_S = 5.0
TRANSFER_TIMEOUT_S = 120.0  # exports and uploads move whole files
OHLC_COLUMNS = ["start_ms", "open", "high", "low", "close", "volume", "trades", "in_progress"]
SHARED_TTL_S = 0.75  # below the pages' 1 s refresh
SYMBOLS_TTL_S = 5.0
SHARED_MAX = 512
# (base URL, path, params) -> (monotonic time, response body): one per dashboard process.
_shared: dict[tuple[str, str, tuple], tuple[float, bytes]] = {}


class ApiDown(RuntimeError):
    """The API did not answer (refused, timed out, or the network failed)."""


class ApiError(RuntimeError):
    """The API answered with an error; `detail` is its message or validation list."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"HTTP {status}: {describe_detail(detail)}")


def describe_detail(detail: Any) -> str:
    """FastAPI's `detail` (a string, or a list of {loc, msg}) as one readable line."""
    if isinstance(detail, list):
        parts = []
        for d in detail:
            if isinstance(d, dict):
                loc = ".".join(str(x) for x in d.get("loc", []) if x not in ("body", "query", "path"))
                parts.append(f"{loc}: {d.get('msg', d)}" if loc else str(d.get("msg", d)))
            else:
                parts.append(str(d))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("msg") or detail)
    return str(detail)


def api_url() -> str:
    """TICKLENS_API if set, else the API host/port of the active config."""
    env = os.environ.get("TICKLENS_API")
    if env:
        return env.rstrip("/")
    try:
        cfg = load_config()
        return f"http://{cfg.api.host}:{cfg.api.port}"
    except Exception:  # no config file: the documented default
        return "http://127.0.0.1:8000"


def api_token() -> str | None:
    """The API's token: TICKLENS_API_TOKEN if set, else api.token of the active config (None: none)."""
    env = os.environ.get(TOKEN_ENV)
    if env:
        return env
    path = config_path()
    try:
        return _config_token(str(path.resolve()), path.stat().st_mtime_ns)
    except Exception:  # no config file: no token
        return None


@functools.lru_cache(maxsize=4)
def _config_token(path: str, _mtime_ns: int) -> str | None:
    """The config's token, read once per version of the file (every browser session asks for it)."""
    return load_config(path).api.bearer_token()


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every session's client: httpx builds one per client by loading the CA
    bundle, a tenth of a fresh browser session's build on the dashboard server (docs/performance.md)."""
    return httpx.create_ssl_context()


def to_time(ms: Any) -> Any:
    """Epoch ms → naive UTC datetime64 (what Bokeh's datetime axis expects)."""
    return pd.to_datetime(np.asarray(ms, dtype="int64"), unit="ms")


@dataclass
class Api:
    """One API base URL; a pooled httpx client with short timeouts."""

    base_url: str = field(default_factory=api_url)
    timeout_s: float = DEFAULT_TIMEOUT_S
    token: str | None = field(default_factory=api_token, repr=False)  # sent as a bearer token
    _http: httpx.Client = field(init=False, repr=False)
    last_error: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout_s, headers=headers, verify=_tls())

    # --- plumbing ---------------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if method != "GET":
            _shared.clear()  # a change: no session reads an answer from before it
        for attempt in (1, 2):
            try:
                r = self._http.request(method, path, **kw)
                break
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A pooled keep-alive connection the server has just closed: one fresh try.
                if attempt == 2 or method != "GET":
                    return self._down("connection dropped")
            except (httpx.TransportError, httpx.TimeoutException) as e:
                return self._down(type(e).__name__)
        self.last_error = None
        if r.status_code >= 400:
            try:
                detail = orjson.loads(r.content).get("detail", r.text)
            except (orjson.JSONDecodeError, AttributeError):
                detail = r.text
            raise ApiError(r.status_code, detail)
        return r

    def _down(self, why: str) -> Any:
        self.last_error = f"API at {self.base_url} is down ({why})"
        raise ApiDown(self.last_error)

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        key = (self.base_url, path, tuple(sorted(clean.items())))
        now = time.monotonic()
        hit = _shared.get(key)
        ttl = SYMBOLS_TTL_S if path == "/api/v1/symbols" else SHARED_TTL_S
        if hit is not None and now - hit[0] < ttl:
            return orjson.loads(hit[1])  # parsed afresh: no session sees another's objects
        body = self.request("GET", path, params=clean).content
        if len(_shared) >= SHARED_MAX:
            for k in [k for k, (t, _) in _shared.items() if now - t >= SYMBOLS_TTL_S] or list(_shared)[:64]:
                _shared.pop(k, None)
        _shared[key] = (now, body)
        return orjson.loads(body)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        r = self.request("POST", path, json=json, **kw)
        return orjson.loads(r.content) if r.content else None

    def close(self) -> None:
        self._http.close()

    # --- status and symbols -----------------------------------------------------

    def health(self) -> bool:
        try:
            self.request("GET", "/health")
            return True
        except (ApiDown, ApiError):
            return False

    def status(self) -> dict:
        return self.get("/api/v1/status")

    def symbols(self) -> list[str]:
        return [s["symbol"] for s in self.get("/api/v1/symbols")["symbols"]]

    def symbol_infos(self) -> list[dict]:
        """Per symbol: configured, has_data, last_trade_ms, last_price, price_decimals, …"""
        return self.get("/api/v1/symbols")["symbols"]

    def price_decimals(self, symbol: str) -> int | None:
        """The decimals the symbol's prices are shown with (None: not known yet, a generic format)."""
        return next((s.get("price_decimals") for s in self.symbol_infos() if s["symbol"] == symbol), None)

    # --- market data ------------------------------------------------------------

    def ohlc(
        self,
        symbol: str,
        timeframe: str,
        limit: int = 1000,
        start_ms: int | None = None,
        end_ms: int | None = None,
        max_points: int | None = None,
    ) -> pd.DataFrame:
        """Bars oldest first, with `start_ms`, `time` (datetime64), `in_progress` and `span_ms`.

        With `max_points` the API merges consecutive bars (extremes kept) so at most that many come back.
        """
        params = {"timeframe": timeframe, "limit": limit, "start": start_ms, "end": end_ms, "max_points": max_points}
        return bars_frame(self.get(f"/api/v1/ohlc/{symbol}", **params))

    def ohlc_window(
        self, symbol: str, timeframe: str, bars: int, max_points: int, keep_raw: int
    ) -> tuple[pd.DataFrame, str]:
        """The newest `bars` bars of `timeframe`, in at most about `max_points` rows, and how they were thinned.

        A long window is served mostly by a coarser stored timeframe (the flow's 1m/5m
        bars are exact aggregates of the same trades), so only ~max_points rows cross
        the API; the newest `keep_raw` bars stay at the asked timeframe, joined at a
        coarse-bucket boundary (no gap, no overlap). Without coarser bars (e.g. only
        uploaded 1s bars) it falls back to min/max thinning of the full rows here.
        Rows carry `span_ms`, their width in time.
        """
        tf_ms = TIMEFRAME_MS[timeframe]
        if bars <= max_points:
            df = self.ohlc(symbol, timeframe, limit=bars)
            return df.assign(span_ms=tf_ms), ""
        coarse = next(
            (tf for tf, ms in TIMEFRAME_MS.items() if ms > tf_ms and bars * tf_ms // ms <= max_points),
            None,
        )
        if coarse is not None:
            c_ms = TIMEFRAME_MS[coarse]
            recent = self.ohlc(symbol, timeframe, limit=keep_raw)
            if len(recent):
                # Join where the coarse bucket holding the first raw bar starts: coarse bars
                # before it, every raw bar from it (at most keep_raw + one bucket of rows).
                boundary = int(recent["start_ms"].iloc[0]) // c_ms * c_ms
                older = self.ohlc(symbol, coarse, limit=bars * tf_ms // c_ms, end_ms=boundary)
                if len(older):
                    raw = self.ohlc(symbol, timeframe, limit=keep_raw + c_ms // tf_ms, start_ms=boundary)
                    df = pd.concat([older.assign(span_ms=c_ms), raw.assign(span_ms=tf_ms)], ignore_index=True)
                    return df, f"{coarse} bars up to {len(raw)} {timeframe} bars (the stored {coarse} aggregates)"
        # The newest `keep_raw` bars stay raw (live updates land on real bars); the API thins the rest.
        recent = self.ohlc(symbol, timeframe, limit=keep_raw)
        end = int(recent["start_ms"].iloc[0]) if len(recent) else None
        older_n = max(0, min(bars, 100_000) - len(recent))
        budget = max(10, max_points - len(recent))
        older = self.ohlc(symbol, timeframe, limit=older_n, end_ms=end, max_points=budget) if older_n else recent[:0]
        shown = pd.concat([older, recent], ignore_index=True) if len(older) else recent
        thinned = len(older) and int(older["span_ms"].max()) > tf_ms
        return shown, (f"older {timeframe} bars drawn as {len(older):,} (min/max per bucket)" if thinned else "")

    def microstructure(self, symbol: str, timeframe: str, limit: int = 600, start_ms: int | None = None) -> dict:
        """The flow's micro bars, oldest first (`bars`, keyed by `ts_ms`)."""
        return self.get(f"/api/v1/microstructure/{symbol}", timeframe=timeframe, limit=limit, start=start_ms)

    def heatmap(self, symbol: str, columns: int = 120, rows: int = 60, band_bps: float = 20.0) -> dict:
        """Resting size by price bin and moment over the last 5 minutes of stored books (server-binned)."""
        return self.get(f"/api/v1/microstructure/{symbol}/heatmap", columns=columns, rows=rows, band_bps=band_bps)

    def book(self, symbol: str, depth: int = 200) -> dict:
        """The current order book: bids/asks as [price, qty] strings, best first."""
        return self.get(f"/api/v1/book/{symbol}", depth=depth)

    def quote_samples(self, symbol: str, start_ms: int, end_ms: int, every_ms: int) -> list[dict]:
        """Best bid/ask in force at the end of each `every_ms` interval of [start, end) (at most 2,000)."""
        body = self.get(f"/api/v1/quotes/{symbol}/sampled", start=start_ms, end=end_ms, every_ms=every_ms)
        return body["samples"]

    def book_gaps(self, symbol: str, start_ms: int, end_ms: int) -> list[dict]:
        """Intervals of [start, end) in which the order book was unknown."""
        return self.get(f"/api/v1/book/{symbol}/gaps", start=start_ms, end=end_ms)["gaps"]

    def continuity(self, symbol: str, timeframe: str, start_ms: int | None = None, end_ms: int | None = None) -> dict:
        params = {"timeframe": timeframe, "start": start_ms, "end": end_ms}
        return self.get(f"/api/v1/continuity/{symbol}", **{k: v for k, v in params.items() if v is not None})

    def audit(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, limit: int = 1000) -> dict:
        """`/api/v1/audit`: the stored 1m bars against Binance's downloaded klines (reads whole files: long timeout)."""
        params = {"start": start_ms, "end": end_ms, "limit": limit}
        r = self.request(
            "GET",
            f"/api/v1/audit/{symbol}",
            params={k: v for k, v in params.items() if v is not None},
            timeout=TRANSFER_TIMEOUT_S,
        )
        return orjson.loads(r.content)

    def stats(self, symbol: str, window: int, timeframe: str = "1s") -> dict:
        return self.get(f"/api/v1/stats/{symbol}", window=window, timeframe=timeframe)

    def export(
        self, symbol: str, fmt: str, kind: str, start_ms: int | None = None, end_ms: int | None = None, **extra: Any
    ) -> bytes:
        params = {"format": fmt, "kind": kind, "start": start_ms, "end": end_ms, **extra}
        return self.request(
            "GET",
            f"/api/v1/export/{symbol}",
            params={k: v for k, v in params.items() if v is not None},
            timeout=TRANSFER_TIMEOUT_S,
        ).content

    def upload_ohlc(self, filename: str, content: bytes, **params: Any) -> dict:
        """The API's answer; a 422 with per-row errors is returned, not raised."""
        try:
            return self.post(
                "/api/v1/upload/ohlc",
                files={"file": (filename, content, "text/csv")},
                params={k: v for k, v in params.items() if v is not None},
                timeout=TRANSFER_TIMEOUT_S,
            )
        except ApiError as e:
            if e.status == 422:
                return {"ok": False, "detail": e.detail}
            raise

    def start(self, symbols: list[str]) -> dict:
        return self.post("/api/v1/start", json={"symbols": symbols})

    def stop(self) -> dict:
        return self.post("/api/v1/stop")

    # --- pair analytics ---------------------------------------------------------

    def spread(self, a: str, b: str, method: str, **params: Any) -> dict:
        """Rows (start_ms, hedge_ratio, spread, zscore, correlation, …) and the latest `adf` block.

        Without window/timeframe the API uses the pair's configured ones and says which.
        """
        return self.get("/api/v1/spread", symbols=f"{a},{b}", method=method, **params)

    def correlation(self, symbols: list[str], **params: Any) -> dict:
        """`series` per pair `a-b` (start_ms, corr) and the latest `matrix`."""
        return self.get("/api/v1/correlation", symbols=",".join(symbols), **params)

    def backtest(self, a: str, b: str, **params: Any) -> dict:
        """Summary, `trades` and the equity `curve` of the z-score strategy on stored bars."""
        return self.get("/api/v1/backtest", symbols=f"{a},{b}", **params)

    # --- alerts -------------------------------------------------------------------

    def alerts(self) -> list[dict]:
        out = self.get("/api/v1/alerts")
        return out.get("alerts", out.get("rules", [])) if isinstance(out, dict) else out

    def create_alert(self, rule: dict) -> dict:
        return self.post("/api/v1/alerts", json=rule)

    def delete_alert(self, rule_id: Any) -> None:
        self.request("DELETE", f"/api/v1/alerts/{rule_id}")

    def set_alert_enabled(self, rule_id: Any, enabled: bool) -> dict:
        r = self.request("PATCH", f"/api/v1/alerts/{rule_id}", json={"enabled": enabled})
        return orjson.loads(r.content) if r.content else {}

    def triggered(self, limit: int = 200) -> list[dict]:
        out = self.get("/api/v1/alerts/triggered", limit=limit)
        return out.get("events", out.get("triggered", [])) if isinstance(out, dict) else out


def bars_frame(payload: Any) -> pd.DataFrame:
    """The OHLC response as a frame: start_ms, time, open…close, volume, trades, in_progress."""
    df = pd.DataFrame(payload["bars"])
    if df.empty:
        df = pd.DataFrame({c: pd.Series(dtype="float64") for c in OHLC_COLUMNS})
    if "ts_ms" in df:
        df = df.rename(columns={"ts_ms": "start_ms"})
    if "span_ms" not in df:
        df["span_ms"] = pd.Series(dtype="int64")
    df["start_ms"] = df["start_ms"].astype("int64")
    df["in_progress"] = df["in_progress"].astype(bool)
    df["time"] = to_time(df["start_ms"])
    return df
