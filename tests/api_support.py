"""A real uvicorn server for API tests: own process, free loopback port, ready when /health answers."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from store_support import StoreRef

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    """Poll `pred` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        out = pred()
        if out:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class ApiServer:
    """`token`: sent as `Authorization: Bearer` by `client` (and given to the server as
    TICKLENS_API_TOKEN unless `env` says otherwise); `ready`: the /health codes that mean up."""

    def __init__(
        self,
        config: Path,
        log: Path,
        token: str | None = None,
        env: dict[str, str] | None = None,
        ready: tuple[int, ...] = (200,),
        host: str = "127.0.0.1",
    ) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{self.port}"
        self.log = log
        self.ready = ready
        base = {k: v for k, v in os.environ.items() if k != "TICKLENS_API_TOKEN"}
        env = dict(base, TICKLENS_CONFIG=str(config), TICKLENS_QUIET="1", **(env or {}))
        if token is not None:
            env.setdefault("TICKLENS_API_TOKEN", token)
        self._log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.app:app", "--host", host, "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, timeout=30, headers=headers)
        wait_until(self._healthy, 120, f"the API on {self.url} to answer /health (log: {log})")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"uvicorn exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        try:
            return self.client.get("/health").status_code in self.ready
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self._log.closed:
            return
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@contextmanager
def api_server(config: Path, log: Path, **kw: object) -> Iterator[ApiServer]:
    server = ApiServer(config, log, **kw)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def rows(db: Path | StoreRef, sql: str, params: tuple = ()) -> list[tuple]:
    if isinstance(db, StoreRef):
        return db.rows(sql, params)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
