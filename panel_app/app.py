"""The ticklens dashboard: a header, a sidebar of pages, one clock that keeps the visible page live.

Served by `panel serve panel_app/app.py` (one session per browser tab). It reads
only through the REST API (`TICKLENS_API`, else the config's api host/port);
when the API does not answer, a banner says so and the pages keep their last data.
"""

from __future__ import annotations

import contextlib
import html
import sys
import traceback
from pathlib import Path

import panel as pn
from panel.io import hold

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `panel serve panel_app/app.py` runs this file as a script
    sys.path.insert(0, str(ROOT))

from panel_app.alerts import AlertsPage  # noqa: E402
from panel_app.book import BookPage  # noqa: E402
from panel_app.client import Api, ApiDown, ApiError  # noqa: E402
from panel_app.correlation import CorrelationPage  # noqa: E402
from panel_app.data import DataPage  # noqa: E402
from panel_app.market import MarketPage  # noqa: E402
from panel_app.microstructure import MicrostructurePage  # noqa: E402
from panel_app.page import ACCENT, Page, freshness_badge  # noqa: E402
from panel_app.pair import PairPage  # noqa: E402
from panel_app.process import freeze_imports  # noqa: E402
from panel_app.statistics import StatisticsPage  # noqa: E402
from panel_app.text import CSS, Html, Note  # noqa: E402

REFRESH_MS = 1000  # one update per second per visible chart
STATUS_EVERY = 2  # status (freshness badge) every 2nd tick

pn.extension("tabulator", raw_css=[CSS])
freeze_imports()


PAGES: tuple[type[Page], ...] = (
    MarketPage,
    BookPage,
    PairPage,
    CorrelationPage,
    StatisticsPage,
    MicrostructurePage,
    AlertsPage,
    DataPage,
)


class Dashboard:
    """The pages, the navigation, and the clock."""

    def __init__(self, api: Api) -> None:
        self.api = api
        # A page is built when first shown: a new browser session builds the Market page only
        # (its document is ready in a fraction of the time all six took; docs/performance.md).
        self.kinds = {p.title: p for p in PAGES}
        self.pages: dict[str, Page] = {}
        self.views: dict[str, pn.viewable.Viewable] = {}
        self.nav = pn.widgets.RadioButtonGroup(
            options=list(self.kinds),
            value="Market",
            orientation="vertical",
            button_type="primary",
            button_style="outline",
            sizing_mode="stretch_width",
        )
        self.banner = Note("danger", sizing_mode="stretch_width")
        self.badge = Html(freshness_badge(None, None), margin=(12, 16))
        # Only the visible page is in the document: the browser lays out and updates one
        # page's figures, not six (measured: keeping all six and toggling visibility made
        # the first visit to a page 3x slower under load).
        self.main = pn.Column(self._view("Market"), sizing_mode="stretch_width")
        self.status: dict | None = None
        self._tick = 0
        self._needs_show = True
        pn.bind(self._navigate, self.nav, watch=True)

    @property
    def page(self) -> Page:
        self._view(self.nav.value)
        return self.pages[self.nav.value]

    def _view(self, name: str) -> pn.viewable.Viewable:
        if name not in self.views:
            page = self.kinds[name](self.api)
            self.pages[name] = page
            self.views[name] = page.view()
        return self.views[name]

    def _navigate(self, name: str) -> None:
        # A page shown for the first time is built here, and sent as one message (hold). Not frozen
        # like the session's first build: Panel then missed the new page's extension resources.
        with hold():
            self.main.objects = [self._view(name)]
            self._needs_show = True
            self.tick()

    def live_tick(self) -> None:
        """`tick` for the clock, with everything it changes sent to the browser as one message: a page
        that rebuilds a figure's renderers, legend and hover (Correlation) never leaves the browser
        with part of that change. Without it a CI run under load saw Bokeh's "reference … isn't known"
        on the Correlation page. A session whose tab has closed skips it (see `connected`)."""
        if not connected():
            return
        with hold():
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

    def layout(self) -> pn.viewable.Viewable:
        """A header, the sidebar and the visible page in plain rows and columns: no Panel template.
        A template's own stylesheets, scripts and models made each fresh tab cost twice the server
        and browser time of the page inside it (docs/performance.md, issue 17)."""
        header = pn.Row(
            Html('<span style="color:white;font-size:20px;font-weight:600">ticklens</span>', margin=(10, 16)),
            pn.layout.HSpacer(),
            self.badge,
            styles={"background": ACCENT},
            sizing_mode="stretch_width",
        )
        sidebar = pn.Column(
            self.nav,
            Html(
                f'<div style="font-size:12px;color:#57606a;margin-top:12px">API: {html.escape(self.api.base_url)}</div>'
            ),
            width=220,
            styles={"border-right": "1px solid #e1e4e8"},
        )
        main = pn.Column(self.banner, self.main, sizing_mode="stretch_width")
        return pn.Column(header, pn.Row(sidebar, main, sizing_mode="stretch_width"), sizing_mode="stretch_width")


def connected() -> bool:
    """Whether the current session's browser tab is still connected. Bokeh keeps a closed tab's
    session, and so its clock, for about half a minute before destroying it; with tabs opened and
    closed a fourth of the server's time went to such sessions' ticks (docs/performance.md). Not
    knowing (no server session) counts as connected."""
    doc = pn.state.curdoc
    session = getattr(getattr(doc, "session_context", None), "_session", None)  # Bokeh's ServerSession
    return getattr(session, "connection_count", 1) > 0


def build() -> pn.viewable.Viewable:
    dash = Dashboard(Api())
    # The first data goes into the document itself, not into a patch after the page loaded: the
    # browser draws the chart with real candles in its first render (one round trip and one
    # layout pass fewer; docs/performance.md). A down API shows its banner at once instead.
    dash.tick()
    # The clock starts once the browser has the document: with several tabs opening together, ticks
    # of sessions not yet shown would take the server from the builds still waiting (issue 17).
    pn.state.onload(lambda: pn.state.add_periodic_callback(dash.live_tick, period=REFRESH_MS))
    pn.state.on_session_destroyed(lambda _ctx: dash.api.close())
    return dash.layout()


def serve() -> None:
    """Build the session's document with its model graph frozen: Bokeh recomputes the graph of a
    document's models after each change to it, so a session built model by model paid for that
    walk hundreds of times; frozen, once at the end (docs/performance.md)."""
    doc = pn.state.curdoc
    with doc.models.freeze() if doc is not None else contextlib.nullcontext():
        build().servable(title="ticklens")


serve()
