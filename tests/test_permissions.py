"""Store, recovery and recording files are private to their user (0600, directories 0700),
including SQLite's -wal and -shm, whoever creates them (the flow, or any process through connect)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from storage.sqlite.connection import connect
from tests.feed_support import query, wait_for
from tests.flow_support import ROOT
from tests.hostile_feed import HostileServer


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_running_flow_keeps_its_store_recovery_and_recording_private(tmp_path: Path) -> None:
    data = tmp_path / "data"  # created by the flow itself
    server = HostileServer(max_seconds=60)
    cfg = {
        "symbols": ["btcusdt"],
        "source": {
            "kind": "feed",
            "url": server.url("valid", rate=50, seconds=30),
            "stream": "trade",
            "record": str(data / "session.jsonl.gz"),
        },
        "store": {"path": str(data / "ticklens.db")},
        "recovery": {"enabled": True, "snapshot_interval_s": 0.2},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, TICKLENS_CONFIG=str(tmp_path / "pipeline.yaml"), TICKLENS_QUIET="1")
    old = os.umask(0o022)  # the usual umask: the flow must not rely on the caller's
    try:
        proc = subprocess.Popen([sys.executable, "-m", "flows.runner"], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    finally:
        os.umask(old)
    db = data / "ticklens.db"
    try:
        wait_for(lambda: (query(db, "SELECT COUNT(*) FROM ticks") or [(0,)])[0][0] > 20, 120, "ticks stored")
        wait_for(lambda: list((data / "recovery").glob("*-wal")), 120, "the recovery WAL")
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), data / "session.jsonl.gz"]
        files += sorted((data / "recovery").iterdir())
        assert len(files) >= 7
        assert {str(f): oct(mode(f)) for f in files} == {str(f): "0o600" for f in files}
        assert (oct(mode(data)), oct(mode(data / "recovery"))) == ("0o700", "0o700")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        server.stop()


def test_a_store_created_through_connect_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = tmp_path / "api-made.db"
        conn = connect(db)
        conn.execute("INSERT INTO status(key, value, updated_ms) VALUES ('x', '{}', 0)")
        conn.commit()
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert oct(mode(p)) == "0o600", p
        conn.close()
    finally:
        os.umask(old)
