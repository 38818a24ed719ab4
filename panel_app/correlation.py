"""Correlation page: rolling correlation of log returns per pair, and a heatmap of the latest matrix.

Both come from `/api/v1/correlation`; the lines are streamed, the heatmap's cells
are patched in place (same symbols) so the browser keeps its figure.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import panel as pn
import param
from bokeh.models import ColorBar, ColumnDataSource, LinearColorMapper
from bokeh.palettes import RdBu11
from bokeh.plotting import figure

from panel_app.charts import add_hover, append_rows, live_source, replace_rows, time_figure
from panel_app.client import Api
from panel_app.page import Page
from ticklens.domain.timeframes import TIMEFRAME_MS

PALETTE = ["#1f6feb", "#bf8700", "#8250df", "#1a7f37", "#cf222e", "#0a7ea4", "#6e7781", "#d4a72c"]
HISTORY = 3000


class CorrelationPage(Page):
    """How the chosen symbols move together, over time and right now."""

    title = "Correlation"

    symbols = param.ListSelector(default=[], objects=[])
    timeframe = param.Selector(objects=list(TIMEFRAME_MS), default="1s")
    window = param.Integer(default=60, bounds=(3, 20_000), label="Window (bars)")

    def __init__(self, api: Api, **params: object) -> None:
        super().__init__(api, **params)
        self.lines = time_figure("Rolling correlation of log returns", 320, y_label="ρ")
        self.lines.y_range.start, self.lines.y_range.end = -1.05, 1.05
        self.sources: dict[str, ColumnDataSource] = {}
        self.heat_source = ColumnDataSource({"x": [], "y": [], "value": [], "label": [], "ink": []})
        self.heat = figure(
            title="Latest correlation matrix",
            height=360,
            width=420,
            x_range=[],
            y_range=[],
            tools="hover,save",
            tooltips=[("pair", "@y × @x"), ("ρ", "@value{0.000}")],
            toolbar_location=None,
            output_backend="canvas",
        )
        mapper = LinearColorMapper(palette=list(reversed(RdBu11)), low=-1, high=1)
        self.heat.rect("x", "y", 1, 1, source=self.heat_source, fill_color={"field": "value", "transform": mapper})
        self.heat.text(
            "x",
            "y",
            text="label",
            source=self.heat_source,
            text_align="center",
            text_baseline="middle",
            text_font_size="13px",
        )
        self.heat.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
        self.heat.grid.visible = False
        self.heat.axis.major_tick_line_color = None
        self.heat.axis.axis_line_color = None
        self.heat.xaxis.major_label_orientation = 0.6
        self.as_of = pn.pane.HTML("", styles={"color": "#57606a", "font-size": "12px"})
        self._loading = False
        self._pairs: list[str] = []
        pn.bind(self.safely(self.show), self.param.symbols, self.param.timeframe, self.param.window, watch=True)

    def view(self) -> pn.viewable.Viewable:
        w = pn.widgets
        controls = pn.Row(
            w.MultiChoice.from_param(self.param.symbols, width=360),
            w.RadioButtonGroup.from_param(self.param.timeframe, button_type="primary", button_style="outline"),
            w.IntInput.from_param(self.param.window, width=120),
        )
        return pn.Column(
            self.message,
            controls,
            pn.Row(
                pn.pane.Bokeh(self.lines, sizing_mode="stretch_width"),
                pn.pane.Bokeh(self.heat),
                sizing_mode="stretch_width",
            ),
            self.as_of,
            sizing_mode="stretch_width",
        )

    def _ensure_symbols(self) -> bool:
        if not self.param.symbols.objects:
            syms = self.api.symbols()
            self._loading = True
            try:
                self.param.symbols.objects = syms
                self.symbols = syms[: min(len(syms), 6)]
            finally:
                self._loading = False
        if len(self.symbols) < 2:
            self.say("Choose at least two symbols.")
            return False
        return True

    def _fetch(self) -> dict:
        return self.api.correlation(
            list(self.symbols),
            timeframe=self.timeframe,
            window=self.window,
            limit=HISTORY,
        )

    def show(self, *_: Any) -> None:
        if self._loading or not self._ensure_symbols():
            return
        out = self._fetch()
        pairs = [f"{a}-{b}" for a, b in combinations(out["symbols"], 2)]
        if pairs != self._pairs:
            self._build_lines(pairs)
        for p in pairs:
            replace_rows(self.sources[p], out["series"].get(p, []), ["corr"])
        self._heatmap(out, rebuild=True)
        self.say("")

    def refresh(self) -> None:
        if not self._pairs:
            self.show()
            return
        out = self._fetch()
        for p in self._pairs:
            append_rows(self.sources[p], out["series"].get(p, []), ["corr"])
        self._heatmap(out, rebuild=False)

    def _build_lines(self, pairs: list[str]) -> None:
        """A line per pair; rebuilt only when the set of symbols changes."""
        self.lines.renderers = []
        if self.lines.legend:
            self.lines.legend[0].items = []
        self.lines.tools = [t for t in self.lines.tools if type(t).__name__ != "HoverTool"]
        self.sources = {}
        renderers = []
        for i, p in enumerate(pairs):
            src = live_source(["corr"])
            self.sources[p] = src
            r = self.lines.line(
                "time", "corr", source=src, color=PALETTE[i % len(PALETTE)], line_width=2, legend_label=p.upper()
            )
            renderers.append(r)
        add_hover(self.lines, renderers, [("ρ", "@corr{0.000}")])
        self.lines.legend.location = "bottom_left"
        self.lines.legend.background_fill_alpha = 0.6
        self._pairs = pairs

    def _heatmap(self, out: dict, rebuild: bool) -> None:
        syms = out["matrix"]["symbols"]
        vals = out["matrix"]["values"]
        xs, ys, vs, labels, ink = [], [], [], [], []
        for i, a in enumerate(syms):
            for j, b in enumerate(syms):
                v = vals[i][j]
                xs.append(b.upper())
                ys.append(a.upper())
                vs.append(float("nan") if v is None else float(v))
                labels.append("–" if v is None else f"{v:.2f}")
                ink.append("white" if v is not None and abs(v) > 0.55 else "#24292f")
        if rebuild or len(self.heat_source.data["x"]) != len(xs):
            names = [s.upper() for s in syms]
            self.heat.x_range.factors = names
            self.heat.y_range.factors = list(reversed(names))
            self.heat_source.data = {"x": xs, "y": ys, "value": vs, "label": labels, "ink": ink}
        else:
            n = len(vs)
            self.heat_source.patch(
                {k: list(zip(range(n), v, strict=True)) for k, v in (("value", vs), ("label", labels), ("ink", ink))}
            )
        self.as_of.object = f"{out['timeframe']} bars, window {out['window']}; matrix as of {out['as_of'] or '–'}"
