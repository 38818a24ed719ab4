"""Opening the SQLite store: WAL mode, pragmas, the schema on first use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.sqlite.schema import create_schema


def connect(path: Path | str, *, readonly: bool = False, create: bool = True) -> sqlite3.Connection:
    """Open the store in WAL mode; readers never block the single writer."""
    p = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=10, check_same_thread=False)
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        new = not p.exists() or p.stat().st_size == 0
        conn = sqlite3.connect(p, timeout=30, check_same_thread=False)
        if new:  # larger pages: fewer B-tree splits for the append-mostly tick inserts
            p.chmod(0o600)  # private to this user; SQLite gives -wal/-shm the same mode
            conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-65536")
    if create and not readonly:
        create_schema(conn)
    return conn
