"""Live time-series figures: built once, then fed by `ColumnDataSource.stream`.

Pages hand rows (dicts with `start_ms`) to `append_rows`; only rows newer than
what the source already holds are sent to the browser.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from bokeh.core.properties import field
from bokeh.models import ColumnDataSource, DataRange1d, Glyph, GlyphRenderer, HoverTool, Range, VStrip
from bokeh.plotting import figure

from panel_app.client import to_time

LIVE_ROWS = 5000  # rows a live line keeps before the oldest roll off


def time_figure(title: str, height: int = 220, x_range: Range | None = None, y_label: str = "") -> Any:
    """A datetime-x figure that stretches to the page width (shared x when `x_range` is given)."""
    fig = figure(
        title=title,
        height=height,
        x_axis_type="datetime",
        sizing_mode="stretch_width",
        x_range=x_range or DataRange1d(range_padding=0.01),
        tools="xpan,xwheel_zoom,box_zoom,reset,save",
        active_scroll="xwheel_zoom",
        toolbar_location="right",
        output_backend="canvas",
    )
    fig.yaxis.axis_label = y_label
    fig.min_border_left = 70
    fig.title.text_font_size = "13px"
    fig.title.text_color = "#24292f"
    fig.grid.grid_line_alpha = 0.4
    return fig


def columns(rows: Sequence[dict], fields: Iterable[str]) -> dict[str, np.ndarray]:
    """API rows → source columns: `start_ms`, `time` and the numeric fields (None → NaN, a gap in a line)."""
    starts = np.array([r["start_ms"] for r in rows], dtype="int64")
    out: dict[str, np.ndarray] = {"start_ms": starts, "time": np.array(to_time(starts))}
    for f in fields:
        out[f] = np.array([np.nan if r.get(f) is None else float(r[f]) for r in rows], dtype="float64")
    return out


def live_source(fields: Iterable[str]) -> ColumnDataSource:
    return ColumnDataSource(columns([], list(fields)))


def replace_rows(source: ColumnDataSource, rows: Sequence[dict], fields: Iterable[str]) -> None:
    """Everything new (a different selection): one full update."""
    source.data = columns(rows, list(fields))


def append_rows(
    source: ColumnDataSource, rows: Sequence[dict], fields: Iterable[str], rollover: int = LIVE_ROWS
) -> int:
    """Stream the rows newer than the newest held; returns how many were sent."""
    starts = source.data["start_ms"]
    last = int(starts[-1]) if len(starts) else None
    new = [r for r in rows if last is None or r["start_ms"] > last]
    if new:
        source.stream(columns(new, list(fields)), rollover=rollover)
    return len(new)


def add_hover(
    fig: Any, renderers: list, fields: list[tuple[str, str]], formatters: dict[str, str] | None = None
) -> HoverTool:
    tool = HoverTool(
        renderers=renderers,
        tooltips=[("time", "@time{%F %T}"), *fields],
        formatters={"@time": "datetime", **(formatters or {})},
        mode="vline",
    )
    fig.add_tools(tool)
    return tool


GAP_FILL = "#8b949e"
MAX_GAPS = 50  # the newest book-unknown intervals drawn


def gap_spans(gaps: Sequence[dict], now_ms: int) -> list[tuple[int, int]]:
    """Unknown intervals as (from, to) ms; an open gap reaches to now."""
    return [(g["from_ms"], g["to_ms"] if g.get("to_ms") is not None else now_ms) for g in gaps]


def gap_strips(fig: Any, name: str | None = None) -> ColumnDataSource:
    """Shading over `fig` for intervals when the book was unknown: one strip glyph over a source (fifty
    pre-made box annotations were a tenth of a session's build on the server, and fifty browser views)."""
    src = ColumnDataSource({"x0": [], "x1": []}, name=name)
    add_glyph(fig, src, VStrip(x0=field("x0"), x1=field("x1"), fill_color=GAP_FILL, fill_alpha=0.3, line_alpha=0))
    return src


def add_glyph(fig: Any, source: ColumnDataSource, glyph: Glyph, **renderer: Any) -> GlyphRenderer:
    """Draw `glyph` from `source` on `fig` with the renderer alone. `figure.quad()` and the like also
    make a non-selection and a muted copy of each glyph: two models more per glyph to build on the
    server, send and build in the browser for every fresh tab, for states these charts never show
    (nothing here is selected or muted; "auto" draws the glyph itself). Issue 17, docs/performance.md."""
    r = GlyphRenderer(data_source=source, glyph=glyph, **renderer)
    fig.renderers.append(r)
    return r


def set_gaps(src: ColumnDataSource, spans: Sequence[tuple[float, float]]) -> None:
    """Draw the newest MAX_GAPS of `spans` ([start, end) epoch ms, the datetime axis' unit)."""
    spans = spans[-MAX_GAPS:]
    src.data = {"x0": [float(a) for a, _ in spans], "x1": [float(b) for _, b in spans]}
