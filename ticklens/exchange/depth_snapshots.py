"""REST depth snapshots for the local books: `GET /fapi/v1/depth?symbol=&limit=`, fetched when needed.

Lives on the reader thread's event loop. The hub asks for a symbol's snapshot when its
`SyncTracker` says the flow's book needs one (the first sync, a broken chain, a
reconnect that lost events, a stale snapshot); the fetch waits its turn in the REST
budget it shares with the trade backfill (a 1000-level snapshot weighs 20, as an
aggTrades page), every failed attempt is reported (the flow records the unknown
interval as a `snapshot_failure` gap) and retried with jittered exponential backoff
until the book no longer needs it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING

from ticklens.exchange.binance_book import depth_weight
from ticklens.exchange.binance_rest import AGG_TRADES_WEIGHT, RequestBudget, get_within_budget

if TYPE_CHECKING:  # imported where the first snapshot is fetched (start-up time of replays)
    import httpx


@dataclass(eq=False)
class SnapshotFetcher:
    """One fetch task per symbol at a time; `request` is cheap to call on every depth event."""

    rest_url: str
    limit: int
    budget: RequestBudget
    needed: Callable[[str], bool]
    on_body: Callable[[str, bytes, int, int], object]
    on_failure: Callable[[str, str], None]
    _: KW_ONLY
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float = 10.0
    client: httpx.AsyncClient | None = field(default=None, init=False)
    tasks: dict[str, asyncio.Task] = field(default_factory=dict, init=False)
    requests: int = field(default=0, init=False)
    rng: random.Random = field(default_factory=random.Random, init=False)

    def __post_init__(self) -> None:
        self.url = f"{self.rest_url.rstrip('/')}/fapi/v1/depth"
        self.cost = depth_weight(self.limit) / AGG_TRADES_WEIGHT

    def request(self, symbol: str) -> None:
        """Fetch `symbol`'s snapshot unless a fetch is already under way (call on the loop)."""
        task = self.tasks.get(symbol)
        if task is None or task.done():
            self.tasks[symbol] = asyncio.get_running_loop().create_task(self._fetch(symbol))

    async def _fetch(self, symbol: str) -> None:
        if self.client is None:
            import httpx

            self.client = httpx.AsyncClient(timeout=self.timeout_s)
        params = {"symbol": symbol.upper(), "limit": self.limit}
        rounds = 0
        while self.needed(symbol):
            try:
                r = await get_within_budget(
                    self.client,
                    self.url,
                    params,
                    self.budget,
                    self.rng,
                    self._sent,
                    cost=self.cost,
                    on_failure=lambda why: self.on_failure(symbol, f"depth snapshot: {why}"),
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 (every attempt was reported; wait, then again while needed)
                rounds += 1
                delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** min(rounds, 20))
                await asyncio.sleep(delay * (0.5 + self.rng.random() / 2))
                continue
            rounds = 0
            self.on_body(symbol, r.content, time.time_ns(), self.limit)

    def _sent(self) -> None:
        self.requests += 1

    async def aclose(self) -> None:
        for t in list(self.tasks.values()):
            t.cancel()
        if self.client is not None:
            await self.client.aclose()
