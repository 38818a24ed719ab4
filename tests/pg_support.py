"""A private PostgreSQL server for the tests: initdb into a temp dir, 127.0.0.1 on a free port.

Started once per test session on first use (`server()`), stopped at exit. initdb refuses
to run as root, so as root the server runs as the `postgres` user (`runuser`), its data and
socket in a /tmp directory that user owns. Without the binaries the PostgreSQL tests fail
under CI (CI=true: .ci/run installs them) and are skipped elsewhere, saying why.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

PW_USER = "ticklens_pw"  # a role that must log in with its password (scram), the rest is trust
PW_SECRET = "s3cret-Pw-7f2a"


def _bindir() -> Path | None:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(cand) / "initdb").exists():
            return Path(cand)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One postgres on 127.0.0.1:`port`; `url(db)` for a database, `restart()` to test reconnects."""

    def __init__(self, durable: bool = False) -> None:
        """`durable`: PostgreSQL's default fsync settings (benchmarks); tests run without fsync."""
        bindir = _bindir()
        if bindir is None:
            msg = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="ticklens-pg-", dir="/tmp"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            subprocess.run(["chown", "postgres:postgres", str(self.root)], check=True)
            self.root.chmod(0o700)
        self.data = self.root / "data"
        self.log = self.root / "log"
        self.port = _free_port()
        self._lock = threading.Lock()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale")
        hba = f"local all all trust\nhost all {PW_USER} 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n"
        self._write(self.data / "pg_hba.conf", hba)
        # Test speed: no fsync (a server restart still recovers from its WAL; only an OS crash would lose data).
        conf = "max_connections = 200\nshared_buffers = 128MB\n"
        if not durable:
            conf += "fsync = off\nfull_page_writes = off\n"
        self._write(self.data / "postgresql.auto.conf", conf)
        self.start()
        self.psql(f"CREATE ROLE {PW_USER} LOGIN SUPERUSER PASSWORD '{PW_SECRET}'")

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        if self.as_root:
            shutil.chown(path, "postgres", "postgres")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr[-2000:]}\n{log}")
        return out

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def url(self, db: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-Atc", sql)
        return out.stdout

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self._lock:
            self.psql(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


_SERVER: PgServer | None = None


def server() -> PgServer:
    """The session's server, started on first use."""
    global _SERVER
    if _SERVER is None:
        _SERVER = PgServer()
        atexit.register(_SERVER.close)
    return _SERVER


def fresh_url() -> str:
    """The URL of a new, empty database on the session's server."""
    s = server()
    return s.url(s.create_database())
