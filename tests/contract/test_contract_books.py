"""The store contract for order-book data: quotes, depth updates, book snapshots, book gaps.

Through the port only (`Store.writer()` prepare + write, `Store.reader()`), against values
computed here from the inputs; every write twice, since replays and restarts repeat them.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from store_support import write_batch

from storage.port import QUOTE_OUT_COLUMNS, Store
from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate, Quote, Quotes

T0 = 1_723_161_256_000


def _quotes(symbol: str, n: int, seed: int, first_id: int = 1000) -> list[Quote]:
    rng = random.Random(seed)
    out, uid, t = [], first_id, T0
    for _ in range(n):
        uid += rng.randint(1, 40)
        t += rng.choice([0, 0, 1, 3, 17])  # ties in time happen
        bid = 61000 + rng.randint(-500, 500) / 10
        out.append(
            Quote(symbol, uid, t + 1, t, f"{bid:.1f}", f"{rng.random() * 9:.3f}", f"{bid + 0.1:.1f}", "0.010", t + 900)
        )
    return out


def _depth(symbol: str, n: int, seed: int, first_id: int = 5000, spot: bool = False) -> list[DepthUpdate]:
    rng = random.Random(seed)
    out, last, t = [], first_id, T0
    for _ in range(n):
        lo, hi = last + 1, last + rng.randint(1, 60)
        t += rng.choice([0, 1, 52, 53])
        nb, na = rng.randint(0, 40), rng.randint(0, 40)
        bp = [f"{60000 + rng.randint(0, 9999) / 10:.1f}" for _ in range(nb)]
        ap = [f"{62000 + rng.randint(0, 9999) / 10:.2f}" for _ in range(na)]
        bq = [rng.choice(["0", "0.000", f"{rng.random() * 50:.3f}"]) for _ in range(nb)]
        aq = [rng.choice(["0", f"{rng.random():.8f}"]) for _ in range(na)]
        out.append(DepthUpdate(symbol, lo, hi, None if spot else last, t + 2, t, t + 1300, bp, bq, ap, aq))
        last = hi
    return out


def test_quotes_are_stored_once_by_symbol_and_update_id_and_read_back_in_time_order(store: Store) -> None:
    a = _quotes("btcusdt", 3000, seed=1)
    e = _quotes("ethusdt", 500, seed=2)
    write_batch(store, quotes=[Quotes.from_quotes("btcusdt", a[:2000]), Quotes.from_quotes("ethusdt", e)])
    write_batch(store, quotes=[Quotes.from_quotes("btcusdt", a[1000:])])  # overlap: a replay
    write_batch(store, quotes=[Quotes.from_quotes("btcusdt", a)])
    want = [(q.update_id, q.txn_ms, q.event_ms, q.recv_ms, float(q.bid), float(q.bid_qty), float(q.ask)) for q in a]
    with store.reader() as r:
        got = r.quotes("btcusdt", 100_000)
        streamed = [row for chunk in r.iter_quotes("btcusdt", chunk=777) for row in chunk]
        assert r.has_data("ethusdt") and not r.has_data("solusdt")
        assert "btcusdt" in r.symbols_with_data()
        start, end = a[700].txn_ms, a[2400].txn_ms
        ranged = r.quotes("btcusdt", 100_000, start, end)
        newest = r.quotes("btcusdt", 10, start, end)
    assert len(got) == 3000 and got == streamed
    assert [row[:7] for row in got] == sorted(want, key=lambda w: (w[1], w[0]))
    assert all(row[QUOTE_OUT_COLUMNS.index("source")] == "bookTicker" for row in got)
    inside = sorted((q.txn_ms, q.update_id) for q in a if start <= q.txn_ms < end)
    assert [(row[1], row[0]) for row in ranged] == inside
    assert [(row[1], row[0]) for row in newest] == inside[-10:]  # the newest 10, oldest first


def test_the_quote_in_force_before_each_moment_is_the_last_earlier_one_ties_by_update_id(store: Store) -> None:
    a = _quotes("btcusdt", 3000, seed=5)  # ties in time among them
    write_batch(
        store, quotes=[Quotes.from_quotes("btcusdt", a), Quotes.from_quotes("ethusdt", _quotes("ethusdt", 50, 6))]
    )
    rng = random.Random(9)
    first, last = a[0].txn_ms, a[-1].txn_ms
    moments = [first - 5, first, first + 1, last, last + 1, last + 10**6]
    moments += [q.txn_ms for q in rng.sample(a, 200)] + [rng.randint(first, last) for _ in range(200)]
    with store.reader() as r:
        got = r.quotes_before("btcusdt", moments)
        assert r.quotes_before("btcusdt", []) == [] and r.quotes_before("solusdt", [last + 1]) == [None]
    by_time = sorted(a, key=lambda q: (q.txn_ms, q.update_id))
    for t, row in zip(moments, got, strict=True):
        before = [q for q in by_time if q.txn_ms < t]  # the plain reading: the last strictly earlier
        if not before:
            assert row is None, t
            continue
        q = before[-1]
        assert row is not None and (row[0], row[1], row[4], row[6]) == (
            q.update_id,
            q.txn_ms,
            float(q.bid),
            float(q.ask),
        )


def test_quote_rows_keep_missing_times_and_empty_sides_as_null(store: Store) -> None:
    q = Quotes(
        "btcusdt",
        np.array([5, 6], dtype=np.int64),
        np.array([T0, T0 + 1], dtype=np.int64),
        np.array([-1, T0], dtype=np.int64),
        np.array([T0, T0 + 2], dtype=np.int64),
        np.array([np.nan, 1.5]),
        np.array([np.nan, 2.0]),
        np.array([3.5, np.nan]),
        np.array([1.0, np.nan]),
        "book",
    )
    write_batch(store, quotes=[q])
    with store.reader() as r:
        rows = r.quotes("btcusdt", 10)
    assert rows == [
        (5, T0, None, T0, None, None, 3.5, 1.0, "book"),
        (6, T0 + 1, T0, T0 + 2, 1.5, 2.0, None, None, "book"),
    ]


@pytest.mark.parametrize("spot", [False, True])
def test_depth_updates_round_trip_exactly_once_and_by_id_and_time(store: Store, spot: bool) -> None:
    ups = _depth("btcusdt", 800, seed=3, spot=spot)
    write_batch(store, depth_updates=ups[:500])
    write_batch(store, depth_updates=ups[300:])
    write_batch(store, depth_updates=ups)
    key = ("first_id", "final_id", "prev_final_id", "event_ms", "txn_ms", "recv_ms", "bid_px", "bid_qty", "ask_px")
    lo, hi = ups[100].final_id, ups[650].final_id
    with store.reader() as r:
        got = r.depth_updates("btcusdt", lo, hi)
        allv = [u for chunk in r.iter_depth_updates("btcusdt", chunk=99) for u in chunk]
        start, end = ups[200].txn_ms, ups[400].txn_ms
        in_time = [u for chunk in r.iter_depth_updates("btcusdt", start, end) for u in chunk]
        at = ups[333].txn_ms
        last = r.last_depth_update("btcusdt", at)
        before = r.last_depth_update("btcusdt", ups[0].txn_ms - 1)
    assert [u.final_id for u in got] == [u.final_id for u in ups if lo <= u.final_id <= hi]
    assert len(allv) == 800
    for a, b in zip(allv, ups, strict=True):
        assert [getattr(a, k) for k in key] == [getattr(b, k) for k in key]
        assert a.ask_qty == b.ask_qty and a.symbol == "btcusdt"
    assert [u.final_id for u in in_time] == [u.final_id for u in ups if start <= u.txn_ms < end]
    tie = max((u.txn_ms, u.final_id) for u in ups if u.txn_ms <= at)  # ties in T: the greatest id
    assert last == (tie[1], tie[0])
    assert before is None


def test_book_snapshots_round_trip_and_the_newest_at_or_before_an_id_is_found(store: Store) -> None:
    rest = BookSnapshot(
        "ethusdt",
        1000,
        T0,
        T0 - 5,
        T0 + 1200,
        [["2600.51", "1.000"], ["2600.50", "0.005"]],
        [["2600.52", "3.100"]],
        limit=1000,
    )
    interval = BookSnapshot(
        "ethusdt", 2000, None, T0 + 10_000, T0 + 10_000, [["2601.00", "2"]], [], None, (2590.5, float("inf"))
    )
    later = BookSnapshot("ethusdt", 3000, None, T0 + 20_000, T0 + 20_000, [], [["1.00", "1"]], None, (0.0, 2700.0))
    for _ in range(2):
        write_batch(store, book_snapshots=[rest, interval])
        write_batch(store, book_snapshots=[later, rest])
    with store.reader() as r:
        assert r.book_snapshot_before("ethusdt", 999) is None
        got_rest = r.book_snapshot_before("ethusdt", 1999)
        got_interval = r.book_snapshot_before("ethusdt", 2999)
        got_later = r.book_snapshot_before("ethusdt", 10**12)
        assert r.book_snapshot_before("btcusdt", 10**12) is None
    assert got_rest is not None and got_interval is not None and got_later is not None
    assert (got_rest.last_update_id, got_rest.ts_ms, got_rest.limit, got_rest.complete_range) == (
        1000,
        T0 - 5,
        1000,
        None,
    )
    assert got_rest.bids == rest.bids and got_rest.asks == rest.asks
    assert (got_interval.last_update_id, got_interval.ts_ms, got_interval.complete_range) == (
        2000,
        T0 + 10_000,
        (2590.5, float("inf")),
    )
    assert got_interval.bids == [["2601.00", "2"]] and got_interval.asks == []
    assert got_later.complete_range == (0.0, 2700.0) and got_later.asks == [["1.00", "1"]]


def test_a_book_gap_told_open_and_closed_in_any_order_is_one_closed_row(store: Store) -> None:
    opened = BookGap("btcusdt", 500, T0, "pu_break", detail="pu 7 != previous u 5")
    closed = BookGap("btcusdt", 500, T0, "pu_break", 900, T0 + 4000, "closed", "pu 7 != previous u 5")
    other = BookGap("btcusdt", 1200, T0 + 9000, "reconnect")
    write_batch(store, book_gaps=[opened])
    write_batch(store, book_gaps=[closed, other])
    write_batch(store, book_gaps=[opened])  # a replay tells the open one again: it stays closed
    with store.reader() as r:
        gaps = r.book_gaps("btcusdt")
        early = r.book_gaps("btcusdt", T0 - 1000, T0 + 1)
        late = r.book_gaps("btcusdt", T0 + 5000, T0 + 6000)
        none = r.book_gaps("ethusdt")
    assert [(g.from_update_id, g.to_update_id, g.to_ms, g.status, g.reason) for g in gaps] == [
        (500, 900, T0 + 4000, "closed", "pu_break"),
        (1200, None, None, "open", "reconnect"),
    ]
    assert gaps[0].detail == "pu 7 != previous u 5"
    assert [g.from_update_id for g in early] == [500]
    assert late == [] and none == []
