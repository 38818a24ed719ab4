"""Alert features: min_duration_s, on: tick | bar_close, feed-health metrics, rules over several symbols,
PATCH with a condition, and unknown symbols refused.

Engine tests compare with plain element-by-element references written here;
the end-to-end tests run the real flow (replay, or the local WebSocket feed with
injected faults) and the real API, and compute the expected triggers from the
recorded trades and the store with numpy/polars/SQL.
"""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
from api_support import api_server, rows
from feed_support import Feed, Flow, wait_for
from feed_support import write_config as feed_config
from flow_support import WINDOW_B, run_flow, write_config
from hypothesis import given, settings
from hypothesis import strategies as st
from test_alerts import LEVEL, _cmp, _rearmed, recorded_trades

from ticklens.domain.alerts.engine import AlertBook, RuleState, scan
from ticklens.domain.alerts.health import FeedHealth, StreamHealth
from ticklens.domain.alerts.rules import AlertRule, StoredRule, merge_patch, rule_from_payload
from ticklens.domain.bars import BarBook
from ticklens.domain.records import FeedStats, GapEvent, Trades

BTC_B, ETH_B = WINDOW_B
LEVEL_OPS = (">", ">=", "<", "<=", "==")
OPS = (*LEVEL_OPS, "crosses_above", "crosses_below")

# --- the documented semantics, one value at a time -------------------------------------------------


def reference_hold(values, ts, op, thr, exit_level=None, cooldown_ms=0, hold_ms=0) -> list[int]:
    """An armed rule starts a hold at the first true value; a false value ends it (NaN does not);
    it fires at the first true value `hold_ms` after the start, once the cooldown allows
    (a level rule waits for it, a crossing is spent)."""
    level = op in LEVEL_OPS
    exit_level = thr if exit_level is None else exit_level
    armed, last, start, clock = level, None, None, -(2**62)
    out = []
    for i, v in enumerate(values):
        clock = max(clock, ts[i])
        if math.isnan(v):
            continue
        if not armed:
            armed = _rearmed(op, v, exit_level)
            continue
        if not _cmp(op, v, thr):
            start = None
            continue
        if start is None:
            start = clock
        if clock - start < hold_ms:
            continue
        if last is not None and clock - last < cooldown_ms:
            if not level:
                armed, start = False, None
            continue
        out.append(i)
        armed, start, last = False, None, clock
    return out


def _scan_in_batches(rule: AlertRule, values, ts, cuts) -> list[int]:
    state = RuleState(1, armed=rule.operator in LEVEL_OPS)
    out, lo = [], 0
    for hi in [*sorted(set(cuts)), len(values)]:
        v = np.asarray(values[lo:hi], float)
        ok = v[~np.isnan(v)]
        bounds = (float(ok.min()), float(ok.max())) if len(ok) == len(v) and len(v) else None
        out.extend(lo + i for i in scan(rule, state, v, np.asarray(ts[lo:hi], dtype=np.int64), bounds))
        lo = hi
    return out


def _price_rule(op: str, thr: float, **kw) -> AlertRule:
    return AlertRule(name="t", metric="price", symbol="btcusdt", operator=op, threshold=thr, **kw)


def test_a_late_value_opening_a_batch_is_timed_by_the_clock_of_the_batches_before():
    # Found by the property test below: the cooldown ran on each batch's own running maximum, so a
    # late trade at the start of a batch looked earlier than the batch before had already reached.
    rule = _price_rule("<", 3, cooldown_s=1)
    v, ts = [0, 0, 3, 0], [0, 0, 1000, 300]
    assert reference_hold(v, ts, "<", 3, cooldown_ms=1000) == [0, 3]
    assert _scan_in_batches(rule, v, ts, [3]) == [0, 3]
    assert _scan_in_batches(rule, v, ts, []) == [0, 3]


def test_a_held_condition_fires_once_it_has_held_long_enough():
    v = [9, 11, 11, 11, 9, 11, 11, 11, 11]
    ts = [0, 1000, 2000, 3500, 4000, 5000, 6000, 7000, 9000]
    # held from 1000: 3500 is 2.5 s later; broken at 4000; held again from 5000: 7000 is 2 s later
    assert _scan_in_batches(_price_rule(">", 10, min_duration_s=2), v, ts, []) == [3, 7]
    assert reference_hold(v, ts, ">", 10, hold_ms=2000) == [3, 7]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(st.integers(0, 6).map(float), st.just(math.nan)), min_size=1, max_size=60),
    st.lists(st.integers(0, 2_500), min_size=60, max_size=60),
    st.sampled_from(OPS),
    st.sampled_from([0, 1, 2.5]),
    st.sampled_from([0, 0.5, 1.5, 4]),
    st.booleans(),
    st.lists(st.integers(0, 60), max_size=5),
)
def test_held_scan_matches_the_reference_for_any_batching(raw, gaps, op, cool_s, hold_s, use_exit, cuts):
    ts = np.cumsum(gaps[: len(raw)]).tolist()
    ts = [t - (900 if i % 6 == 4 else 0) for i, t in enumerate(ts)]  # some late values
    up = op in (">", ">=", "crosses_above")
    exit_level = None if not use_exit or op == "==" else (1.5 if up else 4.5)
    rule = _price_rule(op, 3.0, cooldown_s=cool_s, exit_threshold=exit_level, min_duration_s=hold_s)
    expected = reference_hold(raw, ts, op, 3.0, exit_level, int(cool_s * 1000), int(hold_s * 1000))
    assert _scan_in_batches(rule, raw, ts, [c for c in cuts if c < len(raw)]) == expected


# --- on: bar_close for trade metrics, on: tick for bar metrics -------------------------------------


def _trades(n: int, seed: int, late_every: int = 0) -> Trades:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    ts = 1_722_000_000_000 + np.cumsum(rng.integers(0, 90, n))
    if late_every:
        ts = ts - np.where(ids % late_every == 0, rng.integers(500, 2500, n), 0)  # late trades reach back 1-2 bars
    price = np.round(100 + rng.standard_normal(n).cumsum() * 0.05, 2)
    qty = np.round(rng.random(n) * 2 + 0.001, 3)
    return Trades.from_columns(
        "btcusdt", trade_id=ids, ts_ms=ts, price=price, qty=qty, is_buyer_maker=rng.random(n) < 0.5
    )


def _run_book(trades: Trades, rules: list[StoredRule], cuts: list[int]) -> list[tuple[int, str, float]]:
    """Trades through BarBook and AlertBook in batches, as the flow's steps pass them."""
    bars, book, out = BarBook("btcusdt", {"1s": 1000}, 2_000, 10**9), AlertBook("btcusdt"), []
    lo = 0
    for hi in [*sorted(set(cuts)), len(trades)]:
        part = trades.take(np.arange(lo, hi))
        lo = hi
        if len(part) == 0:
            continue
        changed, merges = bars.add(part)
        assert merges == []
        closed = bars.advance(None)
        out += book.on_trades(rules, part, changed + closed)
        out += book.on_bars(rules, closed)
    out += book.on_bars(rules, bars.advance(10**15))
    return [(e.rule_id, e.ref, e.value) for e in out]


@pytest.mark.parametrize("late_every", [0, 7])
@pytest.mark.parametrize("cuts", [[], [1, 2, 3, 50, 333, 334, 1200], list(range(0, 3000, 97))])
def test_intrabar_volume_and_return_and_bar_close_price_match_plain_loops(late_every: int, cuts: list[int]):
    t = _trades(3000, 11, late_every)
    ts, ids, px, q = t.ts_ms.tolist(), t.trade_id.tolist(), t.price.tolist(), t.qty.tolist()
    vol_level, ret_level = 14.0, 0.0008
    rules = [
        StoredRule(1, 1, AlertRule(name="v", metric="volume", symbol="btcusdt", timeframe="1s", on="tick",
                                   operator="crosses_above", threshold=vol_level)),
        StoredRule(2, 1, AlertRule(name="r", metric="return", symbol="btcusdt", timeframe="1s", on="tick",
                                   operator=">", threshold=ret_level)),
        StoredRule(3, 1, AlertRule(name="p", metric="price", symbol="btcusdt", timeframe="1s", on="bar_close",
                                   operator="<", threshold=100.0)),
        StoredRule(4, 1, AlertRule(name="s", metric="trade_size", symbol="btcusdt", timeframe="1s", on="bar_close",
                                   operator=">=", threshold=1.9)),
    ]  # fmt: skip
    got = _run_book(t, rules, cuts)
    # Reference, in arrival order with plain dicts: the bar's running volume, the previous bar's close so far.
    running: dict[int, float] = {}
    close: dict[int, tuple[int, int, float]] = {}
    vols, rets = [], []
    for i in range(len(ts)):
        b = ts[i] - ts[i] % 1000
        running[b] = running.get(b, 0.0) + q[i]
        vols.append(running[b])
        earlier = [k for k in close if k < b]
        rets.append(math.log(px[i] / close[max(earlier)][2]) if earlier else math.nan)
        if b not in close or (ts[i], ids[i]) >= close[b][:2]:
            close[b] = (ts[i], ids[i], px[i])
    want_vol = [str(ids[i]) for i in reference_hold(vols, ts, "crosses_above", vol_level)]
    want_ret = [str(ids[i]) for i in reference_hold(rets, ts, ">", ret_level)]
    assert len(want_vol) > 5 and len(want_ret) > 5
    assert sorted(ref for r, ref, _ in got if r == 1) == sorted(want_vol)
    assert sorted(ref for r, ref, _ in got if r == 2) == sorted(want_ret)
    # Bar close: closes and largest trades of the 1s bars (polars over all trades), in bar order.
    bars = (
        pl.DataFrame({"ts": ts, "id": ids, "px": px, "q": q})
        .with_columns(start=pl.col("ts") - pl.col("ts") % 1000)
        .sort("ts", "id")
        .group_by("start", maintain_order=True)
        .agg(close=pl.col("px").last(), big=pl.col("q").max())
        .sort("start")
    )
    starts = bars["start"].to_list()
    want_p = [f"1s:{starts[i]}" for i in reference_hold(bars["close"].to_list(), starts, "<", 100.0)]
    want_s = [f"1s:{starts[i]}" for i in reference_hold(bars["big"].to_list(), starts, ">=", 1.9)]
    assert len(want_p) >= 2 and len(want_s) > 5
    assert [ref for r, ref, _ in got if r == 3] == want_p
    assert [ref for r, ref, _ in got if r == 4] == want_s


def test_on_and_timeframe_combinations_that_cannot_be_evaluated_are_refused():
    ok = AlertRule(name="x", metric="price", symbol="btcusdt", operator=">", threshold=1, on="bar_close")
    assert ok.timeframe == "1m"
    assert AlertRule(name="x", metric="volume", symbol="btcusdt", operator=">", threshold=1).on == "bar_close"
    for bad, words in [
        ({"metric": "volatility", "symbol": "btcusdt", "on": "tick"}, "bar_close"),
        ({"metric": "zscore", "pair": ["btcusdt", "ethusdt"], "on": "tick"}, "bar_close"),
        ({"metric": "price", "symbol": "btcusdt", "timeframe": "1m"}, "on: 'bar_close'"),
        ({"metric": "stale_s", "symbol": "btcusdt", "on": "bar_close"}, "feed reports"),
        ({"metric": "reconnects_per_min", "symbol": "btcusdt"}, "whole feed"),
        ({"metric": "price", "symbol": "btcusdt", "operator": "==", "exit_threshold": 2}, "no exit_threshold"),
    ]:
        body = {"name": "x", "operator": ">", "threshold": 1, **bad}
        with pytest.raises(ValueError, match=words):
            AlertRule.model_validate(body)


# --- feed health --------------------------------------------------------------------------------


def test_stream_health_reads_staleness_and_open_gaps():
    h = StreamHealth()
    assert math.isnan(h.read(1_000, 0, 3_600_000)["stale_s"])  # never traded: undefined, never fires
    assert h.read(5_000, 4_000, 3_600_000) == {"stale_s": 1.0, "gaps_open": 0.0}
    h.on_gaps([GapEvent("btcusdt", 10, 12, 4_500, "open"), GapEvent("btcusdt", 20, 20, 4_600, "open")])
    assert h.read(9_000, 4_000, 3_600_000) == {"stale_s": 5.0, "gaps_open": 2.0}
    h.on_gaps([GapEvent("btcusdt", 10, 12, 4_500, "filled")])
    assert h.read(9_500, 9_400, 3_600_000) == {"stale_s": 0.1, "gaps_open": 1.0}
    # A replay's end-of-input clock, an hour past the newest clock, is not read as a stall.
    assert h.read(9_500 + 3_600_000, 9_400, 3_600_000) is None


def test_feed_health_counts_reconnects_and_rejects_over_the_last_minute():
    rng = np.random.default_rng(3)
    f = FeedHealth()
    recv = np.sort(rng.integers(0, 300_000, 400))
    clocks = np.arange(0, 300_000, 250)
    reconnects = {50_000: 1, 50_500: 3, 200_000: 4}  # cumulative counts as reported, then a restart
    events = sorted([(int(t), "r") for t in recv] + [(int(c), "c") for c in clocks])
    received: list[int] = []
    checked = 0
    for n, (t, kind) in enumerate(events):
        if kind == "r":
            f.on_rejected(t)
            received.append(t)
        else:
            f.on_clock(t)
            if t in reconnects:
                # cumulative counts as the source reports them; at 200 000 it restarted and counts from 0
                f.on_stats(FeedStats("feed", reconnects=reconnects[t] if t != 200_000 else 1))
        v = f.read()
        if n % 7:
            continue
        sec = t - t % 1000
        want_rej = sum(1 for r in received if r - r % 1000 > sec - 60_000)
        want_rec = sum(k for at, k in ((50_000, 1), (50_500, 2), (200_000, 1)) if 0 <= t - at < 60_000)
        assert (v["rejected_per_min"], v["reconnects_per_min"]) == (want_rej, want_rec), t
        checked += 1
    assert checked > 100


# --- the rule model: several symbols, PATCH with a condition --------------------------------------


def test_several_symbols_are_one_rule_and_one_symbol_keeps_the_one_symbol_shape():
    r = rule_from_payload({"name": "x", "condition": "price > 5", "symbols": ["BTCUSDT", "ethusdt", "btcusdt"]})
    assert r.symbols == ["btcusdt", "ethusdt"] and r.symbol is None and r.keys == ["btcusdt", "ethusdt"]
    one = rule_from_payload({"name": "x", "condition": "size == 1", "symbols": ["btcusdt"]})
    assert (one.symbol, one.symbols, one.operator, one.metric) == ("btcusdt", None, "==", "trade_size")
    assert one.condition_text() == "size == 1" and r.condition_text() == "price > 5"
    feed = rule_from_payload({"name": "x", "condition": "reconnects >= 3"})
    assert feed.metric == "reconnects_per_min" and feed.keys == ["_feed"] and feed.watched_symbols == []


def test_patch_with_a_condition_keeps_the_streams_and_takes_the_new_metrics_defaults():
    price = rule_from_payload({"name": "x", "condition": "price > 5", "symbols": ["btcusdt", "ethusdt"]}).model_dump()
    z = merge_patch(price, {"condition": "z_score crosses above 2"})
    assert (z.metric, z.operator, z.threshold, z.pair, z.timeframe, z.on) == (
        "zscore", "crosses_above", 2.0, ("btcusdt", "ethusdt"), "1m", "bar_close",
    )  # fmt: skip
    vol = merge_patch(price, {"condition": "volume > 10", "symbols": ["ethusdt"], "timeframe": "1s"})
    assert (vol.metric, vol.symbol, vol.timeframe, vol.on) == ("volume", "ethusdt", "1s", "bar_close")
    assert merge_patch(price, {"enabled": False}).symbols == ["btcusdt", "ethusdt"]
    assert merge_patch(vol.model_dump(), {"exit": 4}).exit_threshold == 4


# --- end to end: a real flow and the API ----------------------------------------------------------


def test_a_rule_on_a_symbol_neither_configured_nor_stored_is_refused_naming_the_known_ones(tmp_path: Path):
    cfg = write_config(tmp_path, source={"paths": [str(BTC_B), str(ETH_B)]}, timeframes=["1s"])
    with api_server(cfg, tmp_path / "api.log") as api:
        c = api.client
        bodies = [
            {"name": "x", "metric": "price", "symbol": "xyzusdt", "operator": ">", "threshold": 1},
            {"name": "x", "condition": "price > 1", "symbols": ["btcusdt", "xyzusdt"]},
            {"name": "x", "metric": "zscore", "pair": ["btcusdt", "xyzusdt"], "operator": ">", "threshold": 2},
        ]
        for body in bodies:
            r = c.post("/api/v1/alerts", json=body)
            assert r.status_code == 422, r.text
            msg = r.json()["detail"][0]["msg"]
            assert "xyzusdt" in msg and "btcusdt, ethusdt" in msg
        assert c.get("/api/v1/alerts").json()["alerts"] == []
        ok = c.post(
            "/api/v1/alerts",
            json={"name": "b", "metric": "price", "symbol": "btcusdt", "operator": ">", "threshold": 1},
        )
        assert ok.status_code == 201
        moved = c.patch(f"/api/v1/alerts/{ok.json()['id']}", json={"symbol": "xyzusdt"})
        assert moved.status_code == 422 and "xyzusdt" in moved.text
        # A symbol stored by an upload is known.
        up = "symbol,timeframe,timestamp,open,high,low,close,volume\nxyzusdt,1m,2024-01-01T00:00:00Z,1,1,1,1,1\n"
        assert c.post("/api/v1/upload/ohlc", files={"file": ("b.csv", up.encode())}).status_code == 200
        assert c.post("/api/v1/alerts", json=bodies[0]).status_code == 201


def test_patch_accepts_the_condition_form(tmp_path: Path):
    cfg = write_config(tmp_path, source={"paths": [str(BTC_B), str(ETH_B)]}, timeframes=["1s"])
    with api_server(cfg, tmp_path / "api.log") as api:
        c = api.client
        rid = c.post(
            "/api/v1/alerts", json={"name": "p", "condition": "price > 5", "symbols": ["btcusdt", "ethusdt"]}
        ).json()["id"]
        r = c.patch(f"/api/v1/alerts/{rid}", json={"condition": "price crosses_below 60000"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["metric"], body["operator"], body["threshold"], body["symbols"], body["version"]) == (
            "price", "crosses_below", 60000.0, ["btcusdt", "ethusdt"], 2,
        )  # fmt: skip
        r = c.patch(
            f"/api/v1/alerts/{rid}", json={"condition": "z > 2", "symbols": ["btcusdt", "ethusdt"], "timeframe": "1s"}
        )
        assert r.status_code == 200, r.text
        assert (r.json()["metric"], r.json()["pair"], r.json()["timeframe"]) == ("zscore", ["btcusdt", "ethusdt"], "1s")
        bad = c.patch(f"/api/v1/alerts/{rid}", json={"condition": "price >> 2"})
        assert bad.status_code == 422 and "condition" in bad.text and "expected a number" in bad.text
        assert c.get(f"/api/v1/alerts/{rid}").json()["version"] == 3  # the refused edit changed nothing
        listed = c.get("/api/alerts").json()["alerts"]  # the original API sees the same rule
        assert [(a["id"], a["condition"], a["symbols"]) for a in listed] == [
            (str(rid), "z_score > 2", ["btcusdt", "ethusdt"])
        ]


def _post_rules(client: httpx.Client, specs: dict[str, dict]) -> dict[str, int]:
    """POST each rule (`specs`: name -> the rest of its body); each must be created. Name -> id."""
    ids = {}
    for name, spec in specs.items():
        r = client.post("/api/v1/alerts", json={"name": name, **spec})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    return ids


def test_held_bar_close_and_intrabar_rules_fire_where_the_recording_says(tmp_path: Path):
    cfg = write_config(tmp_path, source={"paths": [str(BTC_B), str(ETH_B)]}, timeframes=["1s"])
    db = tmp_path / "ticklens.db"
    btc = recorded_trades(BTC_B, "btcusdt")  # arrival order, first copy of each id
    level = LEVEL  # BTC crosses it dozens of times on 2024-08-08
    vol_level = float(np.quantile(btc.group_by(pl.col("ts_ms") // 1000).agg(pl.col("qty").sum())["qty"], 0.9))
    with api_server(cfg, tmp_path / "api.log") as api:
        specs = {
            "held": {"metric": "price", "symbol": "btcusdt", "operator": ">", "threshold": level, "min_duration_s": 5},
            "closes": {"metric": "price", "symbol": "btcusdt", "on": "bar_close", "timeframe": "1s",
                       "operator": "crosses_above", "threshold": level},
            "intrabar": {"metric": "volume", "symbol": "btcusdt", "on": "tick", "timeframe": "1s",
                         "operator": "crosses_above", "threshold": vol_level},
        }  # fmt: skip
        ids = _post_rules(api.client, specs)
        done = run_flow(cfg, "--no-recovery")
        assert done.returncode == 0, done.stderr[-3000:]
        events = api.client.get("/api/v1/alerts/triggered", params={"limit": 100_000}).json()["events"]
    got = {n: sorted((e["event_ms"], e["ref"]) for e in events if e["rule_id"] == i) for n, i in ids.items()}
    p, ts, tid, q = (btc[c].to_numpy() for c in ("price", "ts_ms", "trade_id", "qty"))
    held = reference_hold(p.tolist(), ts.tolist(), ">", level, hold_ms=5000)
    assert len(held) >= 2
    assert got["held"] == sorted((int(ts[i]), str(tid[i])) for i in held)
    # Bar close: the stored closed 1s bars, crossing the level close to close.
    bars = rows(db, "SELECT start_ms, close FROM bars WHERE symbol='btcusdt' AND timeframe='1s' ORDER BY start_ms")
    closes = [c for _, c in bars]
    cross = reference_hold(closes, [s for s, _ in bars], "crosses_above", level)
    assert len(cross) >= 3
    assert got["closes"] == [(bars[i][0], f"1s:{bars[i][0]}") for i in cross]
    # Intrabar volume: running sum per 1s bucket in arrival order.
    running: dict[int, float] = {}
    vols = []
    for t_, q_ in zip(ts.tolist(), q.tolist(), strict=True):
        b = t_ - t_ % 1000
        running[b] = running.get(b, 0.0) + q_
        vols.append(running[b])
    want = reference_hold(vols, ts.tolist(), "crosses_above", vol_level)
    assert len(want) > 3
    assert got["intrabar"] == sorted((int(ts[i]), str(tid[i])) for i in want)


def test_feed_health_rules_fire_on_reconnects_gaps_rejects_and_a_stall(tmp_path: Path):
    btc = recorded_trades(BTC_B, "btcusdt")
    lo = int(btc["trade_id"][2000])
    feed = Feed(
        str(BTC_B), str(ETH_B), "--speed", "max", "--drop-after", "4000", "--drop-count", "3",
        "--skip-ids", f"btcusdt:{lo}-{lo + 4}", "--malformed-every", "700",
    )  # fmt: skip
    db = tmp_path / "ticklens.db"
    try:
        cfg = feed_config(tmp_path, feed.url)
        with api_server(cfg, tmp_path / "api.log") as api:
            specs = {
                "storm": {"metric": "reconnects_per_min", "operator": ">=", "threshold": 2},
                "rejects": {"metric": "rejected_per_min", "operator": ">", "threshold": 5},
                "gap": {"metric": "gaps_open", "symbol": "btcusdt", "operator": ">", "threshold": 0},
                "gap held": {"metric": "gaps_open", "symbol": "btcusdt", "operator": ">", "threshold": 0,
                             "min_duration_s": 2},
                "stalled": {"condition": "stale_s > 2", "symbols": ["btcusdt", "ethusdt"]},
            }  # fmt: skip
            ids = _post_rules(api.client, specs)
            flow = Flow(cfg, tmp_path / "flow.log")
            try:

                def fired() -> dict[str, list[dict]]:
                    ev = api.client.get("/api/v1/alerts/triggered", params={"limit": 1000}).json()["events"]
                    return {n: [e for e in ev if e["rule_id"] == i] for n, i in ids.items()}

                def after_the_end() -> bool:
                    last = dict(rows(db, "SELECT symbol, MAX(ts_ms) FROM ticks GROUP BY symbol"))
                    stalls = fired()["stalled"]
                    return len(last) == 2 and all(
                        any(round(e["event_ms"] - e["value"] * 1000) == last[s] for e in stalls if e["symbol"] == s)
                        for s in last
                    )

                # Everything is sent at once; then the feed goes quiet and the stall rules fire for both.
                wait_for(lambda: all(fired().values()) and after_the_end(), 60, "every rule", flow)
                got = fired()
                stats = feed.stats()
            finally:
                assert flow.stop() == 0, flow.stderr()
    finally:
        feed.stop()
    assert stats["drops"] == 3
    assert len(got["storm"]) == 1 and 2 <= got["storm"][0]["value"] <= 3 and got["storm"][0]["symbol"] == "_feed"
    # Rejects: the sixth one within a minute fires (they arrive one by one), at its receive time.
    recv = sorted(r[0] for r in rows(db, "SELECT recv_ms FROM rejects WHERE source != 'dedup'"))
    assert len(recv) > 6 and recv[5] - recv[0] < 60_000
    (rej,) = got["rejects"]
    assert rej["value"] == 6 and rej["event_ms"] >= recv[5]
    # The gap: open once detected, and again two seconds (feed clock) later for the held rule.
    assert rows(db, "SELECT from_id, to_id, status FROM gaps WHERE symbol='btcusdt'") == [(lo, lo + 4, "open")]
    (gap,) = got["gap"]
    (held,) = got["gap held"]
    assert gap["value"] == 1 == held["value"] and held["event_ms"] - gap["event_ms"] >= 2000
    # Stalls (while reconnecting, and after the last trade): each reading is the exchange time since
    # a trade the symbol really had, over 2 s; a symbol's stalls are apart in time (one per silence).
    for sym in ("btcusdt", "ethusdt"):
        trade_times = {r[0] for r in rows(db, "SELECT ts_ms FROM ticks WHERE symbol=?", (sym,))}
        stalls = sorted(e["event_ms"] for e in got["stalled"] if e["symbol"] == sym)
        assert stalls
        for e in (e for e in got["stalled"] if e["symbol"] == sym):
            assert e["value"] > 2 and round(e["event_ms"] - e["value"] * 1000) in trade_times
        assert all(b - a > 2000 for a, b in zip(stalls, stalls[1:], strict=False))
