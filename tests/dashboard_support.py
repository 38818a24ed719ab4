"""The real stack for the dashboard tests: flow replaying bundled trades, uvicorn API, `panel serve`, Chromium.

Every piece is the real program in its own process on a free 127.0.0.1 port;
the browser is Debian's chromium driven by Playwright.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Trades keep arriving for the whole test: 8 recorded minutes at 4x last 2 minutes.
REPLAY_SPEED = 4
REPLAY_FILES = [
    "um_btcusdt_20240718_trades.gz",
    "um_btcusdt_20240719_trades.gz",
    "um_ethusdt_20240718_trades.gz",
    "um_ethusdt_20240719_trades.gz",
]
PAIR_WINDOW = 30
# A test module that drives Chromium: `pytestmark = BROWSER` (skipped where the browser or Playwright is missing).
BROWSER = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian chromium at {CHROMIUM}"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="needs playwright"),
]

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(fn: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll `fn` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            out = fn()
            if out:
                return out
        except Exception as e:  # not up yet
            last_exc = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_exc!r})")


@dataclass
class Stack:
    """The running processes and where to reach them."""

    root: Path
    config: Path
    store: Path
    api_url: str
    dash_url: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=10)

    def log_tail(self, name: str, n: int = 40) -> str:
        try:
            return "\n".join(self.logs[name].read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, name: str) -> None:
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)

    def restart(self, name: str) -> None:
        """Start a stopped process again with the same command (its log is appended to)."""
        cmd, env = self.commands[name]
        _spawn(self, name, cmd, env)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


def _spawn(stack: Stack, name: str, cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
    log = stack.root / f"{name}.log"
    stack.logs[name] = log
    stack.commands[name] = (cmd, env)
    with open(log, "ab") as out:
        stack.procs[name] = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _klines_archive(root: Path) -> Path:
    """Binance's real BTCUSDT 1m klines of the bundled windows as archive zips (the Data page's audit reads them)."""
    from tests.archive_support import daily_path, klines_by_day, zip_bytes

    for day, (header, lines) in klines_by_day().items():
        path = root / daily_path("klines-1m", "BTCUSDT", day).removeprefix("/data/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(zip_bytes(path.name.replace(".zip", ".csv"), header, lines))
    return root


def start_stack(
    root: Path,
    speed: float = REPLAY_SPEED,
    simulate: list[str] | None = None,
    rate: float = 2000.0,
    files: list[str] | None = None,
    streams: list[str] | None = None,
    replay: tuple[list[str], list[Path]] | None = None,
    dashboard_args: list[str] | None = None,
) -> Stack:
    """Flow, API and dashboard on free ports, sharing one store; returns once all three answer.

    By default the flow replays the bundled recordings at `speed`; `replay` = (symbols, recordings)
    replays others; with `simulate` (symbols) it reads the local feed generating `rate` trades/s
    instead (benchmarks). A store already at `root/store/ticklens.db` is kept and added to.
    """
    api_port, dash_port, feed_port = free_port(), free_port(), free_port()
    store = root / "store" / "ticklens.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    symbols = simulate or (replay[0] if replay else ["btcusdt", "ethusdt"])
    paths = replay[1] if replay else [SAMPLE / f for f in files or REPLAY_FILES]
    source: dict[str, Any] = {"kind": "replay", "speed": speed, "paths": [str(p) for p in paths]}
    if streams:
        source["streams"] = streams
    if simulate:
        source = {"kind": "feed", "url": f"ws://127.0.0.1:{feed_port}/market/stream"}
    cfg = {
        "symbols": symbols,
        "source": source,
        "store": {"path": str(store)},
        "pairs": [{"legs": symbols[:2], "window": PAIR_WINDOW, "timeframes": ["1s"]}],
        "correlation": {"symbols": symbols, "window": PAIR_WINDOW, "timeframe": "1s"},
        "api": {"host": "127.0.0.1", "port": api_port},
        "dashboard": {"host": "127.0.0.1", "port": dash_port},
        "progress_interval_s": 1.0,
    }
    if streams:  # books: microstructure too, with VPIN buckets sized for the bundled minutes
        cfg["micro"] = {"vpin_bucket": {"btcusdt": 2.0, "ethusdt": 40.0}, "vpin_buckets": 10}
    cfg["history"] = {"dir": str(_klines_archive(root / "archive"))}
    config = root / "pipeline.yaml"
    config.write_text(yaml.safe_dump(cfg))
    stack = Stack(root, config, store, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{dash_port}/app")
    env = dict(os.environ, TICKLENS_CONFIG=str(config), TICKLENS_API=stack.api_url, PYTHONUNBUFFERED="1")
    py = sys.executable
    try:
        if simulate:
            feed = ["--simulate", "--symbols", ",".join(symbols), "--rate", str(rate), "--no-bursts"]
            _spawn(stack, "feed", [py, "-m", "ticklens.emulator", *feed, "--port", str(feed_port)], env)
        _spawn(stack, "flow", [py, "-m", "flows.runner", "--no-recovery"], env)
        _spawn(stack, "api", [py, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(api_port)], env)
        _spawn(
            stack,
            "dashboard",
            [
                py, "-m", "panel", "serve", "panel_app/app.py",
                "--address", "127.0.0.1", "--port", str(dash_port),
                "--allow-websocket-origin", f"127.0.0.1:{dash_port}", *(dashboard_args or []),
            ],
            env,
        )  # fmt: skip
        wait_until(lambda: httpx.get(f"{stack.api_url}/health", timeout=2).status_code == 200, 120, "the API")
        # A loaded machine takes tens of seconds to build the first session: wait for it, do not re-ask.
        wait_until(lambda: httpx.get(stack.dash_url, timeout=90).status_code == 200, 180, "the dashboard")
    except BaseException:
        stack.stop_all()
        raise
    return stack


@contextmanager
def running_stack(root: Path, bars: str, at_least: int, within: float, **kw: Any) -> Iterator[Stack]:
    """`start_stack(root, **kw)`, ready once the API path `bars` counts `at_least` 1s rows (waited for
    up to `within` s); every process stopped afterwards."""
    stack = start_stack(root, **kw)
    try:
        with stack.api() as api:
            wait_until(
                lambda: api.get(bars, params={"timeframe": "1s", "limit": 60}).json()["count"] >= at_least,
                within,
                f"{at_least} 1s rows of {bars}",
            )
        yield stack
    finally:
        stack.stop_all()


def scaled_recording(
    src: list[Path], dst: Path, symbol: str, price_factor: str, decimals: int, qty_factor: int
) -> Path:
    """A recording of another symbol made from real ones: prices times `price_factor` rounded to
    `decimals`, quantities times `qty_factor` (e.g. a sub-cent 1000PEPEUSDT-like symbol from BTCUSDT)."""
    from decimal import ROUND_HALF_EVEN, Decimal

    tick, factor = Decimal(1).scaleb(-decimals), Decimal(price_factor)
    with gzip.open(dst, "wt") as out:
        for path in src:
            with gzip.open(path, "rt") as fh:
                for line in fh:
                    recv, _, body = line.partition(" ")
                    msg = json.loads(body)
                    d = msg.get("data", msg)
                    if d.get("e") != "trade":
                        continue
                    d["s"] = symbol.upper()
                    d["p"] = f"{(Decimal(d['p']) * factor).quantize(tick, rounding=ROUND_HALF_EVEN):f}"
                    d["q"] = f"{(Decimal(d['q']) * qty_factor).normalize():f}"
                    out.write(f"{recv} {json.dumps({'stream': f'{symbol}@trade', 'data': d})}\n")
    return dst


def launch_browser(playwright: Any, viewport: tuple[int, int] = (1400, 950)) -> Any:
    """Debian's chromium with a fresh profile (Playwright cannot download its own browsers here)."""
    return playwright.chromium.launch_persistent_context(
        tempfile.mkdtemp(prefix="tl-chromium-"),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": viewport[0], "height": viewport[1]},
        accept_downloads=True,
    )


@contextmanager
def dashboard_page(url: str, load_ms: float = 30_000, ready_ms: float = 30_000) -> Iterator[Any]:
    """Chromium on the dashboard at `url` (loaded within `load_ms`), once its first page shows data
    (within `ready_ms`), its console errors gathered in `page.console`; closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = launch_browser(pw)
        try:
            page = ctx.new_page()
            page.console = ConsoleLog(page)
            page.goto(url, timeout=load_ms)
            page.get_by_text("last price").first.wait_for(timeout=ready_ms)
            yield page
        finally:
            ctx.close()


class ConsoleLog:
    """Console errors and uncaught page errors, so a test can assert there were none."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.failed: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.method} {r.url}: {r.failure}"))

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(msg.text)

    def take(self) -> list[str]:
        out, self.errors = self.errors, []
        return out


# The Market chart's data as the browser holds it (the source is named in panel_app/market.py).
CANDLES_JS = """() => {
  for (const d of (window.Bokeh && Bokeh.documents) || []) {
    const s = d.get_model_by_name('market-candles');
    if (!s) continue;
    const col = (k) => Array.from(s.data[k], Number);
    return {start_ms: col('start_ms'), open: col('open'), high: col('high'), low: col('low'),
            close: col('close'), volume: col('volume'), trades: col('trades'), state: Array.from(s.data.state)};
  }
  return null;
}"""

# Time from a stream/patch arriving in the browser to the frame after the chart repainted.
TIMING_JS = """() => {
  if (window.__tlTimes) return true;
  for (const d of (window.Bokeh && Bokeh.documents) || []) {
    const s = d.get_model_by_name('market-candles');
    if (!s) continue;
    window.__tlTimes = [];
    const mark = () => {
      const t0 = performance.now();
      requestAnimationFrame(() => requestAnimationFrame(() => window.__tlTimes.push(performance.now() - t0)));
    };
    s.streaming.connect(mark);
    s.patching.connect(mark);
    return true;
  }
  return false;
}"""
