"""Data page: start/stop collection, download bars or ticks for a range, upload historical bars.

Everything goes through the API: `/api/v1/status|start|stop`, `/api/v1/export/{symbol}`
(the file is the API's, passed through unchanged), `/api/v1/upload/ohlc` (its
per-row validation errors are shown as a table; a rejected file writes nothing),
`/api/v1/continuity` and `/api/v1/audit` (the stored 1m bars against Binance's klines).
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import panel as pn
import param

from panel_app.client import Api, ApiError
from panel_app.page import Page, card, section
from ticklens.domain.timeframes import TIMEFRAMES
from ticklens.domain.times import iso_ms, parse_time

ERROR_COLUMNS = ["row", "line", "errors"]
EMPTY_COLUMNS = ["start", "end", "buckets", "status", "last_id_before", "first_id_after"]
AUDIT_COLUMNS = ["minute", "outcome", "field", "ours", "binance"]


def audit_frame(body: dict) -> pd.DataFrame:
    """`/api/v1/audit`'s differing minutes, one row per differing field (one per minute when a side is missing)."""
    rows = []
    for d in body.get("diffs", []):
        if d["fields"]:
            rows += [
                {
                    "minute": d["start"],
                    "outcome": d["outcome"],
                    "field": f["field"],
                    "ours": f["ours"],
                    "binance": f["binance"],
                }
                for f in d["fields"]
            ]
        else:
            ours, theirs = d.get("ours") or {}, d.get("binance") or {}
            rows.append(
                {
                    "minute": d["start"],
                    "outcome": d["outcome"],
                    "field": "trades",
                    "ours": ours.get("trades"),
                    "binance": theirs.get("trades"),
                }
            )
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def empty_runs_frame(body: dict) -> pd.DataFrame:
    """`/api/v1/continuity`'s runs of empty buckets, one row per run."""
    return pd.DataFrame([{c: e.get(c) for c in EMPTY_COLUMNS} for e in body.get("empty", [])], columns=EMPTY_COLUMNS)


def upload_errors_frame(detail: Any) -> pd.DataFrame:
    """The API's 422 detail (`{message, bad_rows, errors: [{row, line, errors}]}`) as one row per bad row."""
    errors = detail.get("errors", []) if isinstance(detail, dict) else []
    rows = [{"row": e["row"], "line": e["line"], "errors": "; ".join(e["errors"])} for e in errors]
    return pd.DataFrame(rows, columns=ERROR_COLUMNS)


def _result_table(frame: pd.DataFrame, height: int) -> pn.widgets.Tabulator:
    """A read-only table, hidden until there is something to show."""
    return pn.widgets.Tabulator(
        frame,
        show_index=False,
        disabled=True,
        visible=False,
        sizing_mode="stretch_width",
        layout="fit_data_stretch",
        height=height,
    )


class DataPage(Page):
    """Collection control and the data's way in and out."""

    title = "Data"

    collect = param.ListSelector(default=[], objects=[], label="Symbols to collect")
    extra = param.String(default="", label="More symbols (comma-separated)")
    symbol = param.Selector(objects=[], label="Symbol")
    kind = param.Selector(objects=["ohlc", "ticks"], default="ohlc", label="What")
    timeframe = param.Selector(objects=list(TIMEFRAMES), default="1m")
    fmt = param.Selector(objects=["csv", "parquet"], default="csv", label="Format")
    start = param.String(default="", label="From (ISO-8601 UTC, inclusive)")
    end = param.String(default="", label="To (exclusive; empty = now)")
    overwrite = param.Boolean(default=False, label="Replace bars the flow collected")

    def __init__(self, api: Api, **params: object) -> None:
        super().__init__(api, **params)
        w = pn.widgets
        self.status_html = pn.pane.HTML("", sizing_mode="stretch_width")
        self.start_btn = w.Button(name="Start collection", button_type="success", width=160, align="end")
        self.stop_btn = w.Button(name="Stop", button_type="danger", width=100, align="end")
        self.start_btn.on_click(self.safely(lambda _e: self._control("start")))
        self.stop_btn.on_click(self.safely(lambda _e: self._control("stop")))
        self.control_msg = pn.pane.Alert("", visible=False, margin=(5, 0))
        self.download = w.FileDownload(
            callback=self._export,
            filename="export.csv",
            button_type="primary",
            button_style="solid",
            label="Download",
            width=220,
        )
        self.export_msg = pn.pane.Alert("", visible=False, margin=(5, 0))
        self.file = w.FileInput(accept=".csv", multiple=False, name="CSV file")
        self.upload_btn = w.Button(name="Upload", button_type="primary", width=120, align="end")
        self.upload_btn.on_click(self.safely(lambda _e: self.upload()))
        self._ticks = 0
        self.upload_msg = pn.pane.Alert("", visible=False, margin=(5, 0))
        self.upload_errors = _result_table(upload_errors_frame({}), height=220)
        self.check_btn = w.Button(name="Check continuity", button_type="primary", width=170, align="end")
        self.check_btn.on_click(self.safely(lambda _e: self.check_continuity()))
        self.continuity_html = pn.pane.HTML("", sizing_mode="stretch_width")
        self.continuity_table = _result_table(empty_runs_frame({}), height=240)
        self.audit_btn = w.Button(name="Audit vs Binance klines", button_type="primary", width=210, align="end")
        self.audit_btn.on_click(self.safely(lambda _e: self.check_audit()))
        self.audit_html = pn.pane.HTML("", sizing_mode="stretch_width")
        self.audit_msg = pn.pane.Alert("", visible=False, margin=(5, 0))
        self.audit_table = _result_table(audit_frame({}), height=240)
        pn.bind(self._filename, self.param.symbol, self.param.kind, self.param.timeframe, self.param.fmt, watch=True)

    def view(self) -> pn.viewable.Viewable:
        w = pn.widgets
        collection = section(
            "Collection",
            self.status_html,
            pn.Row(
                w.MultiChoice.from_param(self.param.collect, width=320),
                w.TextInput.from_param(self.param.extra, placeholder="solusdt, bnbusdt", width=240),
                self.start_btn,
                self.stop_btn,
            ),
            self.control_msg,
        )
        export = section(
            "Download bars or ticks",
            pn.Row(
                w.Select.from_param(self.param.symbol, width=130),
                w.RadioButtonGroup.from_param(
                    self.param.kind, button_type="primary", button_style="outline", align="end"
                ),
                w.Select.from_param(self.param.timeframe, width=80),
                w.RadioButtonGroup.from_param(
                    self.param.fmt, button_type="primary", button_style="outline", align="end"
                ),
            ),
            pn.Row(
                w.TextInput.from_param(self.param.start, width=240),
                w.TextInput.from_param(self.param.end, width=240),
                pn.Column(pn.Spacer(height=18), self.download),
            ),
            self.export_msg,
        )
        upload = section(
            "Upload historical bars",
            pn.pane.Markdown(
                "CSV columns: `symbol,timeframe,timestamp,open,high,low,close,volume` "
                "(optional `quote_volume,trades,taker_buy_volume,taker_buy_quote_volume`). "
                "One bad row rejects the whole file; nothing is written."
            ),
            pn.Row(self.file, w.Checkbox.from_param(self.param.overwrite, align="center"), self.upload_btn),
            self.upload_msg,
            self.upload_errors,
        )
        continuity = section(
            "Continuity audit",
            pn.pane.Markdown(
                "Empty buckets of the symbol, timeframe and range above. **quiet**: trade ids run on without a "
                "break across it, so nothing traded. **unknown**: a trade-id gap spans it, trades may be missing."
            ),
            self.check_btn,
            self.continuity_html,
            self.continuity_table,
        )
        audit = section(
            "Audit against Binance klines",
            pn.pane.Markdown(
                "The stored 1m bars of the symbol and range above against Binance's own 1m klines downloaded "
                "with `ticklens history download --data klines-1m` (under `history.dir`), minute by minute: "
                "open, high, low, close, volume, quote volume, trades, taker buy volume."
            ),
            self.audit_btn,
            self.audit_msg,
            self.audit_html,
            self.audit_table,
        )
        return pn.Column(self.message, collection, export, continuity, audit, upload, sizing_mode="stretch_width")

    # --- klines audit ---------------------------------------------------------------

    def check_audit(self) -> None:
        s, e = self._range_ms()
        try:
            body = self.api.audit(self.symbol, s, e)
        except ApiError as err:
            self.audit_msg.object = f"Audit failed: {err}"
            self.audit_msg.alert_type = "danger"
            self.audit_msg.visible = True
            return
        self.audit_msg.visible = False
        if not body["files"]:
            self.audit_msg.object = f"No klines downloaded for this range under {body['klines_dir']}."
            self.audit_msg.alert_type = "warning"
            self.audit_msg.visible = True
        tiles = [
            card(
                "minutes equal",
                f"{body['equal']:,} / {body['compared']:,}",
                f"{body['quiet']:,} without trades",
                "#1a7f37",
            ),
            card("differing", f"{body['differing']:,}", f"{body['by_outcome']['differs']:,} in values", "#cf222e"),
            card(
                "missing",
                f"{body['by_outcome']['missing_in_store']:,} in store",
                f"{body['by_outcome']['missing_in_klines']:,} in klines",
            ),
            card("not audited", f"{body['unaudited_bars']:,} bars", ", ".join(body["unaudited_days"][:3]) or "–"),
        ]
        self.audit_html.object = f'<div class="tl-cards">{"".join(tiles)}</div>'
        self.audit_table.value = audit_frame(body)
        self.audit_table.visible = bool(body["diffs"])

    # --- continuity -----------------------------------------------------------------

    def check_continuity(self) -> None:
        s, e = self._range_ms()
        body = self.api.continuity(self.symbol, self.timeframe, s, e)
        gaps = body.get("gaps", [])
        tiles = [
            card("bars", f"{body.get('bars', 0):,}", f"{self.symbol} {self.timeframe}"),
            card("quiet buckets", f"{body.get('quiet_buckets', 0):,}", "ids continuous", "#1a7f37"),
            card("unknown buckets", f"{body.get('unknown_buckets', 0):,}", "inside a gap", "#cf222e"),
            card(
                "trade-id gaps",
                f"{sum(1 for g in gaps if g['status'] != 'filled')} open",
                f"{sum(1 for g in gaps if g['status'] == 'filled')} filled",
            ),
        ]
        self.continuity_html.object = f'<div class="tl-cards">{"".join(tiles)}</div>'
        self.continuity_table.value = empty_runs_frame(body)
        self.continuity_table.visible = True

    # --- collection -----------------------------------------------------------------

    def _status(self) -> None:
        st = self.api.status()
        running = st.get("running")
        tiles = [
            card(
                "flow",
                "running" if running else "stopped",
                st.get("started_by") or "",
                "#1a7f37" if running else "#cf222e",
            ),
            card("symbols", ", ".join(st.get("symbols", [])) or "–", st.get("source", "")),
            card(
                "uptime",
                "–" if st.get("uptime_s") is None else f"{st['uptime_s']:,.0f} s",
                f"pid {st.get('pid') or '–'}",
            ),
            card("trades/s", f"{st.get('trades_per_s', 0):,.1f}", f"{st.get('trades_total', 0):,} total"),
            card("reconnects", str(st.get("reconnects", 0)), f"{st.get('malformed_messages', 0)} malformed msgs"),
            card("gaps", f"{st.get('gaps_open', 0)} open", f"{st.get('gaps_total', 0)} ever"),
        ]
        self.status_html.object = f'<div class="tl-cards">{"".join(tiles)}</div>'
        self.start_btn.disabled = bool(running)
        self.stop_btn.disabled = not running

    def _control(self, action: str) -> None:
        extra = [s.strip().lower() for s in self.extra.split(",") if s.strip()]
        try:
            out = self.api.start(sorted(set(self.collect) | set(extra))) if action == "start" else self.api.stop()
            self.control_msg.object = out.get("message", action)
            self.control_msg.alert_type = "success" if out.get("changed") else "info"
        except ApiError as e:
            self.control_msg.object = f"{action} refused: {e}"
            self.control_msg.alert_type = "danger"
        self.control_msg.visible = True
        self._status()

    # --- export ---------------------------------------------------------------------

    def _filename(self, *_: Any) -> None:
        what = self.timeframe if self.kind == "ohlc" else "ticks"
        self.download.filename = f"{self.symbol}-{what}.{'parquet' if self.fmt == 'parquet' else 'csv'}"

    def _range_ms(self) -> tuple[int | None, int | None]:
        out = []
        for text in (self.start, self.end):
            out.append(parse_time(text) if text.strip() else None)
        return out[0], out[1]

    def _export(self) -> io.BytesIO | None:
        """FileDownload's callback: the API's file, unchanged."""
        try:
            s, e = self._range_ms()
            body = self.api.export(self.symbol, self.fmt, self.kind, s, e, timeframe=self.timeframe)
        except (ValueError, ApiError) as err:
            self.export_msg.object = f"Download failed: {err}"
            self.export_msg.alert_type = "danger"
            self.export_msg.visible = True
            return None
        self.export_msg.object = f"{self.download.filename}: {len(body):,} bytes."
        self.export_msg.alert_type = "success"
        self.export_msg.visible = True
        return io.BytesIO(body)

    # --- upload ---------------------------------------------------------------------

    def upload(self) -> None:
        if not self.file.value:
            self._upload_says("Choose a CSV file first.", "warning")
            return
        out = self.api.upload_ohlc(self.file.filename or "upload.csv", self.file.value, overwrite=self.overwrite)
        if out.get("ok") is False:
            detail = out["detail"]
            msg = detail.get("message", str(detail)) if isinstance(detail, dict) else str(detail)
            self._upload_says(f"Rejected: {msg}", "danger")
            self.upload_errors.value = upload_errors_frame(detail)
            self.upload_errors.visible = True
            return
        self.upload_errors.visible = False
        self._upload_says(
            f"Stored {out['inserted']} bars ({out['replaced']} replaced, {out['skipped']} kept from the flow) "
            f"for {', '.join(out['symbols'])} {', '.join(out['timeframes'])}.",
            "success",
        )

    def _upload_says(self, text: str, kind: str) -> None:
        self.upload_msg.object = text
        self.upload_msg.alert_type = kind
        self.upload_msg.visible = True

    # --- page -----------------------------------------------------------------------

    def show(self) -> None:
        infos = self.api.symbol_infos()
        syms = [i["symbol"] for i in infos]
        self.param.collect.objects = syms
        self.param.symbol.objects = syms
        if syms and self.symbol not in syms:
            self.symbol = syms[0]
        if not self.collect:
            self.collect = [i["symbol"] for i in infos if i["configured"]]
        info = next((i for i in infos if i["symbol"] == self.symbol), None)
        if info and not self.start and info.get("first_bar_ms"):
            self.start = iso_ms(info["first_bar_ms"])
        self._filename()
        self._status()
        self._ticks = 0

    def refresh(self) -> None:
        self._ticks += 1
        if self._ticks % 2 == 0:
            self._status()
