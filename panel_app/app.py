"""The ticklens dashboard: one template, a sidebar of pages, one clock that keeps the visible page live.

Served by `panel serve panel_app/app.py` (one session per browser tab). It reads
only through the REST API (`TICKLENS_API`, else the config's api host/port);
when the API does not answer, a banner says so and the pages keep their last data.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import panel as pn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `panel serve panel_app/app.py` runs this file as a script
    sys.path.insert(0, str(ROOT))

from panel_app.alerts import AlertsPage  # noqa: E402
from panel_app.client import Api, ApiDown, ApiError  # noqa: E402
from panel_app.correlation import CorrelationPage  # noqa: E402
from panel_app.data import DataPage  # noqa: E402
from panel_app.market import MarketPage  # noqa: E402
from panel_app.page import ACCENT, CSS, Page  # noqa: E402
from panel_app.pair import PairPage  # noqa: E402
from panel_app.statistics import StatisticsPage  # noqa: E402
from ticklens.times import iso_ms, parse_time  # noqa: E402

REFRESH_MS = 1000  # one update per second per visible chart
STATUS_EVERY = 2  # status (freshness badge) every 2nd tick

pn.extension("tabulator", raw_css=[CSS], notifications=True)


def freshness_badge(status: dict | None, api_down: str | None) -> str:
    """How old the newest data is, as a coloured pill.

    The flow writes its status every couple of seconds while it runs, so the age of
    that write says whether data is flowing; the newest trade time says how far it got.
    """
    if api_down:
        return '<span class="tl-badge" style="background:#cf222e">API down</span>'
    if not status:
        return '<span class="tl-badge" style="background:#8b949e">…</span>'
    now = time.time() * 1000
    written = status.get("status_time")
    age_s = (now - parse_time(written)) / 1000 if written else None
    newest = max((s.get("last_trade_ms") or 0 for s in status.get("per_symbol", [])), default=0)
    newest_txt = iso_ms(newest).replace("T", " ")[:19] + "Z" if newest else "no trades yet"
    if not status.get("running"):
        color, state = "#8b949e", "flow stopped"
    elif age_s is not None and age_s < 10:
        color, state = "#1a7f37", f"live · {age_s:.1f} s ago"
    elif age_s is not None and age_s < 60:
        color, state = "#bf8700", f"stale · {age_s:.0f} s ago"
    else:
        color, state = "#cf222e", "no updates" if age_s is None else f"stale · {age_s:.0f} s ago"
    return (
        f'<span class="tl-badge" style="background:{color}" title="when the flow last wrote its status">{state}</span>'
        f'<span style="margin-left:8px;font-size:12px;color:#ffffffcc">newest trade {newest_txt}</span>'
    )


class Dashboard:
    """The pages, the navigation, and the clock."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.pages: dict[str, Page] = {
            p.title: p
            for p in (
                MarketPage(api),
                PairPage(api),
                CorrelationPage(api),
                StatisticsPage(api),
                AlertsPage(api),
                DataPage(api),
            )
        }
        self.views = {name: page.view() for name, page in self.pages.items()}
        self.nav = pn.widgets.RadioButtonGroup(
            options=list(self.pages),
            value="Market",
            orientation="vertical",
            button_type="primary",
            button_style="outline",
            sizing_mode="stretch_width",
        )
        self.banner = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.badge = pn.pane.HTML(freshness_badge(None, None), margin=(5, 10))
        # Only the visible page is in the document: the browser lays out and updates one
        # page's figures, not six (measured: keeping all six and toggling visibility made
        # the first visit to a page 3x slower under load).
        self.main = pn.Column(self.views["Market"], sizing_mode="stretch_width")
        self.status: dict | None = None
        self._tick = 0
        self._needs_show = True
        pn.bind(self._navigate, self.nav, watch=True)

    @property
    def page(self) -> Page:
        return self.pages[self.nav.value]

    def _navigate(self, name: str) -> None:
        self.main.objects = [self.views[name]]
        self._needs_show = True
        self.tick()

    def tick(self) -> None:
        """Once a second: status for the badge, then the visible page streams what is new."""
        self._tick += 1
        try:
            if self._tick % STATUS_EVERY == 1 or self.status is None or self._needs_show:
                self._fetch_status()
            if self._needs_show:
                self.page.show()
                self._needs_show = False
            else:
                self.page.refresh()
            self.banner.visible = False
        except ApiDown as e:
            print(f"[dashboard] {e}", file=sys.stderr, flush=True)
            self.banner.object = (
                f"**The API is not answering** ({e}). Start it with `ticklens up` or "
                f"`uvicorn api.app:app`; this page retries every second and keeps its last data."
            )
            self.banner.visible = True
            self._needs_show = True
        except ApiError as e:
            self.page.say_error(e)
        except Exception as e:  # a bug must not freeze the page silently
            traceback.print_exc()
            self.page.say(f"Dashboard error: {type(e).__name__}: {e}", "danger")
        self.badge.object = freshness_badge(self.status, self.api.last_error)

    def _fetch_status(self) -> None:
        try:
            self.status = self.api.status()
        except ApiError:
            self.status = None  # the badge shows "…"; pages still work

    def template(self) -> pn.template.BaseTemplate:
        tpl = pn.template.BootstrapTemplate(
            title="ticklens",
            header_background=ACCENT,
            sidebar_width=220,
            sidebar=[
                self.nav,
                pn.pane.HTML(
                    f'<div style="font-size:12px;color:#57606a;margin-top:12px">API: {self.api.base_url}</div>'
                ),
            ],
            main=[pn.Column(self.banner, self.main, sizing_mode="stretch_width")],
            header=[pn.Row(pn.layout.HSpacer(), self.badge, sizing_mode="stretch_width")],
        )
        return tpl


def build() -> pn.template.BaseTemplate:
    dash = Dashboard(Api())
    pn.state.onload(dash.tick)
    pn.state.add_periodic_callback(dash.tick, period=REFRESH_MS)
    pn.state.on_session_destroyed(lambda _ctx: dash.api.close())
    return dash.template()


build().servable(title="ticklens")
