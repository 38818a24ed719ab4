"""The C fast path of raw trade and aggTrade messages (`_depthwire.scan_trade`): it gives the general
path's record wherever it answers, on every recorded trade, on the local feed's messages, on edits
of one and on fuzzed ones; where it stands aside the general path decides (and says why)."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.book_reference import SPOT, UM, raw_lines
from ticklens.exchange import _depthwire  # the extension must be built: no skip, no fallback here
from ticklens.exchange.binance import DEFAULT_WINDOW_MS, TRADE_KINDS, parse_event, parse_message, trade_wire

RAW = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT",'
    b'"t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET","m":false}}'
)
BARE = RAW[RAW.index(b'{"e"') : -1]
AGG = (
    b'{"e":"aggTrade","E":1723161256330,"s":"ETHUSDT","a":2176301,"p":"2650.01","q":"1.250","nq":"1.250",'
    b'"f":4100,"l":4102,"T":1723161256322,"m":true}'
)
RECV = 1723161256400


def general(raw: bytes, recv_ms: int = RECV, window_ms: int | None = DEFAULT_WINDOW_MS) -> tuple:
    return parse_event(orjson.loads(raw), recv_ms, window_ms, TRADE_KINDS)


def test_every_recorded_trade_takes_the_fast_path_and_agrees() -> None:
    n = 0
    for path in sorted(UM.glob("*.gz")) + sorted(SPOT.glob("*.gz")):
        for raw in raw_lines([path]):
            if b'"e":"trade"' not in raw[:80] and b'"e":"aggTrade"' not in raw[:80]:
                continue
            event = json.loads(raw)["data"]
            recv = event["E"]
            fast = trade_wire(raw, recv, DEFAULT_WINDOW_MS)
            if path.parent == UM:  # USD-M's exact layout: always the fast path
                assert fast is not None, raw[:200]
            if fast is not None:
                assert fast == general(raw, recv)
                _, symbol, row = fast  # and against the JSON, read here independently
                assert symbol == event["s"].lower() and row[0] == event["t"] and row[1] == event["T"]
                assert row[2] == float(event["p"]) and row[3] == float(event["q"]) and row[4] is event["m"]
                n += 1
            assert parse_message(raw, recv) == general(raw, recv)
    assert n > 30_000


EDITS = [
    (b'"p":"61800.30"', b'"p":"61800"'),  # no fraction
    (b'"p":"61800.30"', b'"p":"61800."'),
    (b'"p":"61800.30"', b'"p":"0"'),  # not positive: the general path rejects it
    (b'"p":"61800.30"', b'"p":"0.000"'),
    (b'"p":"61800.30"', b'"p":"6.18003e4"'),  # an exponent: left to the general path
    (b'"p":"61800.30"', b'"p":61800.30'),  # a JSON number
    (b'"p":"61800.30"', b'"p":"-1"'),
    (b'"p":"61800.30"', b'"p":"' + b"1" * 41 + b'"'),
    (b'"p":"61800.30"', b'"p":"' + b"1" * 16 + b'"'),  # beyond 1e15
    (b'"p":"61800.30"', b'"p":"' + b"9" * 40 + b'"'),
    (b'"p":"61800.30"', b'"p":"1.' + b"0" * 38 + b'"'),
    (b'"q":"0.006"', b'"q":"0.006","q":"1"'),  # a repeated field
    (b'"t":5266583935', b'"t":0'),
    (b'"t":5266583935', b'"t":9223372036854775807'),
    (b'"t":5266583935', b'"t":9223372036854775808'),  # beyond int64
    (b'"t":5266583935', b'"t":-1'),
    (b'"t":5266583935', b'"t":1.5'),
    (b'"t":5266583935', b'"t":"5266583935"'),
    (b'"t":5266583935,', b""),  # a missing field
    (b'"T":1723161256322', b'"T":1000'),  # out of the time range
    (b'"T":1723161256322', b'"T":1723061256322'),  # more than a day from the receive time
    (b'"E":1723161256322,', b""),  # E is optional
    (b'"E":1723161256322', b'"E":true'),
    (b'"m":false', b'"m":0'),
    (b'"m":false', b'"m":true'),
    (b'"m":false', b'"m":null'),
    (b"BTCUSDT", b"BTC-USDT"),
    (b"BTCUSDT", b"B" * 41),
    (b"BTCUSDT", b""),
    (b"BTCUSDT", b"btcUSDT"),
    (b'"X":"MARKET"', b'"X":"MAR\\"KET"'),  # a skipped string with an escape
    (b'"X":"MARKET"', b'"X":{"a":1}'),  # a nested object: left to the general path
    (b'"X":"MARKET"', b'"X":[1]'),
    (b'"X":"MARKET"', b'"X":null,"Y":-1.5e3,"Z":false'),
    (b'"X":"MARKET"', b'"\\u0058":"MARKET"'),
    # Invalid JSON in a skipped field or key: the general path rejects it, the scan must not take it.
    (b'"X":"MARKET"', b'"X":1-2'),
    (b'"X":"MARKET"', b'"X":-'),
    (b'"X":"MARKET"', b'"X":01'),
    (b'"X":"MARKET"', b'"X":1.'),
    (b'"X":"MARKET"', b'"X":1e'),
    (b'"X":"MARKET"', b'"X":-0.5e+3'),  # valid
    (b'"X":"MARKET"', b'"X":"a\\q"'),
    (b'"X":"MARKET"', b'"X":"a\\u00g0"'),
    (b'"X":"MARKET"', b'"X":"a\\\x00"'),
    (b'"X":"MARKET"', b'"X":"\xff"'),  # not UTF-8
    (b'"X":"MARKET"', b'"X":"\xc3\xa9"'),  # UTF-8: left to the general path
    (b'"X":"MARKET"', b'"X":"a\tb"'),  # a raw control character
    (b'"X":"MARKET"', b'"\x01":"MARKET"'),
    (b'"X":"MARKET"', b'"X":tru'),
    (b'"e":"trade"', b'"e":"tradeLite"'),
    (b'"e":"trade"', b'"e":"trade","e":"trade"'),
    (b'"e":"trade",', b""),  # no event type first: the general path decides
    (b'{"e":"trade",', b'{"E":1,"e":"trade",'),
    (b"}}", b"} }"),
    (b"}}", b"}"),
    (b"}}", b"}}\n"),
    (b'"m":false', b'"m":false '),
    (b"btcusdt@trade", b""),
    (b"btcusdt@trade", b"s" * 81),
]


@pytest.mark.parametrize(("old", "new"), EDITS)
def test_edits_give_the_general_paths_answer(old: bytes, new: bytes) -> None:
    for raw in (RAW, BARE):
        edited = raw.replace(old, new, 1)
        fast = trade_wire(edited, RECV, DEFAULT_WINDOW_MS)
        try:
            slow = general(edited)
        except orjson.JSONDecodeError:
            slow = None
        assert fast is None or fast == slow
        if slow is None:  # not JSON: rejected, and said so
            status, reason, _ = parse_message(edited, RECV)
            assert status == "reject" and reason.startswith("invalid JSON")
        else:
            assert parse_message(edited, RECV) == slow
    assert trade_wire(RAW, RECV, DEFAULT_WINDOW_MS) == (
        "trade",
        "btcusdt",
        (5266583935, 1723161256322, 61800.3, 0.006, False, 5266583935, 5266583935, 1723161256322, RECV),
    )


def test_aggtrades_in_binances_and_the_feeds_layouts() -> None:
    ours = AGG.replace(b'"nq":"1.250",', b"")
    feeds = (  # the local feed's layout (ticklens.emulator.session._AGG_FMT): another field order
        b'{"e":"aggTrade","E":1723161256330,"a":2176301,"s":"ETHUSDT","p":"2650.01","q":"1.25",'
        b'"f":4100,"l":4102,"T":1723161256322,"m":true}'
    )
    for raw in (AGG, ours, feeds, b'{"stream":"ethusdt@aggTrade","data":' + AGG + b"}"):
        fast = trade_wire(raw, RECV, DEFAULT_WINDOW_MS)
        assert fast is not None and fast == general(raw)
        assert fast[2][0] == 2176301 and fast[2][5:7] == (4100, 4102)
    for old, new in ((b'"f":4100', b'"f":4103'), (b'"l":4102,', b""), (b'"a":2176301', b'"t":2176301')):
        edited = AGG.replace(old, new)
        assert trade_wire(edited, RECV, DEFAULT_WINDOW_MS) is None
        assert general(edited)[0] == "reject"


def test_the_scan_checks_its_argument() -> None:
    assert _depthwire.scan_trade("not bytes") is None  # type: ignore[arg-type]
    assert _depthwire.scan_trade(b"") is None
    assert _depthwire.scan_trade(RAW[:-30]) is None


REQUIRED = [("E", b"1723161256322"), ("T", b"1723161256311"), ("s", b'"SOLUSDT"'), ("t", b"77"), ("a", b"77"),
            ("f", b"77"), ("l", b"79"), ("p", b'"142.50"'), ("q", b'"3"'), ("m", b"true")]  # fmt: skip
EXTRA = st.sampled_from(
    [
        ("X", b'"MARKET"'),
        ("x", b'"a\\u00e9"'),
        ("n", b"-0.5"),
        ("nq", b'"3"'),
        ("t", b"78"),
        ("p", b'"1e3"'),
        ("p", b'"0.000001"'),
        ("q", b'"0"'),
        ("o", b"[]"),
        ("m", b'"no"'),
        ("T", b"5"),
        ("s", b'"s o l"'),
    ]
)


@settings(max_examples=1500, deadline=None)
@given(
    st.permutations(REQUIRED),
    st.integers(0, len(REQUIRED)),
    st.lists(st.tuples(st.integers(0, 12), EXTRA), max_size=3),
    st.sampled_from([b"trade", b"aggTrade"]),
    st.booleans(),
)
def test_fuzzed_trades_agree_with_the_general_path(
    order: list, drop: int, extra: list, kind: bytes, wrap: bool
) -> None:
    """Binance's fields in any order, one of them dropped or not, with odd or repeated ones put in."""
    body = [f for i, f in enumerate(order) if i != drop]
    for at, f in extra:
        body.insert(min(at, len(body)), f)
    raw = b'{"e":"' + kind + b'"' + b"".join(b',"' + k.encode() + b'":' + v for k, v in body) + b"}"
    if wrap:
        raw = b'{"stream":"x@trade","data":' + raw + b"}"
    fast = trade_wire(raw, RECV, DEFAULT_WINDOW_MS)
    slow = general(raw)
    assert fast is None or fast == slow
    keys = [k for k, _ in body]
    aside = (b"1e3", b"[]", b"s o l")  # what the scan leaves to the general path
    plain = len(keys) == len(set(keys)) and not any(a in raw for a in aside)
    if slow[0] == "trade" and plain:
        assert fast == slow, "a trade the general path takes takes the fast path too"
