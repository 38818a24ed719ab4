"""Binance wire format, parsed once, here, into trade rows.

Handles the combined-stream envelope (`{"stream":…,"data":…}`) and raw
events, for both `@aggTrade` and `@trade`. Unknown fields are ignored (2026
aggTrades carry `nq`, `st`, …); anything we cannot use becomes a `Rejected`
with a reason instead of an exception.
"""

from __future__ import annotations

import math
from typing import Literal

import orjson

from ticklens.domain.records import Rejected

TRADE_EVENTS = ("aggTrade", "trade")
# Streams that recordings carry beside trades; replay skips them on purpose.
OTHER_EVENTS = frozenset({"bookTicker", "depthUpdate", "markPriceUpdate", "kline", "24hrTicker", "forceOrder"})

Row = tuple[int, int, float, float, bool, int, int, int, int]
ParseResult = (
    tuple[Literal["trade"], str, Row] | tuple[Literal["skip"], str, None] | tuple[Literal["reject"], str, None]
)


def stream_names(symbols: list[str], stream: str) -> list[str]:
    return [f"{s.lower()}@{stream}" for s in symbols]


def combined_url(base: str, symbols: list[str], stream: str) -> str:
    """The routed combined-stream URL, e.g. …/market/stream?streams=btcusdt@aggTrade/…"""
    return f"{base}?streams={'/'.join(stream_names(symbols, stream))}"


def _positive(value: object, name: str) -> float:
    x = float(value)  # type: ignore[arg-type]
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} {value!r} is not a positive number")
    return x


def parse_event(event: object, recv_ms: int) -> ParseResult:
    """One decoded event → ("trade", symbol, row) | ("skip", why, None) | ("reject", why, None)."""
    if not isinstance(event, dict):
        return ("reject", f"event is {type(event).__name__}, not an object", None)
    if "stream" in event and "data" in event:
        event = event["data"]
        if not isinstance(event, dict):
            return ("reject", "stream data is not an object", None)
    kind = event.get("e")
    if not isinstance(kind, str):
        kind = None if kind is None else repr(kind)[:40]
    if kind not in TRADE_EVENTS:
        if "result" in event and "id" in event:
            return ("reject", "subscription response", None)
        if kind in OTHER_EVENTS or "lastUpdateId" in event:
            return ("skip", f"other stream: {kind or 'snapshot'}", None)
        return ("reject", f"unexpected event type {kind!r}", None)
    try:
        symbol = event["s"]
        if not isinstance(symbol, str) or not symbol:
            raise ValueError(f"symbol {symbol!r}")
        if kind == "aggTrade":
            tid = int(event["a"])
            first, last = int(event["f"]), int(event["l"])
            if last < first:
                raise ValueError(f"last id {last} < first id {first}")
        else:
            tid = int(event["t"])
            first = last = tid
        ts = int(event["T"])
        ev_ms = int(event.get("E", ts))
        price = _positive(event["p"], "price")
        qty = _positive(event["q"], "qty")
        maker = event["m"]
        if not isinstance(maker, bool):
            raise ValueError(f"m {maker!r} is not a boolean")
        if tid < 0 or ts <= 0:
            raise ValueError("negative id or time")
    except KeyError as e:
        return ("reject", f"{kind} missing field {e.args[0]!r}", None)
    except (TypeError, ValueError, OverflowError) as e:
        return ("reject", f"{kind} bad field: {e}", None)
    return ("trade", symbol.lower(), (tid, ts, price, qty, maker, first, last, ev_ms, recv_ms))


def parse_message(raw: bytes | str, recv_ms: int) -> ParseResult:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return ("reject", f"invalid JSON: {e}", None)
    return parse_event(event, recv_ms)


def rejected(raw: bytes | str, reason: str, recv_ms: int, source: str = "") -> Rejected:
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw)
    return Rejected(recv_ms=recv_ms, reason=reason, raw=data[:65_536], source=source)
