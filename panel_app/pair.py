"""Pair page: spread and z-score with entry/exit bands, OLS and Kalman hedge ratios, test badges, backtest.

Every number comes from the API (`/api/v1/spread`, `/api/v1/backtest`); this page only
draws. The three time charts share one x axis and are streamed row by row.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param
from bokeh.models import BoxAnnotation, ColumnDataSource, DataRange1d, NumeralTickFormatter, Span

from panel_app.charts import add_hover, append_rows, live_source, replace_rows, time_figure
from panel_app.client import Api
from panel_app.page import ACCENT, DOWN, UP, Page, card, price_format, section
from ticklens.domain.timeframes import TIMEFRAME_MS

OLS_FIELDS = ["spread", "zscore", "hedge_ratio", "correlation"]
KALMAN_FIELDS = ["hedge_ratio", "zscore"]
HISTORY = 3000  # rows drawn at most (the API caps history too)
SPREAD_EXTRA_DECIMALS = 2  # the spread is in leg a's price units, finer than its tick
BETA_HOVER = "@hedge_ratio{%.6g}"  # a ratio of prices: significant digits (3.38e-07 for PEPE/BTC)


class PairPage(Page):
    """Two legs, their spread and the signal a mean-reversion trader would act on."""

    title = "Pair"

    leg_a = param.Selector(objects=[], label="y (leg a)")
    leg_b = param.Selector(objects=[], label="x (leg b)")
    timeframe = param.Selector(objects=list(TIMEFRAME_MS), default="1s")
    window = param.Integer(default=60, bounds=(3, 20_000), label="Window (bars)")
    entry_z = param.Number(default=2.0, bounds=(0.1, 20), step=0.1, label="Entry |z|")
    exit_z = param.Number(default=0.5, bounds=(0, 20), step=0.1, label="Exit |z|")
    fee_bps = param.Number(default=4.0, bounds=(0, 1000), step=0.5, label="Fee (bps per leg)")

    def __init__(self, api: Api, **params: object) -> None:
        super().__init__(api, **params)
        self.badges = pn.pane.HTML("", sizing_mode="stretch_width", margin=(0, 10))
        self.spread_fig = time_figure("Spread  y − β·x − α  (rolling OLS)", 200, y_label="spread")
        x = self.spread_fig.x_range
        self.z_fig = time_figure("z-score (past-only mean/std) with ±entry and ±exit bands", 220, x, "z")
        self.beta_fig = time_figure("Hedge ratio β over time", 200, x, "β")
        self.ols = live_source(OLS_FIELDS)
        self.kal = live_source(KALMAN_FIELDS)
        r_spread = self.spread_fig.line("time", "spread", source=self.ols, color=ACCENT, line_width=1.5)
        self.spread_hover = add_hover(self.spread_fig, [r_spread], self._spread_tooltip(None))
        self.spread_hover.name = "pair-spread-hover"
        self.spread_axis = NumeralTickFormatter(
            format=price_format(None, SPREAD_EXTRA_DECIMALS), name="pair-spread-format"
        )
        self.spread_fig.yaxis.formatter = self.spread_axis
        r_z = self.z_fig.line("time", "zscore", source=self.ols, color="#24292f", line_width=1.5)
        # Invisible points at ±(entry + margin) keep both bands inside the z chart's y range.
        self.band_src = ColumnDataSource({"time": [], "y": []})
        r_band = self.z_fig.scatter("time", "y", source=self.band_src, alpha=0)
        self.z_fig.y_range = DataRange1d(renderers=[r_z, r_band], range_padding=0.05)
        add_hover(self.z_fig, [r_z], [("z", "@zscore{0.00}")])
        self.bands = {
            "upper": Span(dimension="width", line_color=DOWN, line_dash="dashed", line_width=1.5),
            "lower": Span(dimension="width", line_color=UP, line_dash="dashed", line_width=1.5),
        }
        self.exit_box = BoxAnnotation(fill_color="#8b949e", fill_alpha=0.12)
        for s in self.bands.values():
            self.z_fig.add_layout(s)
        self.z_fig.add_layout(self.exit_box)
        r_b = self.beta_fig.line(
            "time", "hedge_ratio", source=self.ols, color=ACCENT, line_width=2, legend_label="OLS (rolling window)"
        )
        self.beta_fig.line(
            "time", "hedge_ratio", source=self.kal, color="#bf8700", line_width=2, legend_label="Kalman filter"
        )
        r_kb = self.beta_fig.renderers[-1]
        add_hover(self.beta_fig, [r_b], [("β OLS", BETA_HOVER)], {"@hedge_ratio": "printf"})
        x.renderers = [r_spread, r_z, r_b, r_kb]  # the band points never widen the time axis
        self.beta_fig.legend.location = "top_left"
        self.beta_fig.legend.background_fill_alpha = 0.6
        # Backtest
        self.run = pn.widgets.Button(name="Run backtest", button_type="primary", width=140)
        self.run.on_click(self.safely(lambda _e: self.backtest()))
        self.bt_summary = pn.pane.HTML("", sizing_mode="stretch_width")
        self.pnl_fig = time_figure("Backtest equity (quote currency, net of fees)", 220, y_label="PnL")
        self.curve = live_source(["equity"])
        self.pnl_line = self.pnl_fig.line("time", "equity", source=self.curve, color=UP, line_width=2)
        self.trades = pn.widgets.Tabulator(
            pd.DataFrame(),
            height=180,
            sizing_mode="stretch_width",
            disabled=True,
            show_index=False,
            pagination=None,
            layout="fit_data_stretch",
        )
        self.no_trades = pn.pane.Markdown("", styles={"color": "#57606a"})
        self._loading = False
        self._configured = False  # window/timeframe still the API's defaults for the pair
        self._bands()
        pn.bind(
            self.safely(self.show),
            self.param.leg_a,
            self.param.leg_b,
            self.param.timeframe,
            self.param.window,
            watch=True,
        )
        pn.bind(self._bands, self.param.entry_z, self.param.exit_z, watch=True)
        pn.bind(
            self.safely(self.backtest_on_change), self.param.entry_z, self.param.exit_z, self.param.fee_bps, watch=True
        )

    def view(self) -> pn.viewable.Viewable:
        w = pn.widgets
        controls = pn.Row(
            w.Select.from_param(self.param.leg_a, width=130),
            w.Select.from_param(self.param.leg_b, width=130),
            w.RadioButtonGroup.from_param(self.param.timeframe, button_type="primary", button_style="outline"),
            w.IntInput.from_param(self.param.window, width=110),
            w.FloatInput.from_param(self.param.entry_z, width=90),
            w.FloatInput.from_param(self.param.exit_z, width=90),
        )
        backtest = section(
            "Backtest: enter at |z| ≥ entry, exit at |z| ≤ exit, β fixed at entry",
            pn.Row(w.FloatInput.from_param(self.param.fee_bps, width=140), pn.Column(pn.Spacer(height=18), self.run)),
            self.bt_summary,
            pn.pane.Bokeh(self.pnl_fig, sizing_mode="stretch_width"),
            self.trades,
            self.no_trades,
            collapsed=False,
        )
        return pn.Column(
            self.message,
            controls,
            self.badges,
            pn.pane.Bokeh(self.z_fig, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.spread_fig, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.beta_fig, sizing_mode="stretch_width"),
            backtest,
            sizing_mode="stretch_width",
        )

    @staticmethod
    def _spread_tooltip(decimals: int | None) -> list[tuple[str, str]]:
        return [("spread", "@spread{" + price_format(decimals, SPREAD_EXTRA_DECIMALS) + "}")]

    def _bands(self, *_: Any) -> None:
        self.bands["upper"].location = self.entry_z
        self.bands["lower"].location = -self.entry_z
        self.exit_box.bottom, self.exit_box.top = -self.exit_z, self.exit_z
        times = self.ols.data["time"]
        if len(times):
            edge = self.entry_z * 1.15
            self.band_src.data = {"time": [times[0], times[0]], "y": [-edge, edge]}

    def _ensure_legs(self) -> bool:
        if not self.param.leg_a.objects:
            syms = self.api.symbols()
            if len(syms) < 2:
                self.say("A pair needs two symbols; the store has fewer.")
                return False
            self._loading = True
            try:
                self.param.leg_a.objects = syms
                self.param.leg_b.objects = syms
                self.param.update(leg_a=syms[0], leg_b=syms[1])
            finally:
                self._loading = False
        if self.leg_a == self.leg_b:
            self.say("Pick two different legs.")
            return False
        return True

    def _spread(self, method: str, start_ms: int | None = None) -> dict:
        first = not self._configured
        return self.api.spread(
            self.leg_a,
            self.leg_b,
            method,
            timeframe=None if first else self.timeframe,
            window=None if first else self.window,
            limit=HISTORY,
            start=start_ms,
        )

    def _adopt_defaults(self, out: dict) -> None:
        """The first load asks without window/timeframe: the API answers with the pair's configured ones."""
        if self._configured:
            return
        self._configured = True
        self._loading = True
        try:
            self.param.update(window=int(out["window"]), timeframe=out["timeframe"])
        finally:
            self._loading = False

    def show(self, *_: Any) -> None:
        if self._loading or not self._ensure_legs():
            return
        ols = self._spread("ols")
        self._adopt_defaults(ols)
        kal = self._spread("kalman")
        d = self.api.price_decimals(self.leg_a)  # the spread is in leg a's price units
        self.spread_hover.tooltips = self._spread_tooltip(d)
        self.spread_axis.format = price_format(d, SPREAD_EXTRA_DECIMALS)
        replace_rows(self.ols, ols["rows"], OLS_FIELDS)
        replace_rows(self.kal, kal["rows"], KALMAN_FIELDS)
        self._bands()
        self._badges(ols, kal)
        warm = sum(r["zscore"] is not None for r in ols["rows"])
        self.say(
            ""
            if warm
            else f"Warming up: the z-score needs {self.window} aligned {self.timeframe} bars of both legs "
            f"({len(ols['rows'])} so far).",
            "info",
        )
        self.backtest()  # ~30 ms in the API: rerun on every visit so it covers the bars seen

    def refresh(self) -> None:
        if not self._ensure_legs():
            return
        starts = self.ols.data["start_ms"]
        since = int(starts[-1]) if len(starts) else None
        ols = self._spread("ols", since)
        kal = self._spread("kalman", since)
        append_rows(self.ols, ols["rows"], OLS_FIELDS)
        append_rows(self.kal, kal["rows"], KALMAN_FIELDS)
        self._badges(ols, kal)
        if self.message.visible and any(r["zscore"] is not None for r in ols["rows"]):
            self.say("")

    def _badges(self, ols: dict, kal: dict) -> None:
        adf = ols.get("adf") or {}
        last = next((r for r in reversed(ols["rows"]) if r["zscore"] is not None), None)
        klast = next((r for r in reversed(kal["rows"]) if r["hedge_ratio"] is not None), None)
        p = adf.get("eg_pvalue")
        p_color = "inherit" if p is None else (UP if p < 0.05 else ("#bf8700" if p < 0.10 else DOWN))
        hl, hl_s = adf.get("half_life"), adf.get("half_life_s")
        z = last["zscore"] if last else None
        z_color = DOWN if z is not None and abs(z) >= self.entry_z else "inherit"
        tiles = [
            card("z-score", "–" if z is None else f"{z:+.2f}", f"entry ±{self.entry_z:g}", z_color),
            card("β OLS", "–" if not last else f"{last['hedge_ratio']:.6g}", f"window {ols['window']}"),
            card("β Kalman", "–" if not klast else f"{klast['hedge_ratio']:.6g}"),
            card(
                "half-life",
                "–" if hl is None else f"{hl:.1f} bars",
                "" if hl_s is None else f"{hl_s:,.{1 if hl_s < 10 else 0}f} s",
            ),
            card(
                "Engle-Granger p",
                "–" if p is None else f"{p:.3f}",
                "" if adf.get("adf_stat") is None else f"ADF t {adf['adf_stat']:.2f} · 5% {adf['crit']['5%']:.2f}",
                p_color,
            ),
            card("correlation", "–" if not last or last["correlation"] is None else f"{last['correlation']:.3f}"),
            card("source", ols.get("source", "–"), f"{ols['timeframe']} bars"),
        ]
        self.badges.object = f'<div class="tl-cards">{"".join(tiles)}</div>'

    def backtest_on_change(self, *_: Any) -> None:
        if self.param.leg_a.objects:  # not before the first load
            self.backtest()

    def backtest(self) -> None:
        """Runs on demand (and once per selection): a backtest recomputes the whole history."""
        if not self._ensure_legs():
            return
        if self.exit_z >= self.entry_z:
            self.say("Exit |z| must be below entry |z|.", "warning")
            return
        bt = self.api.backtest(
            self.leg_a,
            self.leg_b,
            timeframe=self.timeframe,
            window=self.window,
            entry_z=self.entry_z,
            exit_z=self.exit_z,
            fee_bps=self.fee_bps,
        )
        replace_rows(self.curve, bt["curve"], ["equity"])
        pnl = bt.get("total_pnl") or 0.0
        self.pnl_line.glyph.line_color = UP if pnl >= 0 else DOWN
        tiles = [
            card("total PnL", f"{pnl:+,.2f}", bt["units"].split(",")[0], UP if pnl >= 0 else DOWN),
            card("trades", str(len(bt["trades"])), f"{bt['bars']:,} bars"),
            card("win rate", "–" if bt.get("win_rate") is None else f"{bt['win_rate'] * 100:.0f}%"),
            card("Sharpe", "–" if bt.get("sharpe") is None else f"{bt['sharpe']:.2f}", "annualised"),
            card("max drawdown", "–" if bt.get("max_drawdown") is None else f"{bt['max_drawdown']:,.2f}"),
        ]
        self.bt_summary.object = f'<div class="tl-cards">{"".join(tiles)}</div>'
        cols = ["side", "entry", "exit", "entry_z", "exit_z", "hedge_ratio", "pnl", "fees", "open"]
        df = pd.DataFrame(bt["trades"], columns=cols)
        for c in ("entry", "exit"):
            df[c] = df[c].str.replace("T", " ").str.rstrip("Z")
        self.trades.value = df.round({"entry_z": 2, "exit_z": 2, "hedge_ratio": 4, "pnl": 2, "fees": 2})
        self.trades.visible = bool(len(df))
        self.no_trades.object = (
            ""
            if len(df)
            else f"No trades: |z| did not reach {self.entry_z:g} in {bt['bars']:,} bars. Try a lower entry |z|."
        )
