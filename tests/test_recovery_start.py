"""A start can always go on: a half-initialised recovery store is repaired with a message, its
initialisation is atomic, and a full disk names the directory (real bytewax recovery files,
a real 6 MB tmpfs for ENOSPC)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir

from tests.flow_support import BTC_2020, query, run_flow, write_config

N_TRADES = 100_311  # BTC_2020, counted in tests/test_recovery.py against the file


def _cfg(tmp: Path, rdir: Path, store: Path | None = None) -> Path:
    return write_config(
        tmp,
        symbols=["btcusdt"],
        source={"paths": [str(BTC_2020)], "batch_rows": 5000},
        store={"path": str(store or tmp / "ticklens.db")},
        recovery={"enabled": True, "directory": str(rdir), "snapshot_interval_s": 0.5},
    )


def _break_empty_part(rdir: Path) -> str:
    rdir.mkdir()
    (rdir / "part-0.sqlite3").touch()  # what an init on a full disk leaves behind
    return "part-0.sqlite3 is empty"


def _break_garbage_part(rdir: Path) -> str:
    rdir.mkdir()
    (rdir / "part-0.sqlite3").write_bytes(b"\x00garbage" * 100)
    return "part-0.sqlite3 is not a recovery part"


def _break_missing_part(rdir: Path) -> str:
    rdir.mkdir()
    init_db_dir(rdir, 2)
    (rdir / "part-1.sqlite3").unlink()
    return "do not make a set"


def _break_no_parts(rdir: Path) -> str:
    rdir.mkdir()
    return "holds no part files"


@pytest.mark.parametrize("breakage", [_break_empty_part, _break_garbage_part, _break_missing_part, _break_no_parts])
def test_a_half_initialised_recovery_store_is_repaired_and_the_flow_completes(tmp_path: Path, breakage) -> None:
    rdir = tmp_path / "recovery"
    problem = breakage(rdir)
    cfg = _cfg(tmp_path, rdir)
    res = run_flow(cfg)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "half-initialised" in res.stderr and problem in res.stderr and str(rdir) in res.stderr
    assert query(tmp_path / "ticklens.db", "SELECT COUNT(*) FROM ticks")[0][0] == N_TRADES
    res = run_flow(cfg)  # the repaired store is a normal one now
    assert res.returncode == 0 and "half-initialised" not in res.stderr, res.stderr[-2000:]
    assert not list(tmp_path.glob(".recovery.init-*"))


def test_a_broken_store_that_holds_snapshots_is_moved_aside_not_deleted(tmp_path: Path) -> None:
    rdir = tmp_path / "recovery"
    cfg = _cfg(tmp_path, rdir)
    assert run_flow(cfg).returncode == 0
    part0 = (rdir / "part-0.sqlite3").read_bytes()
    (rdir / "part-1.sqlite3").touch()
    res = run_flow(cfg)
    assert res.returncode == 0, res.stderr[-2000:]
    (aside,) = tmp_path.glob("recovery.broken-*")
    assert "part-1.sqlite3 is empty" in res.stderr and str(aside) in res.stderr
    assert (aside / "part-0.sqlite3").read_bytes() == part0
    assert query(tmp_path / "ticklens.db", "SELECT COUNT(*), COUNT(DISTINCT trade_id) FROM ticks")[0] == (
        N_TRADES,
        N_TRADES,
    )


@pytest.fixture
def full_tmpfs(tmp_path: Path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root in a privileged sandbox)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path, leave_kb: int = 0) -> Path:
    fill = mnt / "fill"
    subprocess.run(["dd", "if=/dev/zero", f"of={fill}", "bs=1k", "count=7000"], capture_output=True)
    if leave_kb:
        subprocess.run(["truncate", "-s", f"-{leave_kb}k", str(fill)], check=True)
    return fill


def test_a_full_recovery_disk_at_start_names_the_directory_and_leaves_nothing_half_made(
    tmp_path: Path, full_tmpfs: Path
) -> None:
    fill = _fill(full_tmpfs)
    rdir = full_tmpfs / "recovery"
    cfg = _cfg(tmp_path, rdir)
    res = run_flow(cfg)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert f"cannot initialise the recovery store in {rdir}" in last and "the disk is full" in last, last
    assert "MB free" in last
    assert not rdir.exists() and not list(full_tmpfs.glob(".recovery.init-*"))
    fill.unlink()  # room again: the same start initialises and completes
    res = run_flow(cfg)
    assert res.returncode == 0, res.stderr[-2000:]
    assert query(tmp_path / "ticklens.db", "SELECT COUNT(*) FROM ticks")[0][0] == N_TRADES


def test_a_recovery_disk_filling_during_the_run_names_it_and_a_restart_completes(
    tmp_path: Path, full_tmpfs: Path
) -> None:
    fill = _fill(full_tmpfs, leave_kb=120)  # room for the init, not for many snapshots
    rdir = full_tmpfs / "recovery"
    cfg = write_config(
        tmp_path,
        symbols=["btcusdt"],
        source={"paths": [str(BTC_2020)], "batch_rows": 500},
        recovery={"enabled": True, "directory": str(rdir), "snapshot_interval_s": 0.05},
    )
    res = run_flow(cfg)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert "disk is full" in last and f"{rdir} (0.0 MB free)" in last, last
    fill.unlink()
    res = run_flow(cfg)
    assert res.returncode == 0, res.stderr[-2000:]
    db = tmp_path / "ticklens.db"
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT trade_id) FROM ticks")[0] == (N_TRADES, N_TRADES)
