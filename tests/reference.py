"""Independent oracles for the tests: trades read with gzip/json/csv and bars built with polars.

Nothing here imports ticklens code, so a bug there cannot hide in the expectation.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import polars as pl

TF_MS = {"1s": 1_000, "1m": 60_000, "5m": 300_000}


def ohlc() -> dict[str, pl.Expr]:
    """A bar's open, high, low and close as aggregations of its trades' prices: open and close by the
    order the rows stand in (sort by time, then id, first)."""
    p = pl.col("price")
    return {"open": p.first(), "high": p.max(), "low": p.min(), "close": p.last()}


def read_recording(path: Path) -> list[dict]:
    out = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            _, _, body = line.partition(" ")
            msg = json.loads(body)
            d = msg.get("data", msg)
            if d.get("e") == "trade":
                out.append(
                    {
                        "symbol": d["s"].lower(),
                        "trade_id": d["t"],
                        "ts_ms": d["T"],
                        "price": float(d["p"]),
                        "qty": float(d["q"]),
                        "is_buyer_maker": d["m"],
                        "count": 1,
                    }
                )
    return out


def read_trades_csv(path: Path, symbol: str) -> list[dict]:
    out = []
    with gzip.open(path, "rt") as fh:
        for r in csv.DictReader(fh):
            out.append(
                {
                    "symbol": symbol,
                    "trade_id": int(r["id"]),
                    "ts_ms": int(r["time"]),
                    "price": float(r["price"]),
                    "qty": float(r["qty"]),
                    "is_buyer_maker": r["is_buyer_maker"] == "true",
                    "count": 1,
                }
            )
    return out


def trades_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows).unique(["symbol", "trade_id"], keep="first").sort("symbol", "ts_ms", "trade_id")


def reference_bars(trades: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    tf = TF_MS[timeframe]
    return (
        trades.with_columns((pl.col("ts_ms") - pl.col("ts_ms") % tf).alias("start_ms"))
        .group_by("symbol", "start_ms", maintain_order=True)
        .agg(
            **ohlc(),
            volume=pl.col("qty").sum().round(8),
            quote_volume=(pl.col("price") * pl.col("qty")).sum(),
            trades=pl.col("count").sum(),
            taker_buy_volume=pl.col("qty").filter(~pl.col("is_buyer_maker")).sum().round(8),
            first_id=pl.col("trade_id").min(),
            last_id=pl.col("trade_id").max(),
        )
        .sort("symbol", "start_ms")
    )


def read_klines(path: Path) -> pl.DataFrame:
    return pl.read_csv(path)
