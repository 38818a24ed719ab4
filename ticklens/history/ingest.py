"""`ticklens history ingest`: the downloaded archive files replayed into the configured store.

The files (`ticklens.ingest.archive.local_files`: one per day, a month's monthly file when
present, REST-filled days for aggTrades) go through the normal flow (`flows.dataflow.build_flow`
over a replay source at `speed: max`, run by `flows.runner.run`): dedup, bars, analytics and
alerts exactly as live, merged across symbols in event time by the replay reader. The pipeline
file gives the store and the flow's settings; the symbols and the source are the command's.

Resumable: the run keeps bytewax recovery snapshots (every 30 s by default, `--snapshot-every`: an
epoch's end waits for the store's writer, so bulk ingest takes long epochs) in a directory of its own, named after
everything the run depends on (store, settings, the files with their sizes and times), beside
the live flow's (`<recovery dir>-ingest/<job>/`). Killed (even with SIGKILL) or stopped with
Ctrl-C, the same command resumes from the last snapshot; what was written after it is written
again, and the store's writes are idempotent by natural key, so nothing is stored twice. A
finished run removes its directory; running it again replays everything into the same rows.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ticklens.config import Config
from ticklens.ingest.archive import local_files

TRADE_KINDS = ("aggTrades", "trades")


@dataclass(slots=True)
class IngestPlan:
    cfg: Config  # the flow's configuration
    files: dict[str, list[Path]]  # per symbol (upper case), oldest first
    missing_days: dict[str, list[date]]  # days of the range without a file
    recovery_dir: Path

    @property
    def paths(self) -> list[Path]:
        return [p for ps in self.files.values() for p in ps]


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


SNAPSHOT_EVERY_S = 30.0  # an epoch's end drains the store's writer: fewer, longer epochs for bulk ingest


def flow_config(
    base: Config, symbols: list[str], paths: list[Path], recovery_dir: Path, snapshot_s: float = SNAPSHOT_EVERY_S
) -> Config:
    """`base` (the pipeline file) with a replay of `paths` for `symbols`, recovery in `recovery_dir`.

    Pairs and correlation keep only what the symbols can feed; the store, bars, statistics,
    timeframes and alerts settings stay the pipeline's.
    """
    syms = [s.lower() for s in symbols]
    raw: dict[str, Any] = base.model_dump()
    raw["symbols"] = syms
    # One replay partition: the reader merges every file in event time, across symbols.
    raw["source"] = {
        "kind": "replay",
        "paths": [str(p) for p in paths],
        "speed": "max",
        "batch_rows": base.source.batch_rows,
        "partitions": 1,
    }
    raw["pairs"] = [p for p in raw["pairs"] if set(p["legs"]) <= set(syms)]
    corr = raw.get("correlation")
    if corr:
        corr["symbols"] = [s for s in corr["symbols"] if s in syms]
        if len(corr["symbols"]) < 2:
            raw["correlation"] = None
    raw["recovery"] = {**raw["recovery"], "enabled": True, "directory": recovery_dir, "snapshot_interval_s": snapshot_s}
    raw["backfill"] = {**raw["backfill"], "enabled": False}  # the archive is the source of truth
    return Config.model_validate(raw)


def _job_key(cfg: Config, paths: list[Path]) -> str:
    """Everything a resumed run must share with the interrupted one: settings and exact input files."""
    files = []
    for p in paths:
        st = p.stat()
        files.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    text = cfg.model_dump_json(exclude={"recovery"}) + json.dumps(files)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_ingest(
    base: Config,
    root: Path,
    symbols: list[str],
    data: str,
    start: date,
    end: date,
    snapshot_s: float = SNAPSHOT_EVERY_S,
) -> IngestPlan:
    if data not in TRADE_KINDS:
        raise ValueError(f"--data {data}: ingest replays trades or aggTrades (klines-1m are for `verify`)")
    files: dict[str, list[Path]] = {}
    missing: dict[str, list[date]] = {}
    for sym in symbols:
        found = local_files(root, sym, data, start, end, rest=data == "aggTrades")
        files[sym] = [p for _, p in found]
        covered = {
            f.first_day + timedelta(days=i) for f, _ in found for i in range((f.last_day - f.first_day).days + 1)
        }
        missing[sym] = [d for d in _days(start, end) if d not in covered]
    paths = [p for ps in files.values() for p in ps]
    base_dir = base.recovery_dir.with_name(base.recovery_dir.name + "-ingest")
    probe = flow_config(base, symbols, paths, base_dir, snapshot_s)
    recovery_dir = base_dir / _job_key(probe, paths)
    return IngestPlan(flow_config(base, symbols, paths, recovery_dir, snapshot_s), files, missing, recovery_dir)


def run_ingest(plan: IngestPlan) -> int:
    """Run the flow over the plan's files. 0 done, 1 the flow failed, 130 interrupted (rerun resumes)."""
    from flows.runner import run
    from flows.shutdown import STOP

    resumed = (plan.recovery_dir / "part-0.sqlite3").exists()
    if resumed:
        print(f"resuming the interrupted ingest from {plan.recovery_dir}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    code = run(plan.cfg, 1, plan.recovery_dir)
    elapsed = time.perf_counter() - t0
    if code != 0:
        print(f"ingest failed; rerun the same command to resume from {plan.recovery_dir}", file=sys.stderr)
        return code
    if STOP.is_set():
        print(f"ingest interrupted; rerun the same command to resume ({plan.recovery_dir})", file=sys.stderr)
        return 130
    shutil.rmtree(plan.recovery_dir, ignore_errors=True)
    size = sum(p.stat().st_size for p in plan.paths)
    print(f"ingested {len(plan.paths)} files ({size / 1e6:,.1f} MB) in {elapsed:.1f} s into {plan.cfg.store.location}")
    if plan.cfg.store.hot_days is not None:
        tier_rest(plan.cfg)
    return 0


def tier_rest(cfg: Config) -> None:
    """What the flow's own tier thread had no time for: days older than store.hot_days to Parquet now."""
    from storage import open_store
    from storage.tier_out import tier_out

    assert cfg.store.hot_days is not None
    store = open_store(cfg.store)
    t0 = time.perf_counter()
    try:
        moved = tier_out(store, cfg.store.cold_path, cfg.store.hot_days, cfg.symbols)
    finally:
        store.close()
    if moved:
        rows = sum(m.rows for m in moved)
        print(
            f"moved {rows:,} ticks of {len(moved)} symbol-days older than {cfg.store.hot_days} days to "
            f"{cfg.store.cold_path} in {time.perf_counter() - t0:.1f} s (store.hot_days)"
        )
