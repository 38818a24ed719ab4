"""The best levels kept across depth events (`TopLevels`) equal a plain sorted dict after every event.

Two oracles written here: the recordings replayed through `tests/book_reference.RefBook` (json +
Decimal, nothing of ticklens) against the five levels per side that `LevelSync` records per event;
and random diffs (sweeps of the top, levels re-created, prices in other spellings, sparse and dense
grids) against a {Decimal: Decimal} dict sorted after every event.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from decimal import Decimal

import numpy as np
import pytest
from book_reference import STREAMS, RefBook, raw_lines
from hypothesis import given, settings
from hypothesis import strategies as st

from ticklens.domain.book import BookSnapshot, DepthUpdate, OrderBook
from ticklens.domain.book_top import TopLevels
from ticklens.domain.micro.engine import LEVELS
from ticklens.domain.micro.levels import LevelSync
from ticklens.exchange.binance_book import parse_book_message


def ref_top(side: dict[Decimal, Decimal], bids: bool, n: int) -> list[tuple[Decimal, Decimal]]:
    return [(p, side[p]) for p in (heapq.nlargest if bids else heapq.nsmallest)(n, side)]


@pytest.mark.parametrize("name", ["btc_0808", "eth_0808"])
def test_levels_recorded_per_event_are_the_reference_books_best_five(name: str) -> None:
    symbol, market, paths = STREAMS[name]
    ref = RefBook(spot=False)
    sync = LevelSync(symbol, market)
    expected: dict[int, list[float]] = {}  # final update id -> the reference's 5+5 prices and quantities
    for raw in raw_lines(paths):
        msg = json.loads(raw)
        applied = ref.on_message(msg)
        if "lastUpdateId" in msg or (applied is not None and ref.last_u is not None):
            row = []
            for side, is_bid in ((ref.bids, True), (ref.asks, False)):
                best = ref_top(side, is_bid, LEVELS) + [(None, None)] * LEVELS
                for col in (0, 1):
                    row += [math.nan if lv[col] is None else float(lv[col]) for lv in best[:LEVELS]]
            expected[ref.last_u] = row  # type: ignore[index]
        rec = parse_book_message(raw, 0, market="usdm", snapshot_symbol=symbol)
        if isinstance(rec, BookSnapshot):
            sync.on_snapshot(rec)
        elif isinstance(rec, DepthUpdate):
            sync.on_depth(rec)
    rows = sync.drain_levels()
    assert sync.counters.applied == ref.applied > 2_000
    checked = from_buffer = 0
    for k in range(len(rows.ts_ms)):
        assert rows.seq[k] % 2 == 0  # no gap in these recordings
        if int(rows.seq[k]) // 2 not in expected:  # applied from the buffer at the snapshot: the
            from_buffer += 1  # reference takes those in one go
            continue
        got = np.concatenate([rows.bid_px[k], rows.bid_qty[k], rows.ask_px[k], rows.ask_qty[k]])
        assert np.array_equal(got, expected[int(rows.seq[k]) // 2], equal_nan=True), (name, k)
        checked += 1
    assert checked + from_buffer == ref.applied and from_buffer < 20
    # The point of keeping them: a side is ordered afresh only after a sweep or a snapshot.
    assert sync._tops.fresh < sync.counters.applied / 20, sync._tops.fresh


def _price(rng: random.Random, center: int, spread: int, dec: int) -> str:
    t = center + rng.randint(-spread, spread)
    text = f"{Decimal(t).scaleb(-dec):.{dec}f}"
    if rng.random() < 0.03:
        text += "0"  # another spelling of the same price: the book keys it canonically
    return text


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dense=st.booleans(), keep=st.sampled_from([6, 8, 32]))
def test_top_levels_equal_a_sorted_dict_after_every_random_diff(seed: int, dense: bool, keep: int) -> None:
    rng = random.Random(seed)
    dec, center = 2, 10_000_00  # 10,000.00 in ticks of 0.01
    spread = 40 if dense else 4_000
    bids = sorted({center - rng.randint(1, spread) for _ in range(60)}, reverse=True)
    asks = sorted({center + rng.randint(1, spread) for _ in range(60)})
    fmt = lambda t: f"{Decimal(t).scaleb(-dec):.{dec}f}"  # noqa: E731
    book = OrderBook("x")
    book.load_snapshot(BookSnapshot("x", 1, None, 1, 1, [[fmt(t), "1"] for t in bids], [[fmt(t), "2"] for t in asks]))
    ref = {True: {Decimal(fmt(t)): Decimal(1) for t in bids}, False: {Decimal(fmt(t)): Decimal(2) for t in asks}}
    tops = TopLevels(book, keep=keep)
    n = 5
    for step in range(200):
        events = []
        for _ in range(rng.choice([1, 1, 2])):
            sides: dict[bool, list[list[str]]] = {True: [], False: []}
            for is_bid in (True, False):
                side = ref[is_bid]
                for _ in range(rng.randint(0, 6)):
                    r = rng.random()
                    best = sorted(side, reverse=is_bid)[:8] if side else []
                    if r < 0.35 and best:  # take out one of the best
                        sides[is_bid].append([f"{rng.choice(best):f}", rng.choice(["0", "0.000"])])
                    elif r < 0.55:  # a level inside the spread's side of the book, near the top
                        edge = int(best[0].scaleb(dec)) if best else center
                        t = edge + (rng.randint(-3, 1) if is_bid else rng.randint(-1, 3))
                        if (t < center) if is_bid else (t > center):
                            sides[is_bid].append([fmt(t), str(rng.randint(1, 9))])
                    else:  # anywhere on this side
                        p = _price(rng, center - spread // 2 if is_bid else center + spread // 2, spread // 2, dec)
                        if (
                            (Decimal(p) < Decimal(center).scaleb(-dec))
                            if is_bid
                            else (Decimal(p) > Decimal(center).scaleb(-dec))
                        ):
                            sides[is_bid].append([p, rng.choice(["0", str(rng.randint(1, 9))])])
            for is_bid, levels in sides.items():
                for p, q in levels:
                    if Decimal(q) == 0:
                        ref[is_bid].pop(Decimal(p), None)
                    else:
                        ref[is_bid][Decimal(p)] = Decimal(q)
            book.apply_pairs(sides[True], sides[False])
            tops.note(sides[True], sides[False])
            events.append(sides)
        got_b, got_a = tops.top(n)
        assert [(Decimal(p), Decimal(q)) for p, q in got_b] == ref_top(ref[True], True, n), (seed, step)
        assert [(Decimal(p), Decimal(q)) for p, q in got_a] == ref_top(ref[False], False, n), (seed, step)
        assert (got_b, got_a) == book.top(n)  # and in the book's own spelling of each price


def test_a_reloaded_book_is_ordered_afresh() -> None:
    book = OrderBook("x")
    book.load_snapshot(BookSnapshot("x", 1, None, 1, 1, [["100.0", "1"], ["99.9", "1"]], [["100.1", "1"]]))
    tops = TopLevels(book)
    assert tops.top(2) == ([("100.0", "1"), ("99.9", "1")], [("100.1", "1")])
    book.load_snapshot(BookSnapshot("x", 2, None, 1, 1, [["98.0", "3"]], [["98.5", "4"], ["98.6", "5"]]))
    tops.reset()
    assert tops.top(2) == ([("98.0", "3")], [("98.5", "4"), ("98.6", "5")])
