"""Binance book messages parse strictly: every recorded line is accepted, malformed ones become
Rejected with a reason (never an exception), and the fast bulk path agrees with the per-level one."""

from __future__ import annotations

import json
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.book_reference import STREAMS, UM, raw_lines
from ticklens.domain.book import BookSnapshot, DepthUpdate, Quote
from ticklens.domain.records import Rejected
from ticklens.exchange.binance_book import (
    depth_snapshot_path,
    depth_stream,
    parse_book_event,
    parse_book_message,
    parse_depth_snapshot,
    quote_wire,
)

DEPTH = {
    "e": "depthUpdate",
    "E": 1723161256560,
    "T": 1723161256559,
    "s": "BTCUSDT",
    "U": 5123107853748,
    "u": 5123107856210,
    "pu": 5123107853551,
    "b": [["1000.00", "606.675"], ["61800.20", "0.006"]],
    "a": [["61800.30", "0.000"], ["61801.00", "3.166"]],
}
SPOT_TICKER = {"u": 50093239212, "s": "BTCUSDT", "b": "61837.63000000", "B": "3.78826000", "a": "61837.64", "A": "1.5"}

# The reference rule for a level string, written independently of the parser.
DECIMAL = re.compile(r"(0|[1-9][0-9]{0,23})(\.[0-9]{1,24})?")


def valid_level(level: object) -> bool:
    if not isinstance(level, list) or len(level) != 2 or not all(isinstance(x, str) for x in level):
        return False
    p, q = level
    return bool(DECIMAL.fullmatch(p) and DECIMAL.fullmatch(q) and float(p) > 0)


def envelope(data: dict, stream: str = "btcusdt@depth@0ms") -> bytes:
    return orjson.dumps({"stream": stream, "data": data})


def with_(**fields: object) -> dict:
    d = dict(DEPTH)
    d.update(fields)
    return d


@pytest.mark.skipif(not UM.is_dir(), reason="recordings missing")
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_recorded_book_line_parses_and_both_paths_agree(name: str) -> None:
    symbol, market, paths = STREAMS[name]
    kinds = {"quote": 0, "depth": 0, "snapshot": 0}
    for raw in raw_lines(paths):
        fast = parse_book_message(raw, 7, snapshot_symbol=symbol)
        slow = parse_book_event(json.loads(raw), 7, snapshot_symbol=symbol)
        if isinstance(fast, Rejected):
            assert fast.reason == "not a book event: 'trade'"
            assert isinstance(slow, Rejected) and slow.reason == fast.reason
            continue
        assert fast == slow
        kinds["quote" if isinstance(fast, Quote) else "depth" if isinstance(fast, DepthUpdate) else "snapshot"] += 1
        if isinstance(fast, DepthUpdate):
            assert fast.symbol == symbol
            assert (fast.prev_final_id is None) == (market == "spot")
    assert kinds["quote"] > 20_000 and kinds["depth"] > 6_000
    assert kinds["snapshot"] == 1


def test_depth_usdm_and_spot_shapes() -> None:
    u = parse_book_message(envelope(DEPTH), 5)
    assert isinstance(u, DepthUpdate)
    assert (u.first_id, u.final_id, u.prev_final_id, u.event_ms, u.txn_ms, u.recv_ms) == (
        5123107853748,
        5123107856210,
        5123107853551,
        1723161256560,
        1723161256559,
        5,
    )
    assert u.bids == DEPTH["b"] and u.n_levels == 4
    assert u.bid_array().tolist() == [[1000.0, 606.675], [61800.2, 0.006]]
    spot = {k: v for k, v in DEPTH.items() if k not in ("pu", "T")}
    s = parse_book_message(orjson.dumps(spot), 5)
    assert isinstance(s, DepthUpdate) and s.prev_final_id is None and s.txn_ms == s.event_ms


def test_book_ticker_usdm_and_spot() -> None:
    q = parse_book_message(
        envelope(
            {"e": "bookTicker", "u": 9, "s": "ETHUSDT", "b": "1.10", "B": "2", "a": "1.20", "A": "3", "T": 5, "E": 6},
            "ethusdt@bookTicker",
        ),
        1,
    )
    assert q == Quote("ethusdt", 9, 6, 5, "1.10", "2", "1.20", "3", 1)
    s = parse_book_message(orjson.dumps(SPOT_TICKER), 1)
    assert isinstance(s, Quote) and s.event_ms is None and s.txn_ms is None and s.bid == "61837.63000000"


def test_rest_snapshot() -> None:
    body = {"lastUpdateId": 77, "E": 5, "T": 4, "bids": [["2.00", "1"], ["1.00", "1"]], "asks": [["3.00", "1"]]}
    s = parse_depth_snapshot(orjson.dumps(body), "BTCUSDT", 9, limit=1000)
    assert s == BookSnapshot("btcusdt", 77, 5, 4, 9, body["bids"], body["asks"], 1000)
    spot = parse_depth_snapshot({"lastUpdateId": 1, "bids": [], "asks": []}, "btcusdt", 9)
    assert isinstance(spot, BookSnapshot) and spot.txn_ms is None and spot.ts_ms == 9
    line = parse_book_message(orjson.dumps(body), 9, snapshot_symbol="btcusdt")
    assert isinstance(line, BookSnapshot) and line.last_update_id == 77


@pytest.mark.parametrize(
    ("raw", "bids"),
    [  # other objects or repeated keys around the levels: the bulk check must not look at the wrong arrays
        (
            b'{"stream":"s","data":{"e":"depthUpdate","E":1,"T":1,"s":"X","U":1,"u":2,"pu":0,'
            b'"x":{"b":[["1.0","1.0"]],"a":[]},"b":[["bad","1"]],"a":[]}}',
            None,
        ),
        (
            b'{"stream":"s","data":{"e":"depthUpdate","E":1,"T":1,"s":"X","U":1,"u":2,"pu":0,'
            b'"b":[["bad","1"]],"a":[],"x":{"b":[["1.0","1.0"]],"a":[]}}}',
            None,
        ),
        (
            b'{"stream":"s","data":{"e":"depthUpdate","E":1,"T":1,"s":"X","U":1,"u":2,"pu":0,'
            b'"b":[["1.0","1.0"]],"a":[]},"x":{"b":[["bad","1"]],"a":[]}}',
            [["1.0", "1.0"]],
        ),
        (
            b'{"stream":"s","data":{"e":"depthUpdate","E":1,"T":1,"s":"X","U":1,"u":2,"pu":0,'
            b'"b":[["bad","1"]],"a":[],"b":[["1.0","1.0"]],"a":[]}}',
            [["1.0", "1.0"]],
        ),
        (
            b'{"stream":"s","data":{"e":"depthUpdate","E":1,"T":1,"s":"X","U":1,"u":2,"pu":0,'
            b'"b":[["1.0","1.0"]],"a":[],"b":[["bad","1"]],"a":[]}}',
            None,
        ),
        (
            b'{"e":"depthUpdate","E":1,"T":1,"s":"X","U":1,"u":2,"pu":0,"b":[["1\\u002e0","1.0"]],"a":[]}',
            [["1.0", "1.0"]],
        ),
        (b'{"e":"depthUpdate","E":1,"T":1,"s":"X","U":1,"u":2,"pu":0,"b":[["1.0","1.0"]],"a":[]}}', None),
    ],
)
def test_bulk_check_reads_the_arrays_the_event_has(raw: bytes, bids: list | None) -> None:
    r = parse_book_message(raw, 0)
    if bids is None:
        assert isinstance(r, Rejected)
    else:
        assert isinstance(r, DepthUpdate) and r.bids == bids
    slow = parse_book_event(orjson.loads(raw), 0) if bids is not None else None
    assert slow is None or slow == r


def test_unknown_fields_are_tolerated() -> None:
    u = parse_book_message(envelope(with_(zz=1, nested={"x": [1, 2]}, note="a|b;c")), 0)
    assert isinstance(u, DepthUpdate) and u.bids == DEPTH["b"]


BAD_DEPTH = [
    (with_(U=1.0), "U 1.0 is not an integer"),
    (with_(u=True), "u True is not an integer"),
    (with_(U=-1), "U -1 is out of range"),
    (with_(u=1 << 63), "out of range"),
    (with_(E=0), "E 0 is out of range"),
    (with_(U=10, u=9), "u 9 < U 10"),
    (with_(pu="5"), "pu '5' is not an integer"),
    ({k: v for k, v in DEPTH.items() if k != "U"}, "missing field 'U'"),
    ({k: v for k, v in DEPTH.items() if k != "b"}, "missing field 'b'"),
    ({k: v for k, v in DEPTH.items() if k != "T"}, "missing field 'T'"),
    (with_(s=""), "is not a symbol"),
    (with_(s=5), "is not a symbol"),
    (with_(b={"1.0": "1.0"}), "bids is dict, not a list"),
    (with_(b=[["0.00", "1.000"]]), "bids[0] price '0.00' is not a positive decimal"),
    (with_(b=[["-1.00", "1.000"]]), "price '-1.00'"),
    (with_(b=[["abc", "1.000"]]), "price 'abc'"),
    (with_(b=[[61800.2, "1.000"]]), "price 61800.2"),
    (with_(b=[["NaN", "1.0"]]), "price 'NaN'"),
    (with_(b=[["Infinity", "1.0"]]), "price 'Infinity'"),
    (with_(b=[["1e5", "1.0"]]), "price '1e5'"),
    (with_(b=[["01.5", "1.0"]]), "price '01.5'"),
    (with_(b=[[" 1.5", "1.0"]]), "price ' 1.5'"),
    (with_(a=[["1.5", "-0.1"]]), "asks[0] qty '-0.1' is not a non-negative decimal"),
    (with_(a=[["1.5", None]]), "qty None"),
    (with_(a=[["1.5", "1.0", "2.0"]]), "asks[0] ['1.5', '1.0', '2.0'] is not a [price, qty] pair"),
    (with_(a=[["1.5"]]), "is not a [price, qty] pair"),
    (with_(a=["1.5"]), "is not a [price, qty] pair"),
    (with_(a=[[]]), "is not a [price, qty] pair"),
    (with_(a=[{"1.5": "2.5"}]), "is not a [price, qty] pair"),
    (with_(a=["15"]), "is not a [price, qty] pair"),
    (with_(a=[["1.0,2.0"]]), "is not a [price, qty] pair"),
    (with_(a=[["1.0", "2.0|3.0"]]), "qty '2.0|3.0'"),
    (with_(a=[["1.0", "2.0;3.0|4.0"], ["5.0", "6.0"]]), "qty '2.0;3.0|4.0'"),
    (with_(a=[["1.0", "2.0"], ["3.0;4.0|5.0", "6.0"]]), "price '3.0;4.0|5.0'"),
    (with_(a=[["1." + "1" * 30, "1.0"]]), "is not a positive decimal"),
]


@pytest.mark.parametrize(("event", "reason"), BAD_DEPTH)
def test_malformed_depth_is_rejected_with_a_reason(event: dict, reason: str) -> None:
    for raw in (envelope(event), orjson.dumps(event)):
        r = parse_book_message(raw, 3, source="t")
        assert isinstance(r, Rejected), r
        assert reason in r.reason
        assert r.raw == raw and r.recv_ms == 3 and r.source == "t"
    d = parse_book_event(event, 3)
    assert isinstance(d, Rejected) and reason in d.reason
    assert orjson.loads(d.raw) == event  # re-encoded when no raw bytes were given


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1,2]", "event is list, not an object"),
        (b'{"stream":"x","data":5}', "stream data is not an object"),
        (b'{"e":"trade","s":"BTCUSDT"}', "not a book event: 'trade'"),
        (b'{"result":null,"id":1}', "not a book event: None"),
        (b'{"code":-1121,"msg":"Invalid symbol."}', "error response -1121"),
        (b'{"lastUpdateId":1,"bids":[],"asks":[]}', "depth snapshot without a symbol"),
        (b'{"e":"bookTicker","u":1,"s":"X","b":"0","B":"1","a":"1.0","A":"1"}', "bid '0' is not a positive"),
        (b'{"e":"bookTicker","u":1,"s":"X","b":"1.0","B":"1","a":"1.0"}', "bookTicker missing field 'A'"),
        (b'{"e":"bookTicker","u":1.5,"s":"X","b":"1.0","B":"1","a":"1.0","A":"1"}', "u 1.5 is not an integer"),
        (b'{"e":"bookTicker","u":1,"s":"X","b":"1.0","B":"1","a":"1.0","A":"1","T":false}', "T False"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    r = parse_book_message(raw, 0)
    assert isinstance(r, Rejected) and reason in r.reason, r


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"code": -1003, "msg": "Too many requests"}, "depth snapshot error -1003"),
        ({"lastUpdateId": 1, "bids": []}, "missing field 'asks'"),
        ({"lastUpdateId": "1", "bids": [], "asks": []}, "lastUpdateId '1' is not an integer"),
        ({"lastUpdateId": 1, "bids": [["1.0", "1"], ["2.0", "1"]], "asks": []}, "bids not in strictly descending"),
        ({"lastUpdateId": 1, "bids": [], "asks": [["2.0", "1"], ["2.00", "1"]]}, "asks not in strictly ascending"),
        ({"lastUpdateId": 1, "bids": [["1.0", "0.0"]], "asks": []}, "zero quantity in a snapshot"),
        ({"lastUpdateId": 1, "bids": [["1.0", "1"], ["0.5", "1"]], "asks": [], "E": 1.5}, "E 1.5"),
    ],
)
def test_malformed_snapshots_are_rejected(body: dict, reason: str) -> None:
    r = parse_depth_snapshot(orjson.dumps(body), "btcusdt", 0)
    assert isinstance(r, Rejected) and reason in r.reason, r
    assert isinstance(parse_depth_snapshot(b"<html>", "btcusdt", 0), Rejected)
    assert isinstance(parse_depth_snapshot({"lastUpdateId": 1, "bids": [], "asks": []}, "bad symbol!", 0), Rejected)


def test_oversized_snapshot_is_rejected_against_its_limit() -> None:
    body = {"lastUpdateId": 1, "bids": [["2.0", "1"], ["1.0", "1"]], "asks": []}
    assert isinstance(parse_depth_snapshot(body, "x", 0, limit=1), Rejected)


def test_stream_names_and_snapshot_path() -> None:
    assert depth_stream("BTCUSDT", 100) == "btcusdt@depth@100ms"
    assert depth_snapshot_path("btcusdt") == "/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
    assert depth_snapshot_path("btcusdt", 5000, "spot") == "/api/v3/depth?symbol=BTCUSDT&limit=5000"


# --- fuzz: the parser never raises, and the bulk path agrees with the per-level reference


number_text = st.one_of(
    st.from_regex(r"(0|[1-9][0-9]{0,6})\.[0-9]{1,8}", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}", fullmatch=True),
    st.sampled_from(["", ".", "1.", ".5", "00.1", "0.000", "1e3", "-1.0", "1.0|2.0", "1.0;2.0", "1,0", " 1.0"]),
    st.text(max_size=6),
)
element = st.one_of(number_text, number_text, st.integers(-(2**63), 2**63 - 1), st.floats(), st.none(), st.booleans())
level = st.one_of(
    st.lists(number_text, min_size=2, max_size=2),
    st.lists(number_text, min_size=2, max_size=2),
    st.lists(element, max_size=3),
    number_text,
    st.dictionaries(number_text, number_text, max_size=2),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bids=st.lists(level, max_size=6), asks=st.lists(level, max_size=6), wrap=st.booleans())
def test_fuzzed_levels_fast_and_per_level_paths_agree(bids: list, asks: list, wrap: bool) -> None:
    event = with_(b=bids, a=asks)
    raw = envelope(event) if wrap else orjson.dumps(event)
    fast = parse_book_message(raw, 0)
    slow = parse_book_event(orjson.loads(raw), 0)
    expect_ok = all(valid_level(x) for x in bids) and all(valid_level(x) for x in asks)
    assert isinstance(fast, DepthUpdate) == expect_ok, (fast, bids, asks)
    if expect_ok:
        assert fast == slow
        assert fast.bids == bids and fast.asks == asks  # type: ignore[union-attr]
    else:
        assert isinstance(slow, Rejected) and fast.reason == slow.reason  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), cut=st.integers(0, 400))
def test_fuzzed_bytes_never_raise(data: bytes, cut: int) -> None:
    raw = envelope(DEPTH)
    for candidate in (data, raw[:cut], raw[:cut] + data, raw.replace(b"0", data[:1] or b"0")):
        r = parse_book_message(candidate, 0, snapshot_symbol="x")
        assert isinstance(r, Rejected | DepthUpdate | Quote | BookSnapshot)


# --- the bookTicker fast path on raw bytes agrees with the general path, or stands aside

TICKER_RAW = (
    b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107839020,"s":"BTCUSDT",'
    b'"b":"61800.20","B":"2.507","a":"61800.30","A":"2.510","T":1723161256313,"E":1723161256313}}'
)
TICKER_VALUES = [b"5123107839020", b"BTCUSDT", b"61800.20", b"2.507", b"61800.30", b"2.510", b"1723161256313"]


@settings(max_examples=400, deadline=None)
@given(
    target=st.sampled_from(TICKER_VALUES),
    new=st.one_of(
        st.from_regex(rb"(0|[1-9][0-9]{0,30})(\.[0-9]{0,30})?", fullmatch=True),
        st.sampled_from([b"0", b"0.000", b"00.1", b"-1.0", b"1e3", b"", b'\\"', b"9" * 20, b"1.0 "]),
        st.binary(max_size=8),
    ),
    bare=st.booleans(),
)
def test_fuzzed_book_ticker_fast_path_agrees_with_the_general_one(target: bytes, new: bytes, bare: bool) -> None:
    raw = TICKER_RAW.replace(target, new, 1)
    if bare:
        raw = raw[raw.index(b'{"e"') : -1]
    fast = quote_wire(raw, 7)
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        assert fast is None
        return
    slow = parse_book_event(event, 7)
    if fast is not None:  # it may stand aside on a valid message, never accept another one
        assert isinstance(slow, Quote) and fast == slow
    assert parse_book_message(raw, 7) == (fast if fast is not None else slow) or isinstance(slow, Rejected)


def test_book_ticker_fast_path_takes_binance_layout_only() -> None:
    q = quote_wire(TICKER_RAW, 7)
    assert q == parse_book_event(orjson.loads(TICKER_RAW), 7)
    assert quote_wire(TICKER_RAW[TICKER_RAW.index(b'{"e"') : -1], 7) == q  # without the envelope
    assert quote_wire(TICKER_RAW[:-1], 7) is None  # an envelope not closed
    assert quote_wire(orjson.dumps(SPOT_TICKER), 7) is None  # spot's shape: the general path
    assert quote_wire(TICKER_RAW.replace(b'"b":"61800.20"', b'"b":"0.00"'), 7) is None
    assert quote_wire(TICKER_RAW.replace(b"5123107839020", b"9223372036854775808"), 7) is None  # > int64


def test_depth_update_pairs_and_columns_are_one_record() -> None:
    import pickle

    bids, asks = [["1.0", "2"], ["0.9", "0"]], [["1.1", "3"]]
    from_pairs = DepthUpdate.from_pairs("x", 1, 2, 0, 5, 5, 6, [list(b) for b in bids], [list(a) for a in asks])
    from_cols = DepthUpdate("x", 1, 2, 0, 5, 5, 6, ["1.0", "0.9"], ["2", "0"], ["1.1"], ["3"])
    assert from_pairs == from_cols and from_pairs.bids == bids and from_cols.asks == asks
    assert from_pairs.n_levels == from_cols.n_levels == 3
    assert pickle.loads(pickle.dumps(from_pairs)) == from_cols
    assert [list(x) for x in from_pairs.levels()[0]] == [list(x) for x in from_cols.levels()[0]] == bids
    from_pairs.bid_px.append("0.8")  # once read, the columns are the levels (they may be edited)
    from_pairs.bid_qty.append("1")
    assert from_pairs.bids == [*bids, ["0.8", "1"]] and [list(x) for x in from_pairs.levels()[0]] == from_pairs.bids
