"""Market page: live candles (or a price line) with volume at the chart's foot, and a window summary; where
the order book is collected, the best bid and ask over the candles and the intervals in which the
book was unknown shaded.

The chart is drawn once (Bokeh glyphs: a segment per wick, a quad per body) and
then fed through one ColumnDataSource: a new bar is `stream`ed, the in-progress
bar is `patch`ed in place, so the browser only receives the changed rows. Prices
(tiles, axis, hover) are shown with the symbol's own decimals (`price_decimals`
of /api/v1/symbols), so 0.0061922 is not "0.0062".
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.core.properties import field
from bokeh.models import (
    ColumnDataSource,
    DataRange1d,
    HoverTool,
    Line,
    NumeralTickFormatter,
    Quad,
    Range1d,
    Scatter,
    Segment,
    Span,
    VBar,
)
from bokeh.plotting import figure

from panel_app.charts import add_glyph, gap_spans, gap_strips, set_gaps
from panel_app.client import Api, ApiError, to_time
from panel_app.page import DOWN, UP, Page, card, fmt_num, fmt_price, price_format
from panel_app.text import Html
from ticklens.domain.timeframes import TIMEFRAME_MS

RANGES_MS = {"15 min": 900_000, "1 hour": 3_600_000, "6 hours": 21_600_000, "1 day": 86_400_000}
MAX_POINTS = 1500  # more candles than pixels helps nobody
KEEP_RAW = 300  # newest bars always drawn one by one
LIVE_WINDOW = 4000  # streamed rows kept before the oldest roll off
REFRESH_LIMIT = 600
TAIL = 16  # newest rows that may still change (lateness window of 1s bars)
L1_POINTS = 1500  # best bid/ask samples over the shown range (one per candle, or coarser)
L1_EVERY = 3  # refreshes between two reloads of the bid/ask lines and the gap shading


def l1_every_ms(start_ms: int, end_ms: int, tf_ms: int, points: int = L1_POINTS) -> int:
    """The sampling interval of the bid/ask lines: one bar, or whole bars enough to stay within `points`."""
    bars = max(1, -(-(end_ms - start_ms) // tf_ms))
    return tf_ms * max(1, -(-bars // points))


def l1_columns(samples: list[dict], every_ms: int) -> dict[str, np.ndarray]:
    """Sampled L1 rows → line columns at the moment each state applies (its interval's end); an empty side is NaN."""
    at = np.array([s["at_ms"] for s in samples], dtype="int64") + every_ms

    def col(name: str) -> np.ndarray:
        return np.array([np.nan if s.get(name) is None else float(s[name]) for s in samples], dtype="float64")

    return {"ts_ms": at, "time": np.array(to_time(at)), "bid": col("bid"), "ask": col("ask")}


def candle_columns(df: pd.DataFrame, tf_ms: int) -> dict[str, Any]:
    """Bars → the columns the chart's glyphs read (one source for wicks, bodies, volume, line)."""
    start = df["start_ms"].to_numpy(dtype="int64")
    # A real bar spans one timeframe; a downsampled row spans the bars merged into it.
    span = df["span_ms"].to_numpy(dtype="int64") if "span_ms" in df else np.full(len(start), tf_ms, dtype="int64")
    half = pd.to_timedelta(span * 0.35, unit="ms")
    t = to_time(start)
    o, c = df["open"].to_numpy(float), df["close"].to_numpy(float)
    cols = {
        "start_ms": start,
        "time": t,
        "left": t - half,
        "right": t + half,
        "width": span * 0.7,
        "open": o,
        "high": df["high"].to_numpy(float),
        "low": df["low"].to_numpy(float),
        "close": c,
        "bottom": np.minimum(o, c),
        "top": np.maximum(o, c),
        "volume": df["volume"].to_numpy(float),
        "trades": df["trades"].to_numpy("int64"),
        "color": np.where(c >= o, UP, DOWN),
        "state": np.where(df["in_progress"].to_numpy(bool), "in progress", "closed"),
        # An open bar is drawn lighter, so the one still changing is easy to see.
        "alpha": np.where(df["in_progress"].to_numpy(bool), 0.45, 1.0),
    }
    # Own, writable copies: Bokeh patches these arrays in place.
    return {k: np.array(v, copy=True) for k, v in cols.items()}


def _placeholder() -> pd.DataFrame:
    now = int(time.time() * 1000) // 1000 * 1000
    return pd.DataFrame(
        {
            "start_ms": [now - 1000, now],
            "open": [1.0, 1.0],
            "high": [1.0, 1.0],
            "low": [1.0, 1.0],
            "close": [1.0, 1.0],
            "volume": [0.0, 0.0],
            "trades": [0, 0],
            "in_progress": [False, True],
        }
    )


class CandleChart:
    """One figure: candles (or a close line) and, at its foot, volume, from one source."""

    def __init__(self) -> None:
        seed = candle_columns(_placeholder(), 1000)
        self.source = ColumnDataSource(seed, name="market-candles")
        # Plain Bokeh glyphs (no hvplot render): a session's document builds in tens of ms.
        self.price = figure(
            x_axis_type="datetime",
            height=540,
            sizing_mode="stretch_width",
            tools="xpan,xwheel_zoom,box_zoom,reset,save",
            active_scroll="xwheel_zoom",
            toolbar_location="right",
            output_backend="canvas",
        )
        src = self.source
        wicks = add_glyph(self.price, src, Segment(x0="time", y0="low", x1="time", y1="high", line_color="#8b949e"))
        bodies = add_glyph(
            self.price,
            src,
            Quad(
                left="left",
                right="right",
                bottom="bottom",
                top="top",
                fill_color=field("color"),
                line_color=field("color"),
                fill_alpha=field("alpha"),
            ),
        )
        self.candle_renderers = [wicks, bodies]
        self.price.yaxis.axis_label = "price"
        self.price.grid.grid_line_alpha = 0.4
        self.price.x_range = DataRange1d(range_padding=0.02, follow="end")
        self.price.y_range = DataRange1d(range_padding=0.08)
        self.price_axis = NumeralTickFormatter(format=price_format(None), name="market-price-format")
        self.price.yaxis.formatter = self.price_axis
        self.hover = HoverTool(
            renderers=[bodies],
            tooltips=self._tooltips(None),
            formatters={"@time": "datetime"},
            name="market-hover",
        )
        self.price.add_tools(self.hover)
        self.line = add_glyph(
            self.price, src, Line(x="time", y="close", line_width=2, line_color="#1f6feb"), visible=False
        )
        # Best bid / ask where books are collected: sampled on the server at each bar's end.
        self.l1_source = ColumnDataSource(l1_columns([], 0), name="market-l1")
        self.bid_line = add_glyph(
            self.price,
            self.l1_source,
            Line(x="time", y="bid", line_color=UP, line_width=1, line_dash="dotted"),
            name="market-bid",
        )
        self.ask_line = add_glyph(
            self.price,
            self.l1_source,
            Line(x="time", y="ask", line_color=DOWN, line_width=1, line_dash="dotted"),
            name="market-ask",
        )
        self.gap_source = gap_strips(self.price, "market-gaps")
        self.last_span = Span(dimension="width", location=1.0, line_dash="dashed", line_color="#57606a", line_width=1)
        self.price.add_layout(self.last_span)
        # Volume at the foot of the same figure, on a range of its own scaled so the bars fill the
        # lowest fifth: one figure instead of two is a sixth less to build on the server and to lay out
        # in the browser per fresh tab (docs/performance.md, issue 17).
        self.volume_range = Range1d(start=0, end=1, name="market-volume-range")
        self.price.extra_y_ranges = {"volume": self.volume_range}
        self.volume_bars = add_glyph(
            self.price,
            src,
            VBar(
                x="time",
                width="width",
                top="volume",
                fill_color=field("color"),
                line_color=field("color"),
                fill_alpha=0.35,
                line_alpha=0.35,
            ),
            y_range_name="volume",
            level="underlay",
        )
        # The price range reaches below the lowest price by a third of the prices' span (an unseen
        # point the range fits), so candles stay clear of the volume bars.
        self.floor_source = ColumnDataSource({"time": [], "y": []}, name="market-price-floor")
        floor = add_glyph(self.price, self.floor_source, Scatter(x="time", y="y"), visible=False)
        self.price.y_range.renderers = [wicks, bodies, self.line, self.bid_line, self.ask_line, floor]
        self.price.min_border_left = 70
        self.tf_ms = 1000

    @staticmethod
    def _tooltips(decimals: int | None) -> list[tuple[str, str]]:
        f = "{" + price_format(decimals) + "}"
        return [
            ("time", "@time{%F %T}"),
            ("O H L C", f"@open{f} @high{f} @low{f} @close{f}"),
            ("volume", "@volume{0,0.000}"),
            ("trades", "@trades"),
            ("", "@state"),
        ]

    def set_decimals(self, decimals: int | None) -> None:
        """Axis and hover show prices with the symbol's decimals."""
        self.price_axis.format = price_format(decimals)
        self.hover.tooltips = self._tooltips(decimals)

    def set_style(self, style: str) -> None:
        candles = style == "Candles"
        for r in self.candle_renderers:
            r.visible = candles
        self.line.visible = not candles

    def load(self, df: pd.DataFrame, tf_ms: int) -> None:
        """Replace everything (new symbol, timeframe or range)."""
        self.tf_ms = tf_ms
        self.source.data = candle_columns(df, tf_ms)
        self._mark_last()

    @property
    def last_start(self) -> int | None:
        starts = self.source.data["start_ms"]
        return int(starts[-1]) if len(starts) else None

    def refresh_from(self) -> int | None:
        """Oldest bar still in progress among the newest few (bars stay open for the lateness window)."""
        starts, state = self.source.data["start_ms"], self.source.data["state"]
        n = len(starts)
        for i in range(max(0, n - TAIL), n):
            if state[i] == "in progress":
                return int(starts[i])
        return self.last_start

    def update(self, df: pd.DataFrame) -> tuple[int, int]:
        """Patch bars we already show (still in progress, or just closed), stream newer ones.

        Returns (patched, streamed) so callers can tell a quiet second from a busy one.
        """
        if df.empty:
            return 0, 0
        last = self.last_start
        if last is None:
            self.source.stream(candle_columns(df, self.tf_ms), rollover=LIVE_WINDOW)
            self._mark_last()
            return 0, len(df)
        starts = self.source.data["start_ms"]
        n = len(starts)
        index = {int(starts[i]): i for i in range(max(0, n - TAIL), n)}
        old = df[df["start_ms"].isin(list(index))]
        new = df[df["start_ms"] > last]
        if len(old):
            cols = candle_columns(old, self.tf_ms)
            rows = [index[int(s)] for s in old["start_ms"]]
            skip = ("start_ms", "time", "left", "right", "width")  # a real bar's place never changes
            self.source.patch({k: list(zip(rows, v, strict=True)) for k, v in cols.items() if k not in skip})
        if len(new):
            self.source.stream(candle_columns(new, self.tf_ms), rollover=LIVE_WINDOW)
        self._mark_last()
        return len(old), len(new)

    @property
    def shown_range(self) -> tuple[int, int] | None:
        """[first bar start, last bar end) of what is drawn, epoch ms."""
        starts = self.source.data["start_ms"]
        if not len(starts):
            return None
        return int(starts[0]), int(starts[-1]) + self.tf_ms

    def set_book(self, samples: list[dict], every_ms: int, spans: list[tuple[int, int]]) -> None:
        """The bid/ask lines and the book-unknown shading."""
        self.l1_source.data = l1_columns(samples, every_ms)
        set_gaps(self.gap_source, spans)

    def _mark_last(self) -> None:
        """The last price's line; the volume range (the tallest bar at a fifth of the height) and the
        price range's floor below the candles."""
        data = self.source.data
        close = data["close"]
        if not len(close):
            return
        self.last_span.location = float(close[-1])
        top = float(np.nanmax(np.asarray(data["volume"], dtype="float64"), initial=0.0))
        end = 5.0 * top if top > 0 else 1.0
        if end != self.volume_range.end:
            self.volume_range.end = end
        low = np.asarray(data["low"], dtype="float64")
        high = np.asarray(data["high"], dtype="float64")
        if np.isfinite(low).any() and np.isfinite(high).any():
            lo, hi = float(np.nanmin(low)), float(np.nanmax(high))
            floor = lo - 0.35 * (hi - lo) if hi > lo else lo - 1e-4 * abs(lo)
            if list(self.floor_source.data["y"]) != [floor]:
                self.floor_source.data = {"time": [data["time"][-1]], "y": [floor]}


class MarketPage(Page):
    """One symbol's live price and volume; summary tiles above."""

    title = "Market"

    symbol = param.Selector(objects=[], doc="Symbol")
    timeframe = param.Selector(objects=list(TIMEFRAME_MS), default="1s")
    window = param.Selector(objects=list(RANGES_MS), default="15 min", label="Range")
    style = param.Selector(objects=["Candles", "Line"], default="Candles")

    def __init__(self, api: Api, **params: object) -> None:
        super().__init__(api, **params)
        self.chart = CandleChart()
        self.summary = Html(sizing_mode="stretch_width", margin=(0, 10))
        self.caption = Html(margin=(0, 10), styles={"color": "#57606a", "font-size": "12px"})
        self._ticks = 0
        self._loading = False
        self.decimals: int | None = None  # of the shown symbol's prices
        self.update_ms: list[float] = []  # server-side time per refresh, for the performance note
        self.books = False  # the shown range has best bid/ask lines
        pn.bind(self.safely(self.show), self.param.symbol, self.param.timeframe, self.param.window, watch=True)
        pn.bind(self.chart.set_style, self.param.style, watch=True)

    def view(self) -> pn.viewable.Viewable:
        controls = pn.Row(
            pn.widgets.Select.from_param(self.param.symbol, width=150),
            pn.widgets.RadioButtonGroup.from_param(self.param.timeframe, button_type="primary", button_style="outline"),
            pn.widgets.Select.from_param(self.param.window, width=120),
            pn.widgets.RadioButtonGroup.from_param(self.param.style, button_type="default"),
        )
        chart = pn.Column(
            pn.pane.Bokeh(self.chart.price, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
            css_classes=["tl-market-chart"],
        )
        return pn.Column(self.message, controls, self.summary, chart, self.caption, sizing_mode="stretch_width")

    def show(self, *_: Any) -> None:
        if self._loading:
            return
        self.fill_symbols()
        if not self.symbol:
            return
        tf_ms = TIMEFRAME_MS[self.timeframe]
        self.decimals = self.api.price_decimals(self.symbol)
        self.chart.set_decimals(self.decimals)
        df, thinned = self.api.ohlc_window(
            self.symbol, self.timeframe, RANGES_MS[self.window] // tf_ms, MAX_POINTS, KEEP_RAW
        )
        self.chart.load(df, tf_ms)
        self.caption.object = (
            f"{len(df):,} rows: {thinned}" if thinned else f"{len(df):,} bars of {self.timeframe}"
        ) + (
            ". Volume along the foot (hover a bar for its figures). The newest bar is in progress (drawn"
            " lighter) and updates in place. Where the order book is"
            " collected: best bid and ask at each bar's end (dotted), book unknown shaded grey."
        )
        self.say("" if len(df) else f"No {self.timeframe} bars for {self.symbol} yet.")
        self._book_overlay()
        self._summary()

    def refresh(self) -> None:
        if not self.symbol:
            self.show()
            return
        t0 = time.perf_counter()
        df = self.api.ohlc(self.symbol, self.timeframe, limit=REFRESH_LIMIT, start_ms=self.chart.refresh_from())
        self.chart.update(df)
        self.update_ms.append((time.perf_counter() - t0) * 1000)
        self._ticks += 1
        if self._ticks % L1_EVERY == 0:
            self._book_overlay()
        if self._ticks % 2 == 0:
            self._summary()

    def _book_overlay(self) -> None:
        """Best bid/ask at each shown bar's end, and the book's unknown intervals, from the API."""
        shown = self.chart.shown_range
        if shown is None or not self.symbol:
            self.chart.set_book([], 0, [])
            self.books = False
            return
        start, end = shown
        every = l1_every_ms(start, end, self.chart.tf_ms)
        samples = self.api.quote_samples(self.symbol, start, end, every)
        spans = gap_spans(self.api.book_gaps(self.symbol, start, end), end) if samples else []
        self.chart.set_book(samples, every, spans)
        self.books = bool(samples)

    def _summary(self) -> None:
        tf_ms = TIMEFRAME_MS[self.timeframe]
        window = max(2, min(100_000, RANGES_MS[self.window] // tf_ms))
        st = self.api.stats(self.symbol, window=window, timeframe=self.timeframe)
        try:
            per_symbol = self.api.status().get("per_symbol", [])
        except ApiError:
            per_symbol = []
        rate = next((s["trades_per_s"] for s in per_symbol if s["symbol"] == self.symbol), None)
        ret = st.get("return")
        color = UP if (ret or 0) >= 0 else DOWN
        d = self.decimals
        tiles = [
            card("last price", fmt_price(st.get("last"), d), self.symbol.upper()),
            card("change", "–" if ret is None else f"{ret * 100:+.3f}%", f"over {self.window}", color),
            card("high", fmt_price(st.get("max"), d)),
            card("low", fmt_price(st.get("min"), d)),
            card("volume", fmt_num(st.get("volume"), 3), "base asset"),
            card("VWAP", fmt_price(st.get("vwap"), d)),
            card("trades/s", "–" if rate is None else f"{rate:,.1f}", "last 10 s"),
        ]
        self.summary.object = f'<div class="tl-cards">{"".join(tiles)}</div>'
