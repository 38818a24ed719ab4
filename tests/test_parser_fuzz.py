"""The wire parser never raises: every input is a trade, a skipped stream or a counted rejection."""

from __future__ import annotations

import math

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ticklens.exchange.binance import parse_message

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=5),
    max_leaves=20,
)
TRADE_KEYS = ["e", "E", "T", "s", "t", "a", "f", "l", "p", "q", "m", "X", "nq", "st"]
field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
    st.just("aggTrade"),
    st.just("trade"),
    st.just("1.5"),
    st.just("-1"),
    st.just("nan"),
    st.just("inf"),
)
near_trades = st.dictionaries(st.sampled_from(TRADE_KEYS), field_values, max_size=len(TRADE_KEYS))


def _check(result: tuple) -> None:
    status, what, row = result
    assert status in ("trade", "skip", "reject")
    if status == "trade":
        tid, ts, price, qty, maker, first, last, ev, recv = row
        assert isinstance(what, str) and what == what.lower() and what
        assert math.isfinite(price) and price > 0 and math.isfinite(qty) and qty > 0
        assert isinstance(maker, bool) and last >= first and tid >= 0 and ts > 0
        assert all(0 <= x < 2**63 for x in (tid, first, last, ts, ev, recv))
    else:
        assert isinstance(what, str) and what and row is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _check(parse_message(raw, 1))


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_arbitrary_json_never_raises(value: object) -> None:
    _check(parse_message(orjson.dumps(value), 1))


@settings(max_examples=600, deadline=None)
@given(near_trades, st.booleans())
def test_almost_trades_are_trades_or_rejections(event: dict, wrapped: bool) -> None:
    msg = {"stream": "btcusdt@aggTrade", "data": event} if wrapped else event
    try:
        raw = orjson.dumps(msg)
    except TypeError:  # ints beyond 64 bits: not JSON orjson can write; send as text
        raw = str(msg).encode()
    _check(parse_message(raw, 1))


def test_new_fields_are_tolerated() -> None:
    raw = (
        b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1721347022001,"a":5,"s":"BTCUSDT","p":"100.5",'
        b'"q":"0.2","nq":"0.2","f":10,"l":12,"T":1721347022000,"m":false,"st":"x","future":[1,2]}}'
    )
    status, sym, row = parse_message(raw, 1721347022007)
    assert (status, sym) == ("trade", "btcusdt")
    assert row == (5, 1721347022000, 100.5, 0.2, False, 10, 12, 1721347022001, 1721347022007)
