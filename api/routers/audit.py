"""GET /api/v1/audit/{symbol}: the store's 1m bars against Binance's 1m klines downloaded under `history.dir`.

The same audit as `ticklens history verify` (without the archive's trade-id continuity, which
reads every trade: that one stays on the command line).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from api.deps import Cfg, OneSymbol, json_response, param_error, status_header
from api.models import AuditResponse
from ticklens.domain.audit import MINUTE_MS, audit_dict
from ticklens.ingest.klines import archive_audit

router = APIRouter(tags=["data quality"])

MAX_DAYS = 400  # a range's klines are read whole: about 576k minutes at most


@router.get("/audit/{symbol}", response_model=AuditResponse)
def get_audit(
    q: OneSymbol,
    cfg: Cfg,
    limit: Annotated[int, Query(ge=0, le=100_000, description="Differing minutes to list, 0 … 100,000")] = 1000,
) -> Response:
    """Minute by minute in [start, end) (default: the symbol's stored 1m span), field by field: open, high,
    low, close, volume, quote volume, trades, taker buy volume. Minutes are whole (start rounded down,
    end up)."""
    status = q.status()
    symbol, reader, start, end = q.symbol, q.reader, q.start, q.end
    if start is None or end is None:
        lo, hi = reader.bar_span(symbol, "1m")
        start = start if start is not None else lo
        end = end if end is not None else (hi + MINUTE_MS if hi is not None else None)
    if start is None or end is None:
        raise param_error("query", "start", "no stored 1m bars: give start and end", None)
    start -= start % MINUTE_MS
    end += -end % MINUTE_MS
    if end - start > MAX_DAYS * 86_400_000:
        raise param_error("query", "end", f"at most {MAX_DAYS} days at once", end)
    root = cfg.history.dir
    rows = (r for chunk in reader.iter_bars(symbol, "1m", start, end) for r in chunk)
    try:
        audit, files = archive_audit(root, symbol, start, end, rows)
    except ValueError as e:  # a file under history.dir that is not a klines CSV: not the caller's fault
        raise HTTPException(500, f"cannot read the downloaded klines: {e}") from None
    body = audit_dict(audit, limit)
    out = {
        "symbol": symbol,
        "status": status,
        **body,
        "klines_dir": str(root),
        "files": [p.name for p in files],
        "listed": len(body["diffs"]),  # type: ignore[arg-type]
    }
    return json_response(out, headers=status_header(status))
