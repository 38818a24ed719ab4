"""The feed's REST side: Binance's depth snapshot from the recording, its faults, and the book ground truth.

`GET /fapi/v1/depth?symbol=BTCUSDT&limit=1000` (spot symbols: `/api/v3/depth`) answers
the feed's book at the current replay position (`SymbolBook.rest_state`) in
Binance's shape, limits and error answers (HTTP 400 with `{"code", "msg"}`), with the
request weight used in the last minute in `X-MBX-USED-WEIGHT-1M`. Faults: the next N
requests fail with HTTP 503 (`-1001`), or answer a stale snapshot (`stale_by` depth
events older). `GET /control/book` gives the ground truth a test compares a client's
book with. Pure request → (status, JSON, headers) functions; `server` moves the bytes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import orjson

from ticklens.emulator.books import BookState, SymbolBook
from ticklens.emulator.timeline import Timeline

USDM_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
USDM_WEIGHT = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
SPOT_MAX = 5000
PATHS = {"/fapi/v1/depth": "usdm", "/api/v3/depth": "spot"}

Response = tuple[int, bytes, dict[str, str]]
_JSON = {"Content-Type": "application/json"}


def _error(status: int, code: int, msg: str, extra: dict[str, str] | None = None) -> Response:
    return status, orjson.dumps({"code": code, "msg": msg}), {**_JSON, **(extra or {})}


def _internal(reason: str) -> Response:
    # Binance's answer to a request it could not serve: HTTP 5xx, code -1001.
    msg = "Internal error; unable to process your request. Please try again."
    return _error(503, -1001, msg, {"X-Ticklens-Reason": reason})


def _spot_weight(limit: int) -> int:
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


@dataclass
class BookFaults:
    """Faults of the snapshot endpoint (armed on the command line or by `/control/faults`), and its counters."""

    fail: dict[str, int] = field(default_factory=dict)  # symbol or "*" → requests left to fail
    stale: dict[str, int] = field(default_factory=dict)  # symbol or "*" → stale answers left
    stale_by: int = 200  # depth events a stale snapshot is behind
    requests: int = 0
    served: int = 0
    failed: int = 0
    stale_served: int = 0
    bad: int = 0  # HTTP 400 answers
    unavailable: int = 0  # no book to serve (HTTP 503 without a fault)
    weights: deque[tuple[float, int]] = field(default_factory=deque)

    def take(self, table: dict[str, int], symbol: str) -> bool:
        for key in (symbol, "*"):
            if table.get(key, 0) > 0:
                table[key] -= 1
                return True
        return False

    def weight_1m(self, now: float) -> int:
        w = self.weights
        while w and w[0][0] < now - 60:
            w.popleft()
        return sum(x for _, x in w)

    def stats(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "served": self.served,
            "failed": self.failed,
            "stale": self.stale_served,
            "bad_requests": self.bad,
            "unavailable": self.unavailable,
            "weight_1m": self.weight_1m(time.monotonic()),
            "armed": {"fail": dict(self.fail), "stale": dict(self.stale), "stale_by": self.stale_by},
        }


def _book_of(tl: Timeline, symbol: str) -> tuple[int, SymbolBook] | None:
    s = symbol.lower()
    if tl.tape is None or s not in tl.symbols:
        return None
    i = tl.symbols.index(s)
    sb = tl.tape.books.get(i)
    return None if sb is None else (i, sb)


def _due_event(tl: Timeline, sb: SymbolBook, pos: int) -> tuple[int, int]:
    """(loop pass, depth event) of the last depth event before global position `pos` (-1: none)."""
    k, j = tl.split(pos)
    i = sb.last_event_before(j)
    if i < 0 and k > 0:  # nothing of this pass yet: the last event of the pass before
        return k - 1, len(sb.u) - 1
    return k, i


def _shifted(tl: Timeline, s: int, k: int, st: BookState) -> tuple[int, int | None, int | None]:
    d_ms, d_id = k * tl.span, k * int(tl.book_span[s])
    return (
        st.last_update_id + d_id,
        None if st.event_ms is None else st.event_ms + d_ms,
        None if st.txn_ms is None else st.txn_ms + d_ms,
    )


def depth(tl: Timeline, faults: BookFaults, route: str, query: dict[str, str], now: float, pos: int) -> Response:
    """`GET /fapi/v1/depth` (or spot `/api/v3/depth`): the book at replay position `pos` (the current one)."""
    faults.requests += 1
    market = PATHS[route]
    symbol = query.get("symbol", "")
    if not symbol:
        faults.bad += 1
        return _error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    found = _book_of(tl, symbol)
    if symbol.lower() not in tl.symbols:
        faults.bad += 1
        return _error(400, -1121, "Invalid symbol.")
    raw_limit = query.get("limit")
    if market == "usdm":
        limit = 500
        if raw_limit is not None:
            if not raw_limit.isdigit() or int(raw_limit) not in USDM_LIMITS:
                faults.bad += 1
                legal = ", ".join(map(str, USDM_LIMITS))
                return _error(400, -1100, f"Illegal characters found in parameter 'limit'; legal range is '{legal}'.")
            limit = int(raw_limit)
        weight = USDM_WEIGHT[limit]
    else:
        limit = 100
        if raw_limit is not None:
            if not raw_limit.isdigit() or int(raw_limit) < 1:
                faults.bad += 1
                return _error(
                    400, -1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'."
                )
            limit = min(int(raw_limit), SPOT_MAX)
        weight = _spot_weight(limit)
    faults.weights.append((now, weight))
    headers = {**_JSON, "X-MBX-USED-WEIGHT-1M": str(faults.weight_1m(now))}
    if found is None or found[1].market != market:
        faults.unavailable += 1
        return _internal(f"no {market} book recorded for {symbol.lower()}")
    s, sb = found
    if faults.take(faults.fail, sb.symbol):
        faults.failed += 1
        return _internal("fault: snapshot failure")
    k, i = _due_event(tl, sb, pos)
    stale = faults.take(faults.stale, sb.symbol)
    if stale:
        i = max(-1, i - faults.stale_by)
        faults.stale_served += 1
    st = sb.rest_state(i)
    if st is None:
        faults.unavailable += 1
        return _internal(f"the book of {sb.symbol} is not known here (a break in the recording)")
    last, ev, txn = _shifted(tl, s, k, st)
    bids, asks = st.book.top(limit)
    body: dict[str, object] = {"lastUpdateId": last}
    if market == "usdm":
        body["E"], body["T"] = ev, txn
    body["bids"] = [[p, q] for p, q in bids]
    body["asks"] = [[p, q] for p, q in asks]
    faults.served += 1
    return 200, orjson.dumps(body), headers


def _range(book_range: tuple[float, float] | None) -> list[float | None] | None:
    if book_range is None:
        return None
    lo, hi = book_range
    return [lo, None if math.isinf(hi) else hi]


def truth(tl: Timeline, query: dict[str, str], current: int) -> Response:
    """`GET /control/book?symbol=&update_id=|position=[&limit=]`: the feed's book, every level.

    `update_id=N`: the book after the last depth event with u <= N (any loop pass);
    `position=P`: what `GET /fapi/v1/depth` answers at global position P (no faults);
    neither: at the current position. `known` is false where the feed's book is unknown.
    """
    found = _book_of(tl, query.get("symbol", ""))
    if found is None:
        return _error(404, -1121, "no recorded book for this symbol")
    s, sb = found
    limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
    span = int(tl.book_span[s])
    if "update_id" in query:
        try:
            want = int(query["update_id"])
        except ValueError:
            return _error(400, -1100, "update_id must be an integer")
        k = max(0, (want - sb.id_lo) // span) if tl.loop else 0
        i = int(sb.u.searchsorted(want - k * span, side="right")) - 1
        if i < 0 and k > 0:
            k, i = k - 1, len(sb.u) - 1
        st = sb.truth(i)
        pos = None if i < 0 else k * tl.n + int(sb.pos[i]) + 1
    else:
        pos = int(query["position"]) if query.get("position", "").isdigit() else current
        k, i = _due_event(tl, sb, pos)
        st = sb.rest_state(i)
    if st is None:
        return 200, orjson.dumps({"symbol": sb.symbol.upper(), "known": False, "position": pos, "pass": k}), _JSON
    last, ev, txn = _shifted(tl, s, k, st)
    if limit is None:
        bids, asks = st.book.side_levels("bid"), st.book.side_levels("ask")
    else:
        bids, asks = st.book.top(limit)
    body = {
        "symbol": sb.symbol.upper(),
        "known": True,
        "lastUpdateId": last,
        "E": ev,
        "T": txn,
        "position": pos,
        "pass": k,
        "complete_range": _range(st.book.complete_range),
        "bids": [[p, q] for p, q in bids],
        "asks": [[p, q] for p, q in asks],
    }
    return 200, orjson.dumps(body), _JSON


def books_info(tl: Timeline) -> dict[str, object]:
    """Per symbol with a recorded book: market, recorded speed, events, where it is known, the loop id shift."""
    if tl.tape is None:
        return {}
    out: dict[str, object] = {}
    for s, sb in tl.tape.books.items():
        out[sb.symbol] = {
            "market": sb.market,
            "speed_ms": sb.speed_ms,
            "depth_events": len(sb.u),
            "known": [[int(sb.u[g.start]), int(sb.u[g.end - 1])] for g in sb.segments],
            "snapshots": [g.snapshot.last_update_id for g in sb.segments],
            "id_span": int(tl.book_span[s]),
        }
    return out
