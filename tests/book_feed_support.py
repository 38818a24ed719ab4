"""A minimal Binance-like book feed for the live-path tests: WebSocket streams plus REST depth.

One market replays the 2024-08-08 BTCUSDT recording from its REST snapshot on: `/public/stream`
serves `@bookTicker` and `@depth@0ms`, `/market/stream` serves the trades as `@aggTrade`,
every connection from the market's current position (as Binance does), and
`GET /fapi/v1/depth` answers the true book at the last event sent, best 1000 levels per side.
Faults: depth events never sent (`drop`: a `pu` break for the client) and the first
`fail_snapshots` depth requests answered 503. The true book is a plain dict kept here,
over every event, sent or dropped; nothing of ticklens is imported.

(The local feed in ticklens/emulator gains the same on the `bookfeed` branch; until that is
on main these tests run against this server.)
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tests.book_reference import UM


@dataclass
class MarketEvent:
    kind: str  # "depth" | "bookTicker" | "trade"
    route: str  # "public" | "market"
    text: str  # what is sent
    data: dict
    depth_index: int = -1


def load_market(path: Path = UM / "btcusdt_20240808.gz", depth_events: int = 1200):
    """(snapshot body, events from the straddling depth event on): at most `depth_events` depth events."""
    lines = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            lines.append(json.loads(line.partition(b" ")[2]))
    snap_at = next(i for i, m in enumerate(lines) if "lastUpdateId" in m)
    snap = lines[snap_at]
    sid = snap["lastUpdateId"]
    events: list[MarketEvent] = []
    started = False
    n_depth = 0
    for m in lines[:snap_at] + lines[snap_at + 1 :]:
        d = m.get("data")
        if d is None:
            continue
        if d["e"] == "depthUpdate":
            if not started and not (d["U"] <= sid <= d["u"]):
                continue  # covered by the snapshot
            started = True
            if n_depth >= depth_events:
                break
            events.append(MarketEvent("depth", "public", json.dumps(m, separators=(",", ":")), d, n_depth))
            n_depth += 1
        elif not started:
            continue
        elif d["e"] == "bookTicker":
            events.append(MarketEvent("bookTicker", "public", json.dumps(m, separators=(",", ":")), d))
        elif d["e"] == "trade":
            agg = {
                "e": "aggTrade",
                "E": d["E"],
                "s": d["s"],
                "a": d["t"],
                "p": d["p"],
                "q": d["q"],
                "f": d["t"],
                "l": d["t"],
                "T": d["T"],
                "m": d["m"],
            }
            text = json.dumps({"stream": "btcusdt@aggTrade", "data": agg}, separators=(",", ":"))
            events.append(MarketEvent("trade", "market", text, agg))
    return snap, events


class TrueBook:
    """The market's book: the snapshot, then every depth event in order (plain dicts, Decimal keys)."""

    def __init__(self, snap: dict) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {Decimal(p): (p, q) for p, q in snap["bids"]}
        self.asks: dict[Decimal, tuple[str, str]] = {Decimal(p): (p, q) for p, q in snap["asks"]}
        self.last_u, self.E, self.T = snap["lastUpdateId"], snap["E"], snap["T"]
        self.history: dict[int, tuple[dict, dict]] = {}  # u -> (bids, asks) after it, when kept

    def apply(self, d: dict, keep: bool) -> None:
        for side, book in (("b", self.bids), ("a", self.asks)):
            for p, q in d[side]:
                if Decimal(q) == 0:
                    book.pop(Decimal(p), None)
                else:
                    book[Decimal(p)] = (p, q)
        self.last_u, self.E, self.T = d["u"], d["E"], d["T"]
        if keep:
            self.history[d["u"]] = (dict(self.bids), dict(self.asks))

    def rest_body(self, limit: int) -> bytes:
        bids = [list(self.bids[p]) for p in sorted(self.bids, reverse=True)[:limit]]
        asks = [list(self.asks[p]) for p in sorted(self.asks)[:limit]]
        body = {"lastUpdateId": self.last_u, "E": self.E, "T": self.T, "bids": bids, "asks": asks}
        return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class BookFeed:
    """The server: start() in a thread of its own; the market runs once `open_with` paths are connected."""

    speed: float = 4.0  # exchange time x speed
    drop: set[int] = field(default_factory=set)  # depth event indices never sent
    fail_snapshots: int = 0
    depth_events: int = 1200
    keep_history: bool = True
    open_with: frozenset[str] = frozenset({"public", "market"})  # the market opens once these paths are connected
    port: int = 0
    snapshot_requests: int = 0
    snapshot_failures_sent: int = 0
    sent: int = 0
    done: bool = False
    connections: int = 0

    def __post_init__(self) -> None:
        self.snap, self.events = load_market(depth_events=self.depth_events)
        self.truth = TrueBook(self.snap)
        self.pos = 0
        self._subs: list[tuple[str, asyncio.Queue]] = []
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._market_task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None

    @property
    def last_depth_u(self) -> int:
        return max(e.data["u"] for e in self.events if e.kind == "depth" and e.depth_index not in self.drop)

    def start(self) -> BookFeed:
        threading.Thread(target=self._main, name="book-feed", daemon=True).start()
        if not self._started.wait(20):
            raise RuntimeError("book feed did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0, process_request=self._http, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._started.set()
            await self._stop.wait()

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if not url.path.startswith("/fapi/"):
            return None  # a WebSocket handshake
        if url.path != "/fapi/v1/depth":
            return _response(404, b'{"code":-1,"msg":"not found"}')
        self.snapshot_requests += 1
        if self.snapshot_failures_sent < self.fail_snapshots:
            self.snapshot_failures_sent += 1
            return _response(503, b'{"code":-1001,"msg":"service unavailable (injected)"}')
        limit = int(parse_qs(url.query).get("limit", ["1000"])[0])
        return _response(200, self.truth.rest_body(limit))

    async def _handler(self, ws: ServerConnection) -> None:
        path = urlsplit(ws.request.path).path  # type: ignore[union-attr]
        route = "market" if path.startswith("/market") else "public"
        queue: asyncio.Queue = asyncio.Queue()
        sub = (route, queue)
        self._subs.append(sub)
        self.connections += 1
        if self._market_task is None and {r for r, _ in self._subs} >= self.open_with:
            self._market_task = asyncio.get_running_loop().create_task(self._market())
        try:
            while True:
                text = await queue.get()
                await ws.send(text)
        except Exception:  # noqa: BLE001 (the client went away)
            pass
        finally:
            self._subs.remove(sub)

    async def _market(self) -> None:
        t0 = self.events[0].data.get("T") or self.events[0].data["E"]
        wall0 = time.monotonic()
        for i, ev in enumerate(self.events):
            t = ev.data.get("T") or ev.data["E"]
            due = wall0 + (t - t0) / 1000 / self.speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if ev.kind == "depth":
                self.truth.apply(ev.data, self.keep_history)
                if ev.depth_index in self.drop:
                    self.pos = i + 1
                    continue
            for route, q in list(self._subs):
                if route == ev.route:
                    q.put_nowait(ev.text)
            self.sent += 1
            self.pos = i + 1
        self.done = True


def _response(status: int, body: bytes) -> Response:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return Response(status, reason, headers, body)
