"""What a benchmarked process cost (its peak resident memory, read from /proc while it runs), and
the one way the benches run and time a flow process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml


def peak_rss_mb(pid: int) -> float:
    """VmHWM (the kernel's high-water mark of RSS) of a live process in MB; 0.0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def timed_flow(work: Path, cfg: dict, cwd: Path) -> dict:
    """Write `cfg` as the flow's config in `work`, run one `python -m flows.runner --no-recovery`
    from `cwd` (the checkout whose code runs) and time it from process start to exit.

    Returns wall and CPU seconds (the child's user + system) and its peak RSS in MB.
    """
    conf = work / "bench.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, TICKLENS_CONFIG=str(conf), TICKLENS_QUIET="1")
    t0, c0 = time.perf_counter(), os.times()
    proc = subprocess.Popen([sys.executable, "-m", "flows.runner", "--no-recovery"], cwd=cwd, env=env)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, peak_rss_mb(proc.pid))
        time.sleep(0.05)
    wall, c1 = time.perf_counter() - t0, os.times()
    assert proc.returncode == 0, f"flow failed ({proc.returncode})"
    cpu = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak}


def fresh_db(work: Path, name: str = "bench.db") -> Path:
    """The path of an empty store in `work` (any earlier one and its -wal/-shm removed)."""
    for f in work.glob(f"{name}*"):
        f.unlink()
    return work / name
