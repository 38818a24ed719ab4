"""The order book's per-level loop in C (`ticklens/domain/_bookside.c`) leaves the book exactly as
the loop in Python does (`OrderBook._apply_py`): every level, both bests, the learned number
format, after every event of every recording (levels as pairs and as columns) and of random diffs
with levels in other forms. Its reads of the book (the best n levels, a side in order, the
quantity in a band of the grid) equal references written here with Decimal prices."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.book_reference import STREAMS, UM, raw_lines
from ticklens.domain import _bookside  # the extension must be built: no skip, no fallback here
from ticklens.domain.book import BookSnapshot, DepthUpdate, OrderBook
from ticklens.exchange.binance_book import parse_book_message


def state(b: OrderBook) -> tuple[object, ...]:
    return (b.bids, b.asks, b._bb, b._ba, b._dec, b._step, b._grid, b._complete)


def both(snapshot: BookSnapshot) -> tuple[OrderBook, OrderBook]:
    c, py = OrderBook("x"), OrderBook("x")
    c.load_snapshot(snapshot)
    py.load_snapshot(snapshot)
    return c, py


def apply_both(c: OrderBook, py: OrderBook, bids: list, asks: list) -> None:
    c.apply_levels([list(x) for x in bids], [list(x) for x in asks])  # lists: the C loop
    py._apply_py([list(x) for x in bids], [list(x) for x in asks])
    assert state(c) == state(py)


def ordered(side: dict[str, str], best_first_high: bool) -> list[list[str]]:
    """A side's levels best first, ordered by Decimal value (the reference for the C sort)."""
    return [[k, side[k]] for k in sorted(side, key=Decimal, reverse=best_first_high)]


def band_reference(side: dict[str, str], start: int, stop: int, step: int, dec: int) -> float:
    """float(qty) summed over the levels whose price in ticks is in range(start, stop, step), in the
    walk's order (float sums depend on it)."""
    ticks = {int(Decimal(k).scaleb(dec)): q for k, q in side.items()}
    total = 0.0
    for t in range(start, stop, step):
        if t in ticks:
            total += float(ticks[t])
    return total


def check_reads(b: OrderBook) -> None:
    for is_bid, side in ((True, b.bids), (False, b.asks)):
        want = ordered(side, is_bid)
        assert b._levels(is_bid) == want  # the C sort
        for n in (1, 5, 20):
            assert [list(x) for x in b._top(is_bid, n)] == want[:n] == [list(x) for x in b._top_py(is_bid, n)]
            px, qty = b.top_floats(n)[0:2] if is_bid else b.top_floats(n)[2:4]
            assert (px, qty) == ([float(p) for p, _ in want[:n]], [float(q) for _, q in want[:n]])
        best = b._bb if is_bid else b._ba
        if best is not None:
            t, d = b._tick(best), b._dec
            direction = -1 if is_bid else 1
            stop = t + direction * 600 * b._step
            got = _bookside.band(side, t, stop, direction * b._step, d)
            assert got == band_reference(side, t, stop, direction * b._step, d)


@pytest.mark.skipif(not UM.is_dir(), reason="recordings missing")
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_recorded_event_leaves_the_same_book(name: str) -> None:
    symbol, market, paths = STREAMS[name]
    books: tuple[OrderBook, OrderBook] | None = None
    cols = OrderBook("x")
    applied = 0
    for raw in raw_lines(paths):
        rec = parse_book_message(raw, 0, market=market, snapshot_symbol=symbol)  # type: ignore[arg-type]
        if isinstance(rec, BookSnapshot):
            books = both(rec)
            cols = OrderBook("x")
            cols.load_snapshot(rec)
        elif isinstance(rec, DepthUpdate) and books is not None:
            apply_both(*books, rec.bids, rec.asks)
            cols.apply(rec.bid_px[:], rec.bid_qty[:], rec.ask_px[:], rec.ask_qty[:])  # columns: the C loop
            assert state(cols) == state(books[1])
            applied += 1
            if applied % 250 == 0:
                check_reads(cols)
    assert applied > 1_000


# Prices in integer cents, written with 1-3 decimals (other forms of one price, finer scales) or
# off the learned grid; quantities zero in several spellings; some levels as tuples.
cents = st.integers(1, 400)
quantity = st.sampled_from(["0", "0.000", "0.0", "1.000", "2.500", "0.001", "7", "00", "0.0000000000"])


def price(c: int, dec: int, step: int) -> str:
    c = c * step
    return f"{c // 100}.{c % 100:02d}" if dec == 2 else f"{c / 100:.{dec}f}"


level = st.tuples(cents, st.sampled_from([2, 2, 2, 2, 1, 3]), st.sampled_from([1, 1, 1, 10]), quantity, st.booleans())
diff = st.tuples(st.lists(level, max_size=12), st.lists(level, max_size=12))


@settings(max_examples=400, deadline=None)
@given(
    bid0=st.lists(st.integers(1, 200), max_size=15, unique=True),
    ask0=st.lists(st.integers(201, 400), max_size=15, unique=True),
    step=st.sampled_from([1, 10]),
    diffs=st.lists(diff, max_size=25),
)
def test_random_diffs_leave_the_same_book(bid0: list[int], ask0: list[int], step: int, diffs: list) -> None:
    snap = BookSnapshot(
        "x",
        1,
        None,
        5,
        5,
        [[price(c, 2, step), "1.0"] for c in sorted(bid0, reverse=True)],
        [[price(c, 2, step), "2.0"] for c in sorted(ask0)],
        None,
    )
    c_book, py_book = both(snap)
    cols_book = OrderBook("x")
    cols_book.load_snapshot(snap)
    for bids, asks in diffs:
        sides = []
        for side in (bids, asks):
            seen: set[int] = set()
            out: list = []
            for c, dec, grid, q, as_tuple in side:
                if c * grid in seen:  # one price appears once per side and message
                    continue
                seen.add(c * grid)
                lv = (price(c, dec, grid), q)
                out.append(lv if as_tuple else list(lv))
            sides.append(out)
        c_book.apply_levels(*sides)  # tuple levels inside the lists go through `_odd`
        py_book._apply_py(*([list(x) for x in s] for s in sides))
        assert state(c_book) == state(py_book)
        cols_book.apply(*([lv[i] for lv in s] for s in sides for i in (0, 1)))
        assert state(cols_book) == state(py_book)
        check_reads(py_book)


def test_levels_in_other_containers_take_the_python_loop() -> None:
    c, py = both(BookSnapshot("x", 1, None, 5, 5, [["10.00", "1.0"]], [["11.00", "1.0"]], None))
    c.apply_levels(iter([("10.50", "2.0")]), (("10.90", "1.0"),))  # not lists: the loop in Python
    py._apply_py([["10.50", "2.0"]], [["10.90", "1.0"]])
    assert state(c) == state(py) and c.best_bid == ("10.50", "2.0") and c.best_ask == ("10.90", "1.0")
    apply_both(c, py, [["10.50", "0"], ["10.5", "3.0"], ["10.505", "1"]], [["10.90", "0.000"]])
    assert c.best_bid == ("10.505", "1") and c.best_ask == ("11.000", "1.0")


def test_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        _bookside.apply({}, [], 0, None, False, True, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _bookside.apply([], [], 0, None, False, True, 2, "")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _bookside.apply({}, (), 0, None, False, True, 2, "")  # type: ignore[arg-type]
    assert _bookside.apply({}, [], 0, None, False, True, 2, "") == (None, False, 0, 0)
    with pytest.raises(TypeError):  # columns of different lengths
        _bookside.apply_cols({}, ["1.00"], [], 0, None, False, True, 2, "")
    with pytest.raises(ValueError):  # the same through the book: zip(strict=True) says so
        OrderBook("x").apply(["1.00"], [], [], [])
    assert _bookside.top({"1.00": "1"}, "2.00", -1, 5, 256, 2) is None  # not the side's best: Python decides
    assert _bookside.band({"1.00": "x"}, 100, 99, -1, 2) is None  # not a decimal: Python decides
    assert _bookside.levels({1: "1"}, True) is None
