"""`ticklens up` stops everything within 10 s of Ctrl-C, and the API stops a flow it did not
start without waiting on a zombie (real processes on free loopback ports)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import yaml

from tests.api_support import api_server, free_port, wait_until
from tests.feed_support import feed_status
from tests.flow_support import ROOT

STOP_WITHIN_S = 10.0


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def test_ctrl_c_of_ticklens_up_stops_every_child_within_ten_seconds(tmp_path: Path) -> None:
    feed_port, api_port, dash_port = free_port(), free_port(), free_port()
    cfg = {
        "symbols": ["btcusdt", "ethusdt"],
        "source": {"kind": "feed", "url": f"ws://127.0.0.1:{feed_port}/market/stream", "stream": "trade"},
        "feed": {"simulate": True, "speed": 1},
        "store": {"path": str(tmp_path / "ticklens.db")},
        "api": {"host": "127.0.0.1", "port": api_port},
        "dashboard": {"host": "127.0.0.1", "port": dash_port},
        "progress_interval_s": 0.5,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, TICKLENS_QUIET="1")
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "-m", "ticklens.cli", "--config", str(path), "up"], cwd=ROOT, env=env, stderr=log, stdout=log
    )
    children: list[int] = []
    try:
        db = tmp_path / "ticklens.db"
        wait_until(lambda: feed_status(db).get("messages", 0) > 0, 60, "the flow to store the feed's trades")
        wait_until(lambda: _listening(api_port) and _listening(dash_port), 60, "the API and the dashboard")
        assert httpx.get(f"http://127.0.0.1:{api_port}/api/v1/status", timeout=10).status_code == 200
        children = [p.pid for p in psutil.Process(up.pid).children(recursive=True)]
        assert len(children) >= 4
        t0 = time.monotonic()
        up.send_signal(signal.SIGINT)
        up.wait(STOP_WITHIN_S + 20)
        wait_until(lambda: _gone(children), max(0.1, STOP_WITHIN_S - (time.monotonic() - t0)), "every child to end")
        took = time.monotonic() - t0
        assert took < STOP_WITHIN_S, took
        print(f"ticklens up stopped everything in {took:.1f}s")
        assert up.returncode == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in children:  # whatever outlived the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()


def test_the_api_stops_a_flow_it_did_not_start_without_waiting_on_a_zombie(tmp_path: Path) -> None:
    # The flow is this test's child: once it exits it stays a zombie until we reap it, and we do
    # not while we wait for the API's answer (as `ticklens up` used to, for ~48 s).
    from tests.flow_support import btc_2020_config

    cfg = btc_2020_config(tmp_path, source={"speed": 1}, recovery={"enabled": False}, progress_interval_s=0.5)
    env = dict(os.environ, TICKLENS_CONFIG=str(cfg), TICKLENS_QUIET="1")
    flow = subprocess.Popen([sys.executable, "-m", "flows.runner"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        with api_server(cfg, tmp_path / "api.log") as api:
            state = wait_until(
                lambda: (r := api.client.get("/api/v1/status").json()).get("running") and r,
                120,
                "the API to see the flow",
            )
            assert state["pid"] == flow.pid
            t0 = time.monotonic()
            r = api.client.post("/api/v1/stop", timeout=60)
            took = time.monotonic() - t0
            assert r.status_code == 200 and r.json()["changed"], r.text
            assert took < 20, took  # a flow's graceful stop; waiting on the zombie took ~48 s
            assert flow.poll() is not None  # exited (a zombie until this poll reaped it)
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()
