"""GET /api/v1/continuity/{symbol}: empty buckets of a range, quiet (ids continuous) or unknown (a gap)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import OneSymbol, TimeframeQuery, json_response, param_error, status_header
from api.models import ContinuityResponse
from ticklens.domain.continuity import bucket_range, empty_runs
from ticklens.domain.times import iso_ms

router = APIRouter(tags=["data quality"])


@router.get("/continuity/{symbol}", response_model=ContinuityResponse)
def get_continuity(q: OneSymbol, timeframe: TimeframeQuery = "1m") -> Response:
    """Runs of empty buckets in [start, end) (default: the symbol's stored span) and open trade-id gaps."""
    status = q.status()
    symbol, reader, start, end = q.symbol, q.reader, q.start, q.end
    if start is None or end is None:
        lo, hi = reader.bar_span(symbol, timeframe)
        start = start if start is not None else lo
        end = end if end is not None else (hi + 1 if hi is not None else None)
    if start is None or end is None:
        body = {"symbol": symbol, "timeframe": timeframe, "status": status, "bars": 0, "empty": [], "gaps": []}
        return json_response(body, headers=status_header(status))
    if end <= start:
        raise param_error("query", "end", "end must be after start", end)
    try:
        lo_ms, hi_ms = bucket_range(timeframe, start, end)
    except ValueError as e:
        raise param_error("query", "start", str(e), start) from None
    ids = reader.flow_bar_ids(symbol, timeframe, lo_ms, hi_ms)
    n_bars, runs = len(ids.rows), empty_runs(timeframe, lo_ms, hi_ms, ids)
    gaps = reader.gaps(symbol)
    body = {
        "symbol": symbol,
        "timeframe": timeframe,
        "status": status,
        "start": iso_ms(start),
        "end": iso_ms(end),
        "bars": n_bars,
        "empty": [
            {
                "start": iso_ms(r.start_ms),
                "start_ms": r.start_ms,
                "end": iso_ms(r.end_ms),
                "end_ms": r.end_ms,
                "buckets": r.buckets,
                "status": r.status,
                "last_id_before": r.before_last_id,
                "first_id_after": r.after_first_id,
            }
            for r in runs
        ],
        "quiet_buckets": sum(r.buckets for r in runs if r.status == "quiet"),
        "unknown_buckets": sum(r.buckets for r in runs if r.status == "unknown"),
        "gaps": [
            {"from_id": a, "to_id": b, "after_ts_ms": t, "detected_ms": d, "filled_ms": f, "status": s}
            for a, b, t, d, f, s in gaps
        ],
    }
    return json_response(body, headers=status_header(status))
