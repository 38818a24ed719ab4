"""Dashboard responsiveness under load: 4 simulated symbols at 2,000 trades/s, measured in headless Chromium.

Starts the real stack (local feed → flow → API → panel serve) like tests/test_dashboard.py,
then, in the browser: how long a live chart update takes from arriving to the repaint
after it (Market page, 1s candles), and how long each page takes from a click in the
sidebar to its data being on screen.

    .venv/bin/python -m bench.bench_dashboard [--seconds 30] [--rate 2000] [--day]

`--first-chart` measures instead how long a freshly opened tab takes to show its first chart:
a 14-minute, 3-symbol store (the bundled BTC/ETH recordings of 2024-08-08 replayed at full speed,
with a sub-cent 1000PEPEUSDT-like symbol made from BTCUSDT), then the 2024-07-18/19 recordings
replayed at 4x while tabs open: one tab at a time (`--rounds` times), then `--tabs` tabs at
once. Per tab: navigation → HTML received, and navigation → the Market chart holding real
candles and painted.

    .venv/bin/python -m bench.bench_dashboard --first-chart [--tabs 5] [--rounds 5] [--baseline DIR]

`--baseline DIR` serves a second dashboard from another source tree (e.g. `git archive main
panel_app ticklens | tar -x -C DIR`: the dashboard before a change) against the same API, store and
replay, and times both in the same run, round by round in turn.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from playwright.sync_api import sync_playwright

from tests.dashboard_support import (
    CANDLES_JS,
    CHROMIUM,
    CHROMIUM_ARGS,
    SAMPLE,
    TIMING_JS,
    Stack,
    _spawn,
    free_port,
    launch_browser,
    scaled_recording,
    start_stack,
    wait_until,
)
from tests.flow_support import run_flow, write_config
from ticklens.domain.stats.thinning import ohlcv_merged

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
            .agg(ohlcv_merged())
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


FIRST_SYMBOLS = ["btcusdt", "ethusdt", "1000pepeusdt"]
WINDOW_A = ["um_btcusdt_20240718_trades.gz", "um_btcusdt_20240719_trades.gz"]
WINDOW_A_ETH = ["um_ethusdt_20240718_trades.gz", "um_ethusdt_20240719_trades.gz"]


def first_chart_stack(root: Path, dashboard_args: list[str]) -> Stack:
    """The 14-minute 3-symbol store, then the stack replaying another 8 minutes into it at 4x."""
    rec = root / "recordings"
    rec.mkdir(parents=True)
    btc_b, eth_b = SAMPLE / "um_btcusdt_20240808_trades.gz", SAMPLE / "um_ethusdt_20240808_trades.gz"
    pepe_b = scaled_recording([btc_b], rec / "pepe_b.gz", "1000pepeusdt", "0.000000338", 7, 10_000)
    pepe_a = scaled_recording(
        [SAMPLE / f for f in WINDOW_A], rec / "pepe_a.gz", "1000pepeusdt", "0.000000338", 7, 10_000
    )
    prefill = root / "prefill"
    prefill.mkdir()
    cfg = write_config(
        prefill,
        symbols=FIRST_SYMBOLS,
        source={"paths": [str(btc_b), str(eth_b), str(pepe_b)]},
        store={"path": str(root / "store" / "ticklens.db")},
    )
    (root / "store").mkdir()
    res = run_flow(cfg, "--no-recovery", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    live = [SAMPLE / f for f in WINDOW_A + WINDOW_A_ETH] + [pepe_a]
    return start_stack(root, speed=4, replay=(FIRST_SYMBOLS, live), dashboard_args=dashboard_args)


def _proc_table() -> dict[int, tuple[int, float, float]]:
    """pid → (parent pid, own CPU s, reaped children's CPU s), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick, (int(f[13]) + int(f[14])) / tick)
    return out


def cpu_seconds(root: int) -> float:
    """CPU time of a process and all its descendants, live or reaped (a browser and its tabs)."""
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1] + table[pid][2]
            todo.extend(kids.get(pid, []))
    return total


def browser_pid() -> int:
    """The Chromium launched by this process (its top process, under the Playwright driver)."""
    table = _proc_table()
    for pid, (ppid, _, _) in table.items():
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        try:
            parent_exe = os.readlink(f"/proc/{ppid}/exe")
        except OSError:
            parent_exe = ""
        if "chrom" in exe and "chrom" not in parent_exe and _descends(pid, os.getpid(), table):
            return pid
    raise RuntimeError("no chromium under this process")


def _descends(pid: int, ancestor: int, table: dict[int, tuple[int, float, float]]) -> bool:
    while pid in table and pid > 1:
        if pid == ancestor:
            return True
        pid = table[pid][0]
    return False


async def _open_tabs(ctx: Any, url: str, n: int) -> list[dict[str, float]]:
    """n new tabs of one browser opened together; per tab, ms from navigation to: the HTML received
    (`html`), the DOM parsed (`dom`, after the scripts), the document rendered (`doc`), and the
    first chart holding real candles painted (`chart`)."""
    import asyncio

    pages = [await ctx.new_page() for _ in range(n)]

    async def one(page: Any) -> dict[str, float]:
        marks: dict[str, float] = {}
        t0 = time.perf_counter()
        page.on("domcontentloaded", lambda _p: marks.setdefault("dom", time.perf_counter() - t0))
        await page.goto(url, wait_until="commit", timeout=120_000)
        marks["html"] = time.perf_counter() - t0
        while True:
            c = await page.evaluate(CANDLES_JS)
            if c is not None:
                marks.setdefault("doc", time.perf_counter() - t0)  # the document is rendered (placeholder)
            if c and len(c["volume"]) and max(c["volume"]) > 0:  # real candles, not the placeholder
                break
            if time.perf_counter() - t0 > 120:
                raise AssertionError("no chart after 120 s")
            await asyncio.sleep(0.02)
        await page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        marks["chart"] = time.perf_counter() - t0
        return {k: v * 1000 for k, v in marks.items()}

    out = await asyncio.gather(*(one(p) for p in pages))
    await asyncio.sleep(0.5)  # the tabs' last messages, before the CPU is read
    for p in pages:
        await p.close()
    return list(out)


async def _first_charts(servers: dict[str, tuple[str, int]], rounds: int, tabs: int) -> dict[str, dict]:
    """One browser, as a user has it: a first tab (empty cache), then fresh tabs one at a time,
    then `tabs` at once, each round after the previous one's tabs closed; with several dashboard
    servers (variant -> (url, pid)), each round visits every one in turn, so all see the same load.
    Each result carries the CPU seconds the dashboard server and the browser spent per tab (what
    the load cannot bend)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="tl-chromium-"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 950},
        )
        chromium = browser_pid()
        out: dict[str, dict] = {}
        plan = [("first tab of a fresh browser", 1, 1), ("1 tab", rounds, 1)]
        plan.append((f"{tabs} tabs together", max(1, rounds // 2), tabs))
        for label, n_rounds, n_tabs in plan:
            runs: dict[str, list[dict[str, float]]] = {v: [] for v in servers}
            cpu = {v: {"server": 0.0, "browser": 0.0} for v in servers}
            for _ in range(n_rounds):
                for variant, (url, pid) in servers.items():
                    s0, b0 = cpu_seconds(pid), cpu_seconds(chromium)
                    runs[variant] += await _open_tabs(ctx, url, n_tabs)
                    cpu[variant]["server"] += cpu_seconds(pid) - s0
                    cpu[variant]["browser"] += cpu_seconds(chromium) - b0
            n = n_rounds * n_tabs
            for variant in servers:
                c = {k: v / n * 1000 for k, v in cpu[variant].items()}
                out[f"{variant}: {label}"] = {"runs": runs[variant], "cpu_ms_per_tab": c}
        await ctx.close()
    return out


def first_chart(args: argparse.Namespace) -> int:
    import asyncio

    root = Path(tempfile.mkdtemp(prefix="tl-bench-first-"))
    extra = args.dashboard_args.split() if args.dashboard_args else []
    stack = first_chart_stack(root, extra)
    try:
        servers = {"this tree": (stack.dash_url, stack.procs["dashboard"].pid)}
        if args.baseline:
            servers = {"baseline": _baseline_dashboard(stack, Path(args.baseline), extra), **servers}
        with stack.api() as api:
            wait_until(lambda: api.get("/api/v1/status").json()["running"], 30, "the flow running")
        results = asyncio.run(_first_charts(servers, args.rounds, args.tabs))
        with stack.api() as api:
            syms = [s["symbol"] for s in api.get("/api/v1/symbols").json()["symbols"]]
            span = api.get("/api/v1/ohlc/btcusdt", params={"timeframe": "1m", "limit": 100}).json()["count"]
        print(f"store: {syms}, {span} minutes of btcusdt 1m bars; flow replaying at 4x; load {os.getloadavg()}")
        for label, res in results.items():
            cpu = res["cpu_ms_per_tab"]
            print(f"{label}: CPU per tab: dashboard server {cpu['server']:.0f} ms, browser {cpu['browser']:.0f} ms")
            for k in ("html", "dom", "doc", "chart"):
                xs = [r[k] for r in res["runs"] if k in r]
                if xs:
                    print(f"  navigation → {k:<5} {pct(xs)}")
    finally:
        stack.stop_all()
    return 0


def _baseline_dashboard(stack: Stack, tree: Path, extra: list[str]) -> tuple[str, int]:
    """A second `panel serve` of `tree`'s panel_app (imports resolve there first) on the same API."""
    import httpx

    port = free_port()
    cmd, env = stack.commands["dashboard"]
    cmd = [*cmd[: cmd.index("--port") + 1], str(port), "--allow-websocket-origin", f"127.0.0.1:{port}", *extra]
    _spawn(stack, "dashboard_baseline", cmd, env, cwd=tree.resolve())
    url = f"http://127.0.0.1:{port}/app"
    wait_until(lambda: httpx.get(url, timeout=60).status_code == 200, 180, "the baseline dashboard")
    return url, stack.procs["dashboard_baseline"].pid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--first-chart", action="store_true", help="time a fresh tab's first chart (1 and --tabs at once)")
    ap.add_argument("--tabs", type=int, default=5)
    ap.add_argument("--baseline", default="", help="a source tree whose dashboard is timed beside this one")
    ap.add_argument("--dashboard-args", default="", help="extra `panel serve` arguments (e.g. '--num-procs 2')")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--rounds", type=int, default=3, help="page-switch rounds")
    ap.add_argument("--day", action="store_true", help="also: a day of 1s bars (uploaded) in the Market chart")
    args = ap.parse_args()
    if args.first_chart:
        return first_chart(args)
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
