"""Uploaded bars into an SQL store, the part written once for every backend.

Which bars of an upload are written (`plan_upload`) depends on the origins of the bars already
stored in their range; both backends read those with this query, inside their write transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ticklens.domain.upload import UploadedBar, UploadPlan, plan_upload

STORED_ORIGINS = "SELECT start_ms, origin FROM bars WHERE symbol=? AND timeframe=? AND start_ms BETWEEN ? AND ?"


def plan_against(
    fetch: Callable[[str, tuple], list[tuple]], rows: Sequence[UploadedBar], overwrite: bool
) -> UploadPlan:
    """`plan_upload` with the stored origins read by `fetch(STORED_ORIGINS, args)`."""
    return plan_upload(rows, overwrite, lambda sym, tf, lo, hi: dict(fetch(STORED_ORIGINS, (sym, tf, lo, hi))))
