"""OrderBook keeps exact levels and the right best prices under any sequence of diffs.

The property test drives the book and a plain {Decimal: Decimal} dict with the same random
diffs (prices on and off the grid, other numbers of decimals, removals of absent levels)
and compares every level and the best bid/ask after every event.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ticklens.domain.book import PROBES, BookSnapshot, OrderBook


def snap(bids, asks, last: int = 1, limit: int | None = None, complete=None) -> BookSnapshot:
    return BookSnapshot("x", last, None, 5, 5, [list(b) for b in bids], [list(a) for a in asks], limit, complete)


def levels(book: dict[str, str]) -> dict[Decimal, Decimal]:
    return {Decimal(p): Decimal(q) for p, q in book.items()}


def test_prices_in_other_forms_hit_the_same_level() -> None:
    b = OrderBook("x")
    b.load_snapshot(snap([("100.50", "1.000")], [("101.00", "1.000")]))
    b.apply_pairs([["100.5", "2.000"]], [])
    assert b.bids == {"100.50": "2.000"}
    b.apply_pairs([["100.500", "0"]], [])
    assert b.bids == {} and b.best_bid is None
    b.apply_pairs([["100", "1.5"]], [["101.0", "0.000"]])
    assert b.bids == {"100.00": "1.5"} and b.asks == {}


def test_a_finer_price_widens_the_scale_and_keeps_every_level() -> None:
    b = OrderBook("x")
    b.load_snapshot(snap([("100.50", "1"), ("100.40", "2")], [("101.00", "3")]))
    b.apply_pairs([["100.505", "4"]], [["100.995", "5"]])
    assert b.decimals == 3
    assert b.bids == {"100.500": "1", "100.400": "2", "100.505": "4"}
    assert b.best_bid == ("100.505", "4") and b.best_ask == ("100.995", "5")
    assert b.complete_range == (100.4, 101.0)
    b.apply_pairs([], [["100.995", "0"]])
    assert b.best_ask == ("101.000", "3")


def test_a_level_off_the_learned_grid_refines_it() -> None:
    b = OrderBook("x")
    b.load_snapshot(snap([(f"{100 - i / 10:.2f}", "1") for i in range(5)], [("101.00", "1")]))
    assert b.tick_step == 0.1
    b.apply_pairs([["99.95", "7"]], [])
    assert b.tick_step == 0.01
    b.apply_pairs([["100.00", "0"], ["99.90", "0"]], [])
    assert b.best_bid == ("99.95", "7")


def test_next_best_beyond_the_probes_is_found_by_a_scan() -> None:
    b = OrderBook("x")
    far = f"{100 - (PROBES + 5) * 0.01:.2f}"
    b.load_snapshot(snap([("100.00", "1"), ("99.99", "1"), (far, "3")], [("200.00", "1")]))
    b.apply_pairs([["100.00", "0"], ["99.99", "0"]], [])
    assert b.best_bid == (far, "3")
    b.apply_pairs([[far, "0"]], [])
    assert b.best_bid is None and not b.crossed


def test_top_depth_and_ranges() -> None:
    bids = [("100.00", "1"), ("99.90", "2"), ("99.50", "3"), ("90.00", "4")]
    asks = [("100.10", "1.5"), ("100.30", "2.5"), ("120.00", "9")]
    b = OrderBook("x")
    b.load_snapshot(snap(bids, asks, limit=1000))
    top_b, top_a = b.top(3)
    assert top_b == bids[:3] and top_a == asks
    assert b.mid == 100.05
    # 10 bps of 100.05 is [99.95, 100.15]: 1 bid, 1.5 ask; 50 bps: [99.55, 100.55]
    assert b.depth_within_bps(10) == (1.0, 1.5)
    assert b.depth_within_bps(50) == (3.0, 4.0)
    assert b.complete_range == (0.0, float("inf"))  # fewer levels than the limit: whole sides
    b.load_snapshot(snap(bids, asks))
    assert b.complete_range == (90.0, 120.0)
    assert b.is_complete_at("95.5") and not b.is_complete_at("80.00") and not b.is_complete_at("95.555")
    assert b.side_levels("bid") == bids and b.side_levels("ask") == asks


def test_snapshot_of_a_book_loads_back_identically() -> None:
    b = OrderBook("x")
    b.load_snapshot(snap([("100.00", "1"), ("99.00", "2"), ("98.00", "3")], [("101.00", "1"), ("102.00", "2")]))
    b.apply_pairs([["50.00", "5"]], [["150.00", "1"]], update_id=9, ts_ms=77)
    s = b.snapshot()
    assert (s.last_update_id, s.txn_ms) == (9, 77)
    c = OrderBook("x")
    c.load_snapshot(s)
    assert c.bids == b.bids and c.asks == b.asks and c.complete_range == b.complete_range == (98.0, 102.0)
    cut = b.snapshot(limit=2)
    assert cut.bids == [["100.00", "1"], ["99.00", "2"]] and cut.complete_range == (99.0, 102.0)


def test_the_best_removed_and_created_again_in_one_diff_stays_best() -> None:
    b = OrderBook("x")
    b.load_snapshot(snap([("100.00", "1"), ("99.00", "1")], [("101.00", "1"), ("102.00", "1")]))
    b.apply_pairs([["100.00", "0"], ["100.00", "5"]], [["101.00", "0"], ["101.00", "6"]])
    assert b.best_bid == ("100.00", "5") and b.best_ask == ("101.00", "6")


def test_crossed_and_locked() -> None:
    b = OrderBook("x")
    b.load_snapshot(snap([("100.00", "1")], [("101.00", "1")]))
    assert not b.crossed and not b.locked
    b.apply_pairs([["101.00", "1"]], [])
    assert b.locked and b.crossed
    b.apply_pairs([["101.00", "0"], ["102.00", "1"]], [])
    assert b.crossed and not b.locked


# Prices are drawn in integer cents from a small range, written with 1-3 decimals.
price_cents = st.integers(1, 400)
form = st.sampled_from([2, 2, 2, 2, 1, 3])


def text(cents: int, decimals: int) -> str:
    value = Decimal(cents) / 100
    if decimals == 1 and cents % 10:
        decimals = 2
    return f"{value:.{decimals}f}"


qty = st.sampled_from(["0", "0.000", "1.000", "2.500", "0.001", "7"])
diff = st.lists(st.tuples(st.booleans(), price_cents, form, qty), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    bid0=st.lists(
        st.tuples(st.integers(1, 200), st.sampled_from(["1.0", "2.0"])), max_size=15, unique_by=lambda x: x[0]
    ),
    ask0=st.lists(
        st.tuples(st.integers(201, 400), st.sampled_from(["1.0", "3.0"])), max_size=15, unique_by=lambda x: x[0]
    ),
    diffs=st.lists(diff, max_size=25),
)
def test_random_diffs_match_a_plain_dict_book(bid0, ask0, diffs) -> None:
    ref_b = {Decimal(c) / 100: Decimal(q) for c, q in bid0}
    ref_a = {Decimal(c) / 100: Decimal(q) for c, q in ask0}
    b = OrderBook("x")
    b.load_snapshot(
        snap(
            [(text(c, 2), q) for c, q in sorted(bid0, reverse=True)],
            [(text(c, 2), q) for c, q in sorted(ask0)],
        )
    )
    for d in diffs:
        seen: set[tuple[bool, int]] = set()
        bids, asks = [], []
        for is_bid, cents, dec, q in d:
            if (is_bid, cents) in seen:  # one price appears once per side and message
                continue
            seen.add((is_bid, cents))
            (bids if is_bid else asks).append([text(cents, dec), q])
            ref = ref_b if is_bid else ref_a
            if Decimal(q) == 0:
                ref.pop(Decimal(cents) / 100, None)
            else:
                ref[Decimal(cents) / 100] = Decimal(q)
        b.apply_pairs(bids, asks)
        assert levels(b.bids) == ref_b and levels(b.asks) == ref_a
        best_b = None if not ref_b else (max(ref_b), ref_b[max(ref_b)])
        best_a = None if not ref_a else (min(ref_a), ref_a[min(ref_a)])
        got_b = None if b.best_bid is None else tuple(map(Decimal, b.best_bid))
        got_a = None if b.best_ask is None else tuple(map(Decimal, b.best_ask))
        assert got_b == best_b and got_a == best_a
        n = 3
        assert [Decimal(p) for p, _ in b.top(n)[0]] == sorted(ref_b, reverse=True)[:n]
        assert [Decimal(p) for p, _ in b.top(n)[1]] == sorted(ref_a)[:n]
