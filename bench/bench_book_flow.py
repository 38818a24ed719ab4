"""Replay speed of the whole flow with books on, against the same flow with trades only, in one run.

    .venv/bin/python bench/bench_book_flow.py [--repeats 3]

Input: the two 2024-08-08 USD-M recordings (../shared/data/binance/um_ws, BTCUSDT + ETHUSDT:
`@trade`, `@bookTicker`, `@depth@0ms` and the REST snapshot line). Variants, alternating, each a
fresh store and a fresh `python -m flows.runner --no-recovery` at `speed: max`, timed from process
start to exit (imports and schema creation included):

- `books`: `source.streams: [trade, bookTicker, depth]`: ticks, bars, quotes, every applied
  depth diff, book snapshots every 10 s of exchange time;
- `trades`: the same files with the trade stream alone (the baseline: what the flow did before).

Real time is the recordings' span of exchange time (first to last event `E` over both files);
"× real time" is that span over the wall time. Peak RSS of the flow process from /proc.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procstat import fresh_db, timed_flow  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "binance" / "um_ws"
FILES = [DATA / "btcusdt_20240808.gz", DATA / "ethusdt_20240808.gz"]
STREAMS = {"books": ["trade", "bookTicker", "depth"], "trades": ["trade"]}


def span_s() -> tuple[float, dict[str, int]]:
    """Exchange-time span of the recordings (s) and their message counts by kind."""
    lo, hi = 1 << 62, 0
    counts: dict[str, int] = {}
    for path in FILES:
        with gzip.open(path, "rb") as fh:
            for line in fh:
                msg = orjson.loads(line.partition(b" ")[2])
                data = msg.get("data", msg)
                kind = data.get("e", "snapshot")
                counts[kind] = counts.get(kind, 0) + 1
                e = data.get("E")
                if isinstance(e, int):
                    lo, hi = min(lo, e), max(hi, e)
    return (hi - lo) / 1000, counts


def run(work: Path, variant: str) -> dict:
    db = fresh_db(work)
    cfg = {
        "symbols": ["btcusdt", "ethusdt"],
        "source": {"kind": "replay", "paths": [str(p) for p in FILES], "speed": "max", "streams": STREAMS[variant]},
        "store": {"path": str(db)},
        "timeframes": ["1s", "1m", "5m"],
        "recovery": {"enabled": False},
    }
    timed = timed_flow(work, cfg, ROOT)
    with sqlite3.connect(db) as conn:
        counts = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("ticks", "quotes", "depth_updates", "book_snapshots", "book_gaps")
        }
    return {**timed, **counts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    span, kinds = span_s()
    work = Path(tempfile.mkdtemp(prefix="ticklens-bench-book-flow-"))
    runs: dict[str, list[dict]] = {v: [] for v in STREAMS}
    for _ in range(args.repeats):
        for v in STREAMS:
            runs[v].append(run(work, v))
    out: dict = {"span_s": round(span, 1), "messages": kinds}
    for v, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        cpu = statistics.median(r["cpu_s"] for r in rs)
        out[v] = {
            "wall_s_median": round(wall, 2),
            "wall_s_runs": [round(r["wall_s"], 2) for r in rs],
            "cpu_s_median": round(cpu, 2),
            "x_real_time_wall": round(span / wall, 1),
            "x_real_time_cpu": round(span / cpu, 1),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs), 1),
            "rows": {k: rs[0][k] for k in ("ticks", "quotes", "depth_updates", "book_snapshots", "book_gaps")},
        }
    out["books_over_trades_wall"] = round(out["books"]["wall_s_median"] / out["trades"]["wall_s_median"], 2)
    out["load_avg"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
