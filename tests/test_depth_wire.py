"""The C fast path of raw depthUpdate messages (`ticklens/exchange/_depthwire.c`): it takes every
message Binance recorded, gives exactly the record the general path gives, and stands aside
(None) on anything else, so the general path can accept it or say why not."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.book_reference import STREAMS, UM, raw_lines
from ticklens.domain.book import DepthUpdate
from ticklens.domain.records import Rejected
from ticklens.exchange import _depthwire  # the extension must be built: no skip, no fallback here
from ticklens.exchange.binance import parse_message, record_kinds
from ticklens.exchange.binance_book import depth_wire, parse_book_event, parse_book_message

RAW = (
    b'{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161256560,"T":1723161256559,'
    b'"s":"BTCUSDT","U":5123107853748,"u":5123107856210,"pu":5123107853551,'
    b'"b":[["1000.00","606.675"],["61800.20","0.006"]],"a":[["61800.30","0.000"],["61801.00","3.166"]]}}'
)
BARE = RAW[RAW.index(b'{"e"') : -1]
SPOT = b'{"e":"depthUpdate","E":1723161255208,"s":"BTCUSDT","U":50093239189,"u":50093239202,"b":[],"a":[["61837.64000000","1.54698000"]]}'
VALUES = [b"1723161256560", b"1723161256559", b"BTCUSDT", b"5123107853748", b"5123107856210", b"5123107853551"]
VALUES += [b"1000.00", b"606.675", b"61800.20", b"0.006", b"61800.30", b"0.000", b"61801.00", b"3.166"]
MARKETS = ("usdm", "spot", None)


def reference(raw: bytes, market: str | None) -> DepthUpdate | Rejected | None:
    """The general path on the decoded event (orjson, then the per-level or bulk check in Python);
    None if it is not JSON at all."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return parse_book_event(event, 7, market=market)  # type: ignore[arg-type,return-value]


def same(got: object, slow: object) -> bool:
    """The message parser's answer is the general path's: the record, or a rejection for the same reason
    (a rejection keeps the raw bytes where the reference re-encodes the event); not JSON: rejected."""
    if slow is None or isinstance(slow, Rejected):
        return isinstance(got, Rejected) and (slow is None or got.reason == slow.reason)
    return got == slow


@pytest.mark.skipif(not UM.is_dir(), reason="recordings missing")
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_recorded_depth_message_takes_the_fast_path_and_agrees(name: str) -> None:
    symbol, market, paths = STREAMS[name]
    n = 0
    for raw in raw_lines(paths):
        if b'"depthUpdate"' not in raw[:80]:
            continue
        fast = depth_wire(raw, 7, market)  # type: ignore[arg-type]
        assert fast is not None, raw[:200]
        assert fast == parse_book_event(json.loads(raw), 7, market=market)  # type: ignore[arg-type]
        assert fast.symbol == symbol and fast.n_levels > 0
        assert depth_wire(raw, 7) == fast  # the market inferred from `pu` alike
        n += 1
    assert n > 1_000


def test_shapes_markets_and_envelope() -> None:
    for raw in (RAW, BARE, BARE + b" \r\n"):
        for market in ("usdm", None):
            d = depth_wire(raw, 7, market)
            assert d is not None and d == reference(raw, market)
            assert (d.prev_final_id, d.txn_ms) == (5123107853551, 1723161256559)
        spot = depth_wire(raw, 7, "spot")  # spot's rules: no `pu`, the event time is the transaction time
        assert spot == reference(raw, "spot") and (spot.prev_final_id, spot.txn_ms) == (None, 1723161256560)  # type: ignore[union-attr]
    d = depth_wire(SPOT, 7)
    assert d == reference(SPOT, None) and d.bids == [] and d.prev_final_id is None  # type: ignore[union-attr]
    assert depth_wire(SPOT, 7, "usdm") is None  # USD-M needs `pu`: the general path says so
    assert isinstance(parse_book_message(SPOT, 7, market="usdm"), Rejected)
    assert _depthwire.scan(bytearray(RAW)) is None  # not bytes: the general path


@pytest.mark.parametrize(
    "old, new",
    [
        (b"1723161256560", b"0"),  # E must be positive
        (b"1723161256559", b"0"),  # so must T on USD-M
        (b"5123107856210", b"5123107853747"),  # u < U
        (b"5123107853748", b"9223372036854775808"),  # > int64
        (b"5123107853748", b"05123107853748"),  # a leading zero
        (b"5123107853748", b"5123107853748.0"),
        (b"5123107853748", b"5123107853748e0"),
        (b"5123107853748", b"-1"),
        (b"1000.00", b"0.00"),  # a zero price
        (b"1000.00", b"1000"),  # no dot: valid JSON, valid decimal, but not Binance's layout
        (b"1000.00", b"01000.00"),
        (b"1000.00", b"1" * 25 + b".0"),  # 25 digits
        (b"606.675", b"0." + b"1" * 25),
        (b"BTCUSDT", b"BTC-USDT"),
        (b"BTCUSDT", b"B" * 41),
        (b'"b":[[', b'"b": [['),  # a space
        (b'"s":"BTCUSDT",', b'"s":"BTCUSDT","x":1,'),  # an unknown field
        (b"]]}}", b"]]}"),  # the envelope not closed
        (b"]]}}", b"]]}}}"),
        (b'["61800.20","0.006"]', b'["61800.20","0.006","1"]'),
        (b'"BTCUSDT"', b'"BTC\\u0055SDT"'),  # an escape
    ],
)
def test_anything_else_is_left_to_the_general_path(old: bytes, new: bytes) -> None:
    raw = RAW.replace(old, new, 1)
    assert raw != RAW
    assert depth_wire(raw, 7) is None
    assert same(parse_book_message(raw, 7), reference(raw, None))


def test_sides_are_bounded_by_the_level_limit() -> None:
    level = b'["61800.20","0.006"]'
    for n, fast in ((20_000, True), (20_001, False)):
        raw = RAW.replace(b'[["1000.00","606.675"],["61800.20","0.006"]]', b"[" + b",".join([level] * n) + b"]")
        d = depth_wire(raw, 7)
        assert (d is not None) == fast
        if d is not None:
            assert len(d.bids) == n and d.bids[-1] == ["61800.20", "0.006"]
        else:
            assert isinstance(reference(raw, None), Rejected)


def test_the_flow_parser_takes_the_fast_path_with_the_same_result() -> None:
    kinds = record_kinds(["depth"])
    fast = parse_message(RAW, 1723161256700, kinds=kinds)
    assert fast[0] == "depth" and fast[2] == depth_wire(RAW, 1723161256700)
    late = parse_message(RAW, 1723161256560 + 86_400_001 * 2, kinds=kinds)  # the receive-time window still applies
    assert late[0] == "reject" and "more than" in late[1]
    assert parse_message(RAW, 1723161256700, kinds=record_kinds(["trade"]))[0] == "skip"


@settings(max_examples=600, deadline=None)
@given(
    target=st.sampled_from(VALUES),
    new=st.one_of(
        st.from_regex(rb"(0|[1-9][0-9]{0,30})(\.[0-9]{0,30})?", fullmatch=True),
        st.sampled_from([b"0", b"0.000", b"00.1", b"-1.0", b"1e3", b"", b'\\"', b"9" * 20, b"1.0 ", b'"', b"]", b","]),
        st.binary(max_size=8),
    ),
    bare=st.booleans(),
    market=st.sampled_from(MARKETS),
)
def test_fuzzed_depth_fast_path_agrees_with_the_general_one(
    target: bytes, new: bytes, bare: bool, market: str | None
) -> None:
    raw = (BARE if bare else RAW).replace(target, new, 1)
    fast = depth_wire(raw, 7, market)  # type: ignore[arg-type]
    slow = reference(raw, market)
    if fast is not None:  # it may stand aside on a valid message, never accept another one
        assert isinstance(slow, DepthUpdate) and fast == slow
        assert fast.bids == slow.bids and fast.asks == slow.asks
    assert same(parse_book_message(raw, 7, market=market), slow)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), cut=st.integers(0, 400))
def test_fuzzed_bytes_never_raise_or_crash(data: bytes, cut: int) -> None:
    for candidate in (data, RAW[:cut], RAW[:cut] + data, BARE[:cut] + data, RAW.replace(b"0", data[:1] or b"0")):
        d = _depthwire.scan(candidate)
        assert d is None or isinstance(d, tuple)
        if d is not None:
            assert depth_wire(candidate, 7) in (None, reference(candidate, None))
