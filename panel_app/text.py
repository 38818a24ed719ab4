"""HTML text and message boxes of a fresh tab's first document, as Bokeh `Div`s.

Panel's own HTML and Alert panes (`panel.models.markup.HTML`) held back the first paint of a tab
opened beside others: with five tabs opening together, a page holding one such pane next to the
Market chart painted ~1.7 s after its document had arrived, the same page with a Bokeh `Div`
instead within ~0.1 s (`bench.bench_dashboard --first-chart`, docs/performance.md, issue 17). So
the header, the sidebar, the banner, the pages' message line and the Market tiles and caption are
`Div`s, each with the dashboard's stylesheet (a `Div` draws in its own shadow root, which the
page's CSS does not reach).
"""

from __future__ import annotations

from typing import Any

import panel as pn
from bokeh.models import Div
from markdown_it import MarkdownIt

_MD = MarkdownIt("commonmark", {"html": False})  # message text is ours, but never trusted as HTML
# Bootstrap's alert colours (text, background, border), as Panel's Alert pane had them.
_KINDS = {
    "danger": ("#842029", "#f8d7da", "#f5c2c7"),
    "warning": ("#664d03", "#fff3cd", "#ffecb5"),
    "info": ("#055160", "#cff4fc", "#b6effb"),
    "success": ("#0f5132", "#d1e7dd", "#badbcc"),
}

# The dashboard's own classes (tiles, badge, alerts): given to every `Div` and to Panel (`raw_css`).
CSS = """
.tl-cards { display: flex; gap: 10px; flex-wrap: wrap; }
.tl-card { background: #f6f8fa; border: 1px solid #e1e4e8; border-radius: 8px; padding: 8px 14px; min-width: 120px; }
.tl-label { font-size: 11px; color: #57606a; text-transform: uppercase; letter-spacing: .04em; }
.tl-value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.tl-sub { font-size: 11px; color: #57606a; min-height: 14px; }
.tl-alert p { margin: 0; }
.tl-badge { display: inline-block; border-radius: 12px; padding: 3px 10px; font-size: 12px; font-weight: 600; color: white; }
"""


class Html:
    """A `Div` of HTML with Panel's `.object` / `.visible` interface; goes into Panel layouts as is."""

    def __init__(
        self,
        text: str = "",
        *,
        margin: Any = (5, 10),
        styles: dict[str, str] | None = None,
        sizing_mode: str | None = None,
        visible: bool = True,
    ) -> None:
        self.div = Div(
            text=text, margin=margin, styles=styles or {}, sizing_mode=sizing_mode, visible=visible, stylesheets=[CSS]
        )
        self._pane = pn.pane.Bokeh(self.div, sizing_mode=sizing_mode, margin=0)

    @property
    def object(self) -> str:
        return str(self.div.text)

    @object.setter
    def object(self, text: str) -> None:
        self._set_html(text)

    def _set_html(self, text: str) -> None:
        if text != self.div.text:  # an unchanged tile sends nothing to the browser
            self.div.text = text

    @property
    def visible(self) -> bool:
        return bool(self.div.visible)

    @visible.setter
    def visible(self, on: bool) -> None:
        if on != self.div.visible:
            self.div.visible = on

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane


class Note(Html):
    """A message box: Markdown text in an alert of `kind` (danger, warning, info, success)."""

    def __init__(self, kind: str = "warning", **kw: Any) -> None:
        super().__init__(**{"visible": False, **kw})
        self.kind = kind
        self.markdown = ""

    @property
    def object(self) -> str:
        return self.markdown

    @object.setter
    def object(self, markdown: str) -> None:
        self.markdown = markdown
        self._draw()

    @property
    def alert_type(self) -> str:
        return self.kind

    @alert_type.setter
    def alert_type(self, kind: str) -> None:
        if kind != self.kind:
            self.kind = kind
            self._draw()

    def _draw(self) -> None:
        fg, bg, border = _KINDS.get(self.kind, _KINDS["warning"])
        body = _MD.render(self.markdown).strip()
        html = (
            f'<div role="alert" class="tl-alert tl-alert-{self.kind}" style="color:{fg};background:{bg};'
            f'border:1px solid {border};border-radius:6px;padding:8px 14px">{body}</div>'
        )
        self._set_html(html)
