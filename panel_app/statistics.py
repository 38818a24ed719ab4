"""Statistics page: one row per symbol of rolling window statistics, plus feed health, in a Tabulator.

Rows come from `/api/v1/stats/{symbol}` (window summary) and `/api/v1/status` (rate,
late trades, gaps); the table is patched in place every other second. Prices are shown
with each symbol's own decimals (`price_decimals` of /api/v1/symbols), as text, since
one table column holds symbols of very different precision.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from panel_app.client import Api
from panel_app.page import Page, fmt_price
from ticklens.domain.timeframes import TIMEFRAME_MS

WINDOWS = [30, 60, 300, 1000, 5000]
COLUMNS = {
    "symbol": "symbol",
    "last": "last",
    "return_pct": "return %",
    "std": "std",
    "min": "low",
    "max": "high",
    "volume": "volume",
    "vwap": "VWAP",
    "realised_vol_pct": "rvol %",
    "trades_per_s": "trades/s",
    "late_trades": "late",
    "gaps_open": "gaps",
    "last_time": "newest bar (UTC)",
}
PRICE_COLUMNS = ("last", "min", "max", "vwap")
STD_EXTRA_DECIMALS = 2  # a standard deviation of prices is finer than their tick


def stats_rows(stats: list[dict], status: dict | None, decimals: dict[str, int | None] | None = None) -> pd.DataFrame:
    """API answers → the table (one row per symbol), columns as shown; prices as text in their decimals."""
    per = {s["symbol"]: s for s in (status or {}).get("per_symbol", [])}
    rows = []
    for st in stats:
        health = per.get(st["symbol"], {})
        ret, rv = st.get("return"), st.get("realised_volatility")
        d = (decimals or {}).get(st["symbol"])
        rows.append(
            {
                "symbol": st["symbol"],
                **{k: fmt_price(st.get(k), d) for k in PRICE_COLUMNS},
                "std": fmt_price(st.get("std"), None if d is None else d + STD_EXTRA_DECIMALS),
                "volume": st.get("volume"),
                "return_pct": None if ret is None else ret * 100,
                "realised_vol_pct": None if rv is None else rv * 100,
                "trades_per_s": health.get("trades_per_s"),
                "late_trades": health.get("late_trades"),
                "gaps_open": health.get("gaps_open"),
                "last_time": (st.get("last_time") or "")[:19].replace("T", " "),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


class StatisticsPage(Page):
    """Every symbol side by side over the same window."""

    title = "Statistics"

    window = param.Selector(objects=WINDOWS, default=60, label="Window (bars)")
    timeframe = param.Selector(objects=list(TIMEFRAME_MS), default="1s")

    def __init__(self, api: Api, **params: object) -> None:
        super().__init__(api, **params)
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(COLUMNS)),
            titles=COLUMNS,
            show_index=False,
            disabled=True,
            sizing_mode="stretch_width",
            layout="fit_data_stretch",
            configuration={"columnDefaults": {"headerSort": False}},
            widths={"symbol": 90, "return_pct": 100, "std": 80, "realised_vol_pct": 75, "trades_per_s": 95},
            text_align={c: "right" for c in (*PRICE_COLUMNS, "std")},
            formatters={
                "volume": {"type": "money", "precision": 3},
                "return_pct": {"type": "money", "precision": 3},
                "realised_vol_pct": {"type": "money", "precision": 4},
                "trades_per_s": {"type": "money", "precision": 1},
            },
            frozen_columns=["symbol"],
        )
        self.note = pn.pane.Markdown("", styles={"color": "#57606a", "font-size": "12px"})
        self._tick = 0
        pn.bind(self.safely(self.show), self.param.window, self.param.timeframe, watch=True)

    def view(self) -> pn.viewable.Viewable:
        controls = pn.Row(
            pn.widgets.Select.from_param(self.param.window, width=140),
            pn.widgets.RadioButtonGroup.from_param(self.param.timeframe, button_type="primary", button_style="outline"),
        )
        return pn.Column(self.message, controls, self.table, self.note, sizing_mode="stretch_width")

    def _frame(self) -> pd.DataFrame:
        infos = self.api.symbol_infos()
        stats = [self.api.stats(s["symbol"], window=self.window, timeframe=self.timeframe) for s in infos]
        try:
            status = self.api.status()
        except Exception:  # health columns stay empty; the statistics still show
            status = None
        return stats_rows(stats, status, {s["symbol"]: s.get("price_decimals") for s in infos})

    def show(self, *_: Any) -> None:
        self.table.value = self._frame()
        self.note.object = (
            f"Over the newest {self.window} bars of {self.timeframe} per symbol (the newest may be in progress). "
            "Return: last close / first open − 1. rvol: realised volatility √Σr² of bar log returns, "
            "not annualised. Trades/s: last 10 s of exchange time. Late: trades that arrived after their bar "
            "closed (it was revised). Gaps: open trade-id gaps."
        )

    def refresh(self) -> None:
        self._tick += 1
        if self._tick % 2:
            return
        df = self._frame()
        current = self.table.value
        if list(current["symbol"]) == list(df["symbol"]):
            self.table.patch({c: list(enumerate(df[c].tolist())) for c in df.columns if c != "symbol"}, as_index=False)
        else:
            self.table.value = df
