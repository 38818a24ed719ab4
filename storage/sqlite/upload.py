"""Uploaded bars into SQLite: one transaction, a collected bar kept unless overwritten."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ticklens.domain.bars import INT64_SAFE, float_sums
from ticklens.domain.timeframes import TIMEFRAME_MS
from ticklens.domain.upload import UploadedBar


def bar_row(r: UploadedBar, now_ms: int) -> tuple:
    """A `bars` row (UPLOAD_COLUMNS) for one uploaded bar.

    Without a quote volume it is estimated from the typical price (h + l + c) / 3;
    trade ids are unknown (-1).
    """
    sym, tf, start, o, h, lo, c, v, qv, n, tbv, tbqv = r
    if qv is None:
        qv = v * (h + lo + c) / 3
    vwap = qv / v if v else c
    end = start + TIMEFRAME_MS[tf] - 1
    vu, qu, tvu, tqu, qty_dp, quote_dp = float_sums(v, qv, tbv or 0.0, tbqv or 0.0)
    return (
        sym, tf, start, o, h, lo, c, v, qv, int(n or 0), tbv or 0.0, tbqv or 0.0, vwap,
        0.0, 0, start, -1, end, -1, -1, -1, 0, 1,
        _stored(vu), _stored(qu), _stored(tvu), _stored(tqu), qty_dp, quote_dp, now_ms, "upload",
    )  # fmt: skip


def _stored(units: int) -> int | str:
    return units if -INT64_SAFE < units < INT64_SAFE else str(units)


UPLOAD_COLUMNS = (
    "symbol", "timeframe", "start_ms", "open", "high", "low", "close", "volume", "quote_volume", "trades",
    "taker_buy_volume", "taker_buy_quote_volume", "vwap", "max_qty", "messages", "open_ts", "open_id",
    "close_ts", "close_id", "first_id", "last_id", "revision", "closed", "volume_units", "quote_units",
    "taker_buy_volume_units", "taker_buy_quote_units", "qty_dp", "quote_dp", "updated_ms", "origin",
)  # fmt: skip
_INSERT = f"INSERT OR REPLACE INTO bars({','.join(UPLOAD_COLUMNS)}) VALUES({','.join('?' * len(UPLOAD_COLUMNS))})"


def write_uploaded_bars(
    conn: sqlite3.Connection, rows: Sequence[UploadedBar], overwrite: bool, now_ms: int
) -> tuple[int, int, int]:
    """(inserted, replaced, skipped) in one transaction.

    An earlier upload of the same bar is replaced; a bar the flow collected is
    kept (skipped) unless `overwrite`.
    """
    inserted = replaced = skipped = 0
    keep: list[tuple] = []
    groups: dict[tuple[str, str], list[UploadedBar]] = {}
    for r in rows:
        groups.setdefault((r[0], r[1]), []).append(r)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for (sym, tf), rs in groups.items():
            lo = min(r[2] for r in rs)
            hi = max(r[2] for r in rs)
            existing = dict(
                conn.execute(
                    "SELECT start_ms, origin FROM bars WHERE symbol=? AND timeframe=? AND start_ms BETWEEN ? AND ?",
                    (sym, tf, lo, hi),
                ).fetchall()
            )
            for r in rs:
                origin = existing.get(r[2])
                if origin is None:
                    inserted += 1
                elif origin == "flow" and not overwrite:
                    skipped += 1
                    continue
                else:
                    replaced += 1
                keep.append(bar_row(r, now_ms))
        conn.executemany(_INSERT, keep)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return inserted, replaced, skipped
