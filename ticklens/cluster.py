"""`ticklens flow --processes N`: the dataflow as a local Bytewax cluster, supervised.

Starts N `flows.runner` processes (process i of N, each on its own 127.0.0.1 port, one
worker each), echoes their output prefixed `[p<i>]` and keeps it in `flow-p<i>.log`
under the log directory. When one process dies the cluster cannot go on (Bytewax
processes exchange data), so the supervisor stops the others, prints the root cause
(the first failing process's own traceback: in a cluster Bytewax itself reports only
`PanicException: Send thread panic`) and restarts the whole cluster, which resumes from
recovery. Ctrl-C or SIGTERM stops every process gracefully (their inputs end, sinks flush).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "[ticklens] root cause"  # printed by flows.crash before bytewax's panic
STOP_GRACE_S = 20.0
CONFIG_ERROR = 2  # flows.runner's exit code for a bad configuration: restarting cannot help


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class _Proc:
    index: int
    popen: subprocess.Popen
    log: Path
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=400))
    pump: threading.Thread | None = None
    exited_at: float | None = None


def _pump(p: _Proc) -> None:
    """Echo a process's output with its prefix, into its log file and a tail kept for the root cause."""
    assert p.popen.stdout is not None
    with open(p.log, "a", encoding="utf-8", errors="replace") as fh:
        for raw in p.popen.stdout:
            line = raw.decode("utf-8", errors="replace")
            fh.write(line)
            fh.flush()
            p.tail.append(line)
            sys.stderr.write(f"[p{p.index}] {line}")
            sys.stderr.flush()


def root_cause(p: _Proc) -> str:
    """The traceback the failing process printed for itself, else how it ended and its last lines."""
    lines = list(p.tail)
    starts = [i for i, line in enumerate(lines) if line.startswith(MARK)]
    if starts:
        block = lines[starts[0] :]
        end = next((i for i, line in enumerate(block[1:], 1) if not line.startswith((" ", "\t", "Traceback"))), None)
        # The traceback ends at its exception line: the first line after the frames that is not indented.
        if end is not None:
            block = block[: end + 1]
        return "".join(block).rstrip()
    code = p.popen.returncode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    last = "".join(lines[-15:]).rstrip()
    return f"process {p.index} {how} (no Python traceback)" + (f"; its last lines:\n{last}" if last else "")


@dataclass(eq=False)
class Cluster:
    """The supervisor's state: the processes it runs and how often it restarted them."""

    processes: int
    env: dict[str, str]
    log_dir: Path
    workers: int = 1
    max_restarts: int = 10
    extra_args: list[str] = field(default_factory=list)
    procs: list[_Proc] = field(default_factory=list, init=False)
    stopping: bool = field(default=False, init=False)
    restarts: int = field(default=0, init=False)

    def _say(self, msg: str) -> None:
        print(f"[ticklens cluster] {msg}", file=sys.stderr, flush=True)

    def _start(self) -> None:
        ports = free_ports(self.processes)
        addresses = ";".join(f"127.0.0.1:{port}" for port in ports)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs = []
        for i in range(self.processes):
            cmd = [sys.executable, "-m", "flows.runner", "-w", str(self.workers), "-i", str(i), "-a", addresses]
            cmd += self.extra_args
            popen = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signal handling decides what reaches them
            )
            p = _Proc(i, popen, self.log_dir / f"flow-p{i}.log")
            p.pump = threading.Thread(target=_pump, args=(p,), daemon=True)
            p.pump.start()
            self.procs.append(p)
        self._say(
            f"started {self.processes} processes on {addresses} (pids {' '.join(str(p.popen.pid) for p in self.procs)})"
        )

    def _signal_all(self, sig: int) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.popen.pid, sig)

    def _wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        for p in self.procs:
            if p.pump is not None:
                p.pump.join(timeout=5)

    def stop(self) -> None:
        """Graceful: SIGINT ends every input; a process still running after the grace period is killed."""
        self.stopping = True
        self._signal_all(signal.SIGINT)
        self._wait_all(STOP_GRACE_S)

    def run(self) -> int:
        """Until the input ends (exit 0), Ctrl-C, or too many restarts (exit 1)."""
        while True:
            self._start()
            failed = self._watch()
            if failed is None:
                return 0
            if self.stopping:
                return 0
            cause = root_cause(failed)
            self._say(f"process {failed.index} failed; root cause:\n{cause}")
            if failed.popen.returncode == CONFIG_ERROR:
                return CONFIG_ERROR
            if self.restarts >= self.max_restarts:
                self._say(f"giving up after {self.restarts} restarts")
                return 1
            self.restarts += 1
            delay = min(30.0, 0.5 * 2**self.restarts)
            self._say(f"restarting the whole cluster from recovery in {delay:.1f} s (restart {self.restarts})")
            time.sleep(delay)

    def _watch(self) -> _Proc | None:
        """The first process that failed (the others stopped after it), or None when all ended well."""
        while True:
            done = self._seen_gone()
            bad = sorted((p for p in done if p.popen.returncode != 0), key=lambda p: p.exited_at or 0)
            if bad and not self.stopping:
                # The first to die is the cause; the others panic once it is gone. Give them a moment
                # to print, note who else went on its own meanwhile (a process killed from outside may
                # be reaped after the peer that lost it), then stop what is left.
                first = bad[0]
                time.sleep(0.5)
                self._seen_gone()
                self._signal_all(signal.SIGKILL)
                self._wait_all(5)
                return self._earliest_with_cause(first)
            if len(done) == len(self.procs):
                self._wait_all(5)
                return None
            time.sleep(0.1)

    def _seen_gone(self) -> list[_Proc]:
        """The processes that have exited, each stamped with when we first saw it gone."""
        done = [p for p in self.procs if p.popen.poll() is not None]
        for p in done:
            if p.exited_at is None:
                p.exited_at = time.monotonic()
        return done

    def _earliest_with_cause(self, first: _Proc) -> _Proc:
        """A process killed by a signal from outside among those gone before we stopped the rest (a
        peer that lost it may print a traceback, and be reaped, before or after it); else the one
        whose own traceback is the root cause, if any printed one; else the first to exit.

        Only processes seen gone before we stopped the rest have `exited_at`, so our own SIGKILLs
        are never taken for the cause."""
        for p in sorted(self.procs, key=lambda p: p.exited_at or float("inf")):
            if p.exited_at is not None and p.popen.returncode is not None and p.popen.returncode < 0:
                return p
        for p in sorted(self.procs, key=lambda p: p.exited_at or float("inf")):
            if any(line.startswith(MARK) for line in p.tail):
                return p
        return first


def run_cluster(processes: int, env: dict[str, str], log_dir: Path, workers: int = 1, max_restarts: int = 10) -> int:
    cluster = Cluster(processes, env, log_dir, workers, max_restarts)

    def _stop(signum: int, frame: object) -> None:
        if not cluster.stopping:
            cluster._say("stopping: draining every process (signal again to kill)")
            threading.Thread(target=cluster.stop, daemon=True).start()
        else:
            cluster._signal_all(signal.SIGKILL)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    return cluster.run()
