"""Run the real dataflow as a subprocess against a temporary pipeline file."""

from __future__ import annotations

import gzip
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
SHARED = ROOT.parent / "shared" / "data" / "binance"
WINDOW_A = [
    SAMPLE / "um_btcusdt_20240718_trades.gz",
    SAMPLE / "um_btcusdt_20240719_trades.gz",
    SAMPLE / "um_ethusdt_20240718_trades.gz",
    SAMPLE / "um_ethusdt_20240719_trades.gz",
]
WINDOW_B = [SAMPLE / "um_btcusdt_20240808_trades.gz", SAMPLE / "um_ethusdt_20240808_trades.gz"]
BTC_2020 = SAMPLE / "BTCUSDT-trades-2020-12-09T00.csv.gz"


def write_config(tmp: Path, **overrides: object) -> Path:
    cfg: dict = {
        "symbols": ["btcusdt", "ethusdt"],
        "source": {"kind": "replay", "paths": [str(p) for p in WINDOW_A], "speed": "max"},
        "store": {"path": str(tmp / "ticklens.db")},
        "timeframes": ["1s", "1m", "5m"],
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def btc_2020_config(tmp: Path, source: dict | None = None, **overrides: object) -> Path:
    """`write_config` replaying the bundled 2020 BTCUSDT archive hour alone, with `source` added to
    the replay's settings."""
    return write_config(tmp, symbols=["btcusdt"], source={"paths": [str(BTC_2020)], **(source or {})}, **overrides)


def run_flow(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, TICKLENS_CONFIG=str(config), TICKLENS_QUIET="1")
    return subprocess.run(
        [sys.executable, "-m", "flows.runner", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def replayed_and_served(tmp: Path, timeout: float = 900, **overrides: object) -> Iterator[tuple[Path, Any]]:
    """The replay of `write_config(tmp, **overrides)` run to its end (recovery off), then the API
    serving its store: yields (the store file, the running `ApiServer`)."""
    from tests.api_support import api_server

    cfg = write_config(tmp, recovery={"enabled": False}, **overrides)
    res = run_flow(cfg, "--no-recovery", timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    with api_server(cfg, tmp / "api.log") as api:
        yield tmp / "ticklens.db", api


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for_rows(proc: subprocess.Popen, db: Path, table: str, at_least: int, timeout: float, what: str) -> None:
    """Poll the SQLite store `db` until `table` holds `at_least` rows (a crash test's kill point);
    fail if `proc` (`what`, e.g. "the flow") ends first or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{what} ended before the kill point"
        assert time.monotonic() < deadline, f"{what} made no progress"
        try:
            if db.exists() and query(db, f"SELECT COUNT(*) FROM {table}")[0][0] >= at_least:
                return
        except sqlite3.Error:  # the store is being created
            pass
        time.sleep(0.02)


TABLE_QUERIES = {
    "ticks": "SELECT symbol, trade_id, ts_ms, price, qty, is_buyer_maker, first_id, last_id FROM ticks ORDER BY 1, 2",
    "bars": "SELECT symbol, timeframe, start_ms, open, high, low, close, volume, quote_volume, trades,"
    " taker_buy_volume, vwap, first_id, last_id, closed FROM bars ORDER BY 1, 2, 3",
    "gaps": "SELECT symbol, from_id, to_id, status FROM gaps ORDER BY 1, 2",
}


def store_dump(db: Path) -> dict[str, list[tuple]]:
    """Every table a flow writes, without wall-clock columns: equal dumps mean equal stores."""
    out = {name: query(db, sql) for name, sql in TABLE_QUERIES.items()}
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in ("pair_stats", "symbol_stats", "correlation", "alert_events"):
            if table not in tables:
                continue
            cols = [
                r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] not in ("updated_ms", "wall_ms", "id")
            ]
            out[table] = sorted(conn.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall())
    return out


def shuffled_recording(src: list[Path], dst: Path, max_shift_ms: int, seed: int) -> None:
    """Rewrite recordings so trades arrive out of order by up to max_shift_ms, across bar boundaries."""
    lines = []
    for p in src:
        with gzip.open(p, "rt") as fh:
            for line in fh:
                body = line.partition(" ")[2]
                t = json.loads(body)["data"]["T"]
                lines.append((t, body))
    rng = random.Random(seed)
    keyed = sorted(lines, key=lambda x: x[0] + rng.uniform(0, max_shift_ms))
    inversions = sum(1 for a, b in zip(keyed, keyed[1:], strict=False) if b[0] < a[0])
    assert inversions > 1000
    with gzip.open(dst, "wt") as fh:
        for t, body in keyed:
            fh.write(f"{t * 1_000_000} {body}")
