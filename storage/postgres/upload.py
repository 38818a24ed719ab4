"""Uploaded bars into PostgreSQL: one transaction, a collected bar kept unless overwritten (as in SQLite)."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from ticklens.domain.upload import UPLOAD_COLUMNS, UploadedBar, plan_upload, upload_row

_SETS = ", ".join(f"{c} = excluded.{c}" for c in UPLOAD_COLUMNS[3:])
_UPSERT = (
    f"INSERT INTO bars({','.join(UPLOAD_COLUMNS)}) VALUES({','.join(['%s'] * len(UPLOAD_COLUMNS))})"
    f" ON CONFLICT(symbol, timeframe, start_ms) DO UPDATE SET {_SETS}"
)


def write_uploaded_bars(
    conn: psycopg.Connection, rows: Sequence[UploadedBar], overwrite: bool, now_ms: int
) -> tuple[int, int, int]:
    """(inserted, replaced, skipped) in one transaction (which bars: `plan_upload`)."""

    def stored_origins(sym: str, tf: str, lo: int, hi: int) -> dict[int, str]:
        q = "SELECT start_ms, origin FROM bars WHERE symbol=%s AND timeframe=%s AND start_ms BETWEEN %s AND %s FOR UPDATE"
        return dict(conn.execute(q, (sym, tf, lo, hi)).fetchall())

    with conn.transaction():
        plan = plan_upload(rows, overwrite, stored_origins)
        conn.cursor().executemany(_UPSERT, [upload_row(r, now_ms) for r in plan.keep])
    return plan.inserted, plan.replaced, plan.skipped
