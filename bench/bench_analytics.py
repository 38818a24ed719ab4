"""Cost of pair analytics on flow throughput (`python bench/bench_analytics.py`).

Three flows over the same input at speed max, each into a fresh store, in this
process (bytewax.testing.run_main); runs alternate and the median is reported:
- `bars only`: no pairs, no correlation, per-symbol stats off;
- `+ symbol stats`: per-symbol rolling statistics on every timeframe;
- `+ pairs`: also btcusdt-ethusdt on 1s and 1m (window 300, ADF every 10 bars)
  and the 1s correlation matrix (window 300).
Inputs: the bundled BTC/ETH WebSocket recordings (all of data/sample; the
replay hands them over a few trades at a time, so per-batch overhead shows),
and with `--trades N` a larger `@trade` recording made from the bundled hour of
BTCUSDT trades: copies shifted by an hour each, and an "ethusdt" leg whose
price is BTC's times 0.0523 plus a random walk. CPU seconds of this process
(all bytewax threads) are reported next to wall time: the machine is shared.
Then the per-bar cost of the pure analytics (PairAnalytics.update, with and
without the Engle-Granger refresh) on 20 000 synthetic aligned bars.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from bytewax.testing import run_main  # noqa: E402

from flows.dataflow import build_flow  # noqa: E402
from ticklens.config import parse_config  # noqa: E402

SAMPLE = ROOT / "data" / "sample"
RECORDINGS = sorted(SAMPLE.glob("um_*_trades.gz"))

VARIANTS = {
    "bars only": {"pairs": [], "stats": {"enabled": False}},
    "+ symbol stats": {"pairs": [], "stats": {"enabled": True}},
    "+ pairs": {
        "pairs": [{"legs": ["btcusdt", "ethusdt"], "window": 300, "timeframes": ["1s", "1m"], "adf_every": 10}],
        "correlation": {"symbols": ["btcusdt", "ethusdt"], "window": 300, "timeframe": "1s"},
        "stats": {"enabled": True},
    },
}


def two_symbol_recording(out: Path, n_trades: int) -> Path:
    """`<recv ns> <combined-stream JSON>` lines: BTC hour copies and a cointegrated 'ethusdt' leg."""
    base = pl.read_csv(SAMPLE / "BTCUSDT-trades-2020-12-09T00.csv.gz", schema_overrides={"qty": pl.Utf8})
    per = n_trades // 2
    copies = -(-per // base.height)
    id_span = int(base["id"].max() - base["id"].min() + 1)
    btc = pl.concat(
        [base.with_columns(pl.col("time") + i * 3_600_000, pl.col("id") + i * id_span) for i in range(copies)]
    ).head(per)
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.normal(0, 0.01, btc.height))
    legs = [
        btc.with_columns(pl.lit("btcusdt").alias("sym"), pl.col("price").round(1)),
        btc.with_columns(
            pl.lit("ethusdt").alias("sym"),
            (pl.col("price") * 0.0523 + pl.Series(walk)).round(2).alias("price"),
            pl.col("time") + 1,
        ),
    ]
    lines = (
        pl.concat(legs)
        .sort("time", maintain_order=True)
        .select(
            pl.concat_str(
                [
                    ((pl.col("time") + 5) * 1_000_000).cast(pl.Utf8),
                    pl.lit(' {"stream":"'),
                    pl.col("sym"),
                    pl.lit('@trade","data":{"e":"trade","E":'),
                    pl.col("time").cast(pl.Utf8),
                    pl.lit(',"T":'),
                    pl.col("time").cast(pl.Utf8),
                    pl.lit(',"s":"'),
                    pl.col("sym").str.to_uppercase(),
                    pl.lit('","t":'),
                    pl.col("id").cast(pl.Utf8),
                    pl.lit(',"p":"'),
                    pl.col("price").cast(pl.Utf8),
                    pl.lit('","q":"'),
                    pl.col("qty"),
                    pl.lit('","X":"MARKET","m":'),
                    pl.col("is_buyer_maker").cast(pl.Utf8).str.to_lowercase(),
                    pl.lit("}}"),
                ]
            )
        )
        .to_series()
    )
    with gzip.open(out, "wt", compresslevel=1) as fh:
        fh.write("\n".join(lines.to_list()) + "\n")
    return out


def run_once(paths: list[Path], stream: str, variant: dict, tmp: Path) -> tuple[float, float, int, int]:
    db = tmp / f"b{time.monotonic_ns()}.db"
    raw = {
        "symbols": ["btcusdt", "ethusdt"],
        "source": {"kind": "replay", "paths": [str(p) for p in paths], "speed": "max", "stream": stream},
        "store": {"path": str(db)},
        "timeframes": ["1s", "1m", "5m"],
        "recovery": {"enabled": False},
        **variant,
    }
    cfg = parse_config(raw)
    t0, c0 = time.perf_counter(), time.process_time()
    run_main(build_flow(cfg))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with sqlite3.connect(db) as conn:
        trades = conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
        pair_rows = conn.execute("SELECT COUNT(*) FROM pair_stats").fetchone()[0]
    for p in tmp.glob(db.name + "*"):
        p.unlink()
    return wall, cpu, trades, pair_rows


def bench(name: str, paths: list[Path], stream: str, repeats: int, tmp: Path) -> list[str]:
    walls: dict[str, list[float]] = {k: [] for k in VARIANTS}
    cpus: dict[str, list[float]] = {k: [] for k in VARIANTS}
    info: dict[str, tuple[int, int]] = {}
    for _ in range(repeats):
        for k, v in VARIANTS.items():
            wall, cpu, trades, rows = run_once(paths, stream, v, tmp)
            walls[k].append(wall)
            cpus[k].append(cpu)
            info[k] = (trades, rows)
    base = statistics.median(cpus["bars only"])
    lines = [
        name,
        "",
        "| flow | trades | pair rows | wall s | CPU s | trades per CPU s | CPU vs bars only |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in VARIANTS:
        w, c = statistics.median(walls[k]), statistics.median(cpus[k])
        trades, rows = info[k]
        lines.append(
            f"| {k} | {trades:,} | {rows:,} | {w:.2f} | {c:.2f} | {trades / c:,.0f} | {100 * (c / base - 1):+.1f}% |"
        )
    return lines


def per_bar_cost(n: int = 20_000) -> list[str]:
    """Microseconds per aligned bar of the pure pair analytics (window 300)."""
    import numpy as np

    from ticklens.domain.stats.pair import PairParams, pair_rows

    rng = np.random.default_rng(1)
    x = 3400 + np.cumsum(rng.normal(0, 0.5, n))
    y = 19000 + 13 * x + rng.normal(0, 3, n)
    starts = np.arange(n, dtype=np.int64) * 1000
    out = ["", f"Pure analytics per aligned bar ({n:,} bars, window 300, median of 3)", ""]
    out += ["| step | µs per bar |", "|---|---|"]
    for label, every, coint in (
        ("OLS + z + corr + Kalman", 10, "none"),
        ("… + Engle-Granger every 10 bars", 10, "cadence"),
        ("… + Engle-Granger every bar", 1, "cadence"),
    ):
        times = []
        for _ in range(3):
            c0 = time.process_time()
            pair_rows(starts, y, x, PairParams(window=300, adf_every=every), coint=coint)
            times.append(time.process_time() - c0)
        out.append(f"| {label} | {statistics.median(times) / n * 1e6:.1f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trades", type=int, default=0, help="also a time-shifted input of this many trades")
    args = ap.parse_args()
    os.environ["TICKLENS_QUIET"] = "1"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = bench("Bundled BTC/ETH recordings (data/sample/um_*_trades.gz)", RECORDINGS, "trade", args.repeats, tmp)
        if args.trades:
            rec = two_symbol_recording(tmp / "two_symbols_trades.gz", args.trades)
            title = f"BTCUSDT hour copies + a cointegrated ethusdt leg, {args.trades:,} trades in one recording"
            out += [""] + bench(title, [rec], "trade", args.repeats, tmp)
    out += per_bar_cost()
    print("\n".join(out))


if __name__ == "__main__":
    main()
