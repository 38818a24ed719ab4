"""The dashboard behind Panel's login page (`dashboard.auth`): the real `panel serve` that
`ticklens up` starts, reached over HTTP on 127.0.0.1 by a client that has no cookie, a wrong
password, and the right one."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from pathlib import Path

import httpx
from api_support import free_port, wait_until
from flow_support import ROOT

from ticklens.cli import dashboard_command
from ticklens.config import parse_config


def _get(client: httpx.Client, path: str, proc: subprocess.Popen) -> httpx.Response | None:
    assert proc.poll() is None, "panel serve exited"
    try:
        return client.get(path)
    except httpx.ConnectError:  # not listening yet
        return None


def test_the_dashboard_asks_for_a_login_and_keeps_the_password_off_the_command_line(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(16)
    port = free_port()
    cfg = parse_config(
        {
            "symbols": ["btcusdt"],
            "source": {"kind": "feed"},
            "store": {"path": str(tmp_path / "ticklens.db")},
            "dashboard": {"port": port, "auth": {"user": "ops", "password": password}},
        }
    )
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    cmd, env = dashboard_command(cfg, private)
    assert password not in " ".join(cmd)  # `ps` shows the command line
    (auth_file,) = private.iterdir()
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    log = open(tmp_path / "panel.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, **env), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as anon:
            first = wait_until(lambda: _get(anon, "/app", proc), 90, "panel serve to answer", interval=0.3)
            # No cookie: sent to the login page, and the app's page is not served.
            assert first.status_code == 302 and "login" in first.headers["location"], first
            assert anon.get("/login").status_code == 200
            bad = anon.post("/login", data={"username": "ops", "password": password[:-1] + "x"})
            assert bad.status_code == 302 and "error" in bad.headers["location"]
            assert anon.get("/app").status_code == 302  # still locked
        with httpx.Client(base_url=url, timeout=60) as user:
            ok = user.post("/login", data={"username": "ops", "password": password})
            assert ok.status_code == 302 and "error" not in ok.headers["location"], ok.headers
            page = user.get("/app")
            assert page.status_code == 200 and "bokeh" in page.text.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert password not in (tmp_path / "panel.log").read_text(errors="replace")
