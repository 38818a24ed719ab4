"""Bytewax's recovery parts, which are SQLite files: what one says it is, and whether it holds snapshots.

Not ticklens' store: `flows.recovery` asks these to tell a complete recovery store from a broken
one, so that the only code opening SQLite files stays in this backend.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def _first_row(path: Path, sql: str) -> tuple | None:
    """The first row `sql` gives over the part file, opened read-only; sqlite3.Error if it cannot."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


def recovery_part(path: Path) -> tuple[int, int]:
    """(part_index, part_count) of a bytewax recovery part; ValueError saying why it is not one."""
    try:
        row = _first_row(path, "SELECT part_index, part_count FROM parts")
    except sqlite3.Error as e:
        raise ValueError(str(e) or type(e).__name__) from None
    if row is None or not all(isinstance(v, int) for v in row):
        raise ValueError("no parts row" if row is None else "its parts row is not two integers")
    return row[0], row[1]


def holds_snapshots(path: Path) -> bool:
    """True if the part file has at least one state snapshot (False also if it cannot be read)."""
    try:
        row = _first_row(path, "SELECT EXISTS (SELECT 1 FROM snaps)")
    except sqlite3.Error:
        return False
    return bool(row and row[0])
