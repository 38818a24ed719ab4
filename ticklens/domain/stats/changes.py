"""Bar-to-bar changes in percent: returns, their rolling volatility, each bar's range (pure polars).

The original design's `/api/timeseries` columns, defined once here:
- `returns`: close / previous bar's close − 1, in percent (null for the first bar);
- `volatility`: sample standard deviation (ddof = 1) of the last `window` returns,
  in percent, not annualised (null until `window` returns exist);
- `range_pct`: (high − low) / close, in percent.
"""

from __future__ import annotations

import polars as pl

VOLATILITY_WINDOW = 20


def bar_changes(bars: pl.DataFrame, window: int = VOLATILITY_WINDOW) -> pl.DataFrame:
    """`bars` (columns open, high, low, close, …; oldest first) with returns, volatility and range_pct added."""
    returns = (pl.col("close") / pl.col("close").shift(1) - 1.0) * 100.0
    return bars.with_columns(returns=returns).with_columns(
        volatility=pl.col("returns").rolling_std(window_size=window, min_samples=window, ddof=1),
        range_pct=(pl.col("high") - pl.col("low")) / pl.col("close") * 100.0,
    )
