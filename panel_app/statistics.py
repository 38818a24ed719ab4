"""Statistics page (stub)."""

from __future__ import annotations

import panel as pn

from panel_app.page import Page


class StatisticsPage(Page):
    title = "Statistics"

    def view(self) -> pn.viewable.Viewable:
        return pn.Column(self.message, pn.pane.Markdown("## Statistics"))
