"""Flow throughput into PostgreSQL, 1 and 2 processes, beside SQLite and the backend's own limit;
API latency on PostgreSQL with 10 million ticks while the cluster writes.

    .venv/bin/python bench/bench_cluster.py --trades 1000000 --repeats 3 [--api-ticks 10000000]

Input: two archive-layout `trades` CSVs (btcusdt, ethusdt: bench/synth.py, the bundled real
BTCUSDT hour shifted in time and ids), so a 2-process cluster has one replay partition per
process. Server: a private PostgreSQL 15 (tests/pg_support.py) with its default durability
(fsync on, synchronous commit), 127.0.0.1, started by this script on the same 2 cores as
the flow (the server's CPU is the flow's CPU). Each run: a fresh store (SQLite file or
PostgreSQL database) and fresh processes at `speed: max`, recovery off, timed from start to
exit (imports, connections, schema included); peak RSS summed over the flow processes.

- `sqlite 1 process`: `python -m flows.runner` into SQLite (the single-machine default);
- `postgres 1 process`: the same into PostgreSQL;
- `postgres 2 processes`: `ticklens flow --processes 2` (the supervised local cluster);
- `COPY+upsert limit`: the same ticks written by the backend's own writer alone
  (`PostgresWriter.prepare` + `write`: binary COPY into staging + INSERT … SELECT … ON
  CONFLICT DO NOTHING, 50,000 ticks a transaction; only `write` timed), on 1 and on 2
  connections (2 processes, one symbol each).

Then the API: 10 M btcusdt ticks and their bars are put in a PostgreSQL store (the flow
stores one real hour, SQL copies it shifted by whole hours), a 2-process cluster writes the
following hours (both symbols) at speed 50 (about 3,000 trades/s) meanwhile, and a real uvicorn serves
`GET /api/v1/ohlc/btcusdt?timeframe=1m&limit=500` and `GET /api/v1/ticks/btcusdt?limit=1000`
to a keep-alive client, sequentially.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pyarrow.csv as pacsv
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pg_support import PgServer  # noqa: E402

from bench.cli import options  # noqa: E402
from bench.procstat import peak_rss_mb  # noqa: E402
from bench.serve import start_api  # noqa: E402
from bench.synth import shifted_trades_csv  # noqa: E402
from storage.port import StoreBatch  # noqa: E402
from storage.postgres import PostgresStore  # noqa: E402
from ticklens.config import StoreConfig  # noqa: E402
from ticklens.domain.bars import BarBook  # noqa: E402
from ticklens.domain.records import Trades  # noqa: E402
from ticklens.domain.timeframes import TIMEFRAME_MS  # noqa: E402

SYMBOLS = ["btcusdt", "ethusdt"]
TIMEFRAMES = ["1s", "1m", "5m"]
HOUR_MS = 3_600_000
TX_TICKS = 50_000


def _rss_mb(pids: list[int]) -> float:
    return sum(peak_rss_mb(pid) for pid in pids)


def _config(work: Path, paths: list[Path], store: dict, speed: float | str = "max", **extra: object) -> Path:
    cfg = {
        "symbols": SYMBOLS,
        "source": {"kind": "replay", "paths": [str(p) for p in paths], "speed": speed},
        "store": {"path": str(work / "bench.db"), **store},
        "timeframes": TIMEFRAMES,
        "recovery": {"enabled": False},
        "progress_interval_s": 2.0,
        **extra,
    }
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _children_cpu() -> float:
    """CPU seconds of this script's waited-for children (the flow processes, and the cluster's through its supervisor)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _server_cpu(pg: PgServer) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster, its live processes and its ended backends."""
    pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    main = psutil.Process(pid)
    total = sum(main.cpu_times()[:4])  # user, system, and the reaped children's (ended backends)
    for child in main.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(child.cpu_times()[:2])
    return total


def _timed(cmd: list[str], config: Path, root: Path = ROOT) -> tuple[float, float]:
    """(seconds, peak RSS MB of the flow processes) of one run to its exit (the flow of the tree `root`)."""
    env = dict(os.environ, TICKLENS_CONFIG=str(config), TICKLENS_QUIET="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    me = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            pids = [proc.pid] + [c.pid for c in me.children(recursive=True)]
        except psutil.NoSuchProcess:
            pids = []
        kids = [p for p in pids if p != proc.pid] or pids
        peak = max(peak, _rss_mb(kids))
        time.sleep(0.2)
    dt = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return dt, peak


def _read_ticks(paths: list[Path]) -> list[Trades]:
    out = []
    for p in paths:
        t = pacsv.read_csv(p)
        sym = p.name.split("-")[0].lower()
        out.append(
            Trades.from_columns(
                sym,
                trade_id=t["id"].to_numpy(),
                ts_ms=t["time"].to_numpy(),
                price=t["price"].to_numpy(),
                qty=t["qty"].to_numpy(),
                is_buyer_maker=t["is_buyer_maker"].to_numpy(zero_copy_only=False),
            )
        )
    return out


def _limit_worker(url: str, ticks: list[Trades], out: mp.Queue, with_bars: bool = False) -> None:
    """The writer alone: prepare outside the clock, write timed, 50,000 ticks a transaction.

    `with_bars`: each transaction also carries the 1s/1m/5m bars those ticks change or close
    (computed by the domain's BarBook outside the clock), as the flow's batches do."""
    store = PostgresStore(StoreConfig(kind="postgres", url=url))
    w = store.writer()
    spent = 0.0
    n = 0
    for t in ticks:
        book = BarBook(t.symbol, {tf: TIMEFRAME_MS[tf] for tf in TIMEFRAMES}, 2_000, 600_000)
        for i in range(0, len(t), TX_TICKS):
            part = t.take(np.arange(i, min(i + TX_TICKS, len(t))))
            bars: list = []
            if with_bars:
                bars, _ = book.add(part)
                bars.extend(book.advance(int(part.ts_ms[-1])))
            prepared = w.prepare(StoreBatch(ticks=[part], bars=bars))
            t0 = time.perf_counter()
            w.write(prepared)
            spent += time.perf_counter() - t0
            n += len(part)
    w.close()
    out.put((n, spent))


def copy_upsert_limit(pg: PgServer, ticks: list[Trades], connections: int, with_bars: bool = False) -> float:
    """Ticks/s of the bare writer on `connections` connections at once (one symbol each)."""
    db = pg.create_database("limit")
    PostgresStore(StoreConfig(kind="postgres", url=pg.url(db))).ensure()
    q: mp.Queue = mp.get_context("spawn").Queue()
    groups = [ticks[i::connections] for i in range(connections)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_limit_worker, args=(pg.url(db), g, q, with_bars)) for g in groups]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    pg.drop_database(db)
    # All connections wrote at once: the ticks over the slowest one's write time.
    return sum(r[0] for r in results) / max(r[1] for r in results)


def throughput(work: Path, pg: PgServer, n_trades: int, repeats: int, baseline: Path | None = None) -> list[dict]:
    paths = shifted_trades_csv(work / "input", n_trades, symbols=("BTCUSDT", "ETHUSDT"))
    # The same runs on 2,000 trades: what a run costs besides its trades (interpreter start,
    # imports, connections, schema, cluster set-up, shutdown), which the limit rows never pay.
    tiny = shifted_trades_csv(work / "tiny", 2_000, symbols=("BTCUSDT", "ETHUSDT"))
    total = sum(int(pacsv.read_csv(p).num_rows) for p in paths)
    ticks = _read_ticks(paths)
    py = sys.executable
    rows: dict[str, list[tuple[float, float]]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}  # name -> (flow CPU s, server CPU s) per run
    walls: dict[str, list[float]] = {}
    fixed: dict[str, list[float]] = {}  # name -> seconds of the run on 2,000 trades
    fixed_cpu: dict[str, list[tuple[float, float]]] = {}
    loads: list[float] = [os.getloadavg()[0]]
    for r in range(repeats):
        names = ["sqlite 1 process", "postgres 1 process", "postgres 2 processes"]
        if baseline is not None:  # another checkout's flow (its own .venv), interleaved: before/after in one run
            names += ["postgres 1 process (baseline)", "postgres 2 processes (baseline)"]
        for name in names:
            root = baseline if baseline is not None and name.endswith("(baseline)") else ROOT
            py = str(root / ".venv" / "bin" / "python") if root != ROOT else sys.executable
            for inp in (paths, tiny):
                if name.startswith("sqlite"):
                    for f in work.glob("bench.db*"):
                        f.unlink()
                    cfg = _config(work, inp, {})
                    cmd = [py, "-m", "flows.runner", "--no-recovery"]
                else:
                    db = pg.create_database("flow")
                    cfg = _config(work, inp, {"kind": "postgres", "url": pg.url(db)})
                    cmd = [py, "-m", "flows.runner", "--no-recovery"]
                    if "2" in name:
                        cmd = [py, "-m", "ticklens.cli", "flow", "--processes", "2"]
                flow0, server0 = _children_cpu(), _server_cpu(pg)
                dt, rss = _timed(cmd, cfg, root)
                if not name.startswith("sqlite"):
                    pg.drop_database(db)
                if inp is tiny:
                    fixed.setdefault(name, []).append(dt)
                    fixed_cpu.setdefault(name, []).append((_children_cpu() - flow0, _server_cpu(pg) - server0))
                    continue
                cpu.setdefault(name, []).append((_children_cpu() - flow0, _server_cpu(pg) - server0))
                walls.setdefault(name, []).append(dt)
                rows.setdefault(name, []).append((total / dt, rss))
                loads.append(os.getloadavg()[0])
                print(
                    f"  run {r + 1} {name}: {total / dt:,.0f} ticks/s, {rss:.0f} MB, load {loads[-1]:.1f}", flush=True
                )
            print(f"  run {r + 1} {name} on 2,000 trades: {fixed[name][-1]:.2f} s", flush=True)
        for conns, bars in ((1, False), (2, False), (1, True), (2, True)):
            rate = copy_upsert_limit(pg, ticks, conns, with_bars=bars)
            what = " + bars" if bars else ""
            key = f"COPY+upsert limit{what}, {conns} connection{'s' if conns > 1 else ''}"
            rows.setdefault(key, []).append((rate, 0))
            loads.append(os.getloadavg()[0])
            print(f"  run {r + 1} limit{what} {conns}: {rate:,.0f} ticks/s", flush=True)
    out = [
        {
            "name": k,
            "rate": statistics.median(v[0] for v in vs),
            "runs": [v[0] for v in vs],
            "rss": max(v[1] for v in vs),
        }
        for k, vs in rows.items()
    ]
    for o in out:
        if o["name"] in cpu:
            flow_s = statistics.median(c[0] for c in cpu[o["name"]])
            server_s = statistics.median(c[1] for c in cpu[o["name"]])
            wall = statistics.median(walls[o["name"]])
            o["cpu"] = (flow_s, server_s, (flow_s + server_s) / (wall * (os.cpu_count() or 1)))
            o["fixed"] = statistics.median(fixed[o["name"]])
            o["fixed_cpu"] = tuple(statistics.median(c[i] for c in fixed_cpu[o["name"]]) for i in (0, 1))
            # (only where the run is well above its fixed cost: else the difference is noise)
            o["net"] = total / (wall - o["fixed"]) if wall > 1.5 * o["fixed"] else float("nan")
    out.append({"name": "_load", "load": (min(loads), max(loads))})
    return out


# --- API latency --------------------------------------------------------------------------


def build_api_store(work: Path, pg: PgServer, target: int) -> tuple[str, int, int]:
    """(url, ticks stored, id span): the real hour through the flow, then copied hour by hour in SQL."""
    import psycopg

    db = pg.create_database("api")
    url = pg.url(db)
    src = shifted_trades_csv(work / "api_input", 100_000, symbols=("BTCUSDT",))
    cfg = _config(work, src, {"kind": "postgres", "url": url})
    cfg_data = yaml.safe_load(cfg.read_text())
    cfg_data["symbols"] = ["btcusdt"]
    cfg.write_text(yaml.safe_dump(cfg_data))
    _timed([sys.executable, "-m", "flows.runner", "--no-recovery"], cfg)
    with psycopg.connect(url, autocommit=True) as c:
        lo_id, hi_id, lo_ts, n = c.execute(
            "SELECT MIN(trade_id), MAX(trade_id), MIN(ts_ms), COUNT(*) FROM ticks WHERE symbol='btcusdt'"
        ).fetchone()  # type: ignore[misc]
        span = hi_id - lo_id + 1
        hour0 = lo_ts - lo_ts % HOUR_MS
        copies = -(-target // n) - 1
        store = PostgresStore(StoreConfig(kind="postgres", url=url))
        w = store.writer()  # creates the daily partitions the copies need
        from storage.postgres import schema

        days = range(hour0 // 86_400_000, (hour0 + (copies + 1) * HOUR_MS) // 86_400_000 + 1)
        schema.ensure_partitions(w.conn, "ticks", days)
        schema.ensure_symbol_partitions(w.conn, [(d, "btcusdt") for d in days])
        w.close()
        cols = "symbol, trade_id, ts_ms, price, qty, is_buyer_maker, first_id, last_id, event_ms, recv_ms"
        bcols = [
            r[0]
            for r in c.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name='bars' ORDER BY ordinal_position"
            )
        ]
        for k in range(1, copies + 1):
            d, s = k * HOUR_MS, k * span
            c.execute(
                f"INSERT INTO ticks ({cols}) SELECT symbol, trade_id + {s}, ts_ms + {d}, price, qty, is_buyer_maker,"
                f" first_id + {s}, last_id + {s}, event_ms + {d}, recv_ms + {d} FROM ticks"
                f" WHERE symbol='btcusdt' AND ts_ms < {hour0 + HOUR_MS}"
            )
            shifted = {
                "start_ms": d,
                "open_ts": d,
                "close_ts": d,
                "open_id": s,
                "close_id": s,
                "first_id": s,
                "last_id": s,
            }
            sel = ", ".join(f"{b} + {shifted[b]}" if b in shifted else b for b in bcols)
            c.execute(
                f"INSERT INTO bars ({', '.join(bcols)}) SELECT {sel} FROM bars WHERE start_ms < {hour0 + HOUR_MS}"
            )
        c.execute("ANALYZE")
        total = c.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]  # type: ignore[index]
        newest = c.execute("SELECT MAX(ts_ms) FROM ticks").fetchone()[0]  # type: ignore[index]
    return url, int(total), int(newest)


def _percentiles(xs: list[float]) -> tuple[float, float, float]:
    a = np.array(xs) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 90)), float(np.percentile(a, 99))


def api_latency(work: Path, pg: PgServer, target: int, requests: int) -> dict:
    import psycopg

    url, total, newest = build_api_store(work, pg, target)
    # The cluster writes the hours after the stored ones (both symbols) meanwhile, paced.
    live = shifted_trades_csv(work / "api_live", 400_000, symbols=("BTCUSDT", "ETHUSDT"))
    import polars as pl

    moved = []
    for p in live:
        df = pl.read_csv(p)
        shift = newest + 1000 - int(df["time"].min())
        df = df.with_columns(pl.col("time") + shift, pl.col("id") + 10**12)
        out = work / "api_live" / f"{p.stem}-later.csv"
        df.write_csv(out)
        moved.append(out)
    live_dir = work / "api_live_run"
    live_dir.mkdir()
    live_cfg = _config(live_dir, moved, {"kind": "postgres", "url": url}, speed=50.0)
    env = dict(os.environ, TICKLENS_CONFIG=str(live_cfg), TICKLENS_QUIET="1")
    cluster_log = open(work / "api_cluster.log", "w")  # noqa: SIM115
    cluster = subprocess.Popen(
        [sys.executable, "-m", "ticklens.cli", "flow", "--processes", "2"],
        cwd=ROOT, env=env, stdout=cluster_log, stderr=cluster_log, start_new_session=True,
    )  # fmt: skip
    api_cfg = _config(work / "api_live", moved, {"kind": "postgres", "url": url})
    api: subprocess.Popen | None = None
    client: httpx.Client | None = None
    try:
        api, client = start_api(api_cfg, work / "api_cluster_api.log")
        with psycopg.connect(url, autocommit=True) as c:
            deadline = time.monotonic() + 60
            while c.execute("SELECT COUNT(*) FROM ticks WHERE symbol='ethusdt'").fetchone()[0] == 0:  # type: ignore[index]
                if cluster.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the cluster did not start writing: {(work / 'api_cluster.log').read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            before = c.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]  # type: ignore[index]
        t0 = time.monotonic()
        calls = {
            "GET /api/v1/ohlc/btcusdt?timeframe=1m&limit=500": (
                "/api/v1/ohlc/btcusdt",
                {"timeframe": "1m", "limit": 500},
            ),
            "GET /api/v1/ticks/btcusdt?limit=1000": ("/api/v1/ticks/btcusdt", {"limit": 1000}),
        }
        lat: dict[str, list[float]] = {k: [] for k in calls}
        load = [os.getloadavg()[0]]
        for i in range(requests):
            for name, (path, params) in calls.items():
                s = time.perf_counter()
                r = client.get(path, params=params)
                lat[name].append(time.perf_counter() - s)
                assert r.status_code == 200, r.text[:300]
            if i % 100 == 0:
                load.append(os.getloadavg()[0])
        dt = time.monotonic() - t0
        with psycopg.connect(url, autocommit=True) as c:
            after = c.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]  # type: ignore[index]
        writing = cluster.poll() is None
    finally:
        if client is not None:
            client.close()
        if api is not None:
            api.terminate()
        if cluster.poll() is None:
            cluster.send_signal(signal.SIGINT)  # the supervisor drains its processes
            try:
                cluster.wait(60)
            except subprocess.TimeoutExpired:
                cluster.kill()
        cluster_log.close()
        if api is not None:
            api.wait(10)
    return {
        "ticks": total,
        "rate": (after - before) / dt,
        "still_writing": writing,
        "load": (min(load), max(load)),
        "latency": {k: _percentiles(v) for k, v in lat.items()},
        "requests": requests,
    }


def main() -> int:
    args = options(
        {"baseline": "another checkout (with its .venv) whose flow runs interleaved"},
        trades=1_000_000,
        repeats=3,
        api_ticks=10_000_000,
        requests=1000,
        skip_api=False,
        api_only=False,
        baseline=None,
    )
    work = Path(tempfile.mkdtemp(prefix="ticklens-bench-cluster-"))
    pg = PgServer(durable=True)
    try:
        print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
        results = [] if args.api_only else throughput(work, pg, args.trades, args.repeats, args.baseline)
        by = {r["name"]: r for r in results}
        load = by.pop("_load", {}).get("load")
        results = [r for r in results if r["name"] != "_load"]
        print(
            "\n| run | ticks/s (median) | runs | peak RSS MB | CPU s: flow + server (median) | of the cores |"
            "\n|---|---:|---|---:|---|---:|"
        )
        for r in results:
            runs = ", ".join(f"{x:,.0f}" for x in r["runs"])
            c = r.get("cpu")
            cpu_cols = f"{c[0]:.1f} + {c[1]:.1f} | {c[2]:.0%}" if c else "– | –"
            print(f"| {r['name']} | {r['rate']:,.0f} | {runs} | {r['rss']:.0f} | {cpu_cols} |")
        if load:
            print(f"\nload average (1 min) during the runs: {load[0]:.1f}-{load[1]:.1f} on {os.cpu_count()} CPUs")
        if results:
            one, two = by["postgres 1 process"]["rate"], by["postgres 2 processes"]["rate"]
            lim1 = by["COPY+upsert limit, 1 connection"]["rate"]
            lim2 = by["COPY+upsert limit, 2 connections"]["rate"]
            print(
                f"\n1 process / limit (1 connection): {one / lim1:.2f}; 2 processes / limit (2 connections): {two / lim2:.2f}"
            )
            print(
                f"2 processes / 1 process: {two / one:.2f}x; postgres 1 process / sqlite: {one / by['sqlite 1 process']['rate']:.2f}"
            )
            lb1 = by["COPY+upsert limit + bars, 1 connection"]["rate"]
            lb2 = by["COPY+upsert limit + bars, 2 connections"]["rate"]
            print(
                f"with the bars in the limit too: 1 process / limit {one / lb1:.2f}; 2 processes / limit {two / lb2:.2f}"
            )
            print("\nless each run's fixed cost (the same run on 2,000 trades):")
            for r in results:
                if "net" in r:
                    print(
                        f"  {r['name']}: fixed {r['fixed']:.2f} s and {r['fixed_cpu'][0]:.1f} + {r['fixed_cpu'][1]:.1f}"
                        f" CPU s, {r['net']:,.0f} ticks/s"
                    )
            if "postgres 1 process (baseline)" in by:
                for k in ("postgres 1 process", "postgres 2 processes"):
                    b = by[f"{k} (baseline)"]
                    print(
                        f"{k}: this tree / baseline {by[k]['rate'] / b['rate']:.2f}x"
                        f" (less the fixed costs {by[k]['net'] / b['net']:.2f}x)"
                    )
            n1, n2 = by["postgres 1 process"]["net"], by["postgres 2 processes"]["net"]
            print(
                f"  1 process / limit {n1 / lim1:.2f} (with bars {n1 / lb1:.2f}); 2 processes / limit {n2 / lim2:.2f}"
                f" (with bars {n2 / lb2:.2f}); 2 processes / 1 process {n2 / n1:.2f}x"
            )
        if not args.skip_api:
            api = api_latency(work, pg, args.api_ticks, args.requests)
            print(
                f"\nAPI: {api['ticks']:,} ticks stored; cluster writing {api['rate']:,.0f} ticks/s during the run"
                f" (still writing at the end: {api['still_writing']}); load {api['load'][0]:.1f}-{api['load'][1]:.1f}"
            )
            print("| request | p50 ms | p90 ms | p99 ms |\n|---|---:|---:|---:|")
            for k, (p50, p90, p99) in api["latency"].items():
                print(f"| `{k}` | {p50:.2f} | {p90:.2f} | {p99:.2f} |")
    finally:
        pg.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
