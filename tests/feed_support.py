"""The real local feed and the real flow as subprocesses, for the live-path tests and benchmark."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent


class Feed:
    """`python -m ticklens.emulator … --port 0`, started and waited for until it accepts connections."""

    def __init__(self, *args: str, log: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ticklens.emulator", "--port", "0", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=open(log, "wb") if log else subprocess.DEVNULL,  # noqa: SIM115
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the server listens (or the feed dies)
        if "listening on ws://" not in line:
            self.proc.kill()
            raise RuntimeError(f"feed did not start: {line!r} (exit {self.proc.wait()})")
        self.port = int(line.rsplit(":", 1)[1].split("/")[0])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/market/stream"

    def control(self, what: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/control/{what}", timeout=5) as r:
            return orjson.loads(r.read())

    def stats(self) -> dict:
        return self.control("stats")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_config(tmp: Path, url: str, **source: object) -> Path:
    cfg = {
        "symbols": ["btcusdt", "ethusdt"],
        "source": {"kind": "feed", "url": url, "stream": "trade", **source},
        "store": {"path": str(tmp / "ticklens.db")},
        "timeframes": ["1s", "1m", "5m"],
        "recovery": {"enabled": False},
        "progress_interval_s": 0.5,
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Flow:
    """`python -m flows.runner --no-recovery` on a config; stopped with SIGINT like Ctrl-C."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        env = dict(os.environ, TICKLENS_CONFIG=str(config))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flows.runner", "--no-recovery"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb"),  # noqa: SIM115
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"flow did not stop on SIGINT:\n{self.stderr()}") from None
        return self.proc.returncode

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextmanager
def running_flow(config: Path, log: Path) -> Iterator[Flow]:
    """A `Flow` for the with-block, then stopped with SIGINT: it must exit 0 (stopped by the
    signal, not by an error; a step's exception exits 1)."""
    flow = Flow(config, log)
    try:
        yield flow
    finally:
        code = flow.stop()
    assert code == 0, flow.stderr()


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        conn.close()


def wait_for(check: Callable[[], object], timeout: float, what: str, flow: Flow | None = None) -> object:
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if flow is not None and not flow.alive():
            raise AssertionError(f"flow exited ({flow.proc.returncode}) while waiting for {what}:\n{flow.stderr()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def feed_status(db: Path) -> dict:
    rows = query(db, "SELECT value FROM status WHERE key='flow'")
    if not rows:
        return {}
    feeds = orjson.loads(rows[0][0]).get("feeds", {})
    return feeds.get("feed", {})
