"""Runs the dataflow with recovery on by default (`python -m flows.runner`).

`python -m bytewax.run flows` works too; this adds the recovery directory next
to the store (made so that a start can always go on: `flows.recovery`) and a
clear message for a bad config or a full disk (naming the directory that is
full). Files the flow creates are private to its user (umask 077: store,
recovery and recording files 0600, directories 0700).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

from bytewax.errors import BytewaxRuntimeError
from bytewax.recovery import RecoveryConfig
from bytewax.run import cli_main

from flows.dataflow import build_flow
from flows.recovery import RecoveryError, free_space, prepare_recovery
from flows.shutdown import STOP
from ticklens.config import Config, ConfigError, load_config


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
    recovery = cfg.recovery_dir if cfg.recovery.enabled and not args.no_recovery else None
    return run(cfg, args.workers, recovery)


def run(cfg: Config, workers: int = 1, recovery_dir: Path | None = None) -> int:
    """Build the flow for `cfg` and run it here until its input ends (or a signal stops it).

    `recovery_dir`: snapshots there (created on first use), resumed from when it holds some.
    Exit code 0 also after a graceful stop: `STOP.is_set()` tells the caller it was one.
    """
    os.umask(0o077)  # store, recovery and recording files: readable by this user only
    flow = build_flow(cfg)
    recovery = None
    if recovery_dir is not None:
        try:
            prepare_recovery(recovery_dir)
        except RecoveryError as e:
            print(f"ticklens: {e}", file=sys.stderr, flush=True)
            return 1
        recovery = RecoveryConfig(str(recovery_dir))
    interval = timedelta(seconds=cfg.recovery.snapshot_interval_s)
    # SIGINT/SIGTERM end the input: the flow drains, sinks flush and close, exit 0.
    # A second signal stops at once (the open batch is rolled back whole).
    # (Setting the handler also undoes a SIG_IGN inherited from a shell's background job.)
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    try:
        cli_main(flow, workers_per_process=workers, epoch_interval=interval, recovery_config=recovery)
    except KeyboardInterrupt:
        print("[ticklens] flow stopped by signal", file=sys.stderr, flush=True)
    except Exception as e:  # noqa: BLE001 (one clear line after bytewax's own traceback)
        # Ctrl-C / SIGINT: bytewax stops the workers (sinks are closed) and raises "signal received".
        if isinstance(e, BytewaxRuntimeError) and "signal received" in str(e):
            print("[ticklens] flow stopped by signal", file=sys.stderr, flush=True)
            return 0
        cause = _root_cause(e)
        if "disk is full" in cause or "No space left" in cause:
            dirs = [cfg.store.path, *([recovery_dir] if recovery_dir is not None else [])]
            cause = f"{cause} [the disk is full: {free_space(*dirs)}]"
        print(f"ticklens: the flow stopped on an error: {cause}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
