"""Interleaved A/B of the books replay: another checkout's code against this one's, same machine, same minutes.

    git worktree add /tmp/base <commit>     # then copy this tree's built .so files into it
    .venv/bin/python bench/ab_flow.py --base /tmp/base [--runs 5] [--streams trade,bookTicker,depth]

Each run is `bench.procstat.timed_flow` (a fresh store, `python -m flows.runner --no-recovery` at
`speed: max`, spawn to exit) on bench_book_flow.py's config, run from the checkout whose code it
measures, alternating base and this tree. Prints each run's wall and CPU seconds and the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procstat import fresh_db, timed_flow  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "binance" / "um_ws"
SPAN_S = 344.9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--streams", default="trade,bookTicker,depth")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ticklens-ab-"))
    res: dict[str, list[tuple[float, float]]] = {"base": [], "this": []}
    for _ in range(args.runs):
        for name, root in (("base", args.base), ("this", ROOT)):
            cfg = {
                "symbols": ["btcusdt", "ethusdt"],
                "source": {
                    "kind": "replay",
                    "paths": [str(DATA / "btcusdt_20240808.gz"), str(DATA / "ethusdt_20240808.gz")],
                    "speed": "max",
                    "streams": args.streams.split(","),
                },
                "store": {"path": str(fresh_db(work))},
                "timeframes": ["1s", "1m", "5m"],
                "recovery": {"enabled": False},
            }
            r = timed_flow(work, cfg, root)
            res[name].append((round(r["wall_s"], 2), round(r["cpu_s"], 2)))
    for name, runs in res.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name}: runs (wall, cpu) {runs}; median wall {wall} s ({SPAN_S / wall:.1f}x real time), cpu {cpu} s")


if __name__ == "__main__":
    main()
