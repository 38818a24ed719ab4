"""The store contract: what every backend must do, checked through the port only.

Each test writes through `Store.writer()` (prepare + write, as the flow's sink
does), reads through `Store.reader()` / `Store.rules()`, and compares with
values computed here from the inputs (polars / plain Python), never with the
backend's own output.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest
from reference import ohlc
from store_support import write_batch

from storage.port import (
    BAR_OUT_COLUMNS,
    TICK_COLUMNS,
    Span,
    Store,
    StoreBatch,
    StoreHealth,
    StoreUnavailable,
    TickCountMismatch,
)
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.alerts.rules import rule_from_payload
from ticklens.domain.bars import Bar, aggregate
from ticklens.domain.records import GapEvent, Rejected, Trades
from ticklens.domain.stats.correlation import CorrOut
from ticklens.domain.stats.pair import PairOut, PairRow
from ticklens.domain.stats.symbol import SymbolRow, SymbolStatsOut
from ticklens.domain.upload import UploadedBar

T0 = 1_722_000_000_000  # a minute boundary


def _trades(symbol: str, first: int, n: int, seed: int, t0: int = T0, step_ms: int = 37) -> Trades:
    rng = np.random.default_rng(seed)
    ids = np.arange(first, first + n, dtype=np.int64)
    return Trades.from_columns(
        symbol,
        trade_id=ids,
        ts_ms=t0 + (ids - first) * step_ms,
        price=np.round(60_000 + rng.standard_normal(n).cumsum(), 1),
        qty=np.round(rng.random(n) * 3 + 0.001, 3),
        is_buyer_maker=rng.random(n) < 0.5,
    )


def _frame(t: Trades) -> pl.DataFrame:
    return pl.DataFrame({c: getattr(t, c) for c in TICK_COLUMNS})


def _ref_bars(frame: pl.DataFrame, tf_ms: int) -> pl.DataFrame:
    """Bars computed here from trades: open/close by (time, id), sums, counts."""
    return (
        frame.sort("ts_ms", "trade_id")
        .with_columns(start_ms=pl.col("ts_ms") - pl.col("ts_ms") % tf_ms)
        .group_by("start_ms", maintain_order=True)
        .agg(
            **ohlc(),
            volume=pl.col("qty").sum(),
            quote_volume=(pl.col("price") * pl.col("qty")).sum(),
            trades=pl.len(),
            taker_buy_volume=pl.col("qty").filter(~pl.col("is_buyer_maker")).sum(),
        )
        .sort("start_ms")
    )


def _stored_bars(store: Store, symbol: str, tf: str) -> pl.DataFrame:
    with store.reader() as r:
        rows = r.bars(symbol, tf, 100_000)
    return pl.DataFrame(rows, schema=list(BAR_OUT_COLUMNS), orient="row")


def _assert_bars(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got["start_ms"].to_list() == want["start_ms"].to_list()
    for c in ("open", "high", "low", "close", "trades"):
        assert got[c].to_list() == want[c].to_list(), c
    for c in ("volume", "quote_volume", "taker_buy_volume"):
        np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=1e-12, err_msg=c)


# --- ticks ------------------------------------------------------------------------------


def test_ticks_are_stored_once_by_symbol_and_id_first_copy_kept(store: Store) -> None:
    a = _trades("btcusdt", 1, 3000, seed=1)
    b = _trades("btcusdt", 2001, 3000, seed=2)  # ids 2001..5000: 1000 already stored, other values
    e = _trades("ethusdt", 1, 500, seed=3)
    write_batch(store, ticks=[a, e])
    write_batch(store, ticks=[b, a])  # a replay: a again, and b overlapping it
    want = pl.concat([_frame(a), _frame(b)]).unique("trade_id", keep="first", maintain_order=True)
    with store.reader() as r:
        got = pl.DataFrame(r.ticks("btcusdt", 100_000), schema=list(TICK_COLUMNS), orient="row")
        eth = r.ticks("ethusdt", 10)
        assert r.symbols_with_data() == ["btcusdt", "ethusdt"]
        assert r.has_data("btcusdt") and not r.has_data("solusdt")
    assert got.height == 5000
    assert got.with_columns(pl.col("is_buyer_maker").cast(pl.Boolean)).equals(
        want.sort("trade_id").with_columns(pl.col("is_buyer_maker").cast(pl.Boolean))
    )
    assert [row[0] for row in eth] == list(range(491, 501))  # the newest 10, oldest first


def test_ticks_in_a_time_range_are_exactly_those_with_start_le_ts_lt_end(store: Store) -> None:
    t = _trades("btcusdt", 100, 5000, seed=4)
    bars = aggregate(t, "1s", 1000)
    write_batch(store, ticks=[t], bars=bars)
    start, end = T0 + 12_345, T0 + 98_765
    f = _frame(t)
    want = f.filter((pl.col("ts_ms") >= start) & (pl.col("ts_ms") < end))
    with store.reader() as r:
        got = r.ticks("btcusdt", 100_000, start, end)
        streamed = [row for chunk in r.iter_ticks("btcusdt", start, end, chunk=333) for row in chunk]
        newest = r.ticks("btcusdt", 7, start, end)
    assert [row[0] for row in got] == want["trade_id"].to_list()
    assert streamed == got
    assert [row[0] for row in newest] == want["trade_id"].to_list()[-7:]


def test_oldest_tick_is_the_lowest_stored_id_with_its_trade_time(store: Store) -> None:
    late = _trades("btcusdt", 500, 100, seed=20, t0=T0 + 3_600_000)
    early = _trades("btcusdt", 7, 50, seed=21)  # written after, lower ids
    write_batch(store, ticks=[late, _trades("ethusdt", 3, 10, seed=22)])
    write_batch(store, ticks=[early])
    with store.reader() as r:
        assert r.oldest_tick("btcusdt") == (7, int(early.ts_ms[0]))
        assert r.oldest_tick("ethusdt") == (3, T0)
        assert r.oldest_tick("solusdt") is None


def test_delete_ticks_removes_exactly_the_ids_and_times_asked_or_nothing(store: Store) -> None:
    t = _trades("btcusdt", 1, 4000, seed=23, step_ms=50)  # 200 s of ticks
    e = _trades("ethusdt", 1, 4000, seed=24, step_ms=50)
    bars = aggregate(t, "1s", 1000)
    write_batch(store, ticks=[t, e], bars=bars)
    before = T0 + 100_000
    want_gone = t.trade_id[(t.ts_ms < before) & (t.trade_id >= 10) & (t.trade_id <= 3000)]
    with pytest.raises(TickCountMismatch):
        store.delete_ticks("btcusdt", 10, 3000, before, len(want_gone) + 1)
    with store.reader() as r:
        assert len(r.ticks("btcusdt", 100_000)) == 4000  # a mismatch deletes nothing
    assert store.delete_ticks("btcusdt", 10, 3000, before, len(want_gone)) == len(want_gone)
    kept = sorted(set(t.trade_id.tolist()) - set(want_gone.tolist()))
    with store.reader() as r:
        assert [row[0] for row in r.ticks("btcusdt", 100_000)] == kept
        assert len(r.ticks("ethusdt", 100_000)) == 4000  # other symbols untouched
        assert r.oldest_tick("btcusdt") == (1, T0)
    _assert_bars(_stored_bars(store, "btcusdt", "1s"), _ref_bars(_frame(t), 1000))  # bars stay
    assert store.delete_ticks("btcusdt", 10, 3000, before, 0) == 0  # nothing left there: 0 of 0


# --- bars -------------------------------------------------------------------------------


def test_bars_read_back_equal_bars_computed_from_the_trades(store: Store) -> None:
    t = _trades("btcusdt", 1, 4000, seed=5)
    for tf, tf_ms in (("1s", 1000), ("1m", 60_000)):
        write_batch(store, bars=aggregate(t, tf, tf_ms))
        _assert_bars(_stored_bars(store, "btcusdt", tf), _ref_bars(_frame(t), tf_ms))
    with store.reader() as r:
        chunks = list(r.iter_bars("btcusdt", "1s", T0 + 10_000, T0 + 20_000, chunk=3))
        span = r.bar_span("btcusdt", "1s")
        summary = r.symbol_summary("btcusdt")
    assert [row[0] for c in chunks for row in c] == list(range(T0 + 10_000, T0 + 20_000, 1000))
    assert span == (T0, T0 + (int(t.ts_ms[-1]) - T0) // 1000 * 1000)
    assert summary.timeframes == ["1s", "1m"]
    assert summary.first_ms == T0 and summary.last_price == float(t.price[-1])
    assert summary.ticks == 4000 and summary.last_trade_ms == int(t.ts_ms[-1])


def test_a_bar_written_again_ends_as_its_latest_version(store: Store) -> None:
    t = _trades("btcusdt", 1, 200, seed=6, step_ms=3)  # all inside one second
    first = aggregate(t.take(np.arange(100)), "1s", 1000)
    full = aggregate(t, "1s", 1000)
    write_batch(store, bars=first)
    write_batch(store, bars=[*first, *full])  # the same bar twice in one batch: the later wins
    _assert_bars(_stored_bars(store, "btcusdt", "1s"), _ref_bars(_frame(t), 1000))


def test_a_late_partial_merges_into_the_stored_bar_as_if_all_trades_came_at_once(store: Store) -> None:
    t = _trades("btcusdt", 1, 300, seed=7, step_ms=150)  # 45 s: one 1m bar
    rng = np.random.default_rng(8)
    late = np.sort(rng.choice(300, 40, replace=False))  # the first and last trade may be among them
    early = np.setdiff1d(np.arange(300), late)
    stored = aggregate(t.take(early), "1m", 60_000)
    for b in stored:
        b.closed = True
    write_batch(store, bars=stored)
    partial = aggregate(t.take(late), "1m", 60_000)
    write_batch(store, bar_merges=partial)
    got = _stored_bars(store, "btcusdt", "1m")
    _assert_bars(got, _ref_bars(_frame(t), 60_000))
    assert got["revision"].to_list() == [1] and got["closed"].to_list() == [1]
    with store.reader() as r:
        ids = r.flow_bar_ids("btcusdt", "1m", T0, T0 + 60_000)
    assert ids.rows == [(T0, 1, 300)]


def test_closed_bars_and_missing_buckets(store: Store) -> None:
    t = _trades("btcusdt", 1, 10, seed=9, step_ms=5_000)  # one trade every 5 s
    bars = aggregate(t, "1s", 1000)
    for b in bars[:-1]:
        b.closed = True
    write_batch(store, bars=bars)
    with store.reader() as r:
        closed = r.closed_bars("btcusdt", "1s")
        missing = r.missing_bars("btcusdt", "1s")
        ids = r.flow_bar_ids("btcusdt", "1s", T0 + 1000, T0 + 10_000)
    assert closed["start_ms"].to_list() == [T0 + 5000 * i for i in range(9)]
    assert closed["close"].to_list() == t.price[:9].tolist()
    assert missing == (45 // 1 + 1) - 10
    assert ids.last_id_before == 1 and ids.first_id_after == 3
    assert ids.rows == [(T0 + 5000, 2, 2)]


# --- gaps, rejects, status ----------------------------------------------------------------


def test_gaps_upsert_by_symbol_and_first_id_and_filled_outranks_open(store: Store) -> None:
    write_batch(store, gaps=[GapEvent("btcusdt", 100, 120, T0, "open"), GapEvent("ethusdt", 5, 6, T0, "open")])
    write_batch(store, gaps=[GapEvent("btcusdt", 100, 110, T0, "filled")])
    write_batch(store, gaps=[GapEvent("btcusdt", 100, 110, T0, "open")])  # a late reporter cannot reopen it
    write_batch(store, gaps=[GapEvent("ethusdt", 5, 6, T0, "unfillable")])
    with store.reader() as r:
        btc = r.gaps("btcusdt")
        counts = r.gap_counts()
    assert [(g[0], g[1], g[5]) for g in btc] == [(100, 110, "filled")]
    assert btc[0][4] is not None  # filled time
    assert counts == {"btcusdt": (0, 1), "ethusdt": (0, 1)}


def test_rejects_are_kept_with_reason_and_raw_bytes(store: Store) -> None:
    rej = [Rejected(T0 + i, f"bad {i}", b"\x00garbage" * i, "ws") for i in range(25)]
    write_batch(store, rejects=rej)
    with store.reader() as r:
        assert r.reject_count() == 25


def _rejects(tag: str, n: int, t0: int) -> list[Rejected]:
    return [Rejected(t0 + i, f"{tag} {i}", b"x" * (i % 50), "ws") for i in range(n)]


def test_rejects_beyond_the_cap_drop_the_oldest_and_are_counted(store: Store) -> None:
    store.rejects_max_rows = 1_000  # read when a writer is made (open_store passes store.rejects_max_rows)
    batches = [_rejects(f"b{b}", 300, T0 + b * 10_000) for b in range(5)]
    batches.append(_rejects("big", 1_200, T0 + 90_000))  # one batch alone beyond the cap
    sent: list[Rejected] = []
    for batch in batches[:3]:
        write_batch(store, rejects=batch)
        sent += batch
    with store.reader() as r:  # under the cap: nothing dropped
        assert (r.reject_count(), r.rejects_dropped()) == (900, 0)
    w = store.writer()  # a later writer (a restarted flow) goes on counting
    try:
        for batch in batches[3:]:
            w.write(w.prepare(StoreBatch(rejects=batch)))
            sent += batch
    finally:
        w.close()
    with store.reader() as r:
        assert r.reject_count() == 1_000
        assert r.rejects_dropped() == len(sent) - 1_000 == 1_700
        kept = r.rejects(5_000)
    want = [(x.recv_ms, x.reason, x.source, x.raw) for x in sent[-1_000:]]  # the newest, oldest first
    assert [(k[0], k[1], k[2], bytes(k[3])) for k in kept] == want
    with store.reader() as r:
        assert [k[1] for k in r.rejects(3)] == [x.reason for x in sent[-3:]]


def test_rejects_are_not_capped_without_a_cap(store: Store) -> None:
    store.rejects_max_rows = None
    write_batch(store, rejects=_rejects("a", 1_500, T0))
    with store.reader() as r:
        assert (r.reject_count(), r.rejects_dropped()) == (1_500, 0)


def test_writers_of_several_workers_trimming_at_once_count_each_dropped_reject_once(store: Store) -> None:
    store.rejects_max_rows = 1_000
    writers = [store.writer(), store.writer()]  # a per-worker sink: one writer each, interleaved
    sent = 0
    try:
        for b in range(8):
            w = writers[b % 2]
            batch = _rejects(f"w{b % 2}b{b}", 400, T0 + b * 10_000)
            w.write(w.prepare(StoreBatch(rejects=batch)))
            sent += len(batch)
    finally:
        for w in writers:
            w.close()
    with store.reader() as r:
        kept, dropped = r.reject_count(), r.rejects_dropped()
        newest = [k[1] for k in r.rejects(2)]
    assert kept <= 1_000 and kept + dropped == sent == 3_200
    assert newest == ["w1b7 398", "w1b7 399"]


def test_a_check_that_found_damage_refuses_readers_rules_and_uploads_naming_it(store: Store) -> None:
    write_batch(store, rejects=_rejects("a", 3, T0))
    healthy = store.check()
    assert healthy.ok and healthy.problem is None and healthy.checked_ms is not None
    assert store.last_check == healthy
    with store.reader() as r:
        h = r.health()
        assert h.ok and h.checked_ms == healthy.checked_ms and h.schema_version == healthy.schema_version
    problem = f"store {healthy.location} failed its integrity check (test)"
    store.last_check = StoreHealth(ok=False, problem=problem, location=healthy.location, schema_version=None)
    bar = UploadedBar("btcusdt", "1m", T0, 1.0, 1.0, 1.0, 1.0, 1.0, None, None, None, None)
    for call in (lambda: store.reader().__enter__(), store.rules, lambda: store.upload_bars([bar], False, T0)):
        with pytest.raises(StoreUnavailable, match="failed its integrity check"):
            call()
    assert store.check().ok  # the store itself is intact: the next check clears it
    with store.reader() as r:
        assert r.reject_count() == 3


def test_status_documents_round_trip_and_replace(store: Store) -> None:
    write_batch(store, status={"flow": {"pid": 1, "trades_total": 10}, "symbol:btcusdt": {"last_trade_ms": T0}})
    write_batch(store, status={"flow": {"pid": 1, "trades_total": 20}})
    with store.reader() as r:
        docs = r.status_docs()
    assert docs["flow"][0] == {"pid": 1, "trades_total": 20}
    assert docs["symbol:btcusdt"][0] == {"last_trade_ms": T0}
    assert docs["flow"][1] > 0


# --- analytics ----------------------------------------------------------------------------


def _pair_row(t: int, beta: float) -> PairRow:
    return PairRow(start_ms=t, close_a=60_000.0 + t % 7, close_b=3_000.0, beta=beta, alpha=1.5, spread=0.25)


def test_pair_rows_round_trip_and_a_recomputed_row_replaces_the_old(store: Store) -> None:
    rows = [_pair_row(T0 + i * 1000, 0.05 + i / 1000) for i in range(50)]
    out = PairOut("btcusdt-ethusdt", ("btcusdt", "ethusdt"), "1s", 300, rows)
    write_batch(store, pairs=[out])
    again = PairOut("btcusdt-ethusdt", ("btcusdt", "ethusdt"), "1s", 300, [_pair_row(T0 + 10_000, 9.0)])
    write_batch(store, pairs=[again])
    with store.reader() as r:
        got = r.pair_rows("btcusdt-ethusdt", "1s", 300)
        last5 = r.pair_rows("btcusdt-ethusdt", "1s", 300, limit=5)
        ranged = r.pair_rows("btcusdt-ethusdt", "1s", 300, Span(T0 + 3000, T0 + 6000))
        assert r.has_pair_rows("btcusdt-ethusdt", "1s", 300)
        assert not r.has_pair_rows("btcusdt-ethusdt", "1s", 100)
    want = [*rows[:10], _pair_row(T0 + 10_000, 9.0), *rows[11:]]
    assert got == want
    assert last5 == want[-5:]
    assert [x.start_ms for x in ranged] == [T0 + 3000, T0 + 4000, T0 + 5000]


def test_symbol_stats_and_correlation_rows_read_back_newest_first_limited(store: Store) -> None:
    rows = [SymbolRow(T0 + i * 60_000, 60_000.0 + i, 3.5, 0.001 * i, 59_990.0, 4.0, 59_995.0) for i in range(30)]
    sym = SymbolStatsOut("btcusdt", "1m", 60, rows)
    corr = CorrOut("1m", 60, [(T0 + i * 60_000, "btcusdt", "ethusdt", i / 100) for i in range(30)])
    write_batch(store, symbol_stats=[sym], correlations=[corr])
    write_batch(store, symbol_stats=[sym], correlations=[corr])  # replays replace, never duplicate
    write_batch(store, correlations=[CorrOut("1m", 60, [(T0 + 30 * 60_000, "btcusdt", "ethusdt", None)])])
    with store.reader() as r:
        assert r.symbol_stats_rows("btcusdt", "1m", 60, limit=1000) == rows
        assert r.symbol_stats_rows("btcusdt", "1m", 60, limit=3) == rows[-3:]
        assert r.symbol_stats_rows("btcusdt", "1m", 60, Span(T0 + 60_000, T0 + 180_000)) == rows[1:3]
        assert r.symbol_stats_rows("btcusdt", "5m", 60) == []
        got = r.correlation_rows("1m", 60, "btcusdt", "ethusdt", 5)
        assert r.correlation_rows("1m", 30, "btcusdt", "ethusdt", 5) == []
    assert got == [*[(T0 + i * 60_000, i / 100) for i in range(26, 30)], (T0 + 30 * 60_000, None)]


# --- alert rules and triggers ---------------------------------------------------------------


def _fired(rule_id: int, ref: str, webhook: str | None = None) -> AlertFired:
    return AlertFired(rule_id, "r", "btcusdt", "price", None, ">", 61_000.0, 60_000.0, T0 + int(ref), ref, webhook)


def test_triggers_are_stored_once_and_only_new_webhook_triggers_are_returned(store: Store) -> None:
    first = [_fired(1, "1", "http://hook.example/a"), _fired(1, "2"), _fired(2, "3", "http://hook.example/b")]
    fresh = write_batch(store, alerts=first)
    assert [e.ref for e in fresh] == ["1", "3"]
    assert write_batch(store, alerts=first) == []  # a replay stores nothing twice and sends nothing again
    rules = store.rules()
    try:
        events = rules.list_events(100)
        assert sorted(e["ref"] for e in events) == ["1", "2", "3"]
        assert [e["ref"] for e in rules.list_events(100, rule_id=1)] == ["2", "1"]  # newest first
        assert [e["ref"] for e in rules.list_events(100, since_ms=T0 + 2)] == ["3", "2"]
        pending = rules.pending_webhooks()
        assert [p["ref"] for p in pending] == ["1", "3"]
        rules.mark_webhook((1, T0 + 1, "btcusdt", "1"), "sent", 1)
        assert [p["ref"] for p in rules.pending_webhooks()] == ["3"]
    finally:
        rules.close()


def test_trigger_counts_are_per_rule_over_every_symbol_it_watches(store: Store) -> None:
    eth = [AlertFired(1, "r", "ethusdt", "price", None, ">", 3.0, 2.0, T0 + i, str(i)) for i in (7, 8)]
    batch = [_fired(1, "1"), _fired(1, "2"), _fired(2, "3"), *eth]
    write_batch(store, alerts=batch)
    write_batch(store, alerts=batch)  # stored once: counted once
    with store.reader() as r:
        assert r.alert_trigger_counts() == {1: 4, 2: 1}


def test_rule_crud_and_the_flows_feed_sees_every_change(store: Store) -> None:
    rules = store.rules()
    feed = store.rule_feed(poll_s=0.0)
    try:
        feed.refresh()
        assert feed.rules == []
        rid = rules.create_rule(rule_from_payload({"name": "up", "condition": "price > 50000", "symbols": ["btcusdt"]}))
        _wait(lambda: (feed.refresh(), feed.ids == {rid})[1])
        assert [(r.id, r.rule.enabled, r.rule.keys) for r in feed.rules] == [(rid, True, ["btcusdt"])]
        gen = feed.generation
        row = rules.rule_row(rid)
        assert row is not None and row[0] == rid and row[3] == 1
        disabled = rule_from_payload({"name": "up", "condition": "price > 50000", "symbols": ["btcusdt"]})
        disabled.enabled = False
        assert rules.update_rule(rid, disabled)
        _wait(lambda: (feed.refresh(), feed.generation > gen)[1])
        assert [r.rule.enabled for r in feed.rules] == [False] and feed.ids == {rid}
        assert rules.rule_row(rid)[3] == 2  # type: ignore[index]
        assert [r.id for r in rules.load_rules()] == [rid]
        assert rules.delete_rule(rid) and not rules.delete_rule(rid)
        assert not rules.update_rule(rid, disabled)
        _wait(lambda: (feed.refresh(), feed.ids == set())[1])
        assert rules.list_rules() == []
    finally:
        feed.close()
        rules.close()


def _wait(cond, timeout_s: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        time.sleep(0.02)


# --- uploads and health ---------------------------------------------------------------------


def test_uploaded_bars_never_replace_collected_ones_unless_asked(store: Store) -> None:
    t = _trades("btcusdt", 1, 50, seed=10, step_ms=1000)
    collected = aggregate(t, "1m", 60_000)
    write_batch(store, bars=collected)
    up = [
        UploadedBar("btcusdt", "1m", T0, 1.0, 2.0, 0.5, 1.5, 10.0, None, None, None, None),
        UploadedBar("btcusdt", "1m", T0 + 60_000, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 7, 4.0, 6.0),
    ]
    res = store.upload_bars(up, overwrite=False, now_ms=T0 + 10**6)
    assert (res.inserted, res.replaced, res.skipped) == (1, 0, 1)
    res = store.upload_bars(up, overwrite=False, now_ms=T0 + 10**6)
    assert (res.inserted, res.replaced, res.skipped) == (0, 1, 1)
    got = _stored_bars(store, "btcusdt", "1m")
    assert got["origin"].to_list() == ["flow", "upload"]
    assert got.row(1, named=True)["trades"] == 7 and got.row(1, named=True)["quote_volume"] == 15.0
    res = store.upload_bars(up, overwrite=True, now_ms=T0 + 10**6)
    assert (res.inserted, res.replaced, res.skipped) == (0, 2, 0)
    assert _stored_bars(store, "btcusdt", "1m")["origin"].to_list() == ["upload", "upload"]
    with store.reader() as r:
        assert r.symbol_summary("btcusdt").uploaded_bars


def test_health_names_the_store_and_its_schema_version(store: Store) -> None:
    with store.reader() as r:
        h = r.health()
    assert h.ok and h.problem is None
    assert isinstance(h.schema_version, int) and h.schema_version >= 1
    assert h.location and "password" not in h.location


@pytest.mark.parametrize("n", [1, 2049])
def test_recent_trade_rate_counts_the_last_seconds_of_exchange_time(store: Store, n: int) -> None:
    t = _trades("btcusdt", 1, n, seed=11, step_ms=7)
    write_batch(store, bars=aggregate(t, "1s", 1000))
    last_start = (int(t.ts_ms[-1]) - T0) // 1000 * 1000 + T0
    want = int(np.sum(t.ts_ms >= last_start - 9000)) / 10
    with store.reader() as r:
        assert r.recent_trade_rate("btcusdt", 10) == pytest.approx(want)


def test_bar_objects_changed_after_prepare_do_not_change_what_is_written(store: Store) -> None:
    """The flow goes on changing its bars while the writer thread writes the prepared batch."""
    t = _trades("btcusdt", 1, 100, seed=12, step_ms=5)
    bars: list[Bar] = aggregate(t, "1s", 1000)
    w = store.writer()
    try:
        prepared = w.prepare(StoreBatch(bars=bars))
        bars[0].close, bars[0].trades = -1.0, 10**6
        w.write(prepared)
    finally:
        w.close()
    _assert_bars(_stored_bars(store, "btcusdt", "1s"), _ref_bars(_frame(t), 1000))
