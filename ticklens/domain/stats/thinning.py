"""Fewer, wider bars for a chart: consecutive bars merged, extremes kept (pure polars).

A day of 1s bars is 86,400 rows; a chart a few thousand pixels wide needs far
fewer. Merging consecutive bars keeps what a candle shows: the first open, the
true high and low, the last close, the summed volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl


def ohlcv_merged() -> list[pl.Expr]:
    """How consecutive bars' open, high, low, close and volume merge into one bar."""
    return [
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
    ]


def thin_bars(
    rows: list[tuple[Any, ...]], columns: Sequence[str], max_points: int, tf_ms: int
) -> tuple[list[tuple[Any, ...]], list[int]]:
    """At most `max_points` bars (same columns, oldest first) and each one's width in ms.

    `rows` are bars oldest first with at least start_ms, open, high, low, close,
    volume, quote_volume, trades, taker_buy_volume, vwap, closed, revision, origin.
    Bar i goes to bucket i * max_points // n, so buckets differ in size by at most one.
    """
    n = len(rows)
    if n <= max_points:
        return rows, [tf_ms] * n
    df = pl.DataFrame(rows, schema=list(columns), orient="row")
    out = (
        df.with_columns(_b=(pl.int_range(n, dtype=pl.Int64) * max_points // n))
        .group_by("_b", maintain_order=True)
        .agg(
            pl.col("start_ms").first(),
            *ohlcv_merged(),
            pl.col("quote_volume").sum(),
            pl.col("trades").sum(),
            pl.col("taker_buy_volume").sum(),
            pl.col("closed").min(),
            pl.col("revision").max(),
            pl.when((pl.col("origin") == "upload").any())
            .then(pl.lit("upload"))
            .otherwise(pl.lit("flow"))
            .alias("origin"),
            (pl.col("start_ms").last() - pl.col("start_ms").first() + tf_ms).alias("_span"),
        )
        .with_columns(
            vwap=pl.when(pl.col("volume") > 0)
            .then(pl.col("quote_volume") / pl.col("volume"))
            .otherwise(pl.col("close"))
        )
    )
    spans = out["_span"].to_list()
    return out.select(list(columns)).rows(), spans
