"""Local order book throughput on Binance's own depth recordings, against a plain dict book.

    .venv/bin/python bench/bench_book.py [--repeats 5]

Input: the 13,128 applicable `@depth@0ms` events of the two 2024-08-08 USD-M files
(../shared/data/binance/um_ws, BTCUSDT + ETHUSDT) with their REST snapshot lines, as
the raw recorded line bytes. Every variant parses from those bytes and knows the best
bid and ask after every event; each run is a fresh process (peak RSS from getrusage),
the variants alternate, and only the processing loop is timed (reading the files is not).
Each process makes `--passes` passes over the data and keeps its fastest (the steady state:
the first pass also pays for warming the interpreter and the allocator); the figure is the
median over the processes. The garbage collector is set as `flows/runner.py` sets it.
Wall-clock and process CPU time are both reported: on a shared machine the CPU figure is
the one less distorted by waiting.

- `ticklens`: `parse_book_message` (strict validation) + `BookSync` (Binance's procedure,
  best bid/ask recorded after every event, outputs drained every 16 messages, as a flow
  drains after each batch it is handed).
- `ticklens-top5`: the same with the top 5 levels per side recorded after every event.
- `dict`: the baseline: orjson, a {float price: float qty} dict per side, the same
  snapshot/drop rule, the best kept incrementally (a new level is compared with the
  best; when the best level goes, `max`/`min` over the side) -- the cheapest honest
  way a dict book knows its best after every event. No validation.
- `dict-nobest`: the dict book without best prices (the issue's 23k msgs/s figure).
- `parse`, `orjson`, `book`: where the time goes: `parse_book_message` alone, `orjson.loads`
  alone, and `BookSync` on records parsed beforehand (frozen out of the garbage collector).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "binance" / "um_ws"
FILES = [DATA / "btcusdt_20240808.gz", DATA / "ethusdt_20240808.gz"]
VARIANTS = ["ticklens", "ticklens-top5", "dict", "dict-nobest", "parse", "orjson", "book"]
EXPECTED_EVENTS = 13_128


def load() -> list[tuple[str, list[bytes]]]:
    streams = []
    for path in FILES:
        with gzip.open(path, "rb") as fh:
            lines = [ln.rstrip(b"\n").partition(b" ")[2] for ln in fh if b"depthUpdate" in ln or b"lastUpdateId" in ln]
        streams.append((path.name[:7], lines))
    return streams


def run_ticklens(streams, top_n: int = 0, every: int = 16) -> tuple[int, int]:
    from ticklens.domain.book import BookSnapshot, BookSync, DepthUpdate
    from ticklens.exchange.binance_book import parse_book_message

    applied = levels = 0
    for symbol, lines in streams:
        sync = BookSync(symbol, "usdm", top_n=top_n)
        on_depth = sync.on_depth
        for i, raw in enumerate(lines):
            rec = parse_book_message(raw, 0, market="usdm", snapshot_symbol=symbol)
            if type(rec) is DepthUpdate:
                on_depth(rec)
            elif type(rec) is BookSnapshot:
                sync.on_snapshot(rec)
            else:
                raise SystemExit(f"rejected: {rec}")
            if i % every == every - 1:
                step = sync.drain()
                applied += len(step.applied)
                levels += sum(u.n_levels for u in step.applied)
        step = sync.drain()
        applied += len(step.applied)
        levels += sum(u.n_levels for u in step.applied)
    return applied, levels


def run_book_only(streams) -> tuple[int, int]:
    from ticklens.domain.book import BookSnapshot, BookSync, DepthUpdate
    from ticklens.exchange.binance_book import parse_book_message

    parsed = [(s, [parse_book_message(r, 0, snapshot_symbol=s) for r in lines]) for s, lines in streams]
    gc.freeze()  # the prebuilt records are not the book's garbage
    t0 = time.perf_counter()
    c0 = time.process_time()
    applied = 0
    for symbol, recs in parsed:
        sync = BookSync(symbol, "usdm")
        for i, rec in enumerate(recs):
            if type(rec) is DepthUpdate:
                sync.on_depth(rec)
            elif type(rec) is BookSnapshot:
                sync.on_snapshot(rec)
            if i & 255 == 255:
                applied += len(sync.drain().applied)
        applied += len(sync.drain().applied)
    return applied, -1, time.perf_counter() - t0, time.process_time() - c0  # type: ignore[return-value]


def _apply_side(side: dict[float, float], levels: list, top: float | None, best: bool, sign: float) -> float | None:
    """One side's levels into a dict keyed by sign * price (bids negated, so both sides' best is the least key);
    with `best`, the best key is kept as well."""
    gone = False
    for p, q in levels:
        price, qty = sign * float(p), float(q)
        if qty == 0.0:
            if side.pop(price, None) is not None and price == top:
                gone = True
        else:
            side[price] = qty
            if best and price < top:  # type: ignore[operator]
                top, gone = price, False
    if best and gone:
        top = min(side) if side else None
    return top


def run_dict(streams, best: bool = True) -> tuple[int, int]:
    import orjson

    loads = orjson.loads
    applied = levels = 0
    for _, lines in streams:
        bids: dict[float, float] = {}
        asks: dict[float, float] = {}
        buffer: list[dict] = []
        last_id = None
        bb = ba = None
        for raw in lines:
            msg = loads(raw)
            if "lastUpdateId" in msg:
                last_id = msg["lastUpdateId"]
                bids = {-float(p): float(q) for p, q in msg["bids"]}  # keyed by -price: the best is the least
                asks = {float(p): float(q) for p, q in msg["asks"]}
                bb, ba = min(bids), min(asks)
                pending, buffer = buffer, []
            else:
                d = msg["data"]
                if last_id is None:
                    buffer.append(d)
                    continue
                pending = [d]
            for d in pending:
                if d["u"] < last_id:  # type: ignore[operator]
                    continue
                applied += 1
                levels += len(d["b"]) + len(d["a"])
                bb = _apply_side(bids, d["b"], bb, best, -1.0)
                ba = _apply_side(asks, d["a"], ba, best, 1.0)
    return applied, levels


def run_parse(streams) -> tuple[int, int]:
    from ticklens.exchange.binance_book import parse_book_message

    n = 0
    for symbol, lines in streams:
        for raw in lines:
            parse_book_message(raw, 0, market="usdm", snapshot_symbol=symbol)
            n += 1
    return n, -1


def run_orjson(streams) -> tuple[int, int]:
    import orjson

    n = 0
    for _, lines in streams:
        for raw in lines:
            orjson.loads(raw)
            n += 1
    return n, -1


def child(variant: str, passes: int) -> None:
    streams = load()
    # The collector as the flow runs it (flows/runner.py): what exists before the loop frozen,
    # young objects collected every 10,000 allocations. Every variant gets the same.
    gc.freeze()
    gc.set_threshold(10_000, 50, 50)
    best: tuple[float, float] | None = None
    for _ in range(passes):  # the fastest pass: the steady state, not the first pass's warm-up
        t0 = time.perf_counter()
        c0 = time.process_time()
        if variant == "book":
            applied, levels, elapsed, cpu = run_book_only(streams)  # type: ignore[misc]
        else:
            fn = {
                "ticklens": lambda: run_ticklens(streams),
                "ticklens-top5": lambda: run_ticklens(streams, top_n=5),
                "dict": lambda: run_dict(streams),
                "dict-nobest": lambda: run_dict(streams, best=False),
                "parse": lambda: run_parse(streams),
                "orjson": lambda: run_orjson(streams),
            }[variant]
            applied, levels = fn()
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - c0
        if best is None or cpu < best[1]:
            best = (elapsed, cpu)
    assert best is not None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"variant": variant, "events": applied, "levels": levels, "s": best[0], "cpu_s": best[1], "rss_mb": rss}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--passes", type=int, default=3, help="timed passes over the data in each process")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.passes)
        return
    variants = args.variants.split(",")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:  # alternate, so a busy moment on the machine hits every variant
            out = subprocess.run(
                [sys.executable, __file__, "--child", v, "--passes", str(args.passes)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs[v].append(json.loads(out))
    ref = statistics.median(r["s"] for r in runs["dict"]) if "dict" in runs else None
    ref_cpu = statistics.median(r["cpu_s"] for r in runs["dict"]) if "dict" in runs else None
    print(f"load average {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores); {args.passes} passes a process")
    print(
        f"{'variant':<15} {'events':>7} {'msgs/s':>9} {'levels/s':>11} {'us/msg':>7} {'vs dict':>7} "
        f"{'cpu us/msg':>10} {'msgs/cpu-s':>10} {'vs dict':>7} {'RSS MB':>7}"
    )
    for v, rs in runs.items():
        s = statistics.median(r["s"] for r in rs)
        cpu = statistics.median(r["cpu_s"] for r in rs)
        events, levels = rs[0]["events"], rs[0]["levels"]
        if v.startswith(("ticklens", "dict")):
            assert events == EXPECTED_EVENTS, f"{v}: {events} applied events, expected {EXPECTED_EVENTS}"
        lv = f"{levels / s:,.0f}" if levels > 0 else "-"
        ratio = f"{ref / s:.2f}x" if ref else "-"
        cpu_ratio = f"{ref_cpu / cpu:.2f}x" if ref_cpu else "-"
        print(
            f"{v:<15} {events:>7} {events / s:>9,.0f} {lv:>11} {s / events * 1e6:>7.1f} {ratio:>7} "
            f"{cpu / events * 1e6:>10.1f} {events / cpu:>10,.0f} {cpu_ratio:>7} {max(r['rss_mb'] for r in rs):>7.0f}"
        )


if __name__ == "__main__":
    main()
