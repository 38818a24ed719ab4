"""The live path end to end: the real local feed → the real WebSocket client → the flow → SQLite.

Every expectation comes from the recorded files themselves (gzip + json +
polars in tests/reference.py), never from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.feed_support import Feed, Flow, feed_status, query, running_flow, wait_for, write_config
from tests.flow_support import WINDOW_A, WINDOW_B, run_flow
from tests.flow_support import write_config as write_replay_config
from tests.reference import read_recording, reference_bars, trades_frame

FIELDS = ["open", "high", "low", "close", "volume", "trades", "taker_buy_volume", "first_id", "last_id"]


def stored_bars(db: Path, timeframe: str) -> pl.DataFrame:
    cols = ["symbol", "start_ms", *FIELDS, "quote_volume"]
    rows = query(db, f"SELECT {','.join(cols)} FROM bars WHERE timeframe=? ORDER BY symbol, start_ms", (timeframe,))
    return pl.DataFrame(rows, schema=cols, orient="row")


def bars_match(db: Path, trades: pl.DataFrame) -> str:
    """'' when every 1s/1m/5m bar equals the polars reference, else what differs."""
    for tf in ("1s", "1m", "5m"):
        ours, ref = stored_bars(db, tf), reference_bars(trades, tf)
        if ours.height != ref.height:
            return f"{tf}: {ours.height} bars stored, {ref.height} expected"
        for field in ["symbol", "start_ms", *FIELDS]:
            if ours[field].to_list() != ref[field].to_list():
                return f"{tf}: field {field} differs"
        rel = ((ours["quote_volume"] - ref["quote_volume"]).abs() / ref["quote_volume"]).max()
        if rel > 1e-7:
            return f"{tf}: quote_volume off by {rel}"
    return ""


def tick_count(db: Path) -> int:
    rows = query(db, "SELECT COUNT(*) FROM ticks")
    return rows[0][0] if rows else 0


def run_until_stored(tmp: Path, feed: Feed, trades: pl.DataFrame, timeout: float = 120, **source: object) -> Flow:
    """Start the flow against the feed, wait until every trade and bar is in the store, stop it (SIGINT)."""
    db = tmp / "ticklens.db"
    with running_flow(write_config(tmp, feed.url, **source), tmp / "flow.log") as flow:
        wait_for(lambda: tick_count(db) >= trades.height, timeout, f"{trades.height} ticks", flow)
        wait_for(lambda: bars_match(db, trades) == "", 120, "bars equal to the reference", flow)
        sent = feed.stats()["messages"]
        wait_for(lambda: feed_status(db).get("messages", 0) >= sent, 120, "feed counters in the status row", flow)
        assert flow.alive()
    return flow


@pytest.fixture(scope="module")
def window_a() -> pl.DataFrame:
    return trades_frame([t for p in WINDOW_A for t in read_recording(p)])


@pytest.fixture(scope="module")
def window_b() -> pl.DataFrame:
    return trades_frame([t for p in WINDOW_B for t in read_recording(p)])


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory, window_a: pl.DataFrame) -> Path:
    """Window A (BTC+ETH, 8 min) fed at 100x, with the client recording what it receives."""
    tmp = tmp_path_factory.mktemp("live_a")
    feed = Feed(*map(str, WINDOW_A), "--speed", "100")
    try:
        run_until_stored(tmp, feed, window_a, record=str(tmp / "recorded.gz"))
        assert feed.stats()["at_end"]
    finally:
        feed.stop()
    return tmp


def test_feed_to_store_keeps_every_trade_once_and_bars_equal_polars(recorded_run: Path, window_a: pl.DataFrame) -> None:
    db = recorded_run / "ticklens.db"
    assert tick_count(db) == window_a.height
    ours = pl.DataFrame(
        query(db, "SELECT symbol, trade_id, ts_ms, price, qty, is_buyer_maker FROM ticks ORDER BY symbol, trade_id"),
        schema=["symbol", "trade_id", "ts_ms", "price", "qty", "is_buyer_maker"],
        orient="row",
    )
    ref = window_a.sort("symbol", "trade_id").select(ours.columns).with_columns(pl.col("is_buyer_maker").cast(pl.Int64))
    assert ours.equals(ref)
    assert bars_match(db, window_a) == ""
    # The receive time is ours (now), not the recording's.
    assert query(db, "SELECT MIN(recv_ms) > 1700000000000 + 86400000 * 365 FROM ticks")[0][0] == 1


def test_recording_replays_to_the_same_ticks(recorded_run: Path, window_a: pl.DataFrame) -> None:
    rec = recorded_run / "recorded.gz"
    assert len(read_recording(rec)) == window_a.height  # plain gzip + json can read it: complete file
    out = recorded_run / "replayed"
    out.mkdir()
    res = run_flow(write_replay_config(out, source={"paths": [str(rec)], "speed": "max"}), "--no-recovery")
    assert res.returncode == 0, res.stderr[-3000:]
    cols = "symbol, trade_id, ts_ms, price, qty, is_buyer_maker, first_id, last_id, event_ms, recv_ms"
    sql = f"SELECT {cols} FROM ticks ORDER BY symbol, trade_id"
    assert query(out / "ticklens.db", sql) == query(recorded_run / "ticklens.db", sql)


@pytest.mark.parametrize("client", ["picows", "websockets"])
def test_dropped_connection_reconnects_without_duplicates_or_loss(
    tmp_path: Path, window_b: pl.DataFrame, client: str
) -> None:
    # Each new connection starts 400 trades back, so the overlap really delivers duplicates.
    feed = Feed(*map(str, WINDOW_B), "--speed", "max", "--drop-after", "6000", "--drop-count", "3", "--resend", "400")
    try:
        run_until_stored(tmp_path, feed, window_b, client=client)
        stats = feed.stats()
    finally:
        feed.stop()
    db = tmp_path / "ticklens.db"
    assert stats["drops"] == 3
    assert stats["sessions_total"] >= 4
    assert stats["trades"] >= window_b.height + 3 * 400 - 3  # duplicates were sent
    assert tick_count(db) == window_b.height
    assert feed_status(db)["reconnects"] >= 3
    dups = sum(
        r[0] for r in query(db, "SELECT json_extract(value, '$.duplicates') FROM status WHERE key LIKE 'symbol:%'")
    )
    assert dups >= stats["trades"] - window_b.height - 10


def test_malformed_messages_are_counted_with_reasons_and_the_flow_keeps_running(
    tmp_path: Path, window_b: pl.DataFrame
) -> None:
    feed = Feed(*map(str, WINDOW_B), "--speed", "max", "--malformed-every", "97")
    try:
        run_until_stored(tmp_path, feed, window_b)
        stats = feed.stats()
    finally:
        feed.stop()
    db = tmp_path / "ticklens.db"
    reasons = [r[0] for r in query(db, "SELECT reason FROM rejects")]
    assert stats["malformed_rejectable"] > 100
    assert len(reasons) == stats["malformed_rejectable"]
    for expected in ("invalid JSON", "missing field 'p'", "subscription response", "unexpected event type", "price"):
        assert any(expected in r for r in reasons), expected
    assert feed_status(db)["skipped"] == stats["malformed"]["other_stream"]
    assert tick_count(db) == window_b.height


def test_rollover_opens_the_new_connection_first_and_loses_nothing(tmp_path: Path, window_a: pl.DataFrame) -> None:
    # 8 minutes at 80x: about 6 s, with a planned rollover every second and 0.3 s of overlap.
    feed = Feed(*map(str, WINDOW_A), "--speed", "80", "--resend", "100")
    try:
        run_until_stored(tmp_path, feed, window_a, rollover_s=1.0, overlap_s=0.3)
        stats = feed.stats()
    finally:
        feed.stop()
    db = tmp_path / "ticklens.db"
    status = feed_status(db)
    assert status["rollovers"] >= 3
    assert status["reconnects"] == 0
    assert stats["sessions_total"] >= 4
    assert tick_count(db) == window_a.height
