"""Runs the dataflow with recovery on by default (`python -m flows.runner`).

`python -m bytewax.run flows` works too; this adds the recovery directory next
to the store and a clear message for a bad config. The recovery store is made
so that a start can always go on: it is initialised in a temporary directory
and renamed into place (so it is complete or absent), and one found
half-initialised (an interrupted or disk-full start of an older version, a
part file deleted or emptied) is moved aside with a message and made anew. A
full disk names the directory that is full. Files the flow creates are
private to its user (umask 077: store, recovery and recording files 0600,
directories 0700).
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import sqlite3
import sys
import time
from datetime import timedelta
from pathlib import Path

from bytewax.errors import BytewaxRuntimeError
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from flows.dataflow import build_flow
from flows.shutdown import STOP
from ticklens.config import ConfigError, load_config


def _request_stop(signum: int, frame: object) -> None:
    if STOP.is_set():
        raise KeyboardInterrupt
    print("[ticklens] stopping: draining the flow (signal again to stop at once)", file=sys.stderr, flush=True)
    STOP.set()


def _root_cause(e: BaseException) -> str:
    """Bytewax wraps a step's exception in layers of context: name ours, else the innermost."""
    chain = [e]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 50:
        chain.append(nxt)
    ours = [x for x in chain if type(x).__module__.split(".")[0] in ("flows", "storage", "ticklens")]
    pick = ours[0] if ours else chain[-1]
    return f"{type(pick).__name__}: {pick}"


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
            conn = sqlite3.connect(f"file:{f}?mode=ro", uri=True, timeout=5)
            try:
                index, count = conn.execute("SELECT part_index, part_count FROM parts").fetchone()
            finally:
                conn.close()
        except (sqlite3.Error, TypeError) as e:
            return f"{f.name} is not a recovery part ({e or 'no parts row'})"
        if f.name != f"part-{index}.sqlite3":
            return f"{f.name} holds part {index}"
        seen[index] = count
    counts = set(seen.values())
    if len(counts) != 1 or set(seen) != set(range(counts.pop())):
        return f"its parts {sorted(seen)} do not make a set of {max(seen.values())}"
    return None


def _has_snapshots(rdir: Path) -> bool:
    for f in rdir.glob("part-*.sqlite3"):
        try:
            conn = sqlite3.connect(f"file:{f}?mode=ro", uri=True, timeout=5)
            try:
                if conn.execute("SELECT EXISTS (SELECT 1 FROM snaps)").fetchone()[0]:
                    return True
            finally:
                conn.close()
        except sqlite3.Error:
            continue
    return False


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
    return f"the disk is full: {_free_space(*dirs)} ({text.splitlines()[0][:200]})"


def _free_space(*paths: Path) -> str:
    where = []
    for d in paths:
        probe = d if d.exists() else d.parent
        try:
            where.append(f"{d} ({shutil.disk_usage(probe).free / 1e6:.1f} MB free)")
        except OSError:
            where.append(str(d))
    return ", ".join(where)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flows.runner")
    parser.add_argument("-w", "--workers", type=int, default=1)
    parser.add_argument("--no-recovery", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = load_config()
    except ConfigError as e:
        print(f"ticklens: {e}", file=sys.stderr)
        return 2
    os.umask(0o077)  # store, recovery and recording files: readable by this user only
    flow = build_flow(cfg)
    recovery = None
    rdir = cfg.recovery_dir
    if cfg.recovery.enabled and not args.no_recovery:
        try:
            prepare_recovery(rdir)
        except RecoveryError as e:
            print(f"ticklens: {e}", file=sys.stderr, flush=True)
            return 1
        recovery = RecoveryConfig(str(rdir))
    interval = timedelta(seconds=cfg.recovery.snapshot_interval_s)
    # SIGINT/SIGTERM end the input: the flow drains, sinks flush and close, exit 0.
    # A second signal stops at once (the open batch is rolled back whole).
    # (Setting the handler also undoes a SIG_IGN inherited from a shell's background job.)
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    try:
        cli_main(flow, workers_per_process=args.workers, epoch_interval=interval, recovery_config=recovery)
    except KeyboardInterrupt:
        print("[ticklens] flow stopped by signal", file=sys.stderr, flush=True)
    except Exception as e:  # noqa: BLE001 (one clear line after bytewax's own traceback)
        # Ctrl-C / SIGINT: bytewax stops the workers (sinks are closed) and raises "signal received".
        if isinstance(e, BytewaxRuntimeError) and "signal received" in str(e):
            print("[ticklens] flow stopped by signal", file=sys.stderr, flush=True)
            return 0
        cause = _root_cause(e)
        if "disk is full" in cause or "No space left" in cause:
            dirs = [cfg.store.path, *([rdir] if recovery is not None else [])]
            cause = f"{cause} [the disk is full: {_free_space(*dirs)}]"
        print(f"ticklens: the flow stopped on an error: {cause}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
