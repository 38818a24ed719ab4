"""Microstructure bars: worked cases by hand, Binance's recordings against an independent
reference (tests/micro_reference.py, no ticklens code), and arrival order / batching that never
change what is stored."""

from __future__ import annotations

import functools
import math
import random
from bisect import bisect_right
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.book_reference import STREAMS, UM
from tests.micro_feed import parse, run
from tests.micro_reference import expected_bars, load
from ticklens.domain.book import BookSnapshot, DepthUpdate, Quote, Quotes
from ticklens.domain.micro import MICRO_COLUMNS, MicroBook, MicroParams
from ticklens.domain.micro.formulas import ofi_terms
from ticklens.domain.micro.levels import LevelSync
from ticklens.domain.records import Trades

TF = {"1s": 1_000, "1m": 60_000}
HORIZON = 5_000
WINDOW = 30
VPIN_SIZE, VPIN_N = Decimal(5), 10  # BTC; ETH trades ~20x the base volume
T0 = 1_700_000_000_000  # a whole minute

recordings = pytest.mark.skipif(not UM.is_dir(), reason="recordings in ../shared/data/binance are missing")


def params(**kw: object) -> MicroParams:
    base: dict[str, object] = {"timeframes": TF, "horizon_ms": HORIZON, "window": WINDOW, "vpin_buckets": VPIN_N}
    base.update(kw)
    return MicroParams(**base)  # type: ignore[arg-type]


def quotes(rows: list[tuple[int, float, float, float, float]], symbol: str = "x", first_id: int = 1) -> Quotes:
    """(ts, bid, bid qty, ask, ask qty) rows as a bookTicker batch."""
    qs = [
        Quote(symbol, first_id + i, t, t, repr(b), repr(bq), repr(a), repr(aq), t)
        for i, (t, b, bq, a, aq) in enumerate(rows)
    ]
    return Quotes.from_quotes(symbol, qs)


def trades(rows: list[tuple[int, float, float, bool]], symbol: str = "x", first_id: int = 1) -> Trades:
    """(ts, price, qty, buyer is maker) rows."""
    cols = list(zip(*rows, strict=True))
    ids = list(range(first_id, first_id + len(rows)))
    return Trades.from_columns(symbol, trade_id=ids, ts_ms=cols[0], price=cols[1], qty=cols[2], is_buyer_maker=cols[3])


def finish(book: MicroBook) -> dict[tuple[str, int], object]:
    out = book.advance(clock_ms=2**50)
    return {(b.timeframe, b.start_ms): b for b in out.bars}


# --- the formulas, by hand -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        # (bid, bid qty, ask, ask qty): Cont, Kukanov & Stoikov's cases one side at a time
        ((100, 2, 101, 3), (100.5, 1, 101, 3), 1),  # bid up: the new bid queue arrived
        ((100, 2, 101, 3), (99.5, 4, 101, 3), -2),  # bid down: the old bid queue left
        ((100, 2, 101, 3), (100, 5, 101, 3), 3),  # bid unchanged, size up: the size change
        ((100, 2, 101, 3), (100, 1, 101, 3), -1),  # bid unchanged, size down
        ((100, 2, 101, 3), (100, 2, 100.5, 4), -4),  # ask down: new ask queue (selling pressure)
        ((100, 2, 101, 3), (100, 2, 101.5, 1), 3),  # ask up: the old ask queue was taken
        ((100, 2, 101, 3), (100, 2, 101, 7), -4),  # ask unchanged, size up
        ((100, 2, 101, 3), (100, 2, 101, 3), 0),  # nothing changed
        ((100, 2, 101, 3), (100.5, 1, 101.5, 6), 1 + 3),  # both move up
    ],
)
def test_ofi_matches_the_worked_cases(before: tuple, after: tuple, expected: float) -> None:
    args = [np.array([float(v)]) for v in (*before, *after)]
    assert ofi_terms(*args)[0] == expected
    book = MicroBook("x", params(timeframes={"1s": 1_000}))
    book.add_quotes(quotes([(T0 + 100, *before), (T0 + 600, *after)]))
    bars = finish(book)
    assert bars[("1s", T0)].ofi == expected  # type: ignore[attr-defined]


def test_ofi_of_an_undefined_side_is_zero_not_nan() -> None:
    nan = float("nan")
    e = ofi_terms(*(np.array([v]) for v in (100.0, 2.0, nan, nan, 100.5, 1.0, 101.0, 3.0)))
    assert e[0] == 1.0


def test_time_weights_carry_the_state_in_from_the_bucket_start() -> None:
    book = MicroBook("x", params(timeframes={"1s": 1_000}))
    # spread 1 from 0.5 s of the first second, then spread 3 from 1.3 s
    book.add_quotes(quotes([(T0 + 500, 100.0, 1.0, 101.0, 3.0), (T0 + 1_300, 99.0, 3.0, 102.0, 1.0)]))
    bars = finish(book)
    first, second = bars[("1s", T0)], bars[("1s", T0 + 1_000)]
    s1, s2 = 1e4 * 1 / 100.5, 1e4 * 3 / 100.5
    assert first.spread_bps_twa == pytest.approx(s1, rel=1e-12)  # only the defined 500 ms count
    assert second.spread_bps_twa == pytest.approx((300 * s1 + 700 * s2) / 1000, rel=1e-12)
    assert second.imbalance_l1_twa == pytest.approx((300 * -0.5 + 700 * 0.5) / 1000, rel=1e-12)
    assert second.spread_bps_max == pytest.approx(s2)
    assert (second.mid_open, second.mid_high, second.mid_low, second.mid_close) == (100.5, 100.5, 100.5, 100.5)
    assert second.microprice_close == pytest.approx((99 * 1 + 102 * 3) / 4)
    assert (first.quote_updates, second.quote_updates) == (1, 1)


def test_undefined_values_are_null() -> None:
    book = MicroBook("x", params(timeframes={"1s": 1_000}))
    book.add_trades(trades([(T0 + 10, 100.0, 2.0, False), (T0 + 20, 100.0, 1.0, True)]))  # before any quote
    book.add_quotes(quotes([(T0 + 1_500, 99.0, 1.0, 101.0, 1.0)]))
    bars = finish(book)
    first = bars[("1s", T0)]
    for name in ("mid_open", "mid_close", "spread_bps_twa", "ofi", "ofi_l5", "eff_spread_bps", "realized_spread_bps"):
        assert getattr(first, name) is None, name
    assert first.signed_volume == 1.0 and first.trade_imbalance == pytest.approx(1 / 3)
    assert first.depth_bid_10bps is None and first.vpin is None and first.kyle_lambda is None
    second = bars[("1s", T0 + 1_000)]
    assert second.trades == 0 and second.signed_volume is None and second.trade_imbalance is None
    assert second.mid_close == 100.0 and second.ofi == 0.0  # one state, no transition


def test_trades_are_measured_against_the_prevailing_quote() -> None:
    book = MicroBook("x", params(timeframes={"1s": 1_000}, horizon_ms=1_000))
    book.add_quotes(
        quotes([(T0, 99.0, 1.0, 101.0, 1.0), (T0 + 400, 100.0, 1.0, 102.0, 1.0), (T0 + 1_400, 103.0, 1.0, 105.0, 1.0)])
    )
    # a buy at 101 at 0.4 s meets the quote of that very ms (mid 101); a sell at 99 at 0.1 s meets mid 100
    book.add_trades(trades([(T0 + 100, 99.0, 1.0, True), (T0 + 400, 101.0, 3.0, False)]))
    bar = finish(book)[("1s", T0)]
    eff = (1 * 2 * -1 * (99 - 100) / 100 + 3 * 2 * 1 * (101 - 101) / 101) * 1e4 / 4
    assert bar.eff_spread_bps == pytest.approx(eff, rel=1e-12)
    # one second later: the sell meets mid 101 (0.4 s), the buy mid 104 (1.4 s)
    real = (1 * 2 * -1 * (99 - 101) / 100 + 3 * 2 * (101 - 104) / 101) * 1e4 / 4
    imp = (1 * 2 * -1 * (101 - 100) / 100 + 3 * 2 * (104 - 101) / 101) * 1e4 / 4
    assert bar.realized_spread_bps == pytest.approx(real, rel=1e-12)
    assert bar.price_impact_bps == pytest.approx(imp, rel=1e-12)
    assert bar.realized_spread_bps + bar.price_impact_bps == pytest.approx(bar.eff_spread_bps)  # type: ignore[operator]


def test_vpin_buckets_split_a_trade_that_overflows() -> None:
    book = MicroBook("x", params(timeframes={"1s": 1_000}, vpin_bucket=2.0, vpin_buckets=2))
    book.add_trades(trades([(T0 + 1, 100.0, 1.5, False), (T0 + 2, 100.0, 1.5, True), (T0 + 3, 100.0, 2.0, True)]))
    out = book.advance(clock_ms=T0 + 10_000)
    got = [(v.bucket, v.end_ms, v.buy_volume, v.sell_volume, v.vpin) for v in out.vpin]
    # bucket 0: 1.5 buy + 0.5 sell; bucket 1: 1.0 sell (rest of trade 2) + 1.0 sell; 1.0 sell left open
    assert got == [(0, T0 + 2, 1.5, 0.5, None), (1, T0 + 3, 0.0, 2.0, (0.5 + 1.0) / 2)]
    assert out.bars[-1].vpin == 0.75 and out.bars[-1].vpin_buckets == 2


def _depth(symbol: str, u: int, pu: int, t: int, bids: list, asks: list) -> DepthUpdate:
    return DepthUpdate.from_pairs(symbol, u, u, pu, t, t, t, bids, asks)


def test_book_levels_give_multi_level_ofi_and_depth_inside_the_snapshot_range() -> None:
    sync = LevelSync("x", "usdm")
    snap = BookSnapshot(
        "x", 10, T0, T0, T0, [["100.0", "1"], ["99.9", "2"], ["99.0", "4"]], [["100.1", "1"], ["100.2", "3"]], limit=3
    )
    sync.on_depth(_depth("x", 10, 9, T0 + 100, [], []))
    sync.on_snapshot(snap)
    sync.on_depth(_depth("x", 11, 10, T0 + 300, [["99.9", "5"]], [["100.1", "0"]]))  # level 2 bid grows, best ask goes
    book = MicroBook("x", params(timeframes={"1s": 1_000}))
    book.add_levels(sync.drain_levels())
    # a break in the chain: the book is unknown from 2.5 s
    sync.on_depth(_depth("x", 13, 12, T0 + 2_500, [["99.8", "1"]], []))
    book.add_levels(sync.drain_levels())
    bars = finish(book)
    first = bars[("1s", T0)]
    # level 1 bid 100.0/1 unchanged (0), level 2 bid 99.9: 2 -> 5 (+3), level 3 bid 99.0/4 (0);
    # asks: level 1 100.1/1 -> 100.2/3 (price up: +1), level 2 100.2/3 -> none (0)
    assert first.ofi_l5 == 3 + 1
    mid = (100.0 + 100.2) / 2  # 10 bps band [100.0, 100.2]: bids 100.0, asks 100.2 (the bids' snapshot end is 99.0)
    assert mid * 0.999 >= 99.0
    # the ask side of the snapshot ends at 100.2 (3 levels asked for, 2 given: complete to infinity)
    assert (first.depth_bid_10bps, first.depth_ask_10bps) == (1.0, 3.0)
    assert first.imbalance_depth_10bps == pytest.approx(-0.5)
    second = bars.get(("1s", T0 + 1_000))
    assert second is None  # nothing happened in that second: no bar
    third = bars[("1s", T0 + 2_000)]
    assert third.depth_updates == 1 and third.depth_bid_10bps is None and third.ofi_l5 == 0.0


def test_depth_outside_the_snapshot_range_is_null() -> None:
    sync = LevelSync("x", "usdm")
    # limit 2 with 2 levels given: the bids are complete only down to 99.99, inside the 10 bps band
    snap = BookSnapshot(
        "x", 10, T0, T0, T0, [["100.00", "1"], ["99.99", "2"]], [["100.01", "1"], ["100.02", "1"]], limit=2
    )
    sync.on_depth(_depth("x", 10, 9, T0 + 100, [], []))
    sync.on_snapshot(snap)
    book = MicroBook("x", params(timeframes={"1s": 1_000}))
    book.add_levels(sync.drain_levels())
    bar = finish(book)[("1s", T0)]
    assert bar.depth_bid_10bps is None and bar.depth_ask_10bps is None and bar.ofi_l5 == 0.0


# --- Binance's recordings against the reference ------------------------------------------------------


@functools.cache
def recording(name: str):
    symbol, _, paths = STREAMS[name]
    rec = load(symbol, paths)
    return rec, parse(rec)


@functools.cache
def reference(name: str, tf: str) -> dict[int, dict[str, object]]:
    rec, _ = recording(name)
    size = VPIN_SIZE if name.startswith("btc") else VPIN_SIZE * 20
    return expected_bars(rec, TF[tf], HORIZON, WINDOW, size, VPIN_N)


def product(name: str, cuts: list[int] | None = None):
    rec, records = recording(name)
    size = float(VPIN_SIZE if name.startswith("btc") else VPIN_SIZE * 20)
    if cuts is None:
        cuts = list(range(0, len(records), 400))
    return run(rec.symbol, records, params(vpin_bucket=size), cuts)


def close(got: object, want: object) -> bool:
    if got is None or want is None:
        return got is want
    assert isinstance(got, (int, float)) and isinstance(want, (int, float))
    # 1e-9 relative; a value that cancels to ~0 (OFI-free regressions, flat imbalance) is
    # compared against the scale of its terms instead
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)


@recordings
@pytest.mark.parametrize("name", ["btc_0808", "eth_0808"])
def test_every_column_equals_the_reference_on_the_recordings(name: str) -> None:
    final, _, _ = product(name)
    for tf in TF:
        want = reference(name, tf)
        got = {s: b for (t, s), b in final.items() if t == tf}
        assert sorted(got) == sorted(want)
        assert len(want) >= (300 if tf == "1s" else 6)
        defined = dict.fromkeys(MICRO_COLUMNS[3:-2], 0)
        for start, row in want.items():
            bar = got[start]
            assert bar.complete == 1 and bar.revision == 0
            for col, value in row.items():
                assert close(getattr(bar, col), value), (tf, start, col, getattr(bar, col), value)
                defined[col] += value is not None
        # every column is exercised, not only NULL on both sides
        assert all(defined[c] for c in defined if tf == "1s" or c not in ("kyle_lambda", "kyle_t")), defined


@recordings
def test_vpin_buckets_equal_the_reference() -> None:
    rec, _ = recording("btc_0808")
    _, _, vpin = product("btc_0808")
    trades_sorted = sorted(rec.trades, key=lambda r: (r[0], r[1]))
    want: list[tuple[int, float, float, float | None]] = []
    b = s = Decimal(0)
    imbs: list[float] = []
    for t, _, _, qty, maker in trades_sorted:
        while qty > 0:
            take = min(qty, VPIN_SIZE - b - s)
            b, s, qty = (b, s + take, qty - take) if maker else (b + take, s, qty - take)
            if b + s == VPIN_SIZE:
                imbs.append(float(abs(b - s) / VPIN_SIZE))
                last = imbs[-VPIN_N:]
                want.append((t, float(b), float(s), sum(last) / VPIN_N if len(last) == VPIN_N else None))
                b = s = Decimal(0)
    got = [(v.end_ms, v.buy_volume, v.sell_volume, v.vpin) for _, v in sorted(vpin.items())]
    assert len(want) > 100 and sorted(vpin) == list(range(len(want)))
    for g, w in zip(got, want, strict=True):
        assert g[:3] == w[:3] and close(g[3], w[3])


@recordings
def test_realized_spread_never_uses_a_mid_from_after_it_was_written() -> None:
    rec, records = recording("btc_0808")
    p = params(vpin_bucket=5.0)
    book = MicroBook(rec.symbol, p)
    sync = LevelSync(rec.symbol, "usdm")
    q = sorted(rec.quotes)
    q_ts = [x[0] for x in q]
    tr = sorted(rec.trades)
    tr_ts = [x[0] for x in tr]
    written = 0
    rng = random.Random(5)
    for a in range(0, len(records), 300):
        batch = records[a : a + 300]
        qs = [r for r in batch if isinstance(r, Quote)]
        ts = [r for r in batch if isinstance(r, tuple)]
        for r in batch:
            if isinstance(r, BookSnapshot):
                sync.on_snapshot(r)
            elif isinstance(r, DepthUpdate):
                sync.on_depth(r)
        if qs:
            book.add_quotes(Quotes.from_quotes(rec.symbol, qs))
        if ts:
            c = list(zip(*ts, strict=True))
            book.add_trades(
                Trades.from_columns(rec.symbol, trade_id=c[0], ts_ms=c[1], price=c[2], qty=c[3], is_buyer_maker=c[4])
            )
        book.add_levels(sync.drain_levels())
        out = book.advance()
        wm = book.watermark
        for bar in out.bars:
            end = bar.start_ms + TF[bar.timeframe]
            if bar.realized_spread_bps is None:
                assert bar.complete == 0 or bar.trades == 0
                continue
            assert end + HORIZON <= wm
            if bar.timeframe != "1s" or rng.random() > 0.2:
                continue
            # the same value from only the quotes known up to the watermark at the moment it was written
            n_known = bisect_right(q_ts, wm)
            known, kts = q[:n_known], q_ts[:n_known]
            num = den = 0.0
            for t, _, price, qty, maker in tr[bisect_right(tr_ts, bar.start_ms - 1) : bisect_right(tr_ts, end - 1)]:
                i, j = bisect_right(kts, t) - 1, bisect_right(kts, t + HORIZON) - 1
                if i < 0:
                    continue  # before the first quote: no prevailing mid
                m, mh = (known[i][2] + known[i][4]) / 2, (known[j][2] + known[j][4]) / 2
                d = -1.0 if maker else 1.0
                num += float(qty) * 2 * d * (price - mh) / m * 1e4
                den += float(qty)
            assert close(bar.realized_spread_bps, num / den)
            written += 1
    assert written > 20


# --- arrival order and batching ----------------------------------------------------------------------


def _rows(final: dict) -> dict:
    return {k: b.row() for k, b in final.items()}


@recordings
@settings(max_examples=6, deadline=None)
@given(st.lists(st.integers(0, 12_000), max_size=60))
def test_any_split_into_batches_gives_the_same_bars(cuts: list[int]) -> None:
    rec, records = recording("eth_0808")
    part = records[:12_000]
    one, _, v1 = run(rec.symbol, part, params(vpin_bucket=100.0), [])
    many, _, v2 = run(rec.symbol, part, params(vpin_bucket=100.0), cuts)
    assert _rows(one) == _rows(many)
    assert v1 == v2


@st.composite
def synthetic(draw: st.DrawFn) -> tuple[list[tuple], list[int]]:
    """Quotes and trades in event order, then arrival shuffled within 1.5 s (lateness is 2 s)."""
    n = draw(st.integers(5, 80))
    t = T0
    events: list[tuple] = []
    price = 100.0
    for i in range(n):
        t += draw(st.integers(0, 700))
        if draw(st.booleans()):
            price += draw(st.sampled_from([-0.5, 0.0, 0.5]))
            events.append(("q", t, i, price - 0.5, draw(st.integers(1, 9)), price + 0.5, draw(st.integers(1, 9))))
        else:
            events.append(
                (
                    "t",
                    t,
                    i,
                    price + draw(st.sampled_from([-0.5, 0.5])),
                    draw(st.integers(1, 5)) / 4,
                    draw(st.booleans()),
                )
            )
    jitter = [e[1] + draw(st.integers(0, 1_500)) for e in events]
    order = sorted(range(n), key=lambda i: jitter[i])
    cuts = draw(st.lists(st.integers(0, n), max_size=10))
    return [events[i] for i in order], cuts


def _feed(events: list[tuple], cuts: list[int], p: MicroParams) -> dict:
    book = MicroBook("x", p)
    final: dict = {}
    bounds = [0, *sorted(set(cuts)), len(events)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        qs = [e for e in events[a:b] if e[0] == "q"]
        ts = [e for e in events[a:b] if e[0] == "t"]
        if qs:
            book.add_quotes(
                Quotes.from_quotes(
                    "x", [Quote("x", e[2], e[1], e[1], repr(e[3]), str(e[4]), repr(e[5]), str(e[6]), 0) for e in qs]
                )
            )
        if ts:
            book.add_trades(
                Trades.from_columns(
                    "x",
                    trade_id=[e[2] for e in ts],
                    ts_ms=[e[1] for e in ts],
                    price=[e[3] for e in ts],
                    qty=[e[4] for e in ts],
                    is_buyer_maker=[e[5] for e in ts],
                )
            )
        final.update(((x.timeframe, x.start_ms), x) for x in book.advance().bars)
    final.update(((x.timeframe, x.start_ms), x) for x in book.advance(clock_ms=2**50).bars)
    return final


@settings(max_examples=40, deadline=None)
@given(synthetic())
def test_shuffled_arrival_within_the_lateness_gives_identical_rows(case: tuple[list[tuple], list[int]]) -> None:
    events, cuts = case
    p = params(vpin_bucket=1.0, vpin_buckets=3, window=5, horizon_ms=1_000)
    in_order = sorted(events, key=lambda e: (e[1], e[2]))
    want = _feed(in_order, [], p)
    got = _feed(events, cuts, p)
    assert _rows(got) == _rows(want)
    assert all(b.revision == 0 for b in got.values())


@settings(max_examples=30, deadline=None)
@given(synthetic(), st.integers(0, 10**6))
def test_late_events_revise_rows_to_the_in_order_result(case: tuple[list[tuple], list[int]], seed: int) -> None:
    events, _ = case
    p = params(vpin_bucket=1.0, vpin_buckets=3, window=5, horizon_ms=1_000, lateness_ms=0, keep_ms=600_000)
    in_order = sorted(events, key=lambda e: (e[1], e[2]))
    want = _feed(in_order, [], p)
    shuffled = list(in_order)
    random.Random(seed).shuffle(shuffled)
    got = _feed(shuffled, list(range(len(shuffled))), p)  # one event per batch: every reordering is late
    strip = lambda rows: {k: r[:-1] for k, r in _rows(rows).items()}  # noqa: E731  (revision differs)
    assert strip(got) == strip(want)


def test_events_older_than_keep_are_counted_not_placed() -> None:
    book = MicroBook("x", params(timeframes={"1s": 1_000}, keep_ms=5_000, lateness_ms=0))
    book.add_quotes(quotes([(T0 + 60_000, 99.0, 1.0, 101.0, 1.0)]))
    book.advance()
    book.add_quotes(quotes([(T0 + 100, 99.0, 1.0, 101.0, 1.0)], first_id=50))
    out = book.advance()
    assert out.too_late == 1 and book.too_late == 1 and out.bars == []
