"""Book page: one symbol's order book now (cumulative depth), its best bid/ask over time, and the
intervals in which the book was unknown, shaded.

Reads `/api/v1/book/{symbol}` (the newest stored book), `/api/v1/quotes/{symbol}` (L1) and
`/api/v1/book/{symbol}/gaps`; refreshed about once a second while visible.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, DataRange1d
from bokeh.plotting import figure

from panel_app.charts import gap_spans, gap_strips, set_gaps, time_figure
from panel_app.client import Api, ApiError, to_time
from panel_app.page import DOWN, UP, Page, card

DEPTH_LEVELS = 200  # levels per side in the depth chart
WINDOWS_MS = {"1 min": 60_000, "5 min": 300_000, "15 min": 900_000}
QUOTES_MAX = 5000  # the newest L1 rows of the range (a busy symbol has ~200 a second)


def depth_curves(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Book levels (best first, as the API sends them) → cumulative quantity per side, by price.

    Bids run from the best price down, asks from the best up; each side's cumulative quantity
    at a price is the total resting at that price or better.
    """
    bp = np.array([float(p) for p, _ in bids], dtype="float64")
    bq = np.cumsum(np.array([float(q) for _, q in bids], dtype="float64"))
    ap = np.array([float(p) for p, _ in asks], dtype="float64")
    aq = np.cumsum(np.array([float(q) for _, q in asks], dtype="float64"))
    return {"bid_price": bp, "bid_cum": bq, "ask_price": ap, "ask_cum": aq}


def quote_columns(quotes: Sequence[dict]) -> dict[str, np.ndarray]:
    """L1 rows → line columns (None, an empty side, → NaN: a break in the line)."""
    ts = np.array([q["ts_ms"] for q in quotes], dtype="int64")

    def col(name: str) -> np.ndarray:
        return np.array([np.nan if q.get(name) is None else float(q[name]) for q in quotes], dtype="float64")

    return {"ts_ms": ts, "time": np.array(to_time(ts)), "bid": col("bid"), "ask": col("ask")}


class BookPage(Page):
    """The order book of one symbol."""

    title = "Book"

    symbol = param.Selector(objects=[], doc="Symbol")
    window = param.Selector(objects=list(WINDOWS_MS), default="1 min", label="Range")

    def __init__(self, api: Api, **params: object) -> None:
        super().__init__(api, **params)
        self.summary = pn.pane.HTML("", sizing_mode="stretch_width", margin=(0, 10))
        self.caption = pn.pane.HTML(
            "Order book depth (cumulative, best levels first) · best bid/ask over time, book-unknown intervals shaded",
            margin=(0, 10),
            styles={"color": "#57606a", "font-size": "12px"},
        )
        self.depth_source = ColumnDataSource(depth_curves([], []))
        self.bid_source = ColumnDataSource({"price": [], "cum": []})
        self.ask_source = ColumnDataSource({"price": [], "cum": []})
        self.depth = figure(
            title="depth",
            height=300,
            sizing_mode="stretch_width",
            tools="xpan,xwheel_zoom,box_zoom,reset,save",
            x_range=DataRange1d(range_padding=0.02),
            y_range=DataRange1d(start=0, range_padding=0.05),
            output_backend="canvas",
        )
        self.depth.step(x="price", y="cum", source=self.bid_source, mode="after", color=UP, line_width=2)
        self.depth.step(x="price", y="cum", source=self.ask_source, mode="before", color=DOWN, line_width=2)
        self.depth.xaxis.axis_label = "price"
        self.depth.yaxis.axis_label = "cumulative quantity"
        self.quote_source = ColumnDataSource(quote_columns([]))
        self.l1 = time_figure("best bid / ask", height=260, y_label="price")
        self.l1.line("time", "bid", source=self.quote_source, color=UP, line_width=1.5, legend_label="best bid")
        self.l1.line("time", "ask", source=self.quote_source, color=DOWN, line_width=1.5, legend_label="best ask")
        self.l1.legend.location = "top_left"
        self.gap_source = gap_strips(self.l1, "book-gaps")
        self._loading = False
        self._ticks = 0
        pn.bind(self.safely(self.show), self.param.symbol, self.param.window, watch=True)

    def view(self) -> pn.viewable.Viewable:
        controls = pn.Row(
            pn.widgets.Select.from_param(self.param.symbol, width=150),
            pn.widgets.Select.from_param(self.param.window, width=120),
        )
        charts = pn.Column(
            pn.pane.Bokeh(self.depth, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.l1, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        return pn.Column(self.message, controls, self.summary, charts, self.caption, sizing_mode="stretch_width")

    def show(self, *_: Any) -> None:
        if self._loading:
            return
        self.fill_symbols()
        if self.symbol:
            self._load()

    def refresh(self) -> None:
        if self.symbol:
            self._load()

    def _load(self) -> None:
        sym = self.symbol
        now = int(time.time() * 1000)
        try:
            book = self.api.get(f"/api/v1/book/{sym}", depth=DEPTH_LEVELS)
        except ApiError as e:
            if e.status != 404:
                raise
            self.summary.object = ""
            self.say(
                f"No order book stored for {sym}: collect with source.streams [trade, bookTicker, depth] (docs/book.md).",
                "info",
            )
            return
        self.say("")
        curves = depth_curves(book["bids"], book["asks"])
        self.bid_source.data = {"price": curves["bid_price"], "cum": curves["bid_cum"]}
        self.ask_source.data = {"price": curves["ask_price"], "cum": curves["ask_cum"]}
        # The L1 window ends at the newest book, so a replay of older data shows too.
        end = max(book["ts_ms"], 0) + 1
        start = end - WINDOWS_MS[self.window]
        quotes = self.api.get(f"/api/v1/quotes/{sym}", start=start, end=end, limit=QUOTES_MAX)["quotes"]
        self.quote_source.data = quote_columns(quotes)
        gaps = self.api.get(f"/api/v1/book/{sym}/gaps", start=start, end=end)["gaps"]
        set_gaps(self.gap_source, gap_spans(gaps, min(now, end)))
        self.summary.object = self._tiles(book, len(gaps))

    def _tiles(self, book: dict, n_gaps: int) -> str:
        best_bid, best_ask = (book["bids"] or [[None, ""]])[0], (book["asks"] or [[None, ""]])[0]
        spread = "–"
        if best_bid[0] is not None and best_ask[0] is not None:  # exact: the exchange's decimal strings
            spread = str(Decimal(best_ask[0]) - Decimal(best_bid[0]))
        lo, hi = book["complete_range"]
        rng = f"{'0' if lo is None else f'{lo:g}'} – {'∞' if hi is None else f'{hi:g}'}"
        state = ("unknown (stale)", "#cf222e") if book["stale"] else ("known", "#1a7f37")
        return (
            '<div class="tl-cards">'
            + card("best bid", best_bid[0] or "–", best_bid[1], UP)
            + card("best ask", best_ask[0] or "–", best_ask[1], DOWN)
            + card("spread", spread, "")
            + card("book", state[0], f"update {book['update_id']} · {book['time'][11:23]}Z", state[1])
            + card("complete range", rng, f"{n_gaps} gap(s) in range")
            + "</div>"
        )
