"""The flow as a 2-process Bytewax cluster into PostgreSQL: the same store as one process into SQLite.

Real processes (`ticklens flow --processes 2`, its supervisor, a private PostgreSQL server),
real inputs: the bundled BTC/ETH recordings, and a four-symbol replay of real trades
(the 2020 BTCUSDT archive hour, given three more names with their own price paths and
ids). Every column of every table the flow writes is compared, less the wall-clock ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest
import yaml
from api_support import wait_until
from flow_support import BTC_2020, ROOT, WINDOW_A, run_flow, write_config
from pg_support import PgServer, server
from store_support import StoreRef, new_store

from storage import open_store
from ticklens.config import load_config
from ticklens.domain.alerts.rules import rule_from_payload

# Every table the flow writes, the columns compared (wall-clock columns and row ids left out), in key order.
TABLES = {
    "ticks": "symbol, trade_id, ts_ms, price, qty, is_buyer_maker, first_id, last_id, event_ms, recv_ms",
    "bars": (
        "symbol, timeframe, start_ms, open, high, low, close, volume, quote_volume, trades, taker_buy_volume,"
        " taker_buy_quote_volume, vwap, max_qty, messages, open_ts, open_id, close_ts, close_id, first_id, last_id,"
        " revision, closed, volume_units, quote_units, taker_buy_volume_units, taker_buy_quote_units, origin"
    ),
    "pair_stats": (
        'pair, timeframe, start_ms, leg_a, leg_b, "window", close_a, close_b, beta, alpha, spread, spread_mean,'
        " spread_std, zscore, corr, k_beta, k_alpha, k_beta_var, k_spread, k_innovation, k_innovation_var, k_zscore,"
        " half_life, adf_stat, adf_pvalue, eg_pvalue, coint_ms"
    ),
    "symbol_stats": (
        'symbol, timeframe, start_ms, "window", close, volume, log_return, mean, std, vwap, roll_volume, realised_vol'
    ),
    "correlation": 'timeframe, sym_a, sym_b, start_ms, "window", corr',
    "alert_events": (
        "rule_id, rule_name, symbol, metric, timeframe, operator, value, threshold, event_ms, ref, webhook,"
        " webhook_status, webhook_attempts"
    ),
    "gaps": "symbol, from_id, to_id, after_ts, status",
    "rejects": "recv_ms, reason, raw",
}


def _plain(v: object) -> object:
    """One value as both backends can compare it: flags and exact sums as int, blobs as bytes."""
    if isinstance(v, bool | Decimal):
        return int(v)
    if isinstance(v, memoryview):
        return bytes(v)
    if isinstance(v, str) and v.lstrip("-").isdigit() and len(v) > 18:  # SQLite keeps a sum past 64 bits as text
        return int(v)
    return v


def dump(store: StoreRef) -> dict[str, list[tuple]]:
    out = {}
    for table, cols in TABLES.items():
        q = (
            f"SELECT {cols} FROM {table}"
            if store.kind == "postgres"
            else f"SELECT {cols.replace(chr(34), '')} FROM {table}"
        )
        out[table] = sorted(tuple(_plain(v) for v in r) for r in store.rows(q))
    return out


def assert_same_store(got: dict[str, list[tuple]], want: dict[str, list[tuple]]) -> None:
    for table in TABLES:
        g, w = got[table], want[table]
        assert len(g) == len(w), f"{table}: {len(g)} rows, expected {len(w)}"
        bad = [(a, b) for a, b in zip(g, w, strict=True) if a != b]
        assert not bad, f"{table}: {len(bad)} rows differ, first: {bad[0]}"


# --- inputs --------------------------------------------------------------------------


def four_symbol_csvs(out: Path, rows: int = 40_000) -> list[Path]:
    """Four archive-layout trade files: the real 2020 BTCUSDT hour, and three symbols made from it
    (price scaled plus their own seeded random walk, ids and times shifted), so pairs differ."""
    base = pl.read_csv(BTC_2020, n_rows=rows)
    paths = []
    for k, (sym, scale) in enumerate(
        [("BTCUSDT", 1.0), ("ETHUSDT", 0.0323), ("SOLUSDT", 0.00163), ("XRPUSDT", 3.2e-5)]
    ):
        walk = np.cumsum(np.random.default_rng(k).normal(0, 0.02 * scale, base.height)) if k else 0.0
        price = (base["price"] * scale + walk).round(6 if scale < 0.01 else 2)
        df = base.with_columns(
            price=price.cast(pl.Float64).abs() + scale * 1e-3,
            id=pl.col("id") + k * 1_000_000_000,
            time=pl.col("time") + 3 * k,
        )
        path = out / f"{sym}-trades-2020-12-09T00.csv"
        df.write_csv(path)
        paths.append(path)
    return paths


def rules_for(symbols: list[str], pair: tuple[str, str], prices: dict[str, float]) -> list[dict]:
    a, b = pair
    return [
        {"name": "up", "metric": "price", "symbol": a, "operator": "crosses_above", "threshold": prices[a]},
        {"name": "down", "condition": f"price crosses_below {prices[b]}", "symbols": [b]},
        {"name": "busy", "metric": "volume", "symbol": symbols[0], "timeframe": "1s", "operator": ">", "threshold": 2},
        {"name": "z", "metric": "zscore", "pair": list(pair), "timeframe": "1s", "operator": "crosses_above", "threshold": 1.0},
    ]  # fmt: skip


INPUTS = {
    "recordings": {
        "symbols": ["btcusdt", "ethusdt"],
        "pairs": [{"legs": ["btcusdt", "ethusdt"], "window": 30, "timeframes": ["1s", "1m"]}],
        "correlation": {"symbols": ["btcusdt", "ethusdt"], "window": 5, "timeframe": "1m"},
        "prices": {"btcusdt": 63_900.0, "ethusdt": 3_420.0},
    },
    "four_symbols": {
        "symbols": ["btcusdt", "ethusdt", "solusdt", "xrpusdt"],
        "pairs": [
            {"legs": ["btcusdt", "ethusdt"], "window": 30, "timeframes": ["1s", "1m"]},
            {"legs": ["solusdt", "xrpusdt"], "window": 20, "timeframes": ["1s"]},
        ],
        "correlation": {"symbols": ["btcusdt", "ethusdt", "solusdt", "xrpusdt"], "window": 5, "timeframe": "1m"},
        "prices": {"btcusdt": 18_259.0, "ethusdt": 589.8},
    },
}


def make_config(tmp: Path, name: str, store: StoreRef, speed: float | str = "max") -> Path:
    spec = INPUTS[name]
    paths = WINDOW_A if name == "recordings" else four_symbol_csvs(tmp)
    cfg = write_config(
        tmp,
        symbols=spec["symbols"],
        source={"kind": "replay", "paths": [str(p) for p in paths], "speed": speed, "batch_rows": 4_000},
        store=store.config(),
        pairs=spec["pairs"],
        correlation=spec["correlation"],
        recovery={"snapshot_interval_s": 0.5, "directory": str(tmp / "recovery")},
        progress_interval_s=0.5,
    )
    rules = open_store(load_config(cfg).store).rules()
    try:
        for r in rules_for(spec["symbols"], tuple(spec["pairs"][0]["legs"]), spec["prices"]):
            rules.create_rule(rule_from_payload(r))
    finally:
        rules.close()
    return cfg


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, dict[str, list[tuple]]]:
    """Each input through one process into SQLite (the single-machine default), uninterrupted."""
    out = {}
    for name in INPUTS:
        tmp = tmp_path_factory.mktemp(f"baseline_{name}")
        store = new_store("sqlite", tmp)
        r = run_flow(make_config(tmp, name, store), "--no-recovery", timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        out[name] = dump(store)
        assert out[name]["alert_events"] and out[name]["pair_stats"] and out[name]["correlation"]
    return out


def cluster_cmd(config: Path, processes: int = 2) -> list[str]:
    return [sys.executable, "-m", "ticklens.cli", "--config", str(config), "flow", "--processes", str(processes)]


def run_cluster(config: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, TICKLENS_QUIET="1")
    return subprocess.run(cluster_cmd(config), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


# --- equality --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(INPUTS))
def test_two_process_cluster_into_postgres_equals_one_process_sqlite(tmp_path: Path, baseline, name: str) -> None:
    store = new_store("postgres", tmp_path)
    r = run_cluster(make_config(tmp_path, name, store))
    assert r.returncode == 0, r.stderr[-4000:]
    assert "started 2 processes" in r.stderr
    got = dump(store)
    assert_same_store(got, baseline[name])
    # Both processes wrote: each worker's status document is there, and the merged view sums them.
    docs = {k: v for k, v in store.rows("SELECT key, value FROM status")}
    assert {"flow:0", "flow:1"} <= set(docs)
    assert sum(docs[f"flow:{i}"]["trades_total"] for i in (0, 1)) == len(got["ticks"])
    assert all(docs[f"flow:{i}"]["trades_total"] > 0 for i in (0, 1))


def test_sqlite_refuses_a_multi_process_cluster_clearly(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = run_cluster(cfg, timeout=60)
    assert r.returncode == 2
    assert "store.kind 'sqlite' has a single writer" in r.stderr and "postgres" in r.stderr
    # The runner itself refuses too (several machines start it directly).
    env = dict(os.environ, TICKLENS_CONFIG=str(cfg))
    direct = subprocess.run(
        [sys.executable, "-m", "flows.runner", "-i", "0", "-a", "127.0.0.1:1;127.0.0.1:2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert direct.returncode == 2 and "single writer" in direct.stderr


# --- failures ----------------------------------------------------------------------------


def _children(sup: psutil.Process) -> list[psutil.Process]:
    return [p for p in sup.children() if "flows.runner" in " ".join(p.cmdline())]


def _ticks(store: StoreRef) -> int:
    try:
        return int(store.rows("SELECT COUNT(*) FROM ticks")[0][0])
    except Exception:  # noqa: BLE001 (the server may be restarting)
        return 0


def _interrupted_cluster(
    tmp: Path, store: StoreRef, baseline: dict, interrupt: Callable[[subprocess.Popen], None]
) -> str:
    """The recordings through a 2-process cluster at 25x into `store`, `interrupt(supervisor)` once a
    third of the ticks are stored; the supervisor must then exit 0. Returns its log."""
    cfg = make_config(tmp, "recordings", store, speed=25)
    total = len(baseline["recordings"]["ticks"])
    log = open(tmp / "cluster.log", "w")  # noqa: SIM115
    sup = subprocess.Popen(cluster_cmd(cfg), cwd=ROOT, env=dict(os.environ, TICKLENS_QUIET="1"), stdout=log, stderr=log)
    try:
        wait_until(lambda: _ticks(store) > total * 0.3, 120, "a third of the ticks stored")
        interrupt(sup)
        assert sup.wait(300) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
        log.close()
    return (tmp / "cluster.log").read_text()


def _kill_9_one_runner(sup: subprocess.Popen) -> None:
    victim = _children(psutil.Process(sup.pid))[1]
    os.kill(victim.pid, signal.SIGKILL)


def test_kill_9_of_one_process_then_the_restarted_cluster_gives_the_uninterrupted_store(
    tmp_path: Path, baseline
) -> None:
    store = new_store("postgres", tmp_path)
    text = _interrupted_cluster(tmp_path, store, baseline, _kill_9_one_runner)
    assert "was killed by signal 9" in text and "restarting the whole cluster from recovery" in text
    assert_same_store(dump(store), baseline["recordings"])


@pytest.fixture()
def own_server() -> PgServer:
    """A server of this test's own: it is restarted mid-run."""
    server()  # the session's (skips or fails the test the same way if PostgreSQL is missing)
    s = PgServer()
    yield s
    s.close()


def test_postgres_restart_mid_run_loses_nothing(tmp_path: Path, baseline, own_server: PgServer) -> None:
    store = StoreRef("postgres", url=own_server.url(own_server.create_database()))

    def restart_the_server(_: subprocess.Popen) -> None:
        own_server.stop("fast")
        time.sleep(2)  # the flow keeps reading and computing; its writers back off
        own_server.start()

    text = _interrupted_cluster(tmp_path, store, baseline, restart_the_server)
    assert "retrying" in text, text[-3000:]
    assert "restarting the whole cluster" not in text  # the writers rode it out; no process died
    assert_same_store(dump(store), baseline["recordings"])


def test_a_failing_step_in_a_cluster_prints_its_own_traceback(tmp_path: Path) -> None:
    store = new_store("postgres", tmp_path)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip at all")  # a file that names no symbol: every partition reads it
    cfg = write_config(
        tmp_path,
        source={"kind": "replay", "paths": [str(p) for p in WINDOW_A] + [str(bad)], "speed": "max", "partitions": 2},
        store=store.config(),
    )
    data = yaml.safe_load(cfg.read_text())
    r = subprocess.run(
        [*cluster_cmd(cfg), "--max-restarts", "0"], cwd=ROOT, env=dict(os.environ, TICKLENS_QUIET="1"),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr[-3000:]
    assert "root cause:" in r.stderr and "Traceback (most recent call last)" in r.stderr
    cause = r.stderr.split("root cause:", 1)[1]
    assert "bad.gz" in cause or "gzip" in cause.lower(), cause[:2000]
    assert "giving up after 0 restarts" in r.stderr
    assert data["store"]["kind"] == "postgres"


def test_a_cluster_killed_whole_resumes_as_one_process_and_the_state_is_resplit(tmp_path: Path, baseline) -> None:
    store = new_store("postgres", tmp_path)
    cfg = make_config(tmp_path, "recordings", store, speed=25)
    total = len(baseline["recordings"]["ticks"])
    env = dict(os.environ, TICKLENS_QUIET="1")
    sup = subprocess.Popen(cluster_cmd(cfg), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _ticks(store) > total * 0.3, 120, "a third of the ticks stored")
        for p in [*_children(psutil.Process(sup.pid)), psutil.Process(sup.pid)]:
            p.kill()  # the whole cluster at once, as a power cut would
        sup.wait(30)
    finally:
        if sup.poll() is None:
            sup.kill()
    assert len(list((tmp_path / "recovery").glob("part-*.sqlite3"))) == 2  # one per process of the first run
    partial = _ticks(store)
    assert 0 < partial < total
    # One process, one worker, picks up both processes' state (keys re-split over the new worker count).
    r = run_flow(cfg, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_store(dump(store), baseline["recordings"])
