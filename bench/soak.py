"""Soak: hours of market time through feed → flow → store, the API polled every second.

    .venv/bin/python bench/soak.py --market-hours 2 --speed 50

The local feed loops the bundled BTC+ETH recording (ids and times shifted on each
loop) at `--speed`; the flow (with pair analytics, as configured) writes a fresh
store; uvicorn serves the API, polled once a second (status, ohlc, spread). Every
5 s the flow's RSS and open file descriptors are sampled; the report gives their
least-squares slope after the warm-up, the store size, and tick/bar counts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
FILES = [SAMPLE / f"um_{s}_{d}_trades.gz" for s in ("btcusdt", "ethusdt") for d in ("20240718", "20240719")]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _slope_per_hour(t: list[float], y: list[float]) -> float:
    if len(t) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(t) / 3600, np.asarray(y), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--market-hours", type=float, default=2.0)
    ap.add_argument("--speed", type=float, default=50.0)
    ap.add_argument("--warmup-s", type=float, default=30.0)
    ap.add_argument("--cache-mb", type=int, default=64, help="the writer's SQLite page cache (store.cache_mb)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ticklens-soak-"))
    feed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ticklens.emulator",
            "--port",
            "0",
            "--loop",
            "--speed",
            str(args.speed),
            *map(str, FILES),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = feed.stdout.readline() if feed.stdout else ""
    port = int(line.rsplit(":", 1)[1].split("/")[0])
    cfg = {
        "symbols": ["btcusdt", "ethusdt"],
        "source": {"kind": "feed", "url": f"ws://127.0.0.1:{port}/market/stream", "stream": "trade"},
        "store": {"path": str(work / "soak.db"), "cache_mb": args.cache_mb},
        "pairs": [{"legs": ["btcusdt", "ethusdt"], "window": 300, "timeframes": ["1s", "1m"]}],
        "recovery": {"enabled": True, "snapshot_interval_s": 5},
    }
    conf = work / "soak.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, TICKLENS_CONFIG=str(conf), TICKLENS_QUIET="1")
    flow = subprocess.Popen([sys.executable, "-m", "flows.runner"], cwd=ROOT, env=env)
    api_port = 18000 + os.getpid() % 1000
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(api_port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # count API failures only once it has started
        try:
            if client.get("/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    wall_s = args.market_hours * 3600 / args.speed
    t0 = time.monotonic()
    samples: list[tuple[float, float, int]] = []
    api_errors = api_ok = 0
    next_sample = 0.0
    try:
        while (now := time.monotonic() - t0) < wall_s:
            assert flow.poll() is None, "flow died"
            for path in (
                "/api/v1/status",
                "/api/v1/ohlc/btcusdt?timeframe=1s&limit=500",
                "/api/v1/spread?symbols=btcusdt,ethusdt&timeframe=1s&limit=500",
            ):
                try:
                    ok = client.get(path).status_code < 500
                except httpx.HTTPError:
                    ok = False
                api_ok += ok
                api_errors += not ok
            if now >= next_sample:
                samples.append((now, _rss_mb(flow.pid), _fds(flow.pid)))
                next_sample = now + 5
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - now)))
    finally:
        for p in (api, flow, feed):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in (api, flow, feed):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    import sqlite3

    with sqlite3.connect(work / "soak.db") as conn:
        ticks = conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
        bars = conn.execute("SELECT COUNT(*) FROM bars").fetchone()[0]
        span = conn.execute("SELECT (MAX(ts_ms) - MIN(ts_ms)) / 3600000.0 FROM ticks").fetchone()[0]
    warm = [s for s in samples if s[0] >= args.warmup_s]
    report = {
        "market_hours_stored": round(span or 0, 2),
        "wall_s": round(wall_s),
        "ticks": ticks,
        "bars": bars,
        "db_mb": round(sum(f.stat().st_size for f in work.glob("soak.db*")) / 2**20, 1),
        "rss_mb_first_last": [round(warm[0][1], 1), round(warm[-1][1], 1)] if warm else None,
        "rss_slope_mb_per_wall_hour": round(_slope_per_hour([s[0] for s in warm], [s[1] for s in warm]), 2),
        "fds_first_last": [warm[0][2], warm[-1][2]] if warm else None,
        "fd_slope_per_wall_hour": round(_slope_per_hour([s[0] for s in warm], [s[2] for s in warm]), 2),
        "rss_mb_samples": [round(x[1]) for x in samples[:: max(1, len(samples) // 12)]],
        "api_requests_ok": api_ok,
        "api_requests_failed": api_errors,
        "load_avg": os.getloadavg(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
