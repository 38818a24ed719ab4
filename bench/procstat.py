"""What a benchmarked process cost: its peak resident memory, read from /proc while it runs."""

from __future__ import annotations

from pathlib import Path


def peak_rss_mb(pid: int) -> float:
    """VmHWM (the kernel's high-water mark of RSS) of a live process in MB; 0.0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
