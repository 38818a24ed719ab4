"""The bytewax recovery store, made so that a start can always go on.

It is initialised in a temporary directory and renamed into place, so it is
complete or absent. One found half-initialised (an interrupted or disk-full
start of an older version, a part file deleted or emptied, foreign files) is
repaired with a message: moved aside if it holds snapshots, else removed, and
made anew (the store's natural keys keep ticks and bars exact; a replay starts
again from the top of its files). A full disk names the directory.

bytewax keeps its recovery parts in SQLite files; what each says it is comes from
`storage.sqlite.recovery_parts` (the one place that opens SQLite files).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from pathlib import Path

from bytewax.recovery import init_db_dir

from storage.sqlite.recovery_parts import holds_snapshots, recovery_part


class RecoveryError(RuntimeError):
    """The recovery store cannot be prepared (the message names the directory and the cause)."""


def recovery_problem(rdir: Path) -> str | None:
    """What makes `rdir` not a complete bytewax recovery store (None: it is one)."""
    if not rdir.is_dir():
        return "it is not a directory"
    files = sorted(rdir.glob("part-*.sqlite3"))
    if not files:
        return "it holds no part files"
    seen: dict[int, int] = {}
    for f in files:
        if f.stat().st_size == 0:
            return f"{f.name} is empty"
        try:
            index, count = recovery_part(f)
        except ValueError as e:
            return f"{f.name} is not a recovery part ({e})"
        if f.name != f"part-{index}.sqlite3":
            return f"{f.name} holds part {index}"
        seen[index] = count
    counts = set(seen.values())
    if len(counts) != 1 or set(seen) != set(range(counts.pop())):
        return f"its parts {sorted(seen)} do not make a set of {max(seen.values())}"
    return None


def _has_snapshots(rdir: Path) -> bool:
    return any(holds_snapshots(f) for f in rdir.glob("part-*.sqlite3"))


def prepare_recovery(rdir: Path, parts: int = 1) -> None:
    """Make `rdir` a complete recovery store: keep a good one, init a missing one atomically
    (temp dir, then rename), move a broken one aside (or drop it if it holds no snapshot)."""
    if rdir.exists():
        problem = recovery_problem(rdir)
        if problem is None:
            return
        if rdir.is_dir() and _has_snapshots(rdir):
            aside = rdir.with_name(f"{rdir.name}.broken-{time.strftime('%Y%m%dT%H%M%S')}")
            rdir.rename(aside)
            what = f"moved aside to {aside}"
        else:
            if rdir.is_dir():
                shutil.rmtree(rdir)
            else:
                rdir.unlink()
            what = "it held no snapshot; removed"
        print(
            f"[ticklens] recovery store {rdir} was half-initialised ({problem}); {what}; starting a new one"
            " (the store's keys keep ticks and bars exact: a replay starts again from the top of its files)",
            file=sys.stderr,
            flush=True,
        )
    rdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = rdir.with_name(f".{rdir.name}.init-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(mode=0o700)
        init_db_dir(tmp, parts)
        os.replace(tmp, rdir)
    except BaseException as e:  # bytewax reports a full disk as a Rust panic (a BaseException)
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise RecoveryError(f"cannot initialise the recovery store in {rdir}: {_disk_hint(e, rdir)}") from None


def _disk_hint(e: BaseException, *dirs: Path) -> str:
    """The error, and for a full disk which of the directories it is and how much is free."""
    text = str(e)
    full = "disk is full" in text or "No space left" in text or getattr(e, "errno", None) == errno.ENOSPC
    if not full:
        return f"{type(e).__name__}: {text}"
    return f"the disk is full: {free_space(*dirs)} ({text.splitlines()[0][:200]})"


def free_space(*paths: Path) -> str:
    where = []
    for d in paths:
        probe = d if d.exists() else d.parent
        try:
            where.append(f"{d} ({shutil.disk_usage(probe).free / 1e6:.1f} MB free)")
        except OSError:
            where.append(str(d))
    return ", ".join(where)
