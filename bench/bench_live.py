"""Benchmark of the live path: local feed → WebSocket client → flow → SQLite.

Two measurements, each with the real feed and the real flow as subprocesses:

1. Throughput: the feed simulates a steady market (`--simulate --no-bursts`,
   4 symbols, `@trade`, one JSON message per trade) at a given rate. A rate is
   *sustained* when, over the whole window, the store took ≥ 97 % of the rate
   and at the end the flow is less than 1.5 s of trades behind what was due
   (feed backlog + client queue + flow; the status row itself lags ≤ 0.5 s).
   Short probes at rising rates (until two fail in a row) find the candidates;
   the best one is then held for the full window (default 60 s), stepping down
   if it does not hold. CPU seconds of both processes are reported too: on a
   shared machine "trades per CPU-second" is the steadier capacity figure.
2. Tick-to-store latency at 2,000 trades/s (one symbol): the simulated feed
   stamps each trade's event time `E` with its send time; a reader polls the
   store every ~2 ms and, for each trade, takes the first moment both its tick
   and its 1s bar (bar `last_id` ≥ trade id) are readable. p50/p99/max.

3. With `--books`, the same throughput holds twice at each rate of `--rates`, alternating: the
   trades alone (`@aggTrade` both times, on /market), then with books on. The feed then also replays the two 2024-08-08 USD-M book
   recordings (../shared/data/binance/um_ws: BTCUSDT + ETHUSDT `@bookTicker` and `@depth@0ms`,
   ~350 quotes/s and ~38 depth events/s, with their REST snapshots) at real time on /public,
   and the flow reads `streams: [aggTrade, bookTicker, depth]` for every symbol (book streams of
   the symbols without a recording stay silent). The simulated BTC/ETH trades and the recorded
   books are different markets: the microstructure figures are meaningless, their cost is real.

Prints one JSON summary. Usage:

    .venv/bin/python bench/bench_live.py                    # full run, several minutes
    .venv/bin/python bench/bench_live.py --duration 20 --probe 8 --latency-s 15   # quick look
    .venv/bin/python bench/bench_live.py --books --rates 100000,125000 --duration 60 --skip-latency
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.feed_support import Feed, Flow, query, write_config  # noqa: E402

SYMBOLS = ["btcusdt", "ethusdt", "solusdt", "bnbusdt"]
BOOK_FILES = [
    ROOT.parent / "shared" / "data" / "binance" / "um_ws" / f"{s}_20240808.gz" for s in ("btcusdt", "ethusdt")
]


def flow_status(db: Path) -> dict:
    rows = query(db, "SELECT value FROM status WHERE key='flow'")
    return orjson.loads(rows[0][0]) if rows else {}


def _cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        total = t.user + t.system
        for c in proc.children(recursive=True):
            ct = c.cpu_times()
            total += ct.user + ct.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


def run_rate(rate: float, seconds: float, tmp: Path, books: bool = False, trades_as: str = "trade") -> dict:
    """Feed `rate` trades/s for `seconds` after warm-up; report what the store kept up with.

    `books`: the recorded book streams beside the trades, at real time (see the module's note 3)."""
    tmp.mkdir(parents=True, exist_ok=True)
    extra = [*map(str, BOOK_FILES), "--loop", "--start-now", "--speed", "1"] if books else []
    feed = Feed("--simulate", "--symbols", ",".join(SYMBOLS), "--rate", str(rate), "--no-bursts", *extra)
    # Books on: the trades as `@aggTrade`, the stream Binance routes to /market (`@trade` shares /public
    # with the books); `trades_as` sets it for the run without books to compare with.
    kind = "aggTrade" if books else trades_as
    cfg = write_config(tmp, feed.url, stream=kind, **({"streams": [kind, "bookTicker", "depth"]} if books else {}))
    text = cfg.read_text().replace("- btcusdt\n- ethusdt\n", "".join(f"- {s}\n" for s in SYMBOLS))
    cfg.write_text(text)
    os.environ["TICKLENS_QUIET"] = "1"
    flow = Flow(cfg, tmp / "flow.log")
    db = tmp / "ticklens.db"
    try:
        deadline = time.monotonic() + 60
        while flow_status(db).get("trades_total", 0) == 0:
            if time.monotonic() > deadline or not flow.alive():
                raise RuntimeError(f"flow produced nothing:\n{flow.stderr()}")
            time.sleep(0.2)
        time.sleep(3)  # warm-up: connection, first bars, caches
        fp, wp = psutil.Process(feed.proc.pid), psutil.Process(flow.proc.pid)

        series: list[tuple] = []
        lost = [0]  # trades the feed dropped because the client fell > 15 s behind

        def sample() -> tuple[float, int, int, float, float]:
            st = feed.stats()
            due = st["due"] if st.get("due") is not None else st["position"] + (st["rows_behind"] or 0)
            lost[0] = st.get("lost", 0)
            stored = flow_status(db).get("trades_total", 0)
            now = time.monotonic()
            series.append((round(now, 2), due, stored, st["connections"], st["sessions_total"], st["rows_behind"]))
            return now, due, stored, _cpu(fp), _cpu(wp)

        t0, due0, stored0, fc0, wc0 = sample()
        book0 = _book_rows(db) if books else {}
        worst_backlog = 0
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            _, due, stored, _, _ = sample()
            worst_backlog = max(worst_backlog, due - stored)
        t1, due1, stored1, fc1, wc1 = sample()
        dt = t1 - t0
        book1 = _book_rows(db) if books else {}
        st = flow_status(db)
        feed_stats = st.get("feeds", {}).get("feed", {})
        # The status row lags by up to its interval (0.5 s): allow that much.
        backlog = due1 - stored1
        stored_rate = (stored1 - stored0) / dt
        result = {
            "rate": rate,
            "seconds": round(dt, 1),
            "due_per_s": round((due1 - due0) / dt),
            "stored_per_s": round(stored_rate),
            "backlog_end_trades": int(backlog),
            "backlog_end_s": round(backlog / rate, 2),
            "worst_backlog_s": round(worst_backlog / rate, 2),
            "client_queue_depth": feed_stats.get("queue_depth"),
            "feed_cpu": round((fc1 - fc0) / dt, 2),
            "flow_cpu": round((wc1 - wc0) / dt, 2),
            "flow_trades_per_cpu_s": round((stored1 - stored0) / max(wc1 - wc0, 1e-9)),
            "load_avg": os.getloadavg()[0],
            "sessions": series[-1][4],
            "lost": lost[0],
            "books": books,
        }
        if books:  # what the books added in the window, per second, and the gaps the flow recorded
            result["book_rows_per_s"] = {k: round((book1[k] - book0[k]) / dt) for k in ("quotes", "depth_updates")}
            result["book_gaps"] = book1["book_gaps"]
            result["quotes_sent_by_feed"] = feed.stats()["quotes"]
        if os.environ.get("BENCH_SERIES"):
            result["series"] = series
        result["sustained"] = stored_rate >= 0.97 * rate and backlog < rate * 1.5
        return result
    finally:
        try:
            flow.stop()
        finally:
            feed.stop()


def _book_rows(db: Path) -> dict[str, int]:
    return {t: query(db, f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("quotes", "depth_updates", "book_gaps")}


def run_latency(rate: float, seconds: float, tmp: Path) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    feed = Feed("--simulate", "--symbols", "btcusdt", "--rate", str(rate), "--no-bursts")
    cfg = write_config(tmp, feed.url)
    text = cfg.read_text().replace("- btcusdt\n- ethusdt\n", "- btcusdt\n")
    cfg.write_text(text)
    os.environ["TICKLENS_QUIET"] = "1"
    flow = Flow(cfg, tmp / "flow.log")
    db = tmp / "ticklens.db"
    lat: list[int] = []
    try:
        while not query(db, "SELECT 1 FROM ticks LIMIT 1"):
            if not flow.alive():
                raise RuntimeError(flow.stderr())
            time.sleep(0.05)
        time.sleep(2)
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        last_id = conn.execute("SELECT MAX(trade_id) FROM ticks WHERE symbol='btcusdt'").fetchone()[0]
        pending: list[tuple[int, int]] = []  # (trade_id, sent ms) seen as ticks, bar not yet
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rows = conn.execute(
                "SELECT trade_id, event_ms FROM ticks WHERE symbol='btcusdt' AND trade_id > ? ORDER BY trade_id",
                (last_id,),
            ).fetchall()
            bar_last = conn.execute(
                "SELECT MAX(last_id) FROM bars WHERE symbol='btcusdt' AND timeframe='1s'"
                " AND start_ms >= (SELECT MAX(start_ms) FROM bars WHERE symbol='btcusdt' AND timeframe='1s') - 5000"
            ).fetchone()[0]
            now_ms = time.time_ns() // 1_000_000
            if rows:
                last_id = rows[-1][0]
                pending.extend(rows)
            keep = []
            for tid, sent in pending:
                if bar_last is not None and bar_last >= tid:
                    lat.append(now_ms - sent)
                else:
                    keep.append((tid, sent))
            pending = keep
            time.sleep(0.002)
        conn.close()
    finally:
        try:
            flow.stop()
        finally:
            feed.stop()
    a = np.asarray(lat)
    return {
        "rate": rate,
        "samples": int(a.size),
        "p50_ms": float(np.percentile(a, 50)) if a.size else None,
        "p99_ms": float(np.percentile(a, 99)) if a.size else None,
        "max_ms": float(a.max()) if a.size else None,
        "load_avg": os.getloadavg()[0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="25000,50000,75000,100000,125000,150000")
    p.add_argument("--probe", type=float, default=15, help="seconds per probe rate")
    p.add_argument("--duration", type=float, default=60, help="seconds the best rate must hold")
    p.add_argument("--latency-rate", type=float, default=2000)
    p.add_argument("--latency-s", type=float, default=30)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--books", action="store_true", help="each rate held without and then with books (note 3)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_live_"))
    summary: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_start": os.getloadavg()},
    }
    if args.books:
        pairs = []
        for i, rate in enumerate(float(r) for r in args.rates.split(",")):
            pair = {}
            for books in (False, True):
                r = run_rate(rate, args.duration, tmp / f"books{i}{int(books)}", books=books, trades_as="aggTrade")
                print(orjson.dumps(r).decode(), file=sys.stderr, flush=True)
                pair["books" if books else "trades"] = r
            pairs.append(pair)
        summary["books_beside_trades"] = pairs
    elif not args.skip_throughput:
        probes = []
        for i, rate in enumerate(float(r) for r in args.rates.split(",")):
            r = run_rate(rate, args.probe, tmp / f"probe{i}")
            print(orjson.dumps(r).decode(), file=sys.stderr, flush=True)
            probes.append(r)
            # Two failures in a row: higher rates will not hold either (a single one may be a load spike).
            if len(probes) >= 2 and not probes[-1]["sustained"] and not probes[-2]["sustained"]:
                break
        summary["probes"] = probes
        candidates = [r["rate"] for r in probes if r["sustained"]][::-1]
        summary["sustained_60s"] = None
        for j, rate in enumerate(candidates):
            r = run_rate(rate, args.duration, tmp / f"hold{j}")
            print(orjson.dumps(r).decode(), file=sys.stderr, flush=True)
            summary.setdefault("holds", []).append(r)
            if r["sustained"]:
                summary["sustained_60s"] = r
                break
    if not args.skip_latency:
        lat = run_latency(args.latency_rate, args.latency_s, tmp / "latency")
        print(orjson.dumps(lat).decode(), file=sys.stderr, flush=True)
        summary["latency"] = lat
    summary["machine"]["load_avg_end"] = os.getloadavg()
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
