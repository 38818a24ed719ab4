"""Supervises the dataflow process for the API: start, stop, find it again.

The flow stays its own process (`python -m flows.runner`). Its pid, start time
and symbols go to a pidfile next to the store, so a restarted API still finds
it; a flow started elsewhere (`ticklens up`) is found through the pid in its
status row. Process identity is checked (command line and create time), so a
reused pid is never mistaken for the flow.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil
import yaml

from storage.port import Store, StoreUnavailable
from ticklens.config import DASHBOARD_PASSWORD_ENV, TOKEN_ENV, Config
from ticklens.domain.times import now_ms

PG_PASSWORD_ENV = "TICKLENS_PG_PASSWORD"  # read by storage/postgres/connection.py

ROOT = Path(__file__).resolve().parent.parent
FLOW_MARKERS = ("flows.runner", "bytewax.run")


@dataclass(slots=True)
class FlowState:
    running: bool
    pid: int | None = None
    started_by: str | None = None  # api | external
    started_ms: int | None = None
    symbols: list[str] = field(default_factory=list)
    log: str | None = None


def _flow_process(pid: int, create_time: float | None = None) -> psutil.Process | None:
    """The live flow process with this pid, or None (dead, zombie, or someone else)."""
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        if create_time is not None and abs(p.create_time() - create_time) > 1.0:
            return None
        cmd = " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return p if any(m in cmd for m in FLOW_MARKERS) else None


class FlowSupervisor:
    def __init__(self, cfg: Config, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        store = cfg.store.path
        self.pidfile = store.with_name(store.stem + ".flow.pid")
        self.config_file = store.with_name(store.stem + ".flow.yaml")
        self.logfile = store.with_name(store.stem + ".flow.log")
        self.lockfile = store.with_name(store.stem + ".flow.lock")
        self._lock = threading.Lock()
        self._children: dict[int, subprocess.Popen] = {}

    # --- finding the flow ------------------------------------------------------------

    def _read_pidfile(self) -> dict | None:
        try:
            return orjson.loads(self.pidfile.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def _reap(self) -> None:
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                self._children.pop(pid, None)

    def state(self) -> FlowState:
        self._reap()
        doc = self._read_pidfile()
        if doc and _flow_process(doc["pid"], doc.get("create_time")):
            return FlowState(True, doc["pid"], "api", doc["started_ms"], doc["symbols"], str(self.logfile))
        ext = self._external()
        if ext:
            return ext
        return FlowState(False)

    def _external(self) -> FlowState | None:
        """A flow writing this store that the API did not start (e.g. `ticklens up`)."""
        try:
            with self.store.reader() as r:
                flow = r.status_docs().get("flow")
        except StoreUnavailable:  # a store that cannot be read names no flow (a stop still works)
            return None
        if not flow:
            return None
        doc = flow[0]
        pid = doc.get("pid")
        if not isinstance(pid, int) or not _flow_process(pid):
            return None
        return FlowState(True, pid, "external", doc.get("started_ms"), list(self.cfg.symbols))

    def flow_symbols(self) -> list[str]:
        doc = self._read_pidfile()
        return list(doc["symbols"]) if doc else []

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One start/stop at a time, across threads and API processes."""
        with self._lock:
            self.lockfile.parent.mkdir(parents=True, exist_ok=True)
            with open(self.lockfile, "w") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    # --- control ---------------------------------------------------------------------

    def start(self, symbols: list[str]) -> dict:
        with self._exclusive():
            cur = self.state()
            if cur.running:
                missing = sorted(set(symbols) - set(cur.symbols))
                if not missing:
                    return {
                        "changed": False,
                        "message": f"already running (pid {cur.pid}); nothing started",
                        "pid": cur.pid,
                        "symbols": cur.symbols,
                    }
                if cur.started_by != "api":
                    raise PermissionError(
                        f"a flow not started by the API is running (pid {cur.pid}) without {missing}; "
                        "add them to the pipeline file and restart it"
                    )
                self._stop_locked(cur)
                wanted = sorted(set(cur.symbols) | set(symbols))
                pid = self._spawn(wanted)
                return {
                    "changed": True,
                    "message": f"restarted the flow with {missing} added (pid {pid})",
                    "pid": pid,
                    "symbols": wanted,
                }
            wanted = sorted(set(self.cfg.symbols) | set(symbols))
            pid = self._spawn(wanted)
            return {"changed": True, "message": f"started the flow (pid {pid})", "pid": pid, "symbols": wanted}

    def _derived_config(self, symbols: list[str]) -> dict:
        # Secrets stay out of the file: the child gets them in its environment (`_secrets_env`).
        secret = {"api": {"token"}, "dashboard": {"auth": {"password"}}, "store": {"password"}}
        raw = self.cfg.model_dump(mode="json", exclude_none=True, exclude=secret)  # type: ignore[arg-type]
        raw["symbols"] = symbols
        return raw

    def _secrets_env(self) -> dict[str, str]:
        env = {}
        token = self.cfg.api.bearer_token()
        if token:
            env[TOKEN_ENV] = token
        auth = self.cfg.dashboard.auth
        if auth and auth.secret():
            env[DASHBOARD_PASSWORD_ENV] = auth.secret() or ""
        pg = self.cfg.store.password
        if pg is not None and not os.environ.get(PG_PASSWORD_ENV):
            env[PG_PASSWORD_ENV] = pg.get_secret_value()  # a model dump would write "**********"
        return env

    def _spawn(self, symbols: list[str]) -> int:
        self.config_file.write_text(
            "# Written by the ticklens API (POST /api/v1/start): the active config with the requested symbols.\n"
            + yaml.safe_dump(self._derived_config(symbols), sort_keys=False)
        )
        env = dict(os.environ, TICKLENS_CONFIG=str(self.config_file), **self._secrets_env())
        log = open(self.logfile, "ab")  # noqa: SIM115 - handed to the child
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "flows.runner"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self._children[child.pid] = child
        doc = {
            "pid": child.pid,
            "create_time": psutil.Process(child.pid).create_time(),
            "started_ms": now_ms(),
            "symbols": symbols,
            "config": str(self.config_file),
        }
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(doc))
        tmp.replace(self.pidfile)
        return child.pid

    def stop(self, timeout_s: float = 30.0) -> dict:
        with self._exclusive():
            cur = self.state()
            if not cur.running:
                self.pidfile.unlink(missing_ok=True)
                return {"changed": False, "message": "no flow is running; nothing to stop"}
            code = self._stop_locked(cur, timeout_s)
            return {
                "changed": True,
                "message": f"stopped the flow (pid {cur.pid})",
                "pid": cur.pid,
                "symbols": cur.symbols,
                "exit_code": code,
            }

    def _stop_locked(self, cur: FlowState, timeout_s: float = 30.0) -> int | None:
        """SIGINT (the flow flushes and exits), then SIGTERM, then SIGKILL."""
        assert cur.pid is not None
        code = None
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(cur.pid, sig)
            except ProcessLookupError:
                break
            code, done = self._wait(cur.pid, wait_s)
            if done:
                break
        if cur.started_by == "api":
            self.pidfile.unlink(missing_ok=True)
        return code

    def _wait(self, pid: int, timeout_s: float) -> tuple[int | None, bool]:
        child = self._children.get(pid)
        if child is not None:
            try:
                code = child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return None, False
            self._children.pop(pid, None)
            return code, True
        # Not our child: it has ended once it is gone or a zombie (its parent reaps it, not us)
        # with no thread left (a zombie leader can still have threads finishing their exit).
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                p = psutil.Process(pid)
                if p.status() == psutil.STATUS_ZOMBIE and p.num_threads() <= 1:
                    return None, True
            except psutil.NoSuchProcess:
                return None, True
            if time.monotonic() >= deadline:
                return None, False
            time.sleep(0.05)
