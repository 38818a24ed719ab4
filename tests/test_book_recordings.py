"""The local book on Binance's own recordings equals bookTicker and an independent plain-dict book.

The reference (tests/book_reference.py) reads the files with gzip/json only and keeps
each side as a plain dict {Decimal price: Decimal qty}; it shares no code with ticklens.
"""

from __future__ import annotations

import functools
import json
import random
from decimal import Decimal

import pytest

from tests.book_reference import STREAMS, UM, RefBook, raw_lines
from ticklens.domain.book import BookSnapshot, BookSync, DepthUpdate, Quote
from ticklens.exchange.binance_book import parse_book_message

pytestmark = pytest.mark.skipif(not UM.is_dir(), reason="recordings in ../shared/data/binance are missing")


def as_decimal(book: dict[str, str]) -> dict[Decimal, Decimal]:
    return {Decimal(p): Decimal(q) for p, q in book.items()}


@functools.cache
def run_both(name: str, checkpoints: int = 100, seed: int = 13):
    """Feed one stream to BookSync and RefBook side by side; compare every level at random events.

    Cached: each stream is run once for all the tests below.
    """
    symbol, market, paths = STREAMS[name]
    lines = raw_lines(paths)
    sync = BookSync(symbol, market)
    ref = RefBook(spot=market == "spot")
    n_depth = sum(1 for raw in lines if b"depthUpdate" in raw)
    rng = random.Random(seed)
    picks = set(rng.sample(range(n_depth), checkpoints)) if checkpoints else set()
    quotes: list[Quote] = []
    at_u: dict[int, tuple] = {}  # applied u -> product best (bid, bid qty, ask, ask qty) as Decimal
    compared = depth_seen = 0
    for raw in lines:
        rec = parse_book_message(raw, 0, market=market, snapshot_symbol=symbol)  # type: ignore[arg-type]
        msg = json.loads(raw)
        ref.on_message(msg)
        if isinstance(rec, Quote):
            quotes.append(rec)
        elif isinstance(rec, BookSnapshot):
            sync.on_snapshot(rec)
        elif isinstance(rec, DepthUpdate):
            sync.on_depth(rec)
            if sync.live:
                b = sync.book
                bid, ask = b.best_bid, b.best_ask
                assert bid is not None and ask is not None
                at_u[b.last_update_id] = (Decimal(bid[0]), Decimal(bid[1]), Decimal(ask[0]), Decimal(ask[1]))
            if depth_seen in picks and sync.live:
                assert sync.book.last_update_id == ref.last_u
                assert as_decimal(sync.book.bids) == ref.bids
                assert as_decimal(sync.book.asks) == ref.asks
                (rb, rbq), (ra, raq) = ref.best()
                assert at_u[ref.last_u] == (rb, rbq, ra, raq)  # type: ignore[index]
                compared += 1
            depth_seen += 1
        else:  # only trades are not book events
            assert rec.reason == "not a book event: 'trade'", rec
    return sync, ref, quotes, at_u, compared


@pytest.mark.parametrize(("name", "expected"), [("btc_0808", 629), ("eth_0808", 551)])
def test_best_bid_ask_equals_book_ticker_wherever_update_ids_meet(name: str, expected: int) -> None:
    sync, ref, quotes, at_u, _ = run_both(name)
    meets = [q for q in quotes if q.update_id in at_u]
    assert len(meets) == expected  # issue 13: 629 BTC, 551 ETH
    for q in meets:
        assert at_u[q.update_id] == (Decimal(q.bid), Decimal(q.bid_qty), Decimal(q.ask), Decimal(q.ask_qty))
    assert sync.counters.applied == ref.applied
    assert sync.counters.gaps == 0 and ref.chain_breaks == 0


def test_the_0808_files_carry_13128_applicable_depth_events() -> None:
    total = 0
    for name in ("btc_0808", "eth_0808"):
        sync, ref, *_ = run_both(name)
        assert sync.counters.applied == ref.applied
        total += sync.counters.applied
    assert total == 13_128


@pytest.mark.parametrize("name", ["btc_0808", "eth_0808", "btc_07", "eth_07"])
def test_book_equals_plain_dict_book_at_random_events_every_level(name: str) -> None:
    sync, ref, quotes, at_u, compared = run_both(name)
    assert compared >= 95  # a few picks fall before the snapshot
    assert sync.counters.gaps == 0
    # the July pair is one stream across the file rotation: bookTicker agrees there too
    meets = [q for q in quotes if q.update_id in at_u]
    assert meets
    assert all(at_u[q.update_id] == tuple(map(Decimal, (q.bid, q.bid_qty, q.ask, q.ask_qty))) for q in meets)


def test_snapshot_line_comes_after_the_event_that_straddles_it() -> None:
    """The recordings' REST snapshot arrives after its straddling event: the buffer must be used."""
    for name, dropped in (("btc_0808", 4), ("eth_0808", 5)):
        symbol, market, paths = STREAMS[name]
        events, snap_at = [], None
        for i, raw in enumerate(raw_lines(paths)):
            msg = json.loads(raw)
            if "lastUpdateId" in msg:
                snap_at, snap_id = i, msg["lastUpdateId"]
                break
            if msg["data"].get("e") == "depthUpdate":
                events.append(msg["data"])
        assert snap_at is not None
        straddling = [e for e in events if e["U"] <= snap_id <= e["u"]]
        assert len(straddling) == 1  # and it is already in the buffer
        sync, *_ = run_both(name)
        assert sync.counters.dropped == dropped
        assert sync.counters.snapshots == 1


@pytest.mark.parametrize("name", ["btc_spot", "eth_spot"])
def test_spot_depth_follows_the_spot_rule_and_stays_consistent(name: str) -> None:
    sync, ref, quotes, at_u, compared = run_both(name)
    assert sync.market == "spot"
    assert ref.chain_breaks == 0 and sync.counters.gaps == 0  # U == previous u + 1 throughout
    assert sync.counters.applied == ref.applied > 6000
    assert compared >= 95
    meets = [q for q in quotes if q.update_id in at_u]
    assert len(meets) > 1000
    assert all(at_u[q.update_id] == tuple(map(Decimal, (q.bid, q.bid_qty, q.ask, q.ask_qty))) for q in meets)
    assert all(q.event_ms is None and q.txn_ms is None for q in quotes)  # spot bookTicker has no times
