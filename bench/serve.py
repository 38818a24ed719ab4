"""A real uvicorn serving `api.app` on a free loopback port, for the benches that time the API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from ticklens.cluster import free_ports

ROOT = Path(__file__).resolve().parent.parent


def start_api(
    config: Path,
    log: Path | None = None,
    *,
    ready: Callable[[], bool] | None = None,
    watch: Sequence[subprocess.Popen] = (),
    deadline_s: float = 60,
) -> tuple[subprocess.Popen, httpx.Client]:
    """Start the API on `config` and wait until /health answers 200 and `ready()` holds.

    Output goes to `log` (appended) or is dropped. Fails with the log's path if the API or any
    process in `watch` (e.g. the flow that should be writing) exits first or the deadline passes.
    """
    (port,) = free_ports(1)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115  # the child keeps it
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=dict(os.environ, TICKLENS_CONFIG=str(config)), stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if client.get("/health").status_code == 200 and (ready is None or ready()):
                return api, client
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or api.poll() is not None or any(p.poll() is not None for p in watch):
            api.kill()
            client.close()
            raise SystemExit(f"the API (or what it waits for) did not come up; see {log or 'its output'}")
        time.sleep(0.2)
