"""Alerts on microstructure metrics: the rule model accepts them on bar close, the engine reads each
new micro bar once, and the flow stores the triggers (real flow, real SQLite, the recordings)."""

from __future__ import annotations

import math

import pytest

from tests.book_reference import UM
from tests.flow_support import query, run_flow, write_config
from tests.test_alerts import create_rules
from ticklens.domain.alerts.engine import AlertBook
from ticklens.domain.alerts.rules import MICRO_METRICS, AlertRule, StoredRule
from ticklens.domain.book import Quote, Quotes
from ticklens.domain.micro import MicroBook, MicroParams

T0 = 1_700_000_000_000


def _rule(metric: str, op: str, threshold: float, **kw: object) -> StoredRule:
    return StoredRule(1, 1, AlertRule(name="m", metric=metric, symbol="xyz", operator=op, threshold=threshold, **kw))


def _bars() -> list:
    """1s micro bars with spreads 1, 3, 1, 3 bps of mid (one quote per second)."""
    book = MicroBook("x", MicroParams({"1s": 1_000}))
    qs = []
    for i in range(6):
        half = (1 if i % 2 == 0 else 3) * 1e-4 * 10_000 / 2
        qs.append(
            Quote("x", i + 1, T0 + i * 1_000, T0 + i * 1_000, repr(10_000 - half), "1", repr(10_000 + half), "2", 0)
        )
    book.add_quotes(Quotes.from_quotes("x", qs))
    out = book.advance(clock_ms=T0 + 6_000 + 2_000)  # the first write: realized spread still open
    return out.bars + book.advance(clock_ms=T0 + 60_000).bars  # and the rewrite, complete


def test_micro_metrics_are_checked_on_bar_close_only() -> None:
    for m in MICRO_METRICS:
        r = AlertRule(name="m", metric=m, symbol="xyz", operator=">", threshold=1)
        assert r.on == "bar_close" and r.timeframe == "1m"
    with pytest.raises(ValueError, match="bar_close"):
        AlertRule(name="m", metric="vpin", symbol="xyz", operator=">", threshold=0.5, on="tick")
    with pytest.raises(ValueError, match="per symbol"):
        AlertRule(name="m", metric="ofi", pair=("btcusdt", "ethusdt"), operator=">", threshold=1)


def test_a_bar_written_again_is_not_evaluated_twice() -> None:
    bars = _bars()
    assert len(bars) > 6  # every bar written twice (incomplete, then complete)
    rule = _rule("spread_bps", ">", 2.0, timeframe="1s")
    book = AlertBook("xyz")
    fired = book.on_micro([rule], bars)
    want = [b.start_ms for b in bars[:6] if b.spread_bps_twa is not None and b.spread_bps_twa > 2.0]
    assert [f.event_ms for f in fired] == want == [T0 + 1_000, T0 + 3_000, T0 + 5_000]
    assert all(math.isclose(f.value, 3.0, rel_tol=1e-9) for f in fired)
    assert book.on_micro([rule], bars) == []  # the same rows once more: nothing new


def test_crossing_rule_on_depth_and_timeframe_filter() -> None:
    bars = _bars()
    up = _rule("spread_bps", "crosses_above", 2.0, timeframe="1s")
    other_tf = _rule("spread_bps", ">", 0.0, timeframe="1m")
    fired = AlertBook("xyz").on_micro([up, other_tf], bars)
    assert [f.event_ms for f in fired] == [T0 + 1_000, T0 + 3_000, T0 + 5_000]
    assert AlertBook("xyz").on_micro([_rule("depth", ">", 0.0, timeframe="1s")], bars) == []  # no book: NULL


@pytest.mark.skipif(not UM.is_dir(), reason="recordings in ../shared/data/binance are missing")
def test_the_flow_stores_triggers_of_a_micro_rule(tmp_path) -> None:
    cfg = write_config(
        tmp_path,
        symbols=["btcusdt"],
        source={"paths": [str(UM / "btcusdt_20240808.gz")], "streams": ["trade", "bookTicker", "depth"]},
        timeframes=["1s", "1m"],
        recovery={"enabled": False},
    )
    db = tmp_path / "ticklens.db"
    create_rules(
        db, [{"name": "wide", "metric": "spread_bps", "symbol": "btcusdt", "timeframe": "1s", "operator": ">",
              "threshold": 0.05}]
    )  # fmt: skip
    res = run_flow(cfg, "--no-recovery", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    want = query(db, "SELECT start_ms FROM micro_bars WHERE symbol='btcusdt' AND timeframe='1s'"
                     " AND spread_bps_twa > 0.05 ORDER BY start_ms")  # fmt: skip
    got = query(db, "SELECT event_ms FROM alert_events WHERE metric='spread_bps' ORDER BY event_ms")
    assert got == want and len(want) > 0
