"""History ingest throughput from archive zips against a bare insert of the same ticks, and the tier-out.

    .venv/bin/python bench/bench_ingest.py --days 3 --hours 8 --repeats 3

Input: `--days` daily `trades` zips per symbol (BTCUSDT, ETHUSDT) in the archive's layout, each day
the first `--hours` hours of its own UTC day made of time- and id-shifted copies of the bundled
real hour (bench/synth.py: ~100,000 trades an hour). Each repeat, interleaved so both see the same
machine load:

- ingest: `ticklens history ingest` in a fresh process into a fresh store (recovery on, as users run
  it; `store.hot_days: null` so no tier-out runs), timed from spawn to exit (imports, schema, the
  flow: ticks + bars 1s/1m/5m + 1m/5m symbol statistics); peak RSS from /proc;
- limit: the same ticks (read from the same zips beforehand) written into a fresh store of the same
  layout by the store's own batched INSERT (`StoreWriter.prepare` + `write`, 50,000 ticks a
  transaction), only the writes timed: the machine's bare insert rate. The store inserts ticks in C
  when it can (storage/sqlite/ticks.py): then so does the limit.

With `--python-insert`, each repeat also runs both with `TICKLENS_SQLITE_C_TICKS=0` (Python's
sqlite3 binding the ticks, as before the C insert), so one run reports both fractions: the ingest
against the store's limit, and against the Python-binding limit.

Then, once: `ticklens store tier-out --hot-days 1` on the last ingested store (every day but the
newest moves to Parquet), timed from spawn to exit, and the bytes per million ticks of the bare
insert's store (ticks only, checkpointed) and of the Parquet files.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procstat import fresh_db, peak_rss_mb  # noqa: E402
from bench.synth import shifted_archive_days  # noqa: E402
from storage.port import StoreBatch  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402
from ticklens.domain.records import Trades  # noqa: E402

SYMBOLS = ("BTCUSDT", "ETHUSDT")
BATCH = 50_000


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, peak_rss_mb(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    out, err = proc.communicate()
    return wall, peak, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _config(work: Path, archive: Path, hot_days: int | None = None) -> Path:
    db = fresh_db(work, "ingest.db")
    cfg = {
        "symbols": [s.lower() for s in SYMBOLS],
        "source": {"kind": "replay", "paths": ["unused.csv"]},
        "store": {"path": str(db), "hot_days": hot_days, "cold_dir": str(work / "cold")},
        "history": {"dir": str(archive)},
        "timeframes": ["1s", "1m", "5m"],
        "recovery": {"directory": str(work / "recovery")},
    }
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _c_ticks_env(python: bool) -> dict[str, str]:
    return {"TICKLENS_SQLITE_C_TICKS": "0" if python else "1"}


def ingest(work: Path, archive: Path, first: str, last: str, python: bool = False) -> dict:
    config = _config(work, archive)
    cmd = [sys.executable, "-m", "ticklens.cli", "--config", str(config), "history", "ingest"]
    cmd += ["--symbols", ",".join(SYMBOLS), "--data", "trades", "--from", first, "--to", last]
    wall, peak, res = _timed(cmd, dict(os.environ, TICKLENS_QUIET="1", **_c_ticks_env(python)))
    assert res.returncode == 0, res.stdout + res.stderr
    with sqlite3.connect(work / "ingest.db") as conn:
        n = conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
        bars = conn.execute("SELECT COUNT(*) FROM bars").fetchone()[0]
    return {"trades": n, "bars": bars, "wall_s": wall, "trades_per_s": n / wall, "peak_rss_mb": peak}


def read_zips(archive: Path) -> list[Trades]:
    """Every zip's ticks as the flow would store them, in batches of BATCH (read before the timing)."""
    out = []
    for sym in SYMBOLS:
        for z in sorted(archive.rglob(f"{sym}-trades-*.zip")):
            with zipfile.ZipFile(z) as zf:
                t = pacsv.read_csv(
                    pa.py_buffer(zf.read(zf.namelist()[0])),
                    convert_options=pacsv.ConvertOptions(column_types={"price": pa.float64(), "qty": pa.float64()}),
                )
            tr = Trades.from_columns(
                sym.lower(),
                trade_id=t["id"].to_numpy(),
                ts_ms=t["time"].to_numpy(),
                price=t["price"].to_numpy(),
                qty=t["qty"].to_numpy(),
                is_buyer_maker=np.asarray(t["is_buyer_maker"].to_numpy(zero_copy_only=False), dtype=bool),
            )
            out += [tr.take(np.arange(i, min(i + BATCH, len(tr)))) for i in range(0, len(tr), BATCH)]
    return out


def insert_limit(work: Path, batches: list[Trades], python: bool = False) -> dict:
    db = fresh_db(work, "limit.db")
    os.environ.update(_c_ticks_env(python))  # read when the writer opens its connection
    writer = SqliteStore(db).writer()
    assert writer.c_ticks is not python, "the store cannot insert ticks in C here (see its warning)"
    t0 = time.perf_counter()
    for trades in batches:
        writer.write(writer.prepare(StoreBatch(ticks=[trades])))
    dt = time.perf_counter() - t0
    writer.close()
    n = sum(len(b) for b in batches)
    return {"trades": n, "insert_s": dt, "trades_per_s": n / dt}


def ticks_bytes(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--hours", type=int, default=8, help="hours of trades per day (~100,000 trades an hour)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--python-insert", action="store_true", help="also measure both with Python binding the ticks")
    args = ap.parse_args()
    assert args.days >= 3, "tier-out --hot-days 1 moves the days ending a day before the newest trade: give 3 or more"
    work = args.work or Path(tempfile.mkdtemp(prefix="ticklens-bench-ingest-"))
    site = work / "site"
    for sym in SYMBOLS:
        shifted_archive_days(site, args.days, sym, hours=args.hours)
    archive = site / "data"
    first, last = "2020-12-09", f"2020-12-{8 + args.days:02d}"
    batches = read_zips(archive)
    runs, limits, py_runs, py_limits = [], [], [], []
    for _ in range(args.repeats):
        runs.append(ingest(work, archive, first, last))
        limits.append(insert_limit(work, batches))
        if args.python_insert:
            py_runs.append(ingest(work, archive, first, last, python=True))
            py_limits.append(insert_limit(work, batches, python=True))
    os.environ.pop("TICKLENS_SQLITE_C_TICKS", None)
    assert all(r["trades"] == limits[0]["trades"] for r in runs + py_runs)

    # Tier-out of the last ingested store (either insert stores the same rows): every day but the newest.
    for f in (work / "cold").rglob("*"):
        if f.is_file():
            f.unlink()
    tier_cfg = work / "pipeline.yaml"
    cmd = [sys.executable, "-m", "ticklens.cli", "--config", str(tier_cfg), "store", "tier-out", "--hot-days", "1"]
    wall, peak, res = _timed(cmd, dict(os.environ))
    assert res.returncode == 0, res.stdout + res.stderr
    parquet = sum(f.stat().st_size for f in (work / "cold").rglob("*.parquet"))
    with sqlite3.connect(work / "ingest.db") as conn:
        left = conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
    moved = runs[-1]["trades"] - left
    sqlite_bytes = ticks_bytes(work / "limit.db")

    med = statistics.median(r["trades_per_s"] for r in runs)
    lim = statistics.median(r["trades_per_s"] for r in limits)
    out = {
        "trades": runs[0]["trades"],
        "bars": runs[0]["bars"],
        "ingest_trades_per_s_median": round(med),
        "ingest_runs": [round(r["trades_per_s"]) for r in runs],
        "ingest_wall_s": [round(r["wall_s"], 2) for r in runs],
        "insert_limit_trades_per_s_median": round(lim),
        "insert_limit_runs": [round(r["trades_per_s"]) for r in limits],
        "fraction_of_limit": round(med / lim, 3),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "tier_out_rows": moved,
        "tier_out_wall_s": round(wall, 2),
        "tier_out_rows_per_s": round(moved / wall),
        "tier_out_peak_rss_mb": round(peak, 1),
        "sqlite_bytes_per_million_ticks": round(sqlite_bytes / limits[-1]["trades"] * 1e6),
        "parquet_bytes_per_million_ticks": round(parquet / moved * 1e6) if moved else None,
        "load_avg": os.getloadavg(),
    }
    if args.python_insert:
        py_med = statistics.median(r["trades_per_s"] for r in py_runs)
        py_lim = statistics.median(r["trades_per_s"] for r in py_limits)
        out |= {
            "python_insert": {
                "ingest_trades_per_s_median": round(py_med),
                "ingest_runs": [round(r["trades_per_s"]) for r in py_runs],
                "insert_limit_trades_per_s_median": round(py_lim),
                "insert_limit_runs": [round(r["trades_per_s"]) for r in py_limits],
                "fraction_of_limit": round(py_med / py_lim, 3),
                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in py_runs), 1),
            },
            "c_ingest_fraction_of_python_limit": round(med / py_lim, 3),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
