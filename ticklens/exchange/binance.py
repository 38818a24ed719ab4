"""Binance wire format, parsed once, here, into records: trade rows, quotes, depth updates, snapshots.

Handles the combined-stream envelope (`{"stream":…,"data":…}`) and raw
events: `@aggTrade` and `@trade` here, `@bookTicker`, `@depth` and REST depth
bodies through the book parsers (`binance_book`), one table entry per event
type. Unknown fields are ignored (2026 aggTrades carry `nq`, `st`, …);
anything we cannot use becomes a `Rejected` with a reason instead of an
exception. Values are checked strictly, here and
nowhere else: ids are JSON integers within int64, times within an absolute
window and (live) within `window_ms` of the receive time, prices and
quantities finite and positive.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson

from ticklens.domain.book import DepthUpdate, Quote
from ticklens.domain.records import Rejected
from ticklens.exchange.binance_book import (
    BookError,
    depth_record,
    depth_wire,
    quote_record,
    quote_wire,
    snapshot_record,
)

try:  # built by `pip install -e .`; without it every trade takes the general path
    from ticklens.exchange._depthwire import scan_trade as _scan_trade
except ImportError:  # pragma: no cover - tests/test_trade_wire.py requires the extension
    _scan_trade = None

TRADE_EVENTS = ("aggTrade", "trade")
# Streams that recordings carry beside trades and books: skipped on purpose.
OTHER_EVENTS = frozenset({"bookTicker", "depthUpdate", "markPriceUpdate", "kline", "24hrTicker", "forceOrder"})

# Bounds of what a trade can be; anything outside is a reject, so every later step can rely on
# int64 ids and times and finite prices (price x qty <= 1e30 keeps every sum finite).
INT64_MAX = 2**63 - 1
MIN_TIME_MS = 1_262_304_000_000  # 2010-01-01: before any crypto exchange's trades
MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01
DEFAULT_WINDOW_MS = 86_400_000  # live: trade and event times within a day of the receive time
MAX_VALUE = 1e15
MAX_SYMBOL_LEN = 40
MAX_MESSAGE_BYTES = 1 << 20
REJECT_RAW_MAX = 4096  # bytes of a rejected message kept in the `rejects` table
_REQUIRED = {"aggTrade": ("s", "a", "f", "l", "T", "p", "q", "m"), "trade": ("s", "t", "T", "p", "q", "m")}
_LABEL = {
    "t": "trade id t",
    "a": "aggregate id a",
    "f": "first id f",
    "l": "last id l",
    "T": "trade time T",
    "E": "event time E",
    "p": "price p",
    "q": "qty q",
    "price": "price",
    "qty": "qty",
}
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?").fullmatch

MICROS_THRESHOLD = 10**14  # archive times: epoch ms stays below this until year 5138, µs above
# Archive CSV layouts (short names: ids, price, qty, time, maker).
ARCHIVE_AGG = ("id", "price", "qty", "first", "last", "time", "is_buyer_maker")
ARCHIVE_TRADES = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker")

Row = tuple[int, int, float, float, bool, int, int, int, int]
ParseResult = tuple[str, str, Any]  # (status, symbol or reason, payload): see parse_event


def stream_names(symbols: list[str], stream: str) -> list[str]:
    return [f"{s.lower()}@{stream}" for s in symbols]


def combined_url(base: str, symbols: list[str], stream: str) -> str:
    """The routed combined-stream URL, e.g. …/market/stream?streams=btcusdt@aggTrade/…"""
    return f"{base}?streams={'/'.join(stream_names(symbols, stream))}"


def _int(event: dict, key: str, lo: int = 0, hi: int = INT64_MAX) -> int:
    """A JSON integer in [lo, hi]: floats, strings and booleans (an int subclass) are not ids or times."""
    v = event[key]
    if type(v) is not int:
        raise ValueError(f"{_LABEL.get(key, key)} {_show(v)} is not an integer")
    if not lo <= v <= hi:
        raise ValueError(f"{_LABEL.get(key, key)} {_show(v)} is out of range [{lo}, {hi}]")
    return v


def _time(event: dict, key: str, recv_ms: int, window_ms: int | None) -> int:
    ts = _int(event, key, MIN_TIME_MS, MAX_TIME_MS)
    if window_ms is not None and abs(ts - recv_ms) > window_ms:
        raise ValueError(f"{_LABEL.get(key, key)} {ts} is more than {window_ms} ms from the receive time {recv_ms}")
    return ts


def _positive(event: dict, key: str) -> float:
    """A decimal string (Binance's form) or a JSON number, finite, in (0, MAX_VALUE]."""
    v = event[key]
    label = _LABEL.get(key, key)
    if isinstance(v, str):
        if len(v) > 40 or not _DECIMAL(v):
            raise ValueError(f"{label} {_show(v)} is not a decimal number")
        x = float(v)
    elif type(v) is int or type(v) is float:
        x = float(v)
    else:
        raise ValueError(f"{label} {_show(v)} is not a number")
    if not (0 < x <= MAX_VALUE):  # also false for nan
        raise ValueError(f"{label} {_show(v)} is not a positive number up to {MAX_VALUE:g}")
    return x


def _show(v: object) -> str:
    """A value for a reject reason, bounded (a hostile value can be megabytes)."""
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _trade(kind: str, event: dict, recv_ms: int, window_ms: int | None) -> ParseResult:
    for key in _REQUIRED[kind]:  # a missing field is named first, whatever else is wrong
        if key not in event:
            return ("reject", f"{kind} missing field {key!r}", None)
    try:
        symbol = event["s"]
        if not isinstance(symbol, str) or not 0 < len(symbol) <= MAX_SYMBOL_LEN:
            raise ValueError(f"symbol {_show(symbol)}")
        if kind == "aggTrade":
            tid = _int(event, "a")
            first, last = _int(event, "f"), _int(event, "l")
            if last < first:
                raise ValueError(f"last id {last} < first id {first}")
        else:
            tid = _int(event, "t")
            first = last = tid
        ts = _time(event, "T", recv_ms, window_ms)
        ev_ms = _time(event, "E", recv_ms, window_ms) if "E" in event else ts
        price = _positive(event, "p")
        qty = _positive(event, "q")
        maker = event["m"]
        if not isinstance(maker, bool):
            raise ValueError(f"maker m {_show(maker)} is not a boolean")
    except KeyError as e:
        return ("reject", f"{kind} missing field {e.args[0]!r}", None)
    except (TypeError, ValueError, OverflowError) as e:
        return ("reject", f"{kind} bad field: {e}", None)
    return ("trade", symbol.lower(), (tid, ts, price, qty, maker, first, last, ev_ms, recv_ms))


def _book_times(kind: str, times: tuple[int | None, ...], recv_ms: int, window_ms: int | None) -> str | None:
    """Why a book record's exchange times are out of bounds (as for trades), or None."""
    for t in times:
        if t is None:
            continue
        if not MIN_TIME_MS <= t <= MAX_TIME_MS:
            return f"{kind} time {t} is out of range [{MIN_TIME_MS}, {MAX_TIME_MS}]"
        if window_ms is not None and abs(t - recv_ms) > window_ms:
            return f"{kind} time {t} is more than {window_ms} ms from the receive time {recv_ms}"
    return None


def _quote(kind: str, event: dict, recv_ms: int, window_ms: int | None, raw: bytes | None, env: bool) -> ParseResult:
    return _quote_times(quote_record(event, recv_ms), recv_ms, window_ms)


def _quote_times(q: Quote, recv_ms: int, window_ms: int | None) -> ParseResult:
    bad = _book_times("bookTicker", (q.event_ms, q.txn_ms), recv_ms, window_ms)
    return ("reject", bad, None) if bad else ("quote", q.symbol, q)


def _depth(kind: str, event: dict, recv_ms: int, window_ms: int | None, raw: bytes | None, env: bool) -> ParseResult:
    return _depth_times(depth_record(event, recv_ms, raw, env), recv_ms, window_ms)


def _depth_times(d: DepthUpdate, recv_ms: int, window_ms: int | None) -> ParseResult:
    bad = _book_times("depthUpdate", (d.event_ms, d.txn_ms), recv_ms, window_ms)
    return ("reject", bad, None) if bad else ("depth", d.symbol, d)


# event type `e` -> (record kind, parser); the kinds a caller asks for select among them.
_BOOK_PARSERS = {"bookTicker": ("quote", _quote), "depthUpdate": ("depth", _depth)}
TRADE_KINDS = frozenset({"trade"})
# Config stream kind -> record kinds it delivers (a depth stream needs REST snapshots too).
STREAM_KINDS = {"aggTrade": {"trade"}, "trade": {"trade"}, "bookTicker": {"quote"}, "depth": {"depth", "snapshot"}}
SNAPSHOT_STREAM = "@depthSnapshot"  # how ticklens names a REST depth body in its own recordings


def record_kinds(streams: list[str] | None) -> frozenset[str]:
    """The record kinds `parse_message` should return for these configured stream kinds."""
    return frozenset(k for s in streams or ["aggTrade"] for k in STREAM_KINDS[s])


def _snapshot_line(event: dict, stream: str | None, recv_ms: int) -> ParseResult:
    """A REST depth body: bare (a recording's own line, no symbol: "") or in our envelope
    `{"stream":"btcusdt@depthSnapshot","data":…}`, where an error body is a failed request."""
    symbol = stream[: -len(SNAPSHOT_STREAM)] if stream and stream.endswith(SNAPSHOT_STREAM) else None
    if symbol is not None and "lastUpdateId" not in event:
        detail = f"depth snapshot failed: {_show(event.get('code'))} {str(event.get('msg'))[:200]}"
        return ("snapshot_failure", symbol.lower(), detail)
    snap = snapshot_record(event, symbol, recv_ms)
    return ("snapshot", snap.symbol, snap)


def parse_event(
    event: object,
    recv_ms: int,
    window_ms: int | None = DEFAULT_WINDOW_MS,
    kinds: frozenset[str] = TRADE_KINDS,
    raw: bytes | None = None,
) -> ParseResult:
    """One decoded event → its record, or why not. Results: ("trade", symbol, row),
    ("quote", symbol, Quote), ("depth", symbol, DepthUpdate), ("snapshot", symbol, BookSnapshot),
    ("snapshot_failure", symbol, detail), ("skip", why, None), ("reject", why, None).

    `kinds`: the record kinds wanted (`record_kinds(source.streams)`); the others are skipped.
    `window_ms`: exchange times must lie within this of `recv_ms` (None: only the absolute
    window [MIN_TIME_MS, MAX_TIME_MS], for archives and the REST backfill). `raw`: the message
    the event was decoded from (the bulk check of a depth event's levels uses it).
    """
    if not isinstance(event, dict):
        return ("reject", f"event is {type(event).__name__}, not an object", None)
    stream = None
    enveloped = "stream" in event and "data" in event
    if enveloped:
        stream = event["stream"]
        event = event["data"]
        if not isinstance(event, dict):
            return ("reject", "stream data is not an object", None)
    kind = event.get("e")
    if not isinstance(kind, str):
        kind = None if kind is None else _show(kind)
    if kind in TRADE_EVENTS:
        return _trade(kind, event, recv_ms, window_ms) if "trade" in kinds else ("skip", f"other stream: {kind}", None)
    book = _BOOK_PARSERS.get(kind) if kind is not None else None
    if book is None and kind is None:  # shapes without an event type: spot bookTicker, REST depth
        if "lastUpdateId" in event or (isinstance(stream, str) and stream.endswith(SNAPSHOT_STREAM)):
            if "snapshot" not in kinds:
                return ("skip", "other stream: snapshot", None)
            try:
                return _snapshot_line(event, stream if isinstance(stream, str) else None, recv_ms)
            except BookError as e:
                return ("reject", str(e), None)
        if "u" in event and "A" in event and "B" in event:
            book = _BOOK_PARSERS["bookTicker"]
    if book is not None:
        record_kind, parser = book
        if record_kind not in kinds:
            return ("skip", f"other stream: {kind or 'bookTicker'}", None)
        try:
            return parser(record_kind, event, recv_ms, window_ms, raw, enveloped)
        except BookError as e:
            return ("reject", str(e), None)
    if "result" in event and "id" in event:
        return ("reject", "subscription response", None)
    if kind in OTHER_EVENTS:
        return ("skip", f"other stream: {kind}", None)
    return ("reject", f"unexpected event type {kind if kind is None else _show(kind)}", None)


def trade_wire(raw: bytes, recv_ms: int, window_ms: int | None) -> ParseResult | None:
    """The fast path of a raw trade or aggTrade message: `_trade`'s result in one C pass
    (`_depthwire.scan_trade`), or None (then the general path parses it, and says why a message
    is rejected). The scan checks the grammar and the values; the times' bounds are checked here."""
    if _scan_trade is None or (t := _scan_trade(raw)) is None:
        return None
    symbol, tid, first, last, ts, ev_ms, price, qty, maker = t
    if ev_ms < 0:
        ev_ms = ts
    if not (MIN_TIME_MS <= ts <= MAX_TIME_MS and MIN_TIME_MS <= ev_ms <= MAX_TIME_MS):
        return None
    if window_ms is not None and (abs(ts - recv_ms) > window_ms or abs(ev_ms - recv_ms) > window_ms):
        return None
    return ("trade", symbol, (tid, ts, price, qty, maker, first, last, ev_ms, recv_ms))


def parse_message(
    raw: bytes | str,
    recv_ms: int,
    window_ms: int | None = DEFAULT_WINDOW_MS,
    kinds: frozenset[str] = TRADE_KINDS,
) -> ParseResult:
    if len(raw) > MAX_MESSAGE_BYTES:  # no message of ours is this big: not worth parsing
        return ("reject", f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}", None)
    if type(raw) is bytes and "trade" in kinds and (t := trade_wire(raw, recv_ms, window_ms)) is not None:
        return t  # the trade fast path (C)
    if type(raw) is bytes and "quote" in kinds and (q := quote_wire(raw, recv_ms)) is not None:
        return _quote_times(q, recv_ms, window_ms)  # the bookTicker fast path (most book messages)
    if type(raw) is bytes and "depth" in kinds and (d := depth_wire(raw, recv_ms)) is not None:
        return _depth_times(d, recv_ms, window_ms)  # the depthUpdate fast path (C)
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return ("reject", f"invalid JSON: {str(e)[:200]}", None)
    return parse_event(event, recv_ms, window_ms, kinds, raw if type(raw) is bytes else None)


def archive_row(kind: str, fields: list[bytes]) -> Row | str:
    """One row of a Binance data-archive CSV (`agg` or `trades` layout, see ingest.replay): the
    row, or why not. The row-by-row path, used only for blocks the vectorised path refused."""
    names = ARCHIVE_AGG if kind == "agg" else ARCHIVE_TRADES
    if len(fields) != len(names):
        return f"{len(fields)} fields, expected {len(names)}"
    ev: dict[str, object] = {}
    for name, raw in zip(names, fields, strict=True):
        text = raw.strip().decode("ascii", "replace")
        if name in ("price", "qty"):
            ev[name] = text
        elif name == "is_buyer_maker":
            ev[name] = {"true": True, "false": False}.get(text.lower(), text)
        elif name != "quote_qty":
            ev[name] = int(text) if text.isdigit() and len(text) <= 20 else text
    try:
        tid = _int(ev, "id")
        first, last = (_int(ev, "first"), _int(ev, "last")) if kind == "agg" else (tid, tid)
        if last < first:
            raise ValueError(f"last id {last} < first id {first}")
        t = ev["time"]
        if type(t) is int and t >= MICROS_THRESHOLD:
            ev["time"] = t // 1000
        ts = _time(ev, "time", 0, None)
        price, qty = _positive(ev, "price"), _positive(ev, "qty")
        maker = ev["is_buyer_maker"]
        if not isinstance(maker, bool):
            raise ValueError(f"is_buyer_maker {_show(maker)} is not true/false")
    except (TypeError, ValueError) as e:
        return f"archive row bad field: {e}"
    return (tid, ts, price, qty, maker, first, last, ts, ts)


def valid_columns(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The vectorised form of the same bounds, over columns already typed (int64/float64)."""
    ts, price, qty = cols["ts_ms"], cols["price"], cols["qty"]
    ok = (cols["trade_id"] >= 0) & (cols["first_id"] >= 0) & (cols["last_id"] >= cols["first_id"])
    ok &= (ts >= MIN_TIME_MS) & (ts <= MAX_TIME_MS)
    ok &= (price > 0) & (price <= MAX_VALUE) & (qty > 0) & (qty <= MAX_VALUE)  # false for nan
    return ok


def rejected(raw: bytes | str, reason: str, recv_ms: int, source: str = "") -> Rejected:
    """A dead letter; only the first REJECT_RAW_MAX bytes of the message are kept."""
    data = raw[:REJECT_RAW_MAX]
    data = data.encode("utf-8", "replace")[:REJECT_RAW_MAX] if isinstance(data, str) else bytes(data)
    return Rejected(recv_ms=recv_ms, reason=reason[:500], raw=data, source=source)
