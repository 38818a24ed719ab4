"""The dashboard's pure parts without a browser: thinning long ranges, and the alert form's payloads."""

from __future__ import annotations

import itertools
import time
import typing

import numpy as np
import pandas as pd
import polars as pl
import pytest
from bokeh.models import VStrip

from panel_app.alerts import METRICS, OPERATORS, AlertsPage
from panel_app.book import depth_curves, quote_columns
from panel_app.charts import gap_spans
from panel_app.client import Api, to_time
from panel_app.market import CandleChart, candle_columns
from storage.port import BAR_OUT_COLUMNS
from ticklens.domain.alerts.rules import AlertRule, Metric, Operator
from ticklens.domain.stats.thinning import thin_bars


def _bars(n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = 1_721_347_020_000 + np.sort(rng.choice(np.arange(n * 2), size=n, replace=False)) * 1000
    close = 64_000 + np.cumsum(rng.normal(0, 5, n))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) + rng.uniform(0, 3, n)
    low = np.minimum(open_, close) - rng.uniform(0, 3, n)
    return pd.DataFrame(
        {
            "start_ms": start,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(0, 2, n),
            "trades": rng.integers(1, 50, n),
            "in_progress": np.r_[np.zeros(n - 2, bool), [True, True]],
            "time": to_time(start),
        }
    )


def _rows(df: pd.DataFrame) -> list[tuple]:
    """The frame as store rows (BAR_OUT_COLUMNS), as the API's reader returns them."""
    full = df.assign(
        quote_volume=df["volume"] * df["close"],
        taker_buy_volume=df["volume"] / 2,
        vwap=df["close"],
        closed=(~df["in_progress"]).astype(int),
        revision=0,
        origin="flow",
    )
    return list(full[list(BAR_OUT_COLUMNS)].itertuples(index=False, name=None))


def test_the_apis_thinning_keeps_extremes_and_volume_of_every_bucket() -> None:
    """What `/api/v1/ohlc?max_points` serves the dashboard's long ranges (the dashboard thins nothing)."""
    df = _bars(20_000)
    rows, spans = thin_bars(_rows(df), BAR_OUT_COLUMNS, 1500, 1000)
    out = pd.DataFrame(rows, columns=list(BAR_OUT_COLUMNS))
    assert len(out) <= 1500 and len(spans) == len(out)
    # Oracle: every thinned row is the OHLCV of the input rows in [its start, next row's start).
    src = pl.from_pandas(df[["start_ms", "open", "high", "low", "close", "volume"]])
    starts = out["start_ms"].tolist() + [int(df["start_ms"].iloc[-1]) + 1]
    for i in range(0, len(out), 97):
        part = src.filter((pl.col("start_ms") >= starts[i]) & (pl.col("start_ms") < starts[i + 1]))
        row = out.iloc[i]
        assert row["open"] == part["open"][0] and row["close"] == part["close"][-1]
        assert row["high"] == part["high"].max() and row["low"] == part["low"].min()
        assert row["volume"] == pytest.approx(part["volume"].sum())
    assert out["volume"].sum() == pytest.approx(df["volume"].sum())
    assert out["high"].max() == df["high"].max() and out["low"].min() == df["low"].min()


def test_short_ranges_are_drawn_bar_for_bar_one_timeframe_wide() -> None:
    df = _bars(500)
    rows = _rows(df)
    assert thin_bars(rows, BAR_OUT_COLUMNS, 1500, 1000) == (rows, [1000] * 500)
    cols = candle_columns(df, 1000)
    assert set(cols["width"].tolist()) == {700.0}  # gaps between bars stay gaps
    assert list(cols["state"][-2:]) == ["in progress", "in progress"]
    up = cols["close"] >= cols["open"]
    assert (cols["top"] == np.where(up, cols["close"], cols["open"])).all()


@pytest.mark.parametrize(("metric", "operator"), list(itertools.product(METRICS, OPERATORS)))
def test_alert_form_builds_a_rule_the_rule_model_accepts(metric: str, operator: str) -> None:
    page = AlertsPage(Api("http://127.0.0.1:9"))  # never called
    for p in ("symbol", "pair_a", "pair_b"):
        page.param[p].objects = ["btcusdt", "ethusdt"]
    page.param.update(symbol="btcusdt", pair_a="btcusdt", pair_b="ethusdt", metric=metric, operator=operator)
    page.threshold = 2.0
    page.exit_threshold = "0.5" if operator in (">", ">=", "crosses_above") else "3.5"
    rule = AlertRule.model_validate(page.rule_payload())
    exit_level = None if operator == "==" else float(page.exit_threshold)  # '==' takes no exit level (hidden)
    assert (rule.metric, rule.operator, rule.exit_threshold) == (metric, operator, exit_level)
    page.api.close()


@pytest.mark.parametrize(
    ("metric", "on", "more", "expect"),
    [
        ("price", "bar_close", ["ethusdt"], {"on": "bar_close", "timeframe": "5m", "symbols": ["btcusdt", "ethusdt"]}),
        ("price", "default", [], {"on": "tick", "timeframe": None, "symbol": "btcusdt"}),
        ("volume", "tick", [], {"on": "tick", "timeframe": "5m", "symbol": "btcusdt"}),
        ("stale_s", "bar_close", ["ethusdt"], {"on": "tick", "timeframe": None, "symbols": ["btcusdt", "ethusdt"]}),
        ("reconnects_per_min", "default", ["ethusdt"], {"keys": ["_feed"], "timeframe": None}),
    ],
)
def test_alert_form_offers_on_hold_and_more_symbols(metric: str, on: str, more: list[str], expect: dict) -> None:
    page = AlertsPage(Api("http://127.0.0.1:9"))  # never called
    for p in ("symbol", "pair_a", "pair_b", "more_symbols"):
        page.param[p].objects = ["btcusdt", "ethusdt"]
    page.param.update(symbol="btcusdt", metric=metric, on=on, more_symbols=more, timeframe="5m", min_duration_s=30)
    rule = AlertRule.model_validate(page.rule_payload())
    assert rule.min_duration_s == 30
    for key, value in expect.items():
        assert getattr(rule, key) == value, key
    page.api.close()


def test_alert_form_offers_every_metric_and_operator_of_the_rule_model() -> None:
    assert set(METRICS) == set(typing.get_args(Metric))
    assert set(OPERATORS) == set(typing.get_args(Operator))


def test_freshness_badge_says_live_stale_stopped_or_down() -> None:
    from panel_app.page import freshness_badge
    from ticklens.domain.times import iso_ms

    now = int(time.time() * 1000)

    def status(written_ago_ms: int, newest_ms: int, running: bool = True) -> dict:
        return {
            "running": running,
            "status_time": iso_ms(now - written_ago_ms),
            "per_symbol": [{"last_trade_ms": newest_ms}],
        }

    live = freshness_badge(status(1500, now - 800), None)
    assert "live · 1.5 s ago" in live and "newest trade 0.8 s old" in live
    replay = freshness_badge(status(1500, 1_721_347_200_000), None)
    assert "newest trade 2024-07-19 00:00:00Z" in replay
    assert "stale · 20 s ago" in freshness_badge(status(20_000, now - 20_000), None)
    assert "flow stopped" in freshness_badge(status(1000, now, running=False), None)
    assert "API down" in freshness_badge(None, "API at http://127.0.0.1:1 is down")


def test_book_depth_curves_are_the_running_totals_best_level_first() -> None:
    from decimal import Decimal

    bids = [["61800.20", "2.909"], ["61800.10", "0.004"], ["61799.00", "10"]]
    asks = [["61800.30", "1.5"], ["61801.00", "0.250"]]
    got = depth_curves(bids, asks)
    want_b = [sum(Decimal(q) for _, q in bids[: i + 1]) for i in range(len(bids))]
    want_a = [sum(Decimal(q) for _, q in asks[: i + 1]) for i in range(len(asks))]
    assert got["bid_price"].tolist() == [61800.2, 61800.1, 61799.0]
    assert got["ask_price"].tolist() == [61800.3, 61801.0]
    assert np.allclose(got["bid_cum"], [float(x) for x in want_b], rtol=0, atol=1e-12)
    assert np.allclose(got["ask_cum"], [float(x) for x in want_a], rtol=0, atol=1e-12)
    empty = depth_curves([], [])
    assert all(len(v) == 0 for v in empty.values())


def test_book_quote_lines_break_at_an_empty_side_and_open_gaps_reach_now() -> None:
    rows = [
        {"ts_ms": 1_723_161_256_000, "bid": 1.5, "ask": 2.5},
        {"ts_ms": 1_723_161_256_100, "bid": None, "ask": 2.6},
    ]
    cols = quote_columns(rows)
    assert cols["ts_ms"].tolist() == [r["ts_ms"] for r in rows]
    assert cols["bid"][0] == 1.5 and np.isnan(cols["bid"][1]) and cols["ask"].tolist() == [2.5, 2.6]
    assert list(cols["time"]) == list(to_time(cols["ts_ms"]))
    gaps = [{"from_ms": 10, "to_ms": 20}, {"from_ms": 30, "to_ms": None}]
    assert gap_spans(gaps, 99) == [(10, 20), (30, 99)]


def test_market_bid_ask_lines_sample_one_bar_or_whole_bars_and_sit_at_each_interval_end() -> None:
    from panel_app.market import L1_POINTS, l1_columns, l1_every_ms

    assert l1_every_ms(0, 900_000, 1_000) == 1_000  # 900 bars of 1s: one sample each
    day = l1_every_ms(0, 86_400_000, 1_000)  # 86,400 bars: whole seconds, at most L1_POINTS samples
    assert day % 1_000 == 0 and 86_400_000 / day <= L1_POINTS and 86_400_000 / (day - 1_000) > L1_POINTS
    assert l1_every_ms(0, 1, 60_000) == 60_000
    samples = [{"at_ms": 1_000, "bid": 1.5, "ask": 2.5}, {"at_ms": 2_000, "bid": None, "ask": 2.6}]
    cols = l1_columns(samples, 1_000)
    assert cols["ts_ms"].tolist() == [2_000, 3_000]  # the state in force at the interval's end
    assert cols["bid"][0] == 1.5 and np.isnan(cols["bid"][1]) and cols["ask"].tolist() == [2.5, 2.6]
    assert all(len(v) == 0 for v in l1_columns([], 1_000).values())


def test_book_gaps_shade_the_market_chart_newest_fifty_in_epoch_ms() -> None:
    chart = CandleChart()
    strips = [r for r in chart.price.renderers if isinstance(getattr(r, "glyph", None), VStrip)]
    assert len(strips) == 1 and strips[0].data_source is chart.gap_source
    spans = [(1_700_000_000_000 + 10_000 * i, 1_700_000_000_000 + 10_000 * i + 2_500) for i in range(60)]
    chart.set_book([], 1000, spans)
    assert chart.gap_source.data["x0"] == [float(a) for a, _ in spans[10:]]
    assert chart.gap_source.data["x1"] == [float(b) for _, b in spans[10:]]
    chart.set_book([], 1000, [])
    assert chart.gap_source.data == {"x0": [], "x1": []}


def test_market_volume_sits_below_the_candles_in_one_figure() -> None:
    """Volume shares the price figure: its range puts the tallest bar at a fifth of the height, and the
    price range reaches a third of the prices' span below the lowest low, so the two never overlap."""
    chart = CandleChart()
    df = _bars(120)
    chart.load(df, 1000)
    assert chart.volume_range.end == 5 * df["volume"].max()
    lo, hi = df["low"].min(), df["high"].max()
    assert chart.floor_source.data["y"] == [lo - 0.35 * (hi - lo)]
    # The floor is one of the points the price range fits; the volume bars are on their own range.
    floor = next(r for r in chart.price.renderers if getattr(r, "data_source", None) is chart.floor_source)
    assert floor in chart.price.y_range.renderers and not floor.visible
    bars = chart.volume_bars
    assert bars.y_range_name == "volume" and bars not in chart.price.y_range.renderers
    # Live: a taller in-progress bar rescales the volume range.
    more = df.tail(1).assign(volume=df["volume"].max() * 3)
    chart.update(more)
    assert chart.volume_range.end == 5 * more["volume"].iloc[0]
