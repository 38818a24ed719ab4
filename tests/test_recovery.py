"""Crash recovery and graceful stop: a SIGKILLed flow restarted from its snapshots stores exactly what an uninterrupted run stores."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flow_support import ROOT, btc_2020_config, query, run_flow, store_dump, wait_for_rows


def _cfg(tmp: Path, speed: float | None = None, **extra: object) -> Path:
    return btc_2020_config(
        tmp,
        source={"batch_rows": 1500, **({} if speed is None else {"speed": speed})},
        recovery={"enabled": True, "snapshot_interval_s": 0.2},
        **extra,
    )


def _start(config: Path) -> subprocess.Popen:
    env = dict(os.environ, TICKLENS_CONFIG=str(config), TICKLENS_QUIET="1")
    return subprocess.Popen(
        [sys.executable, "-m", "flows.runner"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )


def test_sigkill_at_a_random_point_then_restart_gives_the_uninterrupted_store(tmp_path: Path) -> None:
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    res = run_flow(_cfg(ref_dir), "--no-recovery")
    assert res.returncode == 0, res.stderr[-2000:]
    reference = store_dump(ref_dir / "ticklens.db")
    assert len(reference["ticks"]) == 100_311

    run_dir = tmp_path / "crash"
    run_dir.mkdir()
    # Paced (the hour in ~6 s): at full speed a starved test process could poll past the kill point.
    cfg = _cfg(run_dir, speed=600)
    db = run_dir / "ticklens.db"
    kill_at = random.Random(os.getpid()).randint(10_000, 80_000)
    proc = _start(cfg)
    wait_for_rows(proc, db, "ticks", kill_at, 60, "the flow")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    partial = query(db, "SELECT COUNT(*) FROM ticks")[0][0]
    assert partial < len(reference["ticks"])

    res = run_flow(cfg)  # same config: resumes from the recovery snapshots
    assert res.returncode == 0, res.stderr[-2000:]
    assert store_dump(db) == reference


def test_sigterm_stops_gracefully_with_everything_flushed(tmp_path: Path) -> None:
    cfg = btc_2020_config(tmp_path, source={"speed": 600}, recovery={"enabled": False})
    db = tmp_path / "ticklens.db"
    proc = _start(cfg)
    wait_for_rows(proc, db, "ticks", 2_000, 60, "the flow")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    # Every stored tick is in its bars: nothing was half written.
    n_ticks = query(db, "SELECT COUNT(*) FROM ticks")[0][0]
    n_in_bars = query(db, "SELECT SUM(messages) FROM bars WHERE timeframe='1s'")[0][0]
    assert n_ticks == n_in_bars > 0


def test_full_store_stops_the_flow_with_a_clear_error_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    cfg = btc_2020_config(
        tmp_path,
        source={"batch_rows": 2000},
        store={"path": str(tmp_path / "ticklens.db"), "max_size_mb": 2},
        recovery={"enabled": False},
    )
    res = run_flow(cfg)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert "StoreWriteError" in last and "database or disk is full" in last and "rolled back whole" in last
    db = tmp_path / "ticklens.db"
    n = query(db, "SELECT COUNT(*) FROM ticks")[0][0]
    assert 0 < n < 100_311
    # Whole batches only: the stored ticks are exactly the ones the stored bars were built from.
    assert query(db, "SELECT SUM(messages) FROM bars WHERE timeframe='1s'")[0][0] == n
    assert query(db, "SELECT MAX(trade_id) - MIN(trade_id) + 1 - COUNT(*) FROM ticks")[0][0] in (
        0,
        1,
    )  # one id is missing in the source

    # With room again, the same replay completes the store without duplicating anything.
    cfg.write_text(cfg.read_text().replace("max_size_mb: 2", "max_size_mb: 200"))
    assert run_flow(cfg).returncode == 0
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT trade_id) FROM ticks")[0] == (100_311, 100_311)


def test_a_really_full_disk_stops_the_flow_clearly_and_loses_nothing(tmp_path: Path) -> None:
    """The store on a 6 MB tmpfs: the disk itself fills (ENOSPC), not a size cap."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root in a privileged sandbox)")
    try:
        cfg = btc_2020_config(
            tmp_path,
            source={"batch_rows": 2000},
            store={"path": str(mnt / "ticklens.db")},
            recovery={"enabled": False},
        )
        db = mnt / "ticklens.db"
        res = run_flow(cfg)
        assert res.returncode == 1
        last = res.stderr.strip().splitlines()[-1]
        assert "StoreWriteError" in last and "full" in last and "rolled back whole" in last, last
        subprocess.run(["mount", "-o", "remount,size=256m", str(mnt)], check=True)
        n = query(db, "SELECT COUNT(*) FROM ticks")[0][0]
        assert 0 < n < 100_311
        assert query(db, "SELECT SUM(messages) FROM bars WHERE timeframe='1s'")[0][0] == n  # whole batches only
        assert run_flow(cfg).returncode == 0  # room again: the same replay completes, nothing twice
        assert query(db, "SELECT COUNT(*), COUNT(DISTINCT trade_id) FROM ticks")[0] == (100_311, 100_311)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
