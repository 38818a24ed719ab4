"""The C fast path of raw bookTicker messages (`_depthwire.scan_quote`): it accepts exactly what the
regex path (`quote_wire_py`) accepts, with the same record, on every recorded quote and on edits
of one; where both stand aside the general path decides."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.book_reference import UM, raw_lines
from ticklens.domain.book import Quote
from ticklens.exchange import _depthwire  # the extension must be built: no skip, no fallback here
from ticklens.exchange.binance_book import parse_book_event, quote_wire, quote_wire_py

RAW = (
    b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107853748,"s":"BTCUSDT",'
    b'"b":"61800.20","B":"2.010","a":"61800.30","A":"0.006","T":1723161256559,"E":1723161256560}}'
)
BARE = RAW[RAW.index(b'{"e"') : -1]


def test_every_recorded_quote_takes_the_fast_path_and_agrees() -> None:
    if not UM.is_dir():
        pytest.skip("recordings missing")
    n = 0
    for path in sorted(UM.glob("*.gz")):
        for raw in raw_lines([path]):
            if b'"bookTicker"' not in raw[:80]:
                continue
            fast = quote_wire(raw, 7)
            assert fast is not None, raw[:200]
            assert fast == quote_wire_py(raw, 7) == parse_book_event(json.loads(raw), 7)
            n += 1
    assert n > 100_000


EDITS = [
    (b"61800.20", b"61800"),  # no fraction: accepted by both
    (b"61800.20", b"0"),  # a zero price: the general path decides
    (b"61800.20", b"061800.20"),
    (b"61800.20", b"61800."),
    (b"61800.20", b"1" * 25),
    (b"61800.20", b"1." + b"0" * 25),
    (b"2.010", b"0.000"),  # a zero quantity is a quote
    (b"5123107853748", b"0"),
    (b"5123107853748", b"9223372036854775807"),
    (b"5123107853748", b"9223372036854775808"),  # beyond int64
    (b"5123107853748", b"05"),
    (b"1723161256559", b"0"),  # T and E are positive
    (b"1723161256560", b"1723161256560.5"),
    (b"BTCUSDT", b"BTC-USDT"),
    (b"BTCUSDT", b"B" * 41),
    (b"BTCUSDT", b""),
    (b'"e":"bookTicker"', b'"e":"bookticker"'),
    (b'"A":"0.006"', b'"A":"0.006","x":1'),
    (b"}}", b"} }"),
    (b"}}", b"}"),
    (b"}}", b"}}\n"),
    (b"btcusdt@bookTicker", b""),
    (b"btcusdt@bookTicker", b"a\\b"),
    (b"btcusdt@bookTicker", b"s" * 81),
]


@pytest.mark.parametrize(("old", "new"), EDITS)
def test_edits_give_the_regex_paths_answer(old: bytes, new: bytes) -> None:
    for raw in (RAW, BARE, BARE + b"}"):
        edited = raw.replace(old, new, 1)
        fast = quote_wire(edited, 7)
        assert fast == quote_wire_py(edited, 7)
        assert fast is None or isinstance(fast, Quote)
    assert quote_wire(RAW, 7) == Quote(
        "btcusdt", 5123107853748, 1723161256560, 1723161256559, "61800.20", "2.010", "61800.30", "0.006", 7
    )
    assert quote_wire(BARE, 7) == quote_wire(RAW, 7)
    assert quote_wire(BARE + b"}", 7) is None  # a closing brace without an envelope


@settings(max_examples=400, deadline=None)
@given(at=st.integers(0, len(RAW)), cut=st.integers(0, 3), data=st.binary(max_size=4), bare=st.booleans())
def test_fuzzed_messages_agree_and_never_crash(at: int, cut: int, data: bytes, bare: bool) -> None:
    raw = BARE if bare else RAW
    edited = raw[:at] + data + raw[at + cut :]
    assert quote_wire(edited, 7) == quote_wire_py(edited, 7)
    assert _depthwire.scan_quote(bytearray(RAW)) is None  # not bytes: the general path
