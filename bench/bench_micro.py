"""Cost of microstructure: the step alone per quote update, per trade and per depth event (CPU µs),
and the whole flow's replay speed with microstructure on against the same flow with it off.

    .venv/bin/python bench/bench_micro.py [--repeats 3] [--no-flow]

Input: the two 2024-08-08 USD-M recordings (../shared/data/binance/um_ws: `@trade`,
`@bookTicker`, `@depth@0ms`, REST snapshot). Step costs: the records are parsed first (not
timed), then fed in arrival-order batches of 500 lines, as the flow's replay does, to a fresh
`MicroBook` with one input kind at a time; CPU time (process_time) of `add_*` + `advance` over
the file, divided by that kind's count; timeframes 1s/1m/5m, VPIN on. Depth events also cost
`LevelSync` over `BookSync` (the top five levels per event, the 10 bps band per second), timed
the same way, as the difference. Medians of `--repeats` runs. Flow: `python -m flows.runner
--no-recovery`, `speed: max`, books on, `micro.enabled` true vs false, alternating, fresh store
each, wall from start to exit; × real time = the recordings' span of exchange time / wall.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_book_flow import FILES, span_s  # noqa: E402
from bench.procstat import fresh_db, timed_flow  # noqa: E402
from ticklens.domain.book import BookSnapshot, BookSync, DepthUpdate, Quote, Quotes  # noqa: E402
from ticklens.domain.micro import MicroBook, MicroParams  # noqa: E402
from ticklens.domain.micro.levels import LevelSync  # noqa: E402
from ticklens.domain.records import Trades  # noqa: E402
from ticklens.exchange.binance_book import parse_book_message  # noqa: E402

BATCH = 500
TF = {"1s": 1_000, "1m": 60_000, "5m": 300_000}


def parsed(path: Path, symbol: str) -> list[list[object]]:
    """Batches of BATCH lines: Quotes, Trades, and the raw depth records (for the syncs)."""
    import gzip

    import orjson

    with gzip.open(path, "rb") as fh:
        lines = [line.rstrip(b"\n").partition(b" ")[2] for line in fh]
    out = []
    for a in range(0, len(lines), BATCH):
        quotes, trades, book = [], [], []
        for raw in lines[a : a + BATCH]:
            if b'"e":"trade"' in raw:
                d = orjson.loads(raw)["data"]
                trades.append((d["t"], d["T"], float(d["p"]), float(d["q"]), d["m"]))
                continue
            rec = parse_book_message(raw, 0, market="usdm", snapshot_symbol=symbol)
            if isinstance(rec, Quote):
                quotes.append(rec)
            elif isinstance(rec, (DepthUpdate, BookSnapshot)):
                book.append(rec)
        q = Quotes.from_quotes(symbol, quotes) if quotes else None
        c = list(zip(*trades, strict=True))
        t = (
            Trades.from_columns(symbol, trade_id=c[0], ts_ms=c[1], price=c[2], qty=c[3], is_buyer_maker=c[4])
            if trades
            else None
        )
        out.append([q, t, book])
    return out


def _feed_sync(sync: BookSync, records: list[object]) -> None:
    for r in records:
        if isinstance(r, BookSnapshot):
            sync.on_snapshot(r)
        else:
            sync.on_depth(r)  # type: ignore[arg-type]


def step_costs(batches: list[list[object]], symbol: str, vpin: float) -> dict[str, float]:
    """CPU seconds of the micro step fed one kind at a time, and of LevelSync over BookSync."""
    params = MicroParams(TF, vpin_bucket=vpin, inputs=())
    out: dict[str, float] = {}
    for kind in ("quotes", "trades"):
        book = MicroBook(symbol, params)
        t0 = time.process_time()
        for q, t, _ in batches:
            if kind == "quotes" and q is not None:
                book.add_quotes(q)
            if kind == "trades" and t is not None:
                book.add_trades(t)
            book.advance()
        book.advance(clock_ms=2**50)
        out[kind] = time.process_time() - t0
    # depth: BookSync alone, then LevelSync + the micro step on its level rows
    plain = BookSync(symbol, "usdm")
    t0 = time.process_time()
    for _, _, recs in batches:
        _feed_sync(plain, recs)
        plain.drain()
    base = time.process_time() - t0
    sync, book = LevelSync(symbol, "usdm"), MicroBook(symbol, params)
    t0 = time.process_time()
    for _, _, recs in batches:
        _feed_sync(sync, recs)
        sync.drain()
        book.add_levels(sync.drain_levels())
        book.advance()
    book.advance(clock_ms=2**50)
    out["depth"] = time.process_time() - t0 - base
    out["depth_events"] = float(sync.counters.applied)
    return out


def flow(work: Path, micro: bool) -> dict:
    cfg = {
        "symbols": ["btcusdt", "ethusdt"],
        "source": {"kind": "replay", "paths": [str(p) for p in FILES], "speed": "max",
                   "streams": ["trade", "bookTicker", "depth"]},
        "store": {"path": str(fresh_db(work))},
        "timeframes": ["1s", "1m", "5m"],
        "recovery": {"enabled": False},
        "micro": {"enabled": micro, "vpin_bucket": {"btcusdt": 5.0, "ethusdt": 100.0}},
    }  # fmt: skip
    return timed_flow(work, cfg, ROOT)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-flow", action="store_true")
    args = ap.parse_args()
    out: dict = {"load_avg_start": os.getloadavg()}
    for path, symbol, vpin in ((FILES[0], "btcusdt", 5.0), (FILES[1], "ethusdt", 100.0)):
        batches = parsed(path, symbol)
        n_q = sum(len(q) for q, _, _ in batches if q is not None)
        n_t = sum(len(t) for _, t, _ in batches if t is not None)
        runs = [step_costs(batches, symbol, vpin) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        out[symbol] = {
            "quotes": n_q,
            "trades": n_t,
            "depth_events": int(med["depth_events"]),
            "us_per_quote": round(med["quotes"] / n_q * 1e6, 2),
            "us_per_trade": round(med["trades"] / n_t * 1e6, 2),
            "us_per_depth_event": round(med["depth"] / med["depth_events"] * 1e6, 1),
            "cpu_s_runs": {k: [round(r[k], 3) for r in runs] for k in ("quotes", "trades", "depth")},
        }
    if not args.no_flow:
        span, _ = span_s()
        work = Path(tempfile.mkdtemp(prefix="ticklens-bench-micro-"))
        flows: dict[str, list[dict]] = {"micro": [], "no_micro": []}
        for _ in range(args.repeats):
            flows["micro"].append(flow(work, True))
            flows["no_micro"].append(flow(work, False))
        for name, rs in flows.items():
            wall = statistics.median(r["wall_s"] for r in rs)
            out[f"flow_{name}"] = {
                "wall_s_median": round(wall, 2),
                "wall_s_runs": [round(r["wall_s"], 2) for r in rs],
                "cpu_s_median": round(statistics.median(r["cpu_s"] for r in rs), 2),
                "x_real_time_wall": round(span / wall, 1),
                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs), 1),
            }
        out["span_s"] = round(span, 1)
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
