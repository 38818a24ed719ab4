"""Uploaded bars into PostgreSQL: one transaction, a collected bar kept unless overwritten (as in SQLite)."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from storage.postgres.connection import pg_placeholders
from storage.sql_upload import plan_against
from ticklens.domain.upload import UPLOAD_COLUMNS, UploadedBar, upload_row

_SETS = ", ".join(f"{c} = excluded.{c}" for c in UPLOAD_COLUMNS[3:])
_UPSERT = (
    f"INSERT INTO bars({','.join(UPLOAD_COLUMNS)}) VALUES({','.join(['%s'] * len(UPLOAD_COLUMNS))})"
    f" ON CONFLICT(symbol, timeframe, start_ms) DO UPDATE SET {_SETS}"
)


def write_uploaded_bars(
    conn: psycopg.Connection, rows: Sequence[UploadedBar], overwrite: bool, now_ms: int
) -> tuple[int, int, int]:
    """(inserted, replaced, skipped) in one transaction (which bars: `plan_upload`)."""
    with conn.transaction():  # the stored bars locked (FOR UPDATE) until it commits
        plan = plan_against(
            lambda q, args: conn.execute(pg_placeholders(q + " FOR UPDATE"), args).fetchall(),  # type: ignore[arg-type]
            rows,
            overwrite,
        )
        conn.cursor().executemany(_UPSERT, [upload_row(r, now_ms) for r in plan.keep])
    return plan.inserted, plan.replaced, plan.skipped
