"""Alerts page: create rules, switch them on and off, delete them, and watch triggers arrive.

Rules live in the API (`/api/v1/alerts`); the flow evaluates them. The form offers
every metric and operator the rule model accepts (feed health included), when a
metric is checked (`on`: every trade or each bar close), how long the condition
must hold (`min_duration_s`) and more symbols for one rule, and lets the API
validate the rest, showing its message when it refuses.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from panel_app.client import Api, ApiError
from panel_app.page import Page, section
from ticklens.domain.timeframes import TIMEFRAMES

TRADE_METRICS = ["price", "trade_size"]
BAR_METRICS = ["volume", "return", "volatility"]
PAIR_METRICS = ["spread", "zscore", "hedge_ratio", "correlation"]
SYMBOL_HEALTH_METRICS = ["stale_s", "gaps_open"]  # feed health per symbol
FEED_METRICS = ["reconnects_per_min", "rejected_per_min"]  # feed health, the whole feed
# microstructure bars, per symbol, on bar close (docs/analytics.md)
MICRO_METRICS = ["spread_bps", "ofi", "imbalance", "eff_spread_bps", "kyle_lambda", "vpin", "depth"]
METRICS = TRADE_METRICS + BAR_METRICS + PAIR_METRICS + SYMBOL_HEALTH_METRICS + FEED_METRICS + MICRO_METRICS
OPERATORS = [">", ">=", "<", "<=", "==", "crosses_above", "crosses_below"]
ON_CHOICES = ["default", "tick", "bar_close"]  # default: every trade for trade metrics, bar close otherwise
TICK_BAR_METRICS = ["volume", "return"]  # bar metrics that can be watched on the bar in progress
RULE_COLUMNS = [
    "id", "name", "metric", "target", "timeframe", "on", "operator", "threshold", "exit", "hold_s", "cooldown_s",
    "enabled",
]  # fmt: skip


def rule_target(r: dict) -> str:
    """What a rule watches, as the table shows it: its symbol(s), its pair, or the feed."""
    if r.get("pair"):
        return "-".join(r["pair"])
    if r.get("symbols"):
        return ", ".join(r["symbols"])
    return r.get("symbol") or "feed"


EVENT_COLUMNS = ["time", "rule_name", "symbol", "metric", "operator", "value", "threshold", "ref", "webhook_status"]


def rules_frame(rules: list[dict]) -> pd.DataFrame:
    rows = [
        {
            "id": r["id"],
            "name": r["name"],
            "metric": r["metric"],
            "target": rule_target(r),
            "timeframe": r.get("timeframe") or "tick",
            "on": r.get("on") or "",
            "operator": r["operator"],
            "threshold": r["threshold"],
            "exit": r.get("exit_threshold"),
            "hold_s": r.get("min_duration_s", 0.0),
            "cooldown_s": r.get("cooldown_s", 0.0),
            "enabled": bool(r["enabled"]),
        }
        for r in rules
    ]
    return pd.DataFrame(rows, columns=RULE_COLUMNS)


def events_frame(events: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(events, columns=EVENT_COLUMNS + ["id"])
    df["time"] = df["time"].str.replace("T", " ").str.rstrip("Z")
    return df


class AlertsPage(Page):
    """The rule form, the rule list, the trigger history."""

    title = "Alerts"

    rule_name = param.String(default="", label="Name")
    metric = param.Selector(objects=METRICS, default="price")
    symbol = param.Selector(objects=[], label="Symbol")
    more_symbols = param.ListSelector(default=[], objects=[], label="More symbols (one rule, optional)")
    pair_a = param.Selector(objects=[], label="Pair: y")
    pair_b = param.Selector(objects=[], label="Pair: x")
    timeframe = param.Selector(objects=list(TIMEFRAMES), default="1m")
    operator = param.Selector(objects=OPERATORS, default=">")
    threshold = param.Number(default=0.0, label="Threshold")
    exit_threshold = param.String(default="", label="Exit threshold (optional)")
    on = param.Selector(objects=ON_CHOICES, default="default", label="Checked on")
    min_duration_s = param.Number(default=0.0, bounds=(0, 86_400), label="Must hold for (s)")
    cooldown_s = param.Number(default=0.0, bounds=(0, 30 * 86_400), label="Cooldown (s)")
    window = param.Integer(default=20, bounds=(2, 1000), label="Window (bars, volatility)")
    webhook = param.String(default="", label="Webhook URL (optional)")
    enabled = param.Boolean(default=True, label="Enabled")

    def __init__(self, api: Api, **params: object) -> None:
        super().__init__(api, **params)
        w = pn.widgets
        # Each parameter's widget and width, by widget kind (keyed by the parameter's name).
        kinds: dict[type, dict[str, int]] = {
            w.Select: dict(metric=140, symbol=130, pair_a=120, pair_b=120, timeframe=80, operator=140, on=110),
            w.FloatInput: dict(threshold=130, min_duration_s=130, cooldown_s=110),
            w.TextInput: dict(exit_threshold=170),
            w.IntInput: dict(window=170),
            w.MultiChoice: dict(more_symbols=260),
        }
        self.w = {
            "name": w.TextInput.from_param(self.param.rule_name, placeholder="e.g. btc breakout", width=220),
            **{n: kind.from_param(self.param[n], width=px) for kind, sizes in kinds.items() for n, px in sizes.items()},
            "webhook": w.TextInput.from_param(self.param.webhook, placeholder="http://…", width=260),
            "enabled": w.Checkbox.from_param(self.param.enabled, align="end"),
        }
        self.create = w.Button(name="Create rule", button_type="primary", width=130, align="end")
        self.create.on_click(self.safely(lambda _e: self.create_rule()))
        self.form_msg = pn.pane.Alert("", visible=False, margin=(5, 0))
        self.rules = w.Tabulator(
            rules_frame([]),
            show_index=False,
            sizing_mode="stretch_width",
            layout="fit_data_stretch",
            disabled=True,
            formatters={"enabled": {"type": "tickCross"}},
            buttons={
                "toggle": '<i class="fa fa-power-off" title="switch the rule on or off"></i>',
                "delete": '<i class="fa fa-trash" title="delete the rule"></i>',
            },
            height=200,
            selectable=False,
        )
        self.rules.on_click(self.safely(self._on_toggle), column="toggle")
        self.rules.on_click(self.safely(self._on_delete), column="delete")
        self.events = w.Tabulator(
            events_frame([]),
            show_index=False,
            disabled=True,
            sizing_mode="stretch_width",
            layout="fit_data_stretch",
            hidden_columns=["id"],
            height=300,
        )
        self.events_note = pn.pane.HTML("", styles={"color": "#57606a", "font-size": "12px"})
        self._newest_event: int | None = None
        self._ticks = 0
        self._rules_raw: list[dict] = []
        pn.bind(self._fields_for_metric, self.param.metric, self.param.on, watch=True)
        self._fields_for_metric(self.metric, self.on)
        pn.bind(self._fields_for_operator, self.param.operator, watch=True)

    def view(self) -> pn.viewable.Viewable:
        f = self.w
        form = section(
            "New rule",
            pn.Row(f["name"], f["metric"], f["symbol"], f["more_symbols"], f["pair_a"], f["pair_b"]),
            pn.Row(f["on"], f["timeframe"], f["operator"], f["threshold"], f["exit_threshold"]),
            pn.Row(f["min_duration_s"], f["cooldown_s"], f["window"]),
            pn.Row(f["webhook"], f["enabled"], self.create),
            self.form_msg,
        )
        return pn.Column(
            self.message,
            form,
            pn.pane.Markdown(
                "#### Rules  \n<small>The power button switches a rule on or off; the bin deletes it.</small>"
            ),
            self.rules,
            pn.pane.Markdown("#### Triggered (newest first, live)"),
            self.events,
            self.events_note,
            sizing_mode="stretch_width",
        )

    def _fields_for_metric(self, metric: str, on: str = "default") -> None:
        pair = metric in PAIR_METRICS
        feed = metric in FEED_METRICS
        health = feed or metric in SYMBOL_HEALTH_METRICS
        self.w["symbol"].visible = self.w["more_symbols"].visible = not pair and not feed
        self.w["pair_a"].visible = self.w["pair_b"].visible = pair
        # `on` matters where both are possible: trade metrics (bar_close) and volume/return (tick).
        self.w["on"].visible = metric in TRADE_METRICS or metric in TICK_BAR_METRICS
        self.w["timeframe"].visible = not health and (metric not in TRADE_METRICS or on == "bar_close")
        self.w["window"].visible = metric == "volatility"

    def _fields_for_operator(self, operator: str) -> None:
        self.w["exit_threshold"].visible = operator != "=="

    def _ensure_symbols(self) -> None:
        if self.param.symbol.objects:
            return
        syms = self.api.symbols()
        if not syms:
            return
        for p in ("symbol", "pair_a", "pair_b", "more_symbols"):
            self.param[p].objects = syms
        self.param.update(symbol=syms[0], pair_a=syms[0], pair_b=syms[min(1, len(syms) - 1)])

    def rule_payload(self) -> dict:
        """The form as the API's rule object (only the fields the metric takes)."""
        m = self.metric
        body: dict[str, Any] = {
            "name": self.rule_name.strip() or f"{m} {self.operator} {self.threshold:g}",
            "metric": m,
            "operator": self.operator,
            "threshold": self.threshold,
            "cooldown_s": self.cooldown_s,
            "enabled": self.enabled,
        }
        if self.min_duration_s:
            body["min_duration_s"] = self.min_duration_s
        if m in PAIR_METRICS:
            body["pair"] = [self.pair_a, self.pair_b]
        elif m not in FEED_METRICS:
            more = [s for s in self.more_symbols if s != self.symbol]
            if more:
                body["symbols"] = [self.symbol, *more]  # one rule watching each
            else:
                body["symbol"] = self.symbol
        on = self.on if self.on != "default" and (m in TRADE_METRICS or m in TICK_BAR_METRICS) else None
        if on:
            body["on"] = on
        health = m in FEED_METRICS or m in SYMBOL_HEALTH_METRICS
        if not health and (m not in TRADE_METRICS or on == "bar_close"):
            body["timeframe"] = self.timeframe
        if m == "volatility":
            body["window"] = self.window
        if self.exit_threshold.strip() and self.operator != "==":  # '==' re-arms when the value differs
            body["exit_threshold"] = float(self.exit_threshold)
        if self.webhook.strip():
            body["webhook"] = self.webhook.strip()
        return body

    def _form_says(self, text: str, kind: str) -> None:
        self.form_msg.object = text
        self.form_msg.alert_type = kind
        self.form_msg.visible = bool(text)

    def create_rule(self) -> None:
        try:
            body = self.rule_payload()
        except ValueError:
            self._form_says(f"Exit threshold {self.exit_threshold!r} is not a number.", "danger")
            return
        try:
            out = self.api.create_alert(body)
        except ApiError as e:
            self._form_says(f"Not created: {e}", "danger")
            return
        self._form_says(f"Rule #{out['id']} “{out['name']}” created.", "success")
        self.rule_name = ""
        self._load_rules()

    def _on_toggle(self, event: Any) -> None:
        row = self.rules.value.iloc[event.row]
        try:
            self.api.set_alert_enabled(int(row["id"]), not bool(row["enabled"]))
        except ApiError as e:
            self.say_error(e)
        self._load_rules()

    def _on_delete(self, event: Any) -> None:
        rid = int(self.rules.value.iloc[event.row]["id"])
        try:
            self.api.delete_alert(rid)
        except ApiError as e:
            self.say_error(e)
        self._load_rules()

    def _load_rules(self, only_if_changed: bool = False) -> None:
        rules = self.api.alerts()
        if only_if_changed and rules == self._rules_raw:
            return  # no redraw: a click on a row must not land on a table being rebuilt
        self._rules_raw = rules
        self.rules.value = rules_frame(rules)

    def _load_events(self) -> None:
        events = self.api.triggered(limit=200)
        newest = events[0]["id"] if events else None
        if newest != self._newest_event or not len(self.events.value):
            self.events.value = events_frame(events)
            self._newest_event = newest
        self.events_note.object = f"{len(events)} most recent triggers shown." if events else "No triggers yet."

    def show(self) -> None:
        self._ensure_symbols()
        self._load_rules()
        self._load_events()

    def refresh(self) -> None:
        self._load_events()
        self._ticks += 1
        if self._ticks % 5 == 0:  # rules changed elsewhere (API, another tab)
            self._load_rules(only_if_changed=True)
