"""Replay throughput of the whole flow (ticks + 1s/1m/5m bars into SQLite), against the machine's own limit.

    .venv/bin/python bench/bench_replay.py --trades 5000000 --repeats 3 [--variant core|analytics|alerts|alerts-busy|alerts-quiet]

Input: archive-layout `trades` CSVs, one per symbol, made by time- and id-shifting
the bundled hour of real BTCUSDT trades (bench/synth.py). Each run is a fresh
store and a fresh `python -m flows.runner --no-recovery` process at `speed: max`,
timed from process start to exit (imports and schema creation included). The
machine's limit is the same ticks written into the same schema by the store's own
batched INSERT (`SqliteWriter.prepare` + `write`, 50,000 ticks a transaction; columns read
beforehand, only the write timed). Peak RSS of the flow process is read from /proc
while it runs. Variants: `core` (btcusdt + ethusdt, default configuration),
`analytics` (+ the btcusdt-ethusdt pair on 1s and 1m and the 1s correlation matrix,
the ethusdt leg a cointegrated walk), `alerts` (4 symbols, 100 active rules stored
before the start: bench/bench_alerts.py's typical set), `alerts-busy` (its busy set,
a trigger every ~10 trades), `alerts-quiet` (the busy set's rules, never reached).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_alerts import SYMBOLS as ALERT_SYMBOLS  # noqa: E402
from bench.bench_alerts import hundred_rules, quiet, typical_rules  # noqa: E402
from bench.procstat import fresh_db, timed_flow  # noqa: E402
from bench.synth import shifted_trades_csv  # noqa: E402
from storage.port import StoreBatch  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402
from ticklens.domain.records import Trades  # noqa: E402

# The analytics variant: what bench/bench_analytics.py calls "+ pairs".
ANALYTICS = {
    "pairs": [{"legs": ["btcusdt", "ethusdt"], "window": 300, "timeframes": ["1s", "1m"], "adf_every": 10}],
    "correlation": {"symbols": ["btcusdt", "ethusdt"], "window": 300, "timeframe": "1s"},
}


def run_flow(
    work: Path,
    paths: list[Path],
    symbols: list[str],
    extra: dict | None = None,
    rules: list | None = None,
    tree: Path = ROOT,
) -> dict:
    """One timed flow process; `tree` is the checkout whose code runs (cwd decides which packages load)."""
    db = fresh_db(work)
    if rules:  # stored before the flow starts, as the API would
        store = SqliteStore(db).rules()
        for r in rules:
            store.create_rule(r)
        store.close()
    cfg = {
        "symbols": symbols,
        "source": {"kind": "replay", "paths": [str(p) for p in paths], "speed": "max"},
        "store": {"path": str(db)},
        "timeframes": ["1s", "1m", "5m"],
        "recovery": {"enabled": False},
        **(extra or {}),
    }
    timed = timed_flow(work, cfg, tree)
    wall, peak = timed["wall_s"], timed["peak_rss_mb"]
    import sqlite3

    with sqlite3.connect(db) as conn:
        n = conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
        bars = conn.execute("SELECT COUNT(*) FROM bars").fetchone()[0]
        pair_rows = conn.execute("SELECT COUNT(*) FROM pair_stats").fetchone()[0]
        triggers = conn.execute("SELECT COUNT(*) FROM alert_events").fetchone()[0]
    return {
        "trades": n,
        "bars": bars,
        "pair_rows": pair_rows,
        "alert_triggers": triggers,
        "wall_s": wall,
        "trades_per_s": n / wall,
        "peak_rss_mb": peak,
    }


def insert_limit(work: Path, paths: list[Path], symbols: list[str], batch: int = 50_000) -> dict:
    """Batched INSERT of the same ticks into the same schema: the work's floor."""
    db = fresh_db(work, "limit.db")
    writer = SqliteStore(db).writer()
    batches = []
    for path, sym in zip(paths, symbols, strict=True):
        t = pacsv.read_csv(path)
        ids, ts = t["id"].to_numpy(), t["time"].to_numpy()
        tr = Trades.from_columns(
            sym,
            trade_id=ids,
            ts_ms=ts,
            price=t["price"].to_numpy(),
            qty=t["qty"].to_numpy(),
            is_buyer_maker=np.asarray(t["is_buyer_maker"].to_numpy(zero_copy_only=False), dtype=bool),
        )
        for i in range(0, len(tr), batch):
            batches.append(tr.take(np.arange(i, min(i + batch, len(tr)))))
    n = sum(len(b) for b in batches)
    t0 = time.perf_counter()
    for trades in batches:
        writer.write(writer.prepare(StoreBatch(ticks=[trades])))
    dt = time.perf_counter() - t0
    writer.close()
    return {"trades": n, "insert_s": dt, "trades_per_s": n / dt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trades", type=int, default=5_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-at", type=int, default=1_000_000, help="also report peak RSS at this input size")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument(
        "--variant",
        choices=["core", "analytics", "alerts", "alerts-busy", "alerts-quiet"],
        default="core",
        help="core: btcusdt+ethusdt, default config; analytics: + a pair on 1s and 1m and the correlation"
        " matrix (the ethusdt leg a cointegrated walk); alerts: 4 symbols with 100 active rules"
        " (bench_alerts.typical_rules); alerts-busy: bench_alerts.hundred_rules, a trigger every ~10 trades;"
        " alerts-quiet: those with thresholds no value reaches",
    )
    ap.add_argument(
        "--compare-tree",
        type=Path,
        default=None,
        help="another checkout (e.g. the commit before a refactor): its flow runs interleaved with this one's"
        " on the same input, and the after/before ratio of the medians is reported",
    )
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ticklens-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    symbols, extra, rules = ["btcusdt", "ethusdt"], None, None
    if args.variant == "analytics":
        extra = ANALYTICS
    elif args.variant == "alerts":
        symbols, rules = list(ALERT_SYMBOLS), typical_rules()
    elif args.variant == "alerts-busy":
        symbols, rules = list(ALERT_SYMBOLS), hundred_rules()
    elif args.variant == "alerts-quiet":
        symbols, rules = list(ALERT_SYMBOLS), quiet(hundred_rules())
    legs = tuple(s.upper() for s in symbols)
    coint = args.variant == "analytics"
    paths = shifted_trades_csv(work / "input", args.trades, legs, cointegrated=coint)
    runs, before = [], []
    for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits both alike
        if args.compare_tree:
            before.append(run_flow(work, paths, symbols, extra, rules, tree=args.compare_tree.resolve()))
        runs.append(run_flow(work, paths, symbols, extra, rules))
    limits = [insert_limit(work, paths, symbols) for _ in range(args.repeats)]
    small_paths = shifted_trades_csv(work / "input_small", args.rss_at, legs, cointegrated=coint)
    small = run_flow(work, small_paths, symbols, extra, rules)
    med = statistics.median(r["trades_per_s"] for r in runs)
    lim = statistics.median(r["trades_per_s"] for r in limits)
    out = {
        "variant": args.variant,
        "trades": runs[0]["trades"],
        "flow_trades_per_s_median": round(med),
        "flow_runs": [round(r["trades_per_s"]) for r in runs],
        "insert_limit_trades_per_s_median": round(lim),
        "fraction_of_limit": round(med / lim, 3),
        f"peak_rss_mb_at_{args.trades}": round(max(r["peak_rss_mb"] for r in runs), 1),
        f"peak_rss_mb_at_{args.rss_at}": round(small["peak_rss_mb"], 1),
        "bars": runs[0]["bars"],
        "pair_rows": runs[0]["pair_rows"],
        "alert_triggers": runs[0]["alert_triggers"],
        "load_avg": os.getloadavg(),
    }
    if before:
        med_before = statistics.median(r["trades_per_s"] for r in before)
        out |= {
            "before_tree": str(args.compare_tree),
            "before_trades_per_s_median": round(med_before),
            "before_runs": [round(r["trades_per_s"]) for r in before],
            "before_trades": before[0]["trades"],
            "after_over_before": round(med / med_before, 3),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
