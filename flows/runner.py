"""Runs the dataflow with recovery on by default (`python -m flows.runner`).

`python -m bytewax.run flows` works too; this adds the recovery directory next
to the store (made so that a start can always go on: `flows.recovery`) and a
clear message for a bad config or a full disk (naming the directory that is
full). Files the flow creates are private to its user (umask 077: store,
recovery and recording files 0600, directories 0700).

The flow's own modules (bytewax, the steps, the store) are imported once the config is
read: a replay's recordings start being read in child processes first, on the other core,
while this process spends most of a second importing.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from flows.shutdown import STOP
from ticklens.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow


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


def _recovery_dir(cfg: Config, process_id: int | None, processes: int) -> Path:
    """The recovery directory, created with `recovery.partitions` (default: one per process).

    Process 0 (or a lone process) prepares it (`flows.recovery`: made in a temporary
    directory and renamed into place, so no process sees it half made); the others of a
    cluster wait for it. Every process must open the same directory (one machine: the same
    path; several machines: a shared filesystem).
    """
    from flows.recovery import prepare_recovery, recovery_problem

    rdir = cfg.recovery_dir
    want = cfg.recovery.partitions or processes
    if want < processes and recovery_problem(rdir) is not None:
        raise ConfigError(f"recovery.partitions: {want} is fewer than the {processes} processes of this cluster")
    if process_id in (None, 0):
        prepare_recovery(rdir, want)
    else:
        deadline = time.monotonic() + 120
        while recovery_problem(rdir) is not None:
            if time.monotonic() > deadline:
                raise ConfigError(f"recovery directory {rdir} was not made ready by process 0 within 120 s")
            time.sleep(0.2)
    have = len(list(rdir.glob("part-*.sqlite3")))
    if have < processes:
        print(
            f"[ticklens] recovery directory {rdir} has {have} partition(s) for {processes} processes: it works,"
            " but one process writes every snapshot (a new directory takes recovery.partitions)",
            file=sys.stderr,
            flush=True,
        )
    return rdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flows.runner")
    parser.add_argument("-w", "--workers", type=int, default=1, help="workers per process")
    parser.add_argument("-i", "--process-id", type=int, default=None, help="this process's index in the cluster")
    parser.add_argument(
        "-a", "--addresses", default=None, help='every process\'s host:port, as ONE ";"-separated string'
    )
    parser.add_argument("--no-recovery", action="store_true")
    args = parser.parse_args(argv)
    addresses = args.addresses.split(";") if args.addresses else None
    processes = len(addresses) if addresses else 1
    try:
        cfg = load_config()
    except ConfigError as e:
        print(f"ticklens: {e}", file=sys.stderr)
        return 2
    if addresses:  # before the readers: a cluster's process reads only its own partitions
        from flows import placement

        placement.set_local(args.process_id or 0, args.workers, processes)
    _start_replay_readers(cfg, cfg.recovery.enabled and not args.no_recovery)
    from flows import crash
    from flows.dataflow import build_flow
    from flows.recovery import RecoveryError
    from storage import open_store

    try:
        if addresses and (args.process_id is None or not 0 <= args.process_id < processes):
            raise ConfigError(f"-i/--process-id must be 0 … {processes - 1} with {processes} addresses")
        if processes > 1 and open_store(cfg.store).sink_partitions == "one":
            raise ConfigError(
                f"store.kind {cfg.store.kind!r} has a single writer and cannot take a {processes}-process cluster:"
                " use store: {kind: postgres, url: postgresql://…} (docs/deploy.md), or run one process"
            )
        if processes > 1:
            crash.install()
        os.umask(0o077)  # store, recovery and recording files: readable by this user only
        flow = build_flow(cfg)
        rdir = _recovery_dir(cfg, args.process_id, processes) if cfg.recovery.enabled and not args.no_recovery else None
    except ConfigError as e:
        print(f"ticklens: {e}", file=sys.stderr)
        return 2
    except RecoveryError as e:
        print(f"ticklens: {e}", file=sys.stderr, flush=True)
        return 1
    return _execute(cfg, flow, args.workers, rdir, args.process_id if addresses else None, addresses)


def _young_threshold(cfg: Config) -> int:
    """Net new containers between two young-generation collections.

    A collection walks every young container still alive (~0.5 µs each), and what a flow builds
    up (books, bars, records in flight) is alive: a replay at full speed of the book recordings
    made ~430,000 of them and spent 0.29 s of its 3.1 s in 43 collections at 10,000 that found
    nothing to free (its peak RSS is the same with none). Throughput runs (a replay at `speed:
    max`, which ingest is) collect rarely; live runs keep each pause short (~5 ms).
    """
    return 1_000_000 if cfg.source.kind == "replay" and cfg.source.speed == "max" else 10_000


# Without recovery an epoch only costs: at each boundary Bytewax's input waits until every worker
# has finished the epoch before it reads on, and the sink's snapshot waits for the store. In a
# cluster the workers that are done spin meanwhile (the input re-activates itself at once: in a
# 2-process replay into PostgreSQL one worker thread spent 10.9-11.9 CPU s, the other 3.0,
# docs/performance.md), on the cores the server needs. So without recovery an epoch lasts an hour.
NO_RECOVERY_EPOCH = timedelta(hours=1)


def _epoch_interval(cfg: Config, recovery: bool) -> timedelta:
    """How long an epoch lasts: the snapshot interval with recovery on, else NO_RECOVERY_EPOCH."""
    return timedelta(seconds=cfg.recovery.snapshot_interval_s) if recovery else NO_RECOVERY_EPOCH


def _start_replay_readers(cfg: Config, recovery: bool) -> None:
    """A replay's recordings start being read now, from their beginning (`ingest.replay.start_readers`).

    Only where the flow is sure to start there: no recovery snapshot to resume from. A cluster's
    process reads only the files of its own partitions (the ones `flows.placement` lists in it).
    """
    if cfg.source.kind != "replay" or (recovery and cfg.recovery_dir.exists()):
        return
    from flows.placement import local_parts
    from ticklens.exchange.binance import record_kinds
    from ticklens.ingest.replay import start_readers
    from ticklens.ingest.shards import replay_shards

    paths = [p for shard in local_parts(replay_shards(cfg)) for p in shard.paths]
    start_readers(paths, cfg.source.window_ms, record_kinds(cfg.source.streams))


def _await_lower_peers(process_id: int, addresses: list[str], timeout_s: float = 30.0) -> None:
    """Wait until the processes before this one listen, where they run on this machine.

    Process i connects to processes 0 … i-1 and timely retries a refused connection only after a
    second; on one machine the processes start together and the later ones usually get there
    first (a 2-process replay of 2,000 trades took 2.6 s against 1.1 s). Their listening sockets
    are read from /proc/net/tcp*, without connecting (a probe would be taken for a peer).
    Elsewhere, or after `timeout_s`, timely's own retries take over.
    """
    ports = []
    for addr in addresses[:process_id]:
        host, _, port = addr.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "[::1]", "::1") or not port.isdigit():
            return
        ports.append(int(port))
    deadline = time.monotonic() + timeout_s
    while ports and time.monotonic() < deadline:
        listening = _listening_ports()
        if listening is None:
            return
        ports = [p for p in ports if p not in listening]
        if ports:
            time.sleep(0.01)


def _listening_ports() -> set[int] | None:
    """Local TCP ports in LISTEN state (Linux /proc/net/tcp and tcp6), or None where unreadable."""
    found: set[int] = set()
    try:
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A":
                        found.add(int(parts[1].rpartition(":")[2], 16))
    except (OSError, ValueError, StopIteration):
        return None
    return found


def run(cfg: Config, workers: int = 1, recovery_dir: Path | None = None) -> int:
    """Build the flow for `cfg` and run it in this one process until its input ends (or a signal stops it).

    `recovery_dir`: snapshots there (created on first use), resumed from when it holds some.
    Exit code 0 also after a graceful stop: `STOP.is_set()` tells the caller it was one.
    """
    from flows.dataflow import build_flow
    from flows.recovery import RecoveryError, prepare_recovery

    os.umask(0o077)  # store, recovery and recording files: readable by this user only
    flow = build_flow(cfg)
    if recovery_dir is not None:
        try:
            prepare_recovery(recovery_dir)
        except RecoveryError as e:
            print(f"ticklens: {e}", file=sys.stderr, flush=True)
            return 1
    return _execute(cfg, flow, workers, recovery_dir, None, None)


def _execute(
    cfg: Config,
    flow: Dataflow,
    workers: int,
    rdir: Path | None,
    process_id: int | None,
    addresses: list[str] | None,
) -> int:
    from bytewax.errors import BytewaxRuntimeError
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from flows.recovery import free_space

    recovery = RecoveryConfig(str(rdir)) if rdir is not None else None
    interval = _epoch_interval(cfg, recovery is not None)
    # SIGINT/SIGTERM end the input: the flow drains, sinks flush and close, exit 0.
    # A second signal stops at once (the open batch is rolled back whole).
    # (Setting the handler also undoes a SIG_IGN inherited from a shell's background job.)
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    # The flow makes millions of short-lived containers (decoded messages, records) beside a
    # large long-lived heap (the imported modules, a replay's blocks of records in flight):
    # at the default thresholds the collector's full passes over that heap cost 20-35 % of a
    # book replay's CPU (docs/performance.md). Freeze what the imports made and collect less often.
    gc.freeze()
    gc.set_threshold(_young_threshold(cfg), 50, 50)
    if addresses:
        _await_lower_peers(process_id or 0, addresses)
    try:
        cli_main(
            flow,
            workers_per_process=workers,
            process_id=process_id,
            addresses=addresses,
            epoch_interval=interval,
            recovery_config=recovery,
        )
    except KeyboardInterrupt:
        print("[ticklens] flow stopped by signal", file=sys.stderr, flush=True)
    except Exception as e:  # noqa: BLE001 (one clear line after bytewax's own traceback)
        # Ctrl-C / SIGINT: bytewax stops the workers (sinks are closed) and raises "signal received".
        if isinstance(e, BytewaxRuntimeError) and "signal received" in str(e):
            print("[ticklens] flow stopped by signal", file=sys.stderr, flush=True)
            return 0
        cause = _root_cause(e)
        if "disk is full" in cause or "No space left" in cause:
            dirs = [cfg.store.path, *([rdir] if rdir is not None else [])]
            cause = f"{cause} [the disk is full: {free_space(*dirs)}]"
        print(f"ticklens: the flow stopped on an error: {cause}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
