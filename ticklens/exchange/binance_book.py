"""Binance book streams, parsed once, here: `bookTicker` -> Quote, `depthUpdate` -> DepthUpdate,
REST depth -> BookSnapshot.

USD-M and spot shapes, with or without the combined-stream envelope
(`{"stream":…,"data":…}`). Validation is strict: ids and times are int64 integers
(not floats, not booleans), prices positive and quantities non-negative decimal
strings, levels `[price, qty]` pairs. Anything else becomes a `Rejected` with a
reason, never an exception; unknown extra fields are ignored.

Depth events carry ~66 levels each, so their levels are validated in bulk: from
raw bytes, one regex over the message's `"b":[…],"a":[…]}` tail (sound when the
message holds no other object); from a decoded event, one regex over the joined
strings. Anything else takes the per-level path, which is the reference (tests
check that all paths agree). A raw depth message in Binance's exact layout is first offered
to `depth_wire`: one pass in C (`_depthwire.c`) that validates and splits it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from operator import itemgetter
from typing import Literal

import orjson

from ticklens.domain.book import ZERO_QTY, BookSnapshot, DepthUpdate, Quote
from ticklens.domain.records import Rejected

try:  # built by `pip install -e .`; a tree without it parses every depth message the Python way
    from ticklens.exchange._depthwire import scan as _scan_depth
    from ticklens.exchange._depthwire import scan_quote as _scan_quote
except ImportError:  # pragma: no cover - tests/test_depth_wire.py requires the extension
    _scan_depth = None
    _scan_quote = None

BookRecord = Quote | DepthUpdate | BookSnapshot
Market = Literal["usdm", "spot"]

INT64_MAX = (1 << 63) - 1
MAX_LEVELS = 20_000  # per side and message: bounded work for any input
MAX_DIGITS = 24  # per integer or fraction part of a price or quantity
MAX_SYMBOL = 40
RAW_KEEP = 65_536  # bytes of a rejected message kept aside

_D = f"{{1,{MAX_DIGITS}}}+"
_D0 = f"{{0,{MAX_DIGITS - 1}}}+"
_PRICE = f"(?:[1-9][0-9]{_D0}\\.[0-9]{_D}|0\\.0{_D0}[1-9][0-9]{_D0})"  # with a dot, not zero
_QTY = f"(?:0|[1-9][0-9]{_D0})\\.[0-9]{_D}"
_LEVEL = f"{_PRICE}\\|{_QTY}"
_SIDE_FAST = re.compile(f"(?:{_LEVEL}(?:;{_LEVEL})*+)?+")
_DECIMAL = re.compile(f"(?:0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}})(?:\\.[0-9]{{1,{MAX_DIGITS}}})?")
_SYMBOL = re.compile(f"[A-Za-z0-9_]{{1,{MAX_SYMBOL}}}")
_ig0, _ig1 = itemgetter(0), itemgetter(1)
_symbols: dict[str, str] = {}  # validated wire symbol -> record symbol (lower case)

# The last two fields of a depth event as Binance writes them, on the raw bytes. The price
# pattern is _PRICE's language (at most 24 digits a part) spelled with one shared fraction:
# fewer branches for the matcher on ~66 levels a message.
_PRICE_RAW = f"(?:[1-9][0-9]{_D0}|0(?=\\.0{_D0}[1-9]))\\.[0-9]{_D}"
_BL = f'\\["{_PRICE_RAW}","{_QTY}"\\]'.encode()
_BSIDE = b"\\[(?:" + _BL + b"(?:," + _BL + b")*+)?+\\]"
_TAIL = re.compile(b'"b":' + _BSIDE + b',"a":' + _BSIDE + b"\\}(\\}?)\\s*+")


# A USD-M bookTicker exactly as Binance writes it (with or without the envelope): one match
# validates and splits it. Anything else (spot's shape, other field order, escapes, spaces,
# numbers JSON writes otherwise) takes the general path, which is the reference.
_WIRE_INT = "(0|[1-9][0-9]{0,18})"
_WIRE_POS = "([1-9][0-9]{0,18})"
_WIRE_DEC = f"((?:0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}})(?:\\.[0-9]{{1,{MAX_DIGITS}}})?)"
_QUOTE_WIRE = re.compile(
    f'(?:\\{{"stream":"[ !#-\\[\\]-~]{{1,{2 * MAX_SYMBOL}}}","data":)?'
    f'\\{{"e":"bookTicker","u":{_WIRE_INT},"s":"([A-Za-z0-9_]{{1,{MAX_SYMBOL}}})",'
    f'"b":"{_WIRE_DEC}","B":"{_WIRE_DEC}","a":"{_WIRE_DEC}","A":"{_WIRE_DEC}",'
    f'"T":{_WIRE_POS},"E":{_WIRE_POS}\\}}(\\}}?)'
)


class BookError(ValueError):
    """A reason to reject the message."""


_Bad = BookError


def _symbol(value: object) -> str:
    sym = _symbols.get(value) if type(value) is str else None  # type: ignore[call-overload]
    if sym is None:
        if type(value) is not str or not _SYMBOL.fullmatch(value):
            raise _Bad(f"symbol {value!r:.60} is not a symbol")
        sym = value.lower()
        if len(_symbols) < 100_000:
            _symbols[value] = sym
    return sym


def _int64(value: object, name: str, positive: bool = False) -> int:
    if type(value) is not int:
        raise _Bad(f"{name} {value!r:.40} is not an integer")
    if value < (1 if positive else 0) or value > INT64_MAX:
        raise _Bad(f"{name} {value} is out of range")
    return value


def _price(value: object, name: str) -> str:
    if type(value) is not str or not _DECIMAL.fullmatch(value) or value in ZERO_QTY:
        raise _Bad(f"{name} {value!r:.40} is not a positive decimal string")
    return value


def _qty(value: object, name: str) -> str:
    if type(value) is not str or not _DECIMAL.fullmatch(value):
        raise _Bad(f"{name} {value!r:.40} is not a non-negative decimal string")
    return value


def _check_levels(levels: object, side: str) -> None:
    """The per-level reference check (and the reason, when there is one)."""
    if type(levels) is not list:
        raise _Bad(f"{side} is {type(levels).__name__}, not a list")
    if len(levels) > MAX_LEVELS:
        raise _Bad(f"{side} has {len(levels)} levels (max {MAX_LEVELS})")
    for i, lv in enumerate(levels):
        if type(lv) is not list or len(lv) != 2:
            raise _Bad(f"{side}[{i}] {lv!r:.60} is not a [price, qty] pair")
        _price(lv[0], f"{side}[{i}] price")
        _qty(lv[1], f"{side}[{i}] qty")


def _tail_ok(raw: bytes, enveloped: bool) -> bool:
    """True if the raw message ends in `"b":[…],"a":[…]}` with only valid [price, qty] string pairs.

    Sound when the message holds no object but the event (and the envelope): then the
    matched arrays are the event's `b` and `a` (the last of any repeated key, as orjson
    reads them), and their strings hold no escapes, so they are the parsed values.
    """
    i = raw.find(b'"b":[')
    if i <= 0:
        return False
    k = raw.find(b"{", 1, i)  # the tail's grammar has no "{": only the head needs looking at
    if (raw.find(b"{", k + 1, i) >= 0) if enveloped else k >= 0:
        return False
    m = _TAIL.fullmatch(raw, i)
    return m is not None and (m.group(1) == b"}") == enveloped


def _fast_side(levels: object) -> bool:
    """Bulk check of one decoded side: True means every level is a [price, qty] pair of valid strings.

    All strings are joined and matched by one regex; the counts prove the joined text
    splits where the levels do (no separator inside a string, two elements each).
    """
    if type(levels) is not list or len(levels) > MAX_LEVELS:
        return False
    if not levels:
        return True
    try:
        joined = ";".join(map("|".join, levels))
    except TypeError:  # a non-string element or a non-iterable level
        return False
    n = len(levels)
    return (
        _SIDE_FAST.fullmatch(joined) is not None
        and joined.count(";") == n - 1
        and set(map(type, levels)) <= {list}
        and sum(map(len, levels)) == 2 * n
    )


def _rejected(raw: bytes | str | None, event: object, reason: str, recv_ms: int, source: str) -> Rejected:
    if raw is None:
        try:
            raw = orjson.dumps(event)
        except TypeError:
            raw = repr(event)
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw)
    return Rejected(recv_ms=recv_ms, reason=reason, raw=data[:RAW_KEEP], source=source)


def _depth(event: dict, recv_ms: int, market: Market | None, verified: bool) -> DepthUpdate:
    bids = event.get("b")
    asks = event.get("a")
    if bids is None or asks is None:
        raise _Bad(f"depthUpdate missing field {'b' if bids is None else 'a'!r}")
    if not (verified or (_fast_side(bids) and _fast_side(asks))):
        _check_levels(bids, "bids")
        _check_levels(asks, "asks")
    try:
        first, final, ev_ms = event["U"], event["u"], event["E"]
    except KeyError as e:
        raise _Bad(f"depthUpdate missing field {e.args[0]!r}") from None
    if not (
        type(first) is int
        and type(final) is int
        and type(ev_ms) is int
        and 0 <= first <= final <= INT64_MAX
        and 0 < ev_ms <= INT64_MAX
    ):  # the reason, field by field
        _int64(first, "U")
        _int64(final, "u")
        _int64(ev_ms, "E", positive=True)
        raise _Bad(f"u {final} < U {first}")
    if market == "spot":
        prev = None
        txn = ev_ms
    elif market == "usdm" or "pu" in event:
        if "pu" not in event:
            raise _Bad("USD-M depthUpdate missing field 'pu'")
        if "T" not in event:
            raise _Bad("USD-M depthUpdate missing field 'T'")
        prev, txn = event["pu"], event["T"]
        if not (type(prev) is int and type(txn) is int and 0 <= prev <= INT64_MAX and 0 < txn <= INT64_MAX):
            _int64(prev, "pu")
            _int64(txn, "T", positive=True)
    else:
        prev = None
        txn = ev_ms
    # The decoded pairs are held as they are (validated above): no per-level copy.
    return DepthUpdate.from_pairs(_symbol(event.get("s")), first, final, prev, ev_ms, txn, recv_ms, bids, asks)


def _quote(event: dict, recv_ms: int) -> Quote:
    try:
        uid, b, bq, a, aq = event["u"], event["b"], event["B"], event["a"], event["A"]
    except KeyError as e:
        raise _Bad(f"bookTicker missing field {e.args[0]!r}") from None
    ev_ms = event.get("E")
    txn = event.get("T")
    return Quote(
        _symbol(event.get("s")),
        _int64(uid, "u"),
        None if ev_ms is None else _int64(ev_ms, "E", positive=True),
        None if txn is None else _int64(txn, "T", positive=True),
        _price(b, "bid"),
        _qty(bq, "bid qty"),
        _price(a, "ask"),
        _qty(aq, "ask qty"),
        recv_ms,
    )


def _snapshot(body: dict, symbol: str | None, recv_ms: int, limit: int | None) -> BookSnapshot:
    if "code" in body and "lastUpdateId" not in body:
        raise _Bad(f"depth snapshot error {body.get('code')!r:.20}: {body.get('msg')!r:.200}")
    try:
        last, bids, asks = body["lastUpdateId"], body["bids"], body["asks"]
    except KeyError as e:
        raise _Bad(f"depth snapshot missing field {e.args[0]!r}") from None
    _int64(last, "lastUpdateId")
    ev_ms, txn = body.get("E"), body.get("T")
    _check_levels(bids, "bids")
    _check_levels(asks, "asks")
    for side, levels, sign in (("bids", bids, -1), ("asks", asks, 1)):
        prices = [Decimal(p) * sign for p, _ in levels]
        for i in range(1, len(prices)):
            if prices[i] <= prices[i - 1]:
                order = "descending" if sign < 0 else "ascending"
                raise _Bad(f"{side} not in strictly {order} price order at {i}")
        for i, (_, q) in enumerate(levels):
            if q in ZERO_QTY:
                raise _Bad(f"{side}[{i}] has zero quantity in a snapshot")
    if limit is not None and (len(bids) > limit or len(asks) > limit):
        raise _Bad(f"snapshot has more levels than the limit {limit}")
    # No symbol: a bare REST body in a recording, named by the caller (`symbol` set later).
    sym = "" if symbol is None else _symbol(symbol.upper() if isinstance(symbol, str) else symbol)
    return BookSnapshot(
        sym,
        last,
        None if ev_ms is None else _int64(ev_ms, "E", positive=True),
        None if txn is None else _int64(txn, "T", positive=True),
        recv_ms,
        bids,
        asks,
        limit,
    )


def quote_wire(raw: bytes, recv_ms: int) -> Quote | None:
    """The fast path of a raw USD-M bookTicker message: its Quote, or None (then parse it the
    general way: it may be another shape, or malformed, which the general path says why). The
    byte grammar is checked in C where it is built (`_depthwire.scan_quote`), else by a regex."""
    if _scan_quote is None:
        return quote_wire_py(raw, recv_ms)
    if (t := _scan_quote(raw)) is None:
        return None
    uid, sym, bid, bid_qty, ask, ask_qty, txn, ev_ms = t
    if bid in ZERO_QTY or ask in ZERO_QTY:
        return None
    return Quote(_symbol(sym), uid, ev_ms, txn, bid, bid_qty, ask, ask_qty, recv_ms)


def quote_wire_py(raw: bytes, recv_ms: int) -> Quote | None:
    """`quote_wire` with the grammar as a regex: the reference the C scan is tested against."""
    if raw[:64].find(b'bookTicker"') < 0:
        return None
    text = raw.decode("latin-1")
    m = _QUOTE_WIRE.fullmatch(text)
    if m is None or (m.group(9) == "}") != text.startswith('{"stream":'):
        return None
    uid, sym, bid, bid_qty, ask, ask_qty, txn, ev_ms = m.group(1, 2, 3, 4, 5, 6, 7, 8)
    if bid in ZERO_QTY or ask in ZERO_QTY:
        return None
    u, t, e = int(uid), int(txn), int(ev_ms)
    if u > INT64_MAX or t > INT64_MAX or e > INT64_MAX:
        return None
    return Quote(_symbol(sym), u, e, t, bid, bid_qty, ask, ask_qty, recv_ms)


def depth_wire(raw: bytes, recv_ms: int, market: Market | None = None) -> DepthUpdate | None:
    """The fast path of a raw depthUpdate message: its DepthUpdate, or None (then parse it the
    general way, which says why a message is rejected). The byte grammar is checked in C; the
    rules here are `_depth`'s, in its order, and anything they would reject is left to it."""
    if _scan_depth is None or (t := _scan_depth(raw)) is None:
        return None
    sym, ev_ms, txn, first, final, prev, bid_px, bid_qty, ask_px, ask_qty = t
    if first > final or ev_ms == 0:
        return None
    if market == "usdm" or (market is None and prev is not None):
        if prev is None or not txn:  # USD-M needs `pu` and a positive `T`
            return None
    else:  # spot: no `pu`, and the event time is the transaction time
        prev, txn = None, ev_ms
    return DepthUpdate(_symbol(sym), first, final, prev, ev_ms, txn, recv_ms, bid_px, bid_qty, ask_px, ask_qty)


def quote_record(event: dict, recv_ms: int) -> Quote:
    """A decoded bookTicker event (USD-M, or spot's without `e`, `E`, `T`) -> Quote; raises BookError."""
    return _quote(event, recv_ms)


def depth_record(event: dict, recv_ms: int, raw: bytes | None = None, enveloped: bool = False) -> DepthUpdate:
    """A decoded depthUpdate event -> DepthUpdate (USD-M if it has `pu`, else spot); raises BookError.

    `raw`: the undecoded message it came from, for the bulk check of its levels."""
    return _depth(event, recv_ms, None, raw is not None and _tail_ok(raw, enveloped))


def snapshot_record(body: dict, symbol: str | None, recv_ms: int, limit: int | None = None) -> BookSnapshot:
    """A decoded REST depth body -> BookSnapshot (symbol "" when None); raises BookError."""
    return _snapshot(body, symbol, recv_ms, limit)


def _dispatch(
    event: object,
    recv_ms: int,
    market: Market | None,
    snapshot_symbol: str | None,
    snapshot_limit: int | None,
    raw: bytes | None,
) -> BookRecord:
    if type(event) is not dict:
        raise _Bad(f"event is {type(event).__name__}, not an object")
    enveloped = "stream" in event and "data" in event
    if enveloped:
        event = event["data"]
        if type(event) is not dict:
            raise _Bad("stream data is not an object")
    kind = event.get("e")
    if kind == "depthUpdate":
        return _depth(event, recv_ms, market, raw is not None and _tail_ok(raw, enveloped))
    if kind == "bookTicker" or (kind is None and "u" in event and "A" in event and "B" in event):
        return _quote(event, recv_ms)
    if kind is None and "lastUpdateId" in event:
        if snapshot_symbol is None:
            raise _Bad("depth snapshot without a symbol (pass snapshot_symbol)")
        return _snapshot(event, snapshot_symbol, recv_ms, snapshot_limit)
    if kind is None and "code" in event and "msg" in event:
        raise _Bad(f"error response {event.get('code')!r:.20}: {event.get('msg')!r:.200}")
    raise _Bad(f"not a book event: {kind!r:.40}")


def parse_book_event(
    event: object,
    recv_ms: int,
    *,
    market: Market | None = None,
    snapshot_symbol: str | None = None,
    snapshot_limit: int | None = None,
    raw: bytes | str | None = None,
    source: str = "",
) -> BookRecord | Rejected:
    """A decoded bookTicker / depthUpdate / REST depth event -> its record, or Rejected.

    `market` ("usdm"/"spot") makes the depth shape strict; None infers it from `pu`.
    A snapshot has no symbol of its own: `snapshot_symbol` names it. `raw` (the
    undecoded message) is kept in a Rejected; without it the event is re-encoded.
    """
    try:
        return _dispatch(event, recv_ms, market, snapshot_symbol, snapshot_limit, None)
    except _Bad as e:
        return _rejected(raw, event, str(e), recv_ms, source)


def parse_book_message(
    raw: bytes | str,
    recv_ms: int,
    *,
    market: Market | None = None,
    snapshot_symbol: str | None = None,
    snapshot_limit: int | None = None,
    source: str = "",
) -> BookRecord | Rejected:
    """One raw message (bytes or text) -> its record, or Rejected. The fast path for depth."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if type(data) is bytes:
        if (q := quote_wire(data, recv_ms)) is not None:
            return q
        if (d := depth_wire(data, recv_ms, market)) is not None:
            return d
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        return _rejected(raw, None, f"invalid JSON: {e}", recv_ms, source)
    try:
        return _dispatch(
            event, recv_ms, market, snapshot_symbol, snapshot_limit, data if type(data) is bytes else bytes(data)
        )
    except _Bad as e:
        return _rejected(raw, event, str(e), recv_ms, source)


def parse_depth_snapshot(
    body: bytes | str | dict, symbol: str, recv_ms: int, *, limit: int | None = None, source: str = ""
) -> BookSnapshot | Rejected:
    """A REST `GET /fapi/v1/depth` (or spot `/api/v3/depth`) body -> BookSnapshot, or Rejected."""
    raw = None if isinstance(body, dict) else body
    if raw is not None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return _rejected(raw, None, f"invalid JSON: {e}", recv_ms, source)
    try:
        if type(body) is not dict:
            raise _Bad(f"depth snapshot is {type(body).__name__}, not an object")
        return _snapshot(body, symbol, recv_ms, limit)
    except _Bad as e:
        return _rejected(raw, body, str(e), recv_ms, source)


def depth_stream(symbol: str, speed_ms: int = 0) -> str:
    """The diff-depth stream name, e.g. btcusdt@depth@0ms (USD-M: 0/100/250/500, where 250 ms is
    the plain `@depth`; spot: 100/1000)."""
    return f"{symbol.lower()}@depth" if speed_ms == 250 else f"{symbol.lower()}@depth@{speed_ms}ms"


def depth_weight(limit: int) -> int:
    """REST request weight of GET /fapi/v1/depth at this limit (Binance's table)."""
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


def book_ticker_stream(symbol: str) -> str:
    return f"{symbol.lower()}@bookTicker"


def depth_snapshot_path(symbol: str, limit: int = 1000, market: Market = "usdm") -> str:
    """The REST path of a depth snapshot (USD-M limits: 5, 10, 20, 50, 100, 500, 1000)."""
    base = "/fapi/v1/depth" if market == "usdm" else "/api/v3/depth"
    return f"{base}?symbol={symbol.upper()}&limit={limit}"
