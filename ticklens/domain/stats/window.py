"""Summary statistics over a window of bars or of ticks (pure polars; /api/v1/stats, /api/stats)."""

from __future__ import annotations

import math

import polars as pl


def window_stats(bars: pl.DataFrame) -> dict[str, float | int | None]:
    """count, last, mean, std, min, max, volume, vwap, return, realised volatility.

    `bars` has columns open, high, low, close, volume, quote_volume, oldest first.
    Return is last close / first open − 1; realised volatility is √Σ r² of the
    bar-to-bar log returns of the closes (not annualised).
    """
    n = bars.height
    if n == 0:
        return {"count": 0}
    row = bars.select(
        last=pl.col("close").last(),
        mean=pl.col("close").mean(),
        std=pl.col("close").std(ddof=1),
        min=pl.col("low").min(),
        max=pl.col("high").max(),
        volume=pl.col("volume").sum(),
        quote=pl.col("quote_volume").sum(),
        ret=pl.col("close").last() / pl.col("open").first() - 1.0,
        rv=(pl.col("close").log().diff().drop_nulls() ** 2).sum().sqrt(),
    ).row(0, named=True)
    out: dict[str, float | int | None] = {
        "count": n,
        "last": row["last"],
        "mean": row["mean"],
        "std": row["std"],
        "min": row["min"],
        "max": row["max"],
        "volume": row["volume"],
        "vwap": row["quote"] / row["volume"] if row["volume"] else None,
        "return": row["ret"],
        "realised_volatility": row["rv"] if n > 1 else None,
    }
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def tick_window_stats(price: pl.Series, qty: pl.Series) -> dict[str, float | int | None]:
    """`window_stats` over trades: each trade counts as a bar with open = high = low = close = its price,
    volume its quantity and quote volume price × quantity (so mean and std are of trade prices)."""
    ticks = pl.DataFrame({"close": price.cast(pl.Float64), "volume": qty.cast(pl.Float64)})
    return window_stats(
        ticks.select(
            open=pl.col("close"),
            high=pl.col("close"),
            low=pl.col("close"),
            close=pl.col("close"),
            volume=pl.col("volume"),
            quote_volume=pl.col("close") * pl.col("volume"),
        )
    )
