"""Uploaded bars into SQLite: one transaction, a collected bar kept unless overwritten."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from storage.sql_upload import plan_against
from ticklens.domain.bars import INT64_SAFE
from ticklens.domain.upload import UNIT_COLUMNS, UPLOAD_COLUMNS, UploadedBar, upload_row


def bar_row(r: UploadedBar, now_ms: int) -> tuple:
    """`upload_row` with sums past SQLite's 64-bit integers stored as exact decimal text."""
    row = upload_row(r, now_ms)
    return (*row[: UNIT_COLUMNS.start], *(_stored(u) for u in row[UNIT_COLUMNS]), *row[UNIT_COLUMNS.stop :])


def _stored(units: int) -> int | str:
    return units if -INT64_SAFE < units < INT64_SAFE else str(units)


_INSERT = f"INSERT OR REPLACE INTO bars({','.join(UPLOAD_COLUMNS)}) VALUES({','.join('?' * len(UPLOAD_COLUMNS))})"


def write_uploaded_bars(
    conn: sqlite3.Connection, rows: Sequence[UploadedBar], overwrite: bool, now_ms: int
) -> tuple[int, int, int]:
    """(inserted, replaced, skipped) in one transaction (which bars: `plan_upload`)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        plan = plan_against(lambda q, args: conn.execute(q, args).fetchall(), rows, overwrite)
        conn.executemany(_INSERT, [bar_row(r, now_ms) for r in plan.keep])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return plan.inserted, plan.replaced, plan.skipped
