"""Flood soak: 60 s of 60 KB garbage frames interleaved with valid trades, against the real flow.

    .venv/bin/python bench/soak_flood.py [--seconds 60] [--rate 100] [--garbage-per-trade 2] [--size 60000]
                                         [--cache-mb 64] [--rejects-max-rows N]

The hostile server (tests/hostile_feed.py, its own process) sends `garbage-per-trade`
garbage frames of `size` bytes (random bytes, huge JSON arrays and strings, a trade with a
huge id, in turn) before each valid trade, valid trades at `rate` per second, on one
connection for `seconds`. The flow (`python -m flows.runner --no-recovery`, its own process)
runs with `source.reject_ratio_max: 0.9`, so the connection is kept and the flood lasts the
whole time (the default, 0.5, would close it: that case is in tests/test_hostile_feed.py).

Measured, for the flood and for a baseline run of the same valid trades without garbage
(same script, run first): the flow's RSS every second from the first stored trade (peak,
slope after the first 10 s); each valid trade's store latency, from its trade time (set by the
server when it sends it) to the moment this script first sees it in `ticks` (polled every
20 ms, so latencies read up to ~20 ms high); garbage sent, rejects stored and dropped (`store.rejects_max_rows`), store size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cli import options  # noqa: E402
from tests.feed_support import query  # noqa: E402
from tests.hostile_feed import HostileServer  # noqa: E402


def run(seconds: float, rate: float, garbage_per_trade: int, size: int, cache_mb: int, rejects_max_rows: int) -> dict:
    """One flow and one server for `seconds`; the figures of that run."""
    work = Path(tempfile.mkdtemp(prefix="soak_flood_"))
    server = HostileServer(max_seconds=seconds + 120)
    url = server.url("flood", garbage_per_trade=garbage_per_trade, size=size, rate=rate, seconds=seconds, sessions=1)
    cfg = {
        "symbols": ["btcusdt"],
        "source": {"kind": "feed", "url": url, "stream": "trade", "reject_ratio_max": 0.9},
        "store": {"path": str(work / "soak.db"), "cache_mb": cache_mb, "rejects_max_rows": rejects_max_rows},
        "timeframes": ["1s", "1m", "5m"],
        "recovery": {"enabled": False},
        "progress_interval_s": 1.0,
    }
    (work / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, TICKLENS_CONFIG=str(work / "pipeline.yaml"), TICKLENS_QUIET="1")
    log = open(work / "flow.log", "wb")  # noqa: SIM115
    flow = subprocess.Popen(
        [sys.executable, "-m", "flows.runner", "--no-recovery"], cwd=ROOT, env=env, stderr=log, stdout=log
    )
    proc = psutil.Process(flow.pid)
    db = work / "soak.db"
    seen: dict[int, float] = {}
    rss: list[tuple[float, float]] = []  # (seconds since the first trade was stored, MB)
    t0: float | None = None
    next_rss = 0.0
    started = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            wall_ms = time.time() * 1000
            last = max(seen, default=0)
            for tid, ts in query(db, "SELECT trade_id, ts_ms FROM ticks WHERE trade_id > ?", (last,)):
                seen[tid] = wall_ms - ts
            if t0 is None and seen:
                t0 = next_rss = now
            if t0 is not None and now >= next_rss:
                rss.append((now - t0, proc.memory_info().rss / 1e6))
                next_rss += 1.0
            st = server.stats()
            if st["connections"] >= 2 or (t0 is not None and now - t0 > seconds + 5 and len(seen) >= st["valid_sent"]):
                break
            if flow.poll() is not None:
                raise SystemExit(f"flow exited {flow.returncode}: {(work / 'flow.log').read_text()[-2000:]}")
            if now - started > seconds + 90:
                break
            time.sleep(0.02)
        st = server.stats()
        # The last trades sent may still be on their way through the flow: wait for them (bounded).
        deadline = time.monotonic() + 10
        while (stored := query(db, "SELECT COUNT(*) FROM ticks")[0][0]) < st["valid_sent"]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        rejects, reject_bytes = query(db, "SELECT COUNT(*), COALESCE(SUM(length(raw)), 0) FROM rejects")[0]
        dropped = query(db, "SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM meta WHERE key='rejects_dropped'")[0][
            0
        ]
    finally:
        flow.send_signal(2)
        flow.wait(30)
        server.stop()
        log.close()
    lat = np.array(sorted(seen.values()))
    late = [(t, m) for t, m in rss if t >= 10]
    slope = float(np.polyfit([t for t, _ in late], [m for _, m in late], 1)[0] * 60) if len(late) > 2 else 0.0
    return {
        "garbage_per_trade": garbage_per_trade,
        "valid_sent": st["valid_sent"],
        "valid_stored": stored,
        "garbage_frames": st["garbage_sent"],
        "garbage_mb": round(st["garbage_bytes"] / 1e6, 1),
        "rejects_stored": rejects,
        "rejects_dropped": dropped,
        "reject_bytes_mb": round(reject_bytes / 1e6, 1),
        "store_mb": round(sum(f.stat().st_size for f in work.glob("soak.db*")) / 1e6, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p99": round(float(np.percentile(lat, 99)), 1),
            "max": round(float(lat.max()), 1),
            "over_1s": int((lat > 1000).sum()),
        },
        "rss_mb": {
            "first_trade": round(rss[0][1], 1),
            "after_10s": round(late[0][1], 1) if late else None,
            "end": round(rss[-1][1], 1),
            "peak": round(max(m for _, m in rss), 1),
            "slope_mb_per_min_after_10s": round(slope, 2),
            "every_10s": [round(m, 1) for t, m in rss if int(t) % 10 == 0],
        },
    }


def main() -> int:
    helps = {
        "cache_mb": "store.cache_mb: the writer's SQLite page cache",
        "rejects_max_rows": "store.rejects_max_rows",
        "no_baseline": "skip the same run without garbage",
    }
    args = options(
        helps,
        seconds=60.0,
        rate=100.0,
        garbage_per_trade=2,
        size=60_000,
        cache_mb=64,
        rejects_max_rows=1_000_000,
        no_baseline=False,
    )
    out: dict = {"seconds": args.seconds, "rate": args.rate, "size": args.size, "cache_mb": args.cache_mb}
    out["rejects_max_rows"] = args.rejects_max_rows
    knobs = (args.seconds, args.rate)
    if not args.no_baseline:
        out["baseline"] = run(*knobs, 0, args.size, args.cache_mb, args.rejects_max_rows)
    out["flood"] = run(*knobs, args.garbage_per_trade, args.size, args.cache_mb, args.rejects_max_rows)
    out["load_avg"] = list(os.getloadavg())
    out["cpus"] = os.cpu_count()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
