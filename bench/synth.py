"""Large benchmark inputs made by time- and id-shifting the bundled real trades."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
BTC_2020 = ROOT / "data" / "sample" / "BTCUSDT-trades-2020-12-09T00.csv.gz"


def shifted_trades_csv(
    out_dir: Path, n_trades: int, symbols: tuple[str, ...] = ("BTCUSDT",), cointegrated: bool = False
) -> list[Path]:
    """Archive-layout `trades` CSVs (one per symbol) of about n_trades in total, consecutive copies of the hour.

    `cointegrated`: every symbol after the first gets BTC's price x 0.0523 plus its own random
    walk (an ETH-like leg), so pair statistics see two different series rather than one copy.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    base = pl.read_csv(BTC_2020, schema_overrides={"price": pl.Utf8, "qty": pl.Utf8, "quote_qty": pl.Utf8})
    span_ms = 3_600_000
    id_span = int(base["id"].max() - base["id"].min() + 1)
    per_symbol = n_trades // len(symbols)
    copies = -(-per_symbol // base.height)
    paths = []
    for k, sym in enumerate(symbols):
        tag = "-coint" if cointegrated and k else ""
        path = out_dir / f"{sym}-trades-bench-{per_symbol}{tag}.csv"
        if not path.exists():
            parts = [
                base.with_columns(pl.col("id") + i * id_span + k, pl.col("time") + i * span_ms + k)
                for i in range(copies)
            ]
            df = pl.concat(parts).head(per_symbol)
            if tag:
                walk = np.cumsum(np.random.default_rng(k).normal(0, 0.01, df.height))
                price = (df["price"].cast(pl.Float64) * 0.0523 + walk).round(2)
                df = df.with_columns(price.cast(pl.Utf8).alias("price"))
            df.write_csv(path)
        paths.append(path)
    return paths


def shifted_archive_days(site: Path, days: int, symbol: str = "BTCUSDT", hours: int = 24) -> list[Path]:
    """A local copy of the archive's layout under `site`: `days` daily `trades` zips from 2020-12-09 on,
    each the first `hours` hours of its own day made of time- and id-shifted copies of the bundled hour
    (ids rising across days), with its `.CHECKSUM` beside it."""
    import hashlib
    import io
    import zipfile
    from datetime import date, timedelta

    base = pl.read_csv(BTC_2020, schema_overrides={"price": pl.Utf8, "qty": pl.Utf8, "quote_qty": pl.Utf8})
    id_span = int(base["id"].max() - base["id"].min() + 1)
    folder = site / "data" / "futures" / "um" / "daily" / "trades" / symbol
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for d in range(days):
        name = f"{symbol}-trades-{date(2020, 12, 9) + timedelta(days=d)}.zip"
        path = folder / name
        if not path.exists():
            k = d * hours
            day = pl.concat(
                [
                    base.with_columns(pl.col("id") + (k + h) * id_span, pl.col("time") + (d * 24 + h) * 3_600_000)
                    for h in range(hours)
                ]
            )
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(name.removesuffix(".zip") + ".csv", day.write_csv())
            body = buf.getvalue()
            (folder / (name + ".CHECKSUM")).write_text(f"{hashlib.sha256(body).hexdigest()}  {name}\n")
            path.write_bytes(body)
        out.append(path)
    return out
