"""Microstructure page: quotes, order flow, trades against quotes and VPIN of one symbol.

Rows come from `/api/v1/microstructure/{symbol}` (the flow's micro bars) and
`/api/v1/microstructure/{symbol}/vpin`; the figures are built once and new rows stream
into them (`charts.append_rows`). Every number is computed by the flow
(ticklens/domain/micro/); this page only draws, apart from the running sum of OFI.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, LinearAxis, LinearColorMapper, Range1d
from bokeh.plotting import figure

from panel_app.charts import add_hover, append_rows, live_source, replace_rows, time_figure
from panel_app.client import Api, ApiError, to_time
from panel_app.page import ACCENT, DOWN, UP, Page, card, fmt_num
from ticklens.domain.timeframes import TIMEFRAME_MS

BARS = 600  # rows loaded when the page opens
FIELDS = [
    "mid_close",
    "bid_band",
    "ask_band",
    "spread_bps_twa",
    "spread_bps_max",
    "ofi",
    "cum_ofi",
    "mid_change",
    "trade_imbalance",
    "eff_spread_bps",
    "realized_spread_bps",
    "price_impact_bps",
    "vpin",
    "vpin_buckets",
    "depth_bid_10bps",
    "depth_ask_10bps",
]


def micro_rows(payload: dict, cum_from: float = 0.0, mid_from: float | None = None) -> list[dict]:
    """API bars → chart rows: `start_ms`, the band mid·(1 ∓ spread/2), cumulative OFI and Δmid."""
    rows = []
    cum, first_mid = cum_from, mid_from
    for b in payload.get("bars", []):
        mid, spread = b.get("mid_close"), b.get("spread_bps_twa")
        half = None if mid is None or spread is None else mid * spread / 2e4
        cum += b.get("ofi") or 0.0
        if first_mid is None and mid is not None:
            first_mid = mid
        rows.append(
            {
                **{k: b.get(k) for k in FIELDS if k in b},
                "start_ms": b["ts_ms"],
                "bid_band": None if half is None else mid - half,
                "ask_band": None if half is None else mid + half,
                "cum_ofi": cum,
                "mid_change": None if mid is None or first_mid is None else mid - first_mid,
            }
        )
    return rows


def book_curve(body: dict) -> dict[str, list[float]]:
    """Cumulative size from the best price outwards, bids then asks (NaN on the other side)."""
    bids = [(float(p), float(q)) for p, q in body.get("bids", [])]
    asks = [(float(p), float(q)) for p, q in body.get("asks", [])]
    price: list[float] = []
    bid: list[float] = []
    ask: list[float] = []
    total = 0.0
    for p, q in bids:
        total += q
        price.append(p)
        bid.append(total)
        ask.append(float("nan"))
    price.reverse()
    bid.reverse()
    ask.reverse()
    total = 0.0
    for p, q in asks:
        total += q
        price.append(p)
        bid.append(float("nan"))
        ask.append(total)
    return {"price": price, "bid": bid, "ask": ask}


def heat_image(body: dict) -> dict[str, list]:
    """The heatmap response as one Bokeh image: rows = price bins (low first), columns = moments."""
    times, edges = body.get("times_ms", []), body.get("price_edges", [])
    if len(times) < 2 or len(edges) < 2:
        return {"image": [], "x": [], "y": [], "dw": [], "dh": []}
    size = np.array(body["bid"], dtype=float) + np.array(body["ask"], dtype=float)  # (columns, rows)
    x0 = to_time([times[0]])[0]
    return {
        "image": [size.T],
        "x": [x0],
        "y": [edges[0]],
        "dw": [times[-1] - times[0]],
        "dh": [edges[-1] - edges[0]],
    }


class MicrostructurePage(Page):
    title = "Microstructure"

    symbol = param.Selector(objects=[], label="Symbol")
    timeframe = param.Selector(objects=["1s", "1m", "5m"], default="1s")

    def __init__(self, api: Api, **params: object) -> None:
        super().__init__(api, **params)
        self.source = live_source(FIELDS)
        self.depth = ColumnDataSource({"price": [], "bid": [], "ask": []})
        self.heat = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self._ticks = 0
        self.cards = pn.pane.HTML("", sizing_mode="stretch_width")
        self.note = pn.pane.Markdown(
            "Definitions and sources: docs/analytics.md (Microstructure). Band: mid ± half the time-weighted "
            "spread. Realized spread and price impact fill in once the horizon has passed.",
            styles={"color": "#57606a", "font-size": "12px"},
        )
        self._last: dict | None = None
        self._build()
        pn.bind(self.safely(self.show), self.param.symbol, self.param.timeframe, watch=True)

    def _build(self) -> None:
        s = self.source
        mid = time_figure("Mid with the bid/ask band", height=240, y_label="price")
        mid.varea("time", "bid_band", "ask_band", source=s, fill_color=ACCENT, fill_alpha=0.18)
        r_mid = mid.line("time", "mid_close", source=s, color=ACCENT, line_width=1.5)
        add_hover(mid, [r_mid], [("mid", "@mid_close{0,0.00}"), ("spread bps", "@spread_bps_twa{0.000}")])
        x = mid.x_range
        spread = time_figure("Quoted spread (bps of mid)", height=180, x_range=x, y_label="bps")
        spread.line("time", "spread_bps_twa", source=s, color=ACCENT, legend_label="time-weighted")
        spread.line("time", "spread_bps_max", source=s, color="#8b949e", legend_label="max", line_dash="dotted")
        spread.legend.location = "top_left"
        ofi = time_figure("Order-flow imbalance and cumulative OFI against the mid's move", height=220, x_range=x)
        self._bars = ofi.vbar("time", top="ofi", width=800, source=s, color=UP, alpha=0.6, legend_label="OFI per bar")
        ofi.extra_y_ranges = {"mid": Range1d(-1, 1)}
        ofi.add_layout(LinearAxis(y_range_name="mid", axis_label="Δ mid"), "right")
        ofi.line("time", "cum_ofi", source=s, color=ACCENT, legend_label="cumulative OFI")
        ofi.line("time", "mid_change", source=s, color=DOWN, y_range_name="mid", legend_label="Δ mid (right)")
        ofi.legend.location = "top_left"
        self._ofi = ofi
        imb = time_figure("Trade imbalance (buy − sell)/(buy + sell)", height=160, x_range=x)
        imb.line("time", "trade_imbalance", source=s, color=ACCENT)
        eff = time_figure("Effective vs realized spread (bps), price impact", height=200, x_range=x, y_label="bps")
        eff.line("time", "eff_spread_bps", source=s, color=ACCENT, legend_label="effective")
        eff.line("time", "realized_spread_bps", source=s, color=UP, legend_label="realized")
        eff.line("time", "price_impact_bps", source=s, color=DOWN, legend_label="impact", line_dash="dashed")
        eff.legend.location = "top_left"
        vpin = time_figure("VPIN", height=160, x_range=x)
        vpin.line("time", "vpin", source=s, color=ACCENT)
        depth = time_figure("Depth within 10 bps (base units)", height=160, x_range=x)
        depth.line("time", "depth_bid_10bps", source=s, color=UP, legend_label="bid")
        depth.line("time", "depth_ask_10bps", source=s, color=DOWN, legend_label="ask")
        depth.legend.location = "top_left"
        book = figure(title="Order book now: cumulative size by price", height=220, sizing_mode="stretch_width")
        book.step("price", "bid", source=self.depth, color=UP, mode="after", legend_label="bids")
        book.step("price", "ask", source=self.depth, color=DOWN, mode="before", legend_label="asks")
        book.xaxis.axis_label = "price"
        book.legend.location = "top_center"
        heat = time_figure("Order-book liquidity: resting size by price and time (last 5 min)", height=260)
        mapper = LinearColorMapper(palette="Viridis256", low=0)
        heat.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.heat, color_mapper=mapper)
        heat.yaxis.axis_label = "price"
        self._heat_mapper = mapper
        self.figures = [mid, spread, heat, book, ofi, imb, eff, vpin, depth]

    def view(self) -> pn.viewable.Viewable:
        controls = pn.Row(
            pn.widgets.Select.from_param(self.param.symbol, width=160),
            pn.widgets.RadioButtonGroup.from_param(self.param.timeframe, button_type="primary", button_style="outline"),
        )
        panes = [pn.pane.Bokeh(f, sizing_mode="stretch_width") for f in self.figures]
        return pn.Column(self.message, controls, self.cards, *panes, self.note, sizing_mode="stretch_width")

    def _ensure_symbols(self) -> bool:
        if not self.param.symbol.objects:
            syms = self.api.symbols()
            if not syms:
                return False
            self.param.symbol.objects = syms
            if self.symbol not in syms:
                self.symbol = syms[0]  # triggers show() through the binding
                return False
        return self.symbol is not None

    def show(self, *_: Any) -> None:
        if not self._ensure_symbols():
            return
        payload = self.api.microstructure(self.symbol, self.timeframe, limit=BARS)
        rows = micro_rows(payload)
        if not rows:
            self.say(f"No microstructure bars for {self.symbol} yet: the flow needs the bookTicker/depth streams.")
        else:
            self.say("")
        replace_rows(self.source, rows, FIELDS)
        self._bars.glyph.width = 0.8 * TIMEFRAME_MS[self.timeframe]
        self._rescale(rows)
        self._show_book()
        self._last = rows[-1] if rows else None
        self._update_cards()

    def refresh(self) -> None:
        if self.symbol is None:
            self.show()
            return
        last = self._last
        start = None if last is None else last["start_ms"] + 1
        payload = self.api.microstructure(self.symbol, self.timeframe, limit=BARS, start_ms=start)
        first_mid = None
        data = self.source.data
        if len(data["mid_close"]):
            mids = np.asarray(data["mid_close"]) - np.asarray(data["mid_change"])
            first_mid = float(mids[np.isfinite(mids)][0]) if np.isfinite(mids).any() else None
        rows = micro_rows(payload, cum_from=0.0 if last is None else last["cum_ofi"], mid_from=first_mid)
        if append_rows(self.source, rows, FIELDS):
            self._last = rows[-1]
            self._update_cards()
            self._show_book()

    def _show_book(self) -> None:
        self._ticks += 1
        try:
            body = self.api.book(self.symbol)
        except ApiError:  # no book stored (no depth stream): the charts stay empty
            self.depth.data = {"price": [], "bid": [], "ask": []}
            return
        self.depth.data = book_curve(body)
        if self._ticks % 5 == 1:  # the heatmap every 5th update: it rebuilds 120 books on the server
            with contextlib.suppress(ApiError):  # no book in the last 5 minutes: the picture stays
                self.heat.data = heat_image(self.api.heatmap(self.symbol))

    def _rescale(self, rows: list[dict]) -> None:
        moves = [r["mid_change"] for r in rows if r["mid_change"] is not None]
        span = max((abs(v) for v in moves), default=1.0) or 1.0
        self._ofi.extra_y_ranges["mid"].update(start=-1.1 * span, end=1.1 * span)

    def _update_cards(self) -> None:
        if self._last is None:
            self.cards.object = ""
            return
        r = self._last
        vb = r.get("vpin_buckets")
        self.cards.object = (
            '<div class="tl-cards">'
            + "".join(
                [
                    card("mid", fmt_num(r.get("mid_close"))),
                    card("spread", fmt_num(r.get("spread_bps_twa"), 3), "bps, time-weighted"),
                    card("OFI", fmt_num(r.get("ofi"), 3), "this bar"),
                    card("eff. spread", fmt_num(r.get("eff_spread_bps"), 3), "bps"),
                    card("VPIN", fmt_num(r.get("vpin"), 3), "" if vb is None else f"{int(vb)} buckets"),
                    card("time", str(to_time([r["start_ms"]])[0])[:19] if r else "–"),
                ]
            )
            + "</div>"
        )
