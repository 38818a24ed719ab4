"""The floor for `bench_dashboard --first-chart --baseline bench/dashboard_floor`: what Panel itself costs.

One Bokeh candle figure of 900 fixed bars in a plain Panel column: no API calls, no widgets, no
clock. A fresh tab of the real dashboard cannot open faster than this on the same machine.
"""

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

pn.extension()
N = 900
t = (np.arange(N) * 1000 + 1_700_000_000_000).astype("datetime64[ms]")
close = 60_000 + np.cumsum(np.random.default_rng(1).normal(0, 5, N))
source = ColumnDataSource(
    {
        "start_ms": np.arange(N),
        "time": t,
        "left": t - np.timedelta64(350, "ms"),
        "right": t + np.timedelta64(350, "ms"),
        "open": close - 2,
        "close": close,
        "high": close + 5,
        "low": close - 5,
        "volume": np.ones(N),
        "trades": np.ones(N),
        "state": ["closed"] * N,
    },
    name="market-candles",  # what the bench's probe looks for
)
fig = figure(
    x_axis_type="datetime",
    height=540,
    sizing_mode="stretch_width",
    tools="xpan,xwheel_zoom,box_zoom,reset,save",
    output_backend="canvas",
)
fig.segment(x0="time", y0="low", x1="time", y1="high", source=source)
fig.quad(left="left", right="right", bottom="open", top="close", source=source)
pn.Column(pn.pane.Bokeh(fig, sizing_mode="stretch_width"), sizing_mode="stretch_width").servable(title="floor")
