"""The live path with books on: the local feed replays the recordings over real WebSockets at a
multiple of real time, the flow (books and microstructure on) stores them; which multiples it keeps up with.

    .venv/bin/python bench/bench_book_live.py [--speeds 25,50,100,150] [--repeats 1]

Input: the two 2024-08-08 USD-M recordings (../shared/data/binance/um_ws, BTCUSDT + ETHUSDT:
`@trade`, `@bookTicker`, `@depth@0ms` and the REST snapshot, 344.9 s of exchange time). Per speed:
a fresh feed (`python -m ticklens.emulator <files> --speed S`: trades on `/market`, bookTicker and
depth on `/public`, the depth snapshot from its REST endpoint) and a fresh flow
(`source.kind: feed`, `streams: [trade, bookTicker, depth]`, microstructure on, SQLite), both
subprocesses. The feed's clock starts at the flow's first connection. A speed is **kept up with**
when, 1.5 s after the feed has sent its last message, the store holds every trade and every depth
diff it sent after the snapshot (the newest depth event of each symbol; what a live user sees: the store within 1.5 s of the market). Reported per speed:
the rates the feed offered (trades, quotes, depth events per second), how late the store was
complete, and the CPU seconds of flow and feed up to then (both processes from their start). A run with `--streams trade` (the same trades,
books off) is the baseline: what the live path did before books.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.feed_support import Feed, Flow, query  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "binance" / "um_ws"
FILES = [DATA / "btcusdt_20240808.gz", DATA / "ethusdt_20240808.gz"]
SPAN_S = 344.9  # exchange time the two recordings span (bench_book_flow.py measures it)
GRACE_S = 1.5


def _cpu(pid: int) -> float:
    try:
        p = psutil.Process(pid)
        t = p.cpu_times()
        return t.user + t.system + sum(c.cpu_times().user + c.cpu_times().system for c in p.children(recursive=True))
    except psutil.Error:
        return float("nan")


def run(work: Path, speed: float, streams: list[str]) -> dict:
    for f in work.glob("*"):
        f.unlink()
    feed = Feed(*map(str, FILES), "--speed", str(speed), log=work / "feed.log")
    db = work / "ticklens.db"
    cfg = {
        "symbols": ["btcusdt", "ethusdt"],
        "source": {"kind": "feed", "url": feed.url, "stream": "trade", "streams": streams},
        "store": {"path": str(db)},
        "timeframes": ["1s", "1m", "5m"],
        "recovery": {"enabled": False},
        "progress_interval_s": 0.5,
        "micro": {"enabled": True, "vpin_bucket": {"btcusdt": 5.0, "ethusdt": 100.0}},
    }
    conf = work / "pipeline.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    flow = Flow(conf, work / "flow.log")
    try:
        t0 = time.monotonic()
        while feed.stats()["connections"] == 0:  # the feed's clock starts here
            assert flow.alive(), flow.stderr()
            assert time.monotonic() - t0 < 60, "the flow never connected"
            time.sleep(0.02)
        start = time.monotonic()
        while not (stats := feed.stats())["at_end"]:
            assert flow.alive(), flow.stderr()
            time.sleep(0.05)
        sent_at = time.monotonic()
        trades, depth = stats["trades"], stats["depth_events"]
        # The newest depth event sent per symbol (events before a symbol's snapshot are never stored).
        last = {s: feed.control(f"book?symbol={s}&limit=1")["lastUpdateId"] for s in cfg["symbols"]}
        complete_after = None
        while time.monotonic() - sent_at < 30:
            n_ticks = query(db, "SELECT COUNT(*) FROM ticks")[0][0]
            books = "depth" not in streams or (
                dict(query(db, "SELECT symbol, MAX(final_id) FROM depth_updates GROUP BY symbol")) == last
            )
            if n_ticks >= trades and books:
                complete_after = time.monotonic() - sent_at
                break
            time.sleep(0.05)
        send_s = sent_at - start
        cpu_flow, cpu_feed = _cpu(flow.proc.pid), _cpu(feed.proc.pid)
        stored_depth = query(db, "SELECT COUNT(*) FROM depth_updates")[0][0] if "depth" in streams else 0
        gaps = query(db, "SELECT COUNT(*) FROM book_gaps")[0][0] if "depth" in streams else 0
    finally:
        flow.stop()
        feed.stop()
    return {
        "speed": speed,
        "streams": streams,
        "send_s": round(send_s, 2),
        "offered_per_s": {
            "trades": round(trades / send_s),
            "quotes": round(stats["quotes"] / send_s),
            "depth": round(depth / send_s),
        },
        "sent": {"trades": trades, "quotes": stats["quotes"], "depth": depth},
        "stored_depth": stored_depth,  # fewer than sent: the events before each symbol's snapshot
        "book_gaps": gaps,
        "complete_after_s": None if complete_after is None else round(complete_after, 2),
        "kept_up": complete_after is not None and complete_after <= GRACE_S,
        "cpu_s": {"flow": round(cpu_flow, 2), "feed": round(cpu_feed, 2)},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speeds", default="25,50,100,150")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ticklens-bench-book-live-"))
    out: dict = {"load_avg_start": os.getloadavg(), "runs": []}
    for _ in range(args.repeats):
        for speed in map(float, args.speeds.split(",")):
            for streams in (["trade", "bookTicker", "depth"], ["trade"]):
                r = run(work, speed, streams)
                print(json.dumps(r), file=sys.stderr)
                out["runs"].append(r)
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
