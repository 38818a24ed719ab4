"""Dashboard responsiveness under load: 4 simulated symbols at 2,000 trades/s, measured in headless Chromium.

Starts the real stack (local feed → flow → API → panel serve) like tests/test_dashboard.py,
then, in the browser: how long a live chart update takes from arriving to the repaint
after it (Market page, 1s candles), and how long each page takes from a click in the
sidebar to its data being on screen.

    .venv/bin/python -m bench.bench_dashboard [--seconds 30] [--rate 2000] [--day]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from playwright.sync_api import sync_playwright

from tests.dashboard_support import CANDLES_JS, TIMING_JS, Stack, launch_browser, start_stack, wait_until

SYMBOLS = ["btcusdt", "ethusdt", "solusdt", "bnbusdt"]
PAGES = {
    "Pair": "Engle-Granger p",
    "Correlation": "matrix as of",
    "Statistics": "rvol %",
    "Alerts": "Create rule",
    "Data": "Start collection",
    "Market": "last price",
}


def pct(xs: list[float]) -> str:
    return f"n={len(xs)} p50 {np.median(xs):.0f} ms, p95 {np.percentile(xs, 95):.0f} ms, max {max(xs):.0f} ms"


def day_of_bars(stack: Stack, page: Any, with_1m: bool, rounds: int = 3) -> list[float]:
    """Upload 86,400 1s bars (and, `with_1m`, their exact 1m aggregates) for a symbol, then time
    range "1 day" from selecting the symbol to its candles drawn."""
    n, t0 = 86_400, 1_721_260_800_000  # 2024-07-18T00:00:00Z
    sym = "daymusdt" if with_1m else "dayusdt"
    rng = np.random.default_rng(5)
    close = np.round(64_000 + np.cumsum(rng.normal(0, 2, n)), 1)
    open_ = np.r_[close[0], close[:-1]]
    s1 = pl.DataFrame(
        {
            "timestamp": t0 + np.arange(n) * 1000,
            "open": open_,
            "high": np.maximum(open_, close) + 1,
            "low": np.minimum(open_, close) - 1,
            "close": close,
            "volume": np.full(n, 1.5),
        }
    ).with_columns(symbol=pl.lit(sym), timeframe=pl.lit("1s"))
    frames = [s1]
    if with_1m:
        frames.append(
            s1.group_by((pl.col("timestamp") // 60_000 * 60_000).alias("m"), maintain_order=True)
            .agg(
                pl.col("open").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").last(),
                pl.col("volume").sum(),
            )
            .rename({"m": "timestamp"})
            .with_columns(symbol=pl.lit(sym), timeframe=pl.lit("1m"))
        )
    cols = ["symbol", "timeframe", "timestamp", "open", "high", "low", "close", "volume"]
    for f in frames:
        with stack.api() as api:
            body = f.select(cols).write_csv().encode()
            r = api.post("/api/v1/upload/ohlc", files={"file": ("day.csv", body, "text/csv")}, timeout=120)
            r.raise_for_status()
    page.reload()
    page.get_by_text("last price").first.wait_for(timeout=30_000)
    out = []
    for i in range(rounds):
        page.get_by_label("Range").select_option("15 min")
        page.get_by_label("Symbol").select_option("btcusdt" if i % 2 else "btcusdt")
        page.wait_for_timeout(1500)
        page.get_by_label("Range").select_option("1 day")
        t = time.perf_counter()
        page.get_by_label("Symbol").select_option(sym)
        wait_until(
            lambda: (
                (c := page.evaluate(CANDLES_JS)) and len(c["start_ms"]) >= 1000 and c["start_ms"][0] < t0 + 3_600_000
            ),
            60,
            "a day of candles",
            every=0.05,
        )
        out.append((time.perf_counter() - t) * 1000)
        page.get_by_label("Symbol").select_option("btcusdt")
        page.wait_for_timeout(1500)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--rounds", type=int, default=3, help="page-switch rounds")
    ap.add_argument("--day", action="store_true", help="also: a day of 1s bars (uploaded) in the Market chart")
    args = ap.parse_args()
    stack = start_stack(Path(tempfile.mkdtemp(prefix="tl-bench-dash-")), simulate=SYMBOLS, rate=args.rate)
    try:
        with stack.api() as api:
            wait_until(
                lambda: api.get("/api/v1/status").json()["trades_per_s"] > args.rate * 0.5, 60, "the flow at rate"
            )
        with sync_playwright() as pw:
            ctx = launch_browser(pw)
            page = ctx.new_page()
            page.goto(stack.dash_url)
            page.get_by_text("last price").first.wait_for(timeout=30_000)
            wait_until(lambda: page.evaluate(TIMING_JS), 10, "the chart source")
            time.sleep(args.seconds)
            updates = page.evaluate("() => window.__tlTimes")
            switches: dict[str, list[float]] = {p: [] for p in PAGES}
            for _ in range(args.rounds):
                for name, marker in PAGES.items():
                    t0 = time.perf_counter()
                    page.get_by_role("button", name=name, exact=True).first.click()
                    page.get_by_text(marker).first.wait_for(timeout=30_000)
                    page.wait_for_function("() => new Promise(r => requestAnimationFrame(() => r(true)))")
                    switches[name].append((time.perf_counter() - t0) * 1000)
            day = (day_of_bars(stack, page, False), day_of_bars(stack, page, True)) if args.day else None
            ctx.close()
        with stack.api() as api:
            st = api.get("/api/v1/status").json()
        print(f"flow: {st['trades_per_s']:,.0f} trades/s over {len(SYMBOLS)} symbols (status at the end)")
        print(f"Market chart live update, arrival → repaint: {pct(updates)}")
        for name, xs in switches.items():
            print(f"page switch to {name:<11} click → data on screen: {pct(xs)}")
        if day:
            print(f"1 day of 1s bars (86,400), only 1s stored → Market chart: {pct(day[0])}")
            print(f"1 day of 1s bars (86,400), 1m stored too → Market chart: {pct(day[1])}")
    finally:
        stack.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
