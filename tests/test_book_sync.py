"""BookSync follows Binance's procedure: broken chains, reconnects, failed or stale snapshots and
crossed books become gaps, and a new snapshot brings back the exact book."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.book_reference import STREAMS, UM, RefBook, raw_lines
from ticklens.domain.book import BookSnapshot, BookSync, DepthUpdate
from ticklens.exchange.binance_book import parse_book_message, parse_depth_snapshot


def as_decimal(book: dict[str, str]) -> dict[Decimal, Decimal]:
    return {Decimal(p): Decimal(q) for p, q in book.items()}


def ev(first: int, final: int, prev: int | None, bids=(), asks=(), t: int = 1_000) -> DepthUpdate:
    return DepthUpdate.from_pairs("x", first, final, prev, t, t, t, [list(b) for b in bids], [list(a) for a in asks])


def snap(last: int, bids, asks, t: int = 1_000, limit: int | None = None) -> BookSnapshot:
    return BookSnapshot("x", last, t, t, t, [list(b) for b in bids], [list(a) for a in asks], limit)


def synced(market: str = "usdm") -> BookSync:
    """A live book: bid 100.00 x1, ask 101.00 x2, last u = 10."""
    s = BookSync("x", market)  # type: ignore[arg-type]
    prev = None if market == "spot" else 5
    s.on_depth(ev(6, 10, prev, bids=[("99.00", "1.000")]))
    assert s.on_snapshot(snap(8 if market == "usdm" else 7, [("100.00", "1.000")], [("101.00", "2.000")])) == "synced"
    return s


@pytest.mark.skipif(not UM.is_dir(), reason="recordings missing")
def test_dropped_event_opens_one_gap_and_a_new_snapshot_restores_the_exact_book() -> None:
    symbol, market, paths = STREAMS["btc_0808"]
    lines = raw_lines(paths)
    sync = BookSync(symbol, market)
    ref = RefBook(spot=False)
    applied = 0
    drop_at, snap_after = 2_000, 2_040  # applied-event positions (of the full stream)
    before_drop = resync_u = None
    resynced = False
    checks = 0
    for raw in lines:
        msg = json.loads(raw)
        done = ref.on_message(msg)  # the reference sees every event: the ground truth
        rec = parse_book_message(raw, 0, market="usdm", snapshot_symbol=symbol)
        if isinstance(rec, BookSnapshot):
            sync.on_snapshot(rec)
        if not isinstance(rec, DepthUpdate):
            continue
        if done is not None:
            applied += 1
        if applied == drop_at and done is not None:
            before_drop = sync.book.last_update_id
            continue  # the product never sees this event
        sync.on_depth(rec)
        if applied == drop_at + 1:
            assert not sync.live and sync.needs_snapshot
            assert sync.open_gap is not None and sync.open_gap.reason == "pu_break"
        if applied == snap_after and not resynced:
            body = ref.snapshot_body(msg["data"])
            snapshot = parse_depth_snapshot(json.dumps(body).encode(), symbol, 0)
            assert isinstance(snapshot, BookSnapshot)
            assert sync.on_snapshot(snapshot) == "synced"
            resynced, resync_u = True, ref.last_u
        if resynced and applied % 500 == 0:
            assert as_decimal(sync.book.bids) == ref.bids
            assert as_decimal(sync.book.asks) == ref.asks
            checks += 1
    assert checks >= 8
    assert as_decimal(sync.book.bids) == ref.bids and as_decimal(sync.book.asks) == ref.asks
    gaps = sync.drain().gaps
    assert [g.status for g in gaps] == ["open", "closed"]  # exactly one gap, opened then closed
    opened, closed = gaps
    assert opened.reason == closed.reason == "pu_break"
    assert opened.from_update_id == closed.from_update_id == before_drop
    assert closed.to_update_id == resync_u  # the snapshot's own event, applied on top of it
    assert sync.counters.gaps == 1 and sync.counters.snapshots == 2


@pytest.mark.skipif(not UM.is_dir(), reason="recordings missing")
def test_a_crossed_book_from_a_forged_level_is_a_gap() -> None:
    symbol, market, paths = STREAMS["eth_0808"]
    sync = BookSync(symbol, market)
    n = 0
    for raw in raw_lines(paths):
        rec = parse_book_message(raw, 0, market="usdm", snapshot_symbol=symbol)
        if isinstance(rec, BookSnapshot):
            sync.on_snapshot(rec)
        elif isinstance(rec, DepthUpdate):
            if sync.live:
                n += 1
                if n == 300:  # a bid one cent above the best ask
                    ask = Decimal(sync.book.best_ask[0])  # type: ignore[index]
                    rec.bid_px.append(f"{ask + Decimal('0.01'):.2f}")
                    rec.bid_qty.append("1.000")
            sync.on_depth(rec)
    gaps = sync.drain().gaps
    assert len(gaps) == 1 and gaps[0].reason == "crossed" and gaps[0].status == "open"
    assert sync.needs_snapshot and not sync.live


def test_locked_book_is_a_gap() -> None:
    s = synced()
    s.on_depth(ev(11, 11, 10, bids=[("101.00", "0.500")]))
    assert s.book.locked and s.book.crossed
    step = s.drain()
    assert [g.reason for g in step.gaps] == ["crossed"]
    assert step.gaps[0].from_update_id == 10  # the last update at which the book was known
    assert s.needs_snapshot


def test_crossed_book_then_resync_closes_the_gap() -> None:
    s = synced()
    s.on_depth(ev(11, 11, 10, bids=[("102.00", "0.500")]))
    assert s.open_gap is not None and s.open_gap.reason == "crossed"
    s.on_depth(ev(12, 14, 11, asks=[("103.00", "1.000")]))
    assert s.on_snapshot(snap(13, [("100.00", "1.000")], [("101.00", "2.000")])) == "synced"
    gaps = s.drain().gaps
    assert [(g.reason, g.status, g.to_update_id) for g in gaps] == [
        ("crossed", "open", None),
        ("crossed", "closed", 14),
    ]
    assert s.book.best_ask == ("101.00", "2.000")
    assert s.book.asks["103.00"] == "1.000"


def test_events_before_the_snapshot_are_dropped_and_the_straddling_one_applied() -> None:
    s = BookSync("x")
    s.on_depth(ev(1, 4, 0, bids=[("1.00", "9.000")]))  # covered by the snapshot: dropped
    s.on_depth(ev(5, 9, 4, bids=[("99.00", "3.000")]))  # straddles lastUpdateId 7
    s.on_depth(ev(10, 12, 9, asks=[("101.00", "0.000")]))
    assert s.needs_snapshot
    assert s.on_snapshot(snap(7, [("100.00", "1.000")], [("101.00", "2.000"), ("102.00", "1.000")])) == "synced"
    assert s.counters.dropped == 1 and s.counters.applied == 2
    assert s.book.best_bid == ("100.00", "1.000") and s.book.best_ask == ("102.00", "1.000")
    assert "1.00" not in s.book.bids and s.book.bids["99.00"] == "3.000"


def test_usdm_first_event_may_end_exactly_at_the_snapshot() -> None:
    """ETH's recording: the straddling event has u == lastUpdateId."""
    s = BookSync("x")
    s.on_depth(ev(5, 7, 4, bids=[("99.00", "3.000")]))
    assert s.on_snapshot(snap(7, [("100.00", "1.000")], [("101.00", "2.000")])) == "synced"
    assert s.counters.applied == 1


def test_snapshot_newer_than_the_buffer_waits_for_its_event() -> None:
    s = BookSync("x")
    s.on_depth(ev(1, 4, 0))
    assert s.on_snapshot(snap(7, [("100.00", "1.000")], [("101.00", "2.000")])) == "waiting"
    assert not s.needs_snapshot and not s.live
    assert s.on_depth(ev(5, 9, 4, bids=[("100.00", "5.000")]))
    assert s.live and s.book.best_bid == ("100.00", "5.000")


def test_snapshot_older_than_the_buffer_is_stale() -> None:
    s = BookSync("x")
    s.on_depth(ev(20, 24, 19))
    assert s.on_snapshot(snap(7, [("100.00", "1.000")], [("101.00", "2.000")])) == "stale"
    assert s.needs_snapshot and s.counters.stale_snapshots == 1
    assert s.on_snapshot(snap(21, [("100.00", "1.000")], [("101.00", "2.000")])) == "synced"


def test_pu_break_buffers_the_breaking_event_for_the_next_snapshot() -> None:
    s = synced()
    assert not s.on_depth(ev(15, 18, 14, bids=[("100.00", "4.000")]))  # pu 14 != 10
    assert s.needs_snapshot
    gap = s.open_gap
    assert gap is not None and gap.reason == "pu_break" and gap.from_update_id == 10
    assert "pu 14 != previous u 10" in gap.detail
    assert s.on_snapshot(snap(16, [("100.00", "1.000")], [("101.00", "2.000")])) == "synced"
    assert s.book.best_bid == ("100.00", "4.000")  # the buffered breaking event, applied on top
    assert s.drain().gaps[-1].to_update_id == 18


def test_reconnect_that_lost_nothing_is_no_gap() -> None:
    s = synced()
    s.on_reconnect()
    assert s.on_depth(ev(11, 12, 10))
    assert s.counters.gaps == 0


def test_reconnect_that_lost_events_is_a_reconnect_gap() -> None:
    s = synced()
    s.on_reconnect()
    assert not s.on_depth(ev(30, 31, 29))
    assert s.open_gap is not None and s.open_gap.reason == "reconnect"


def test_snapshot_failure_records_the_unknown_interval_until_a_snapshot_works() -> None:
    s = BookSync("x")
    s.on_depth(ev(5, 9, 4, t=2_000))
    s.on_snapshot_failure(recv_ms=2_100, detail="HTTP 503")
    s.on_snapshot_failure(recv_ms=2_400, detail="HTTP 503")  # still the same interval
    assert s.needs_snapshot and s.counters.snapshot_failures == 2
    assert s.on_snapshot(snap(7, [("100.00", "1.000")], [("101.00", "2.000")])) == "synced"
    gaps = s.drain().gaps
    assert [(g.reason, g.status) for g in gaps] == [("snapshot_failure", "open"), ("snapshot_failure", "closed")]
    assert gaps[0].from_update_id == 4 and gaps[0].from_ms == 2_000 and gaps[1].to_update_id == 9


def test_repeated_events_are_ignored() -> None:
    s = synced()
    e = ev(11, 12, 10, bids=[("100.00", "2.000")])
    assert s.on_depth(e)
    assert not s.on_depth(e)
    assert s.counters.duplicates == 1 and s.counters.gaps == 0


def test_spot_rule_chains_first_id_to_previous_final_id() -> None:
    s = synced("spot")
    assert s.on_depth(ev(11, 15, None, bids=[("100.00", "3.000")]))
    assert not s.on_depth(ev(17, 18, None))  # U must be 16
    assert s.open_gap is not None and "U-1 16 != previous u 15" in s.open_gap.detail


def test_spot_drops_events_ending_at_the_snapshot() -> None:
    s = BookSync("x", "spot")
    s.on_depth(ev(5, 7, None))  # u == lastUpdateId: spot drops it
    s.on_depth(ev(8, 9, None, asks=[("101.00", "1.500")]))
    assert s.on_snapshot(snap(7, [("100.00", "1.000")], [("101.00", "2.000")])) == "synced"
    assert s.counters.dropped == 1 and s.book.best_ask == ("101.00", "1.500")


def test_usdm_event_without_pu_breaks_the_chain() -> None:
    s = synced()
    s.on_depth(ev(11, 12, None))
    assert s.open_gap is not None and s.open_gap.reason == "pu_break"


def test_buffer_is_bounded() -> None:
    s = BookSync("x", max_buffer=3)
    for i in range(10):
        s.on_depth(ev(i * 2 + 1, i * 2 + 2, i * 2))
    assert s.counters.overflow == 7


def test_drain_gives_the_best_bid_ask_after_each_change_and_top_levels_per_event() -> None:
    s = BookSync("x", top_n=3)
    s.on_depth(ev(5, 9, 4))
    s.on_snapshot(snap(7, [("100.00", "1.000"), ("99.50", "2.000")], [("101.00", "2.000")]))
    s.on_depth(ev(10, 12, 9, bids=[("100.00", "0.000")], asks=[("100.50", "0.250")]))
    step = s.drain()
    assert [u.final_id for u in step.applied] == [9, 12]
    assert len(step.snapshots) == 1
    t = step.tops
    assert t.update_id.tolist() == [9, 12]
    assert t.bid.tolist() == [100.0, 99.5] and t.bid_qty.tolist() == [1.0, 2.0]
    assert t.ask.tolist() == [101.0, 100.5] and t.ask_qty.tolist() == [2.0, 0.25]
    assert t.top_ask is not None and t.top_ask[1].tolist()[:2] == [100.5, 101.0]
    assert t.top_bid is not None and t.top_bid[1].tolist()[1] != t.top_bid[1].tolist()[1]  # NaN pad
    assert len(s.drain().tops) == 0
    s.on_depth(ev(13, 13, 12, bids=[("90.00", "1.000")]))  # far from the top: no new L1 row
    s.on_depth(ev(14, 14, 13, asks=[("100.50", "0.500")]))
    t = s.drain().tops
    assert t.update_id.tolist() == [14] and t.ask_qty.tolist() == [0.5]
