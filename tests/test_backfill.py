"""Trade-id gaps on the live path are fetched from REST history and corrected into the bars."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.feed_support import Feed, Flow, query, wait_for
from tests.feed_support import write_config as feed_config
from tests.flow_support import WINDOW_A
from tests.reference import read_recording, reference_bars, trades_frame
from tests.rest_support import agg_trades_from_recordings, rest_history

BTC_FILES = WINDOW_A[:2]


def _config(tmp: Path, feed: Feed, rest_url: str) -> Path:
    path = feed_config(tmp, feed.url, stream="aggTrade")
    cfg = yaml.safe_load(path.read_text())
    cfg["symbols"] = ["btcusdt"]
    cfg["backfill"] = {"enabled": True, "rest_url": rest_url}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def btc_trades():
    return trades_frame(read_recording(BTC_FILES[0]) + read_recording(BTC_FILES[1]))


def _skip_range(trades) -> tuple[int, int]:
    ids = trades["trade_id"].to_list()
    return ids[3000], ids[3149]  # 150 consecutive trades in the middle of the recording


def test_skipped_ids_are_backfilled_and_bars_equal_the_full_reference(tmp_path: Path, btc_trades) -> None:
    lo, hi = _skip_range(btc_trades)
    with rest_history(agg_trades_from_recordings(BTC_FILES), fail_first=2) as rest:
        feed = Feed(
            *map(str, BTC_FILES), "--speed", "80", "--skip-ids", f"btcusdt:{lo}-{hi}", log=tmp_path / "feed.log"
        )
        flow = Flow(_config(tmp_path, feed, rest.url), tmp_path / "flow.log")
        db = tmp_path / "ticklens.db"
        try:
            n = btc_trades.height
            wait_for(lambda: (query(db, "SELECT COUNT(*) FROM ticks") or [(0,)])[0][0] >= n, 60, f"{n} ticks", flow)
            wait_for(lambda: query(db, "SELECT status FROM gaps") == [("filled",)], 120, "the gap marked filled", flow)
        finally:
            assert flow.stop() == 0
            feed.stop()
        assert any(int(r["fromId"]) == lo for r in rest.requests), rest.requests
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT trade_id) FROM ticks") == [(n, n)]
    assert query(db, "SELECT symbol, from_id, to_id, status FROM gaps") == [("btcusdt", lo, hi, "filled")]
    for tf in ("1s", "1m", "5m"):
        ref = reference_bars(btc_trades, tf)
        ours = query(
            db,
            "SELECT start_ms, open, high, low, close, volume, trades FROM bars WHERE timeframe=? ORDER BY start_ms",
            (tf,),
        )
        expected = list(ref.select("start_ms", "open", "high", "low", "close", "volume", "trades").iter_rows())
        assert ours == expected, tf


def test_gap_that_rest_cannot_fill_stays_recorded(tmp_path: Path, btc_trades) -> None:
    lo, hi = _skip_range(btc_trades)
    with rest_history(agg_trades_from_recordings(BTC_FILES), down=True) as rest:
        feed = Feed(
            *map(str, BTC_FILES), "--speed", "80", "--skip-ids", f"btcusdt:{lo}-{hi}", log=tmp_path / "feed.log"
        )
        flow = Flow(_config(tmp_path, feed, rest.url), tmp_path / "flow.log")
        db = tmp_path / "ticklens.db"
        try:
            wait_for(lambda: query(db, "SELECT status FROM gaps") == [("unfillable",)], 90, "an unfillable gap", flow)
        finally:
            assert flow.stop() == 0
            feed.stop()
        assert len(rest.requests) >= 2  # it retried before giving up
    assert query(db, "SELECT from_id, to_id FROM gaps") == [(lo, hi)]
    stored = {r[0] for r in query(db, "SELECT trade_id FROM ticks")}
    assert not stored & set(range(lo, hi + 1))
