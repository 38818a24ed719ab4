"""Summary statistics over a window of bars (pure polars; used by /api/v1/stats)."""

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
