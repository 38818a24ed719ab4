"""REST backfill of missing aggTrades: Binance's WebSocket does not replay, its REST history does.

The live reader notes every trade id it receives. When a symbol's ids jump, the
missing range becomes a pending hole; after a short grace (ids can arrive a
little out of order) the hole is fetched from `GET /fapi/v1/aggTrades?fromId=`
in pages of 1000, within a request budget, with retries and backoff, and the
trades go through the same rows, dedup and bars as live ones. Each hole is
reported as a `GapEvent`: open when seen, then filled or unfillable.

Only aggTrade ids can be fetched this way; a plain `@trade` stream's gaps are
recorded as unfillable.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ticklens.domain.records import GapEvent
from ticklens.domain.times import now_ms
from ticklens.exchange.binance import Row, parse_event

# httpx is imported where a request is made: a replay never makes one, and it costs ~0.1 s of start-up.
if TYPE_CHECKING:
    import httpx

PAGE = 1_000
GRACE_S = 0.3
MAX_ATTEMPTS = 6


@dataclass(slots=True)
class PendingHole:
    symbol: str
    from_id: int
    to_id: int
    after_ts: int
    due: float


AGG_TRADES_WEIGHT = 20  # Binance's request weight of GET /fapi/v1/aggTrades


class RequestBudget:
    """At most `per_minute` request units in any 60 s. A unit is one aggTrades request (weight 20
    of Binance's 2400/min); other requests cost their weight / 20 (a depth snapshot of 1000
    levels: 20, one unit), so backfill and book snapshots share one per-IP budget."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.sent: deque[tuple[float, float]] = deque()  # (monotonic time, cost)
        self.used = 0.0

    async def take(self, cost: float = 1.0) -> None:
        while True:
            now = time.monotonic()
            while self.sent and now - self.sent[0][0] >= 60:
                self.used -= self.sent.popleft()[1]
            if not self.sent or self.used + cost <= self.per_minute + 1e-9:
                self.sent.append((now, cost))
                self.used += cost
                return
            await asyncio.sleep(60 - (now - self.sent[0][0]) + 0.01)


async def get_within_budget(
    client: httpx.AsyncClient,
    url: str,
    params: dict[str, object],
    budget: RequestBudget,
    rng: random.Random,
    on_request: Callable[[], None] | None = None,
    *,
    cost: float = 1.0,
    on_failure: Callable[[str], None] | None = None,
) -> httpx.Response:
    """A 200 answer to GET `url`, each attempt within `budget` (`cost` units); transport errors,
    418/429 and 5xx are retried with jittered exponential backoff (Retry-After honoured), other
    4xx raise at once. `on_failure` hears about every failed attempt. Shared by the live
    backfill, the book's depth snapshots and `ticklens history rest-fill`."""
    import httpx

    for attempt in range(MAX_ATTEMPTS):
        await budget.take(cost)
        if on_request is not None:
            on_request()
        try:
            r = await client.get(url, params=params)
        except httpx.TransportError as e:
            r = None
            if on_failure is not None:
                on_failure(f"{type(e).__name__}: {str(e)[:200]}")
        if r is not None and r.status_code == 200:
            return r
        if r is not None and on_failure is not None:
            on_failure(f"HTTP {r.status_code}: {r.text[:200]}")
        if r is not None and 400 <= r.status_code < 500 and r.status_code not in (418, 429):
            raise RuntimeError(f"REST {r.status_code}: {r.text[:200]}")
        retry_after = 0.0
        if r is not None:
            with contextlib.suppress(ValueError):  # an HTTP-date instead of seconds: use our backoff
                retry_after = float(r.headers.get("Retry-After", 0))
        await asyncio.sleep(max(retry_after, min(30.0, 0.2 * 2**attempt) * rng.random()))
    raise RuntimeError(f"REST history unavailable after {MAX_ATTEMPTS} attempts")


class Backfiller:
    """Lives on the reader thread's event loop; `note` is called for every trade row."""

    def __init__(
        self,
        rest_url: str,
        per_minute: int,
        fillable: bool,
        on_rows: Callable[[str, list[Row]], None],
        on_gap: Callable[[GapEvent], None],
        last_ids: dict[str, int] | None = None,
        budget: RequestBudget | None = None,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.fillable = fillable
        self.on_rows = on_rows
        self.on_gap = on_gap
        self.last: dict[str, int] = dict(last_ids or {})
        self.pending: dict[tuple[str, int], PendingHole] = {}
        self.budget = budget or RequestBudget(per_minute)
        self.client: httpx.AsyncClient | None = None
        self.requests = 0
        self.filled_trades = 0
        self.failures = 0
        self.tasks: set[asyncio.Task] = set()
        self.rng = random.Random()

    def note(self, symbol: str, trade_id: int, ts_ms: int) -> None:
        last = self.last.get(symbol)
        if last is None or trade_id == last + 1:
            self.last[symbol] = trade_id
            return
        if trade_id > last + 1:
            hole = PendingHole(symbol, last + 1, trade_id - 1, ts_ms, time.monotonic() + GRACE_S)
            self.pending[(symbol, hole.from_id)] = hole
            self.last[symbol] = trade_id
        elif self.pending:
            self._arrived(symbol, trade_id)

    def _arrived(self, symbol: str, trade_id: int) -> None:
        """A late id shrinks or closes the hole it was in (before we fetch it)."""
        for key, hole in list(self.pending.items()):
            if hole.symbol != symbol or not hole.from_id <= trade_id <= hole.to_id:
                continue
            del self.pending[key]
            if trade_id > hole.from_id:
                self.pending[(symbol, hole.from_id)] = PendingHole(
                    symbol, hole.from_id, trade_id - 1, hole.after_ts, hole.due
                )
            if trade_id < hole.to_id:
                self.pending[(symbol, trade_id + 1)] = PendingHole(
                    symbol, trade_id + 1, hole.to_id, hole.after_ts, hole.due
                )
            return

    def poll(self) -> None:
        """Start fetching holes whose grace has passed (called often by the reader)."""
        if not self.pending:
            return
        now = time.monotonic()
        for key, hole in list(self.pending.items()):
            if hole.due <= now:
                del self.pending[key]
                self.on_gap(GapEvent(hole.symbol, hole.from_id, hole.to_id, hole.after_ts, "open"))
                if not self.fillable:
                    self.on_gap(GapEvent(hole.symbol, hole.from_id, hole.to_id, hole.after_ts, "unfillable"))
                    continue
                task = asyncio.get_running_loop().create_task(self._fill(hole))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _fill(self, hole: PendingHole) -> None:
        if self.client is None:
            import httpx

            self.client = httpx.AsyncClient(timeout=10)
        next_id = hole.from_id
        try:
            while next_id <= hole.to_id:
                page = await self._page(hole.symbol, next_id)
                rows = [r for r in page if hole.from_id <= r[0] <= hole.to_id]
                if not page or not rows:
                    break
                self.filled_trades += len(rows)
                self.on_rows(hole.symbol, rows)
                next_id = max(r[0] for r in rows) + 1
        except Exception:  # noqa: BLE001 (any failure leaves the gap recorded, never stops the reader)
            self.failures += 1
        status = "filled" if next_id > hole.to_id else "unfillable"
        self.on_gap(GapEvent(hole.symbol, hole.from_id, hole.to_id, hole.after_ts, status))

    async def _page(self, symbol: str, from_id: int) -> list[Row]:
        assert self.client is not None
        url = f"{self.rest_url}/fapi/v1/aggTrades"
        params = {"symbol": symbol.upper(), "fromId": from_id, "limit": PAGE}
        r = await get_within_budget(self.client, url, params, self.budget, self.rng, self._sent)
        recv_ms = now_ms()
        out = []
        for ev in r.json():
            if isinstance(ev, dict):
                ev = {**ev, "e": "aggTrade", "s": symbol.upper(), "E": ev.get("T")}
            status, _, row = parse_event(ev, recv_ms, window_ms=None)  # history: any age
            if status == "trade":
                out.append(row)
        return out

    def _sent(self) -> None:
        self.requests += 1

    async def aclose(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        if self.client is not None:
            await self.client.aclose()
