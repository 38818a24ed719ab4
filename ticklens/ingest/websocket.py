"""WebSocket transport: Binance (or the local feed) connections feeding a `Hub`.

A picows client (or `websockets`, `source.client`) runs in a background thread with its own asyncio loop.
Binance routes USD-M streams by path: `/market` carries `@aggTrade`, `/public` the
high-frequency `@trade`, `@bookTicker` and `@depth` (docs/feed.md), so each path gets
its own connections. Each group of at most `max_streams_per_connection` streams has
a `_Slot` that keeps one connection alive: reconnect with exponential backoff and full jitter, a
no-data watchdog, and a planned rollover before Binance's 24 h cut (the new
connection opens first, both run for `overlap_s`, then the old one closes;
the dedup step drops the trades both delivered; the new connection's book events
are held until the switch, so one connection at a time feeds a book). A hostile or broken server
cannot make it storm: the backoff starts again only after a connection proved
healthy (valid trades for `healthy_after_s`), connects are capped per minute
across all slots (Binance bans an IP for too many), and a connection whose
messages are mostly rejects is closed and backed off like a stall. Every message is parsed once
(`ticklens.exchange.binance.parse_message`) into the hub, which the flow's
source partition drains (`flows.sources`).
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
import traceback
from dataclasses import dataclass

from ticklens.config import SourceConfig
from ticklens.exchange.binance_book import book_ticker_stream, depth_stream
from ticklens.ingest.hub import Hub

WATCH_EVERY_S = 0.05
PUBLISH_EVERY_S = 0.01


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, initial·2^attempt))."""
    return rng.uniform(0, min(max_s, initial_s * (2 ** min(attempt, 30))))


# Binance's routed paths per stream kind (change notice of 2026-03-06; docs/feed.md).
ROUTES = {"aggTrade": "market", "trade": "public", "bookTicker": "public", "depth": "public"}
_ROUTED = ("/market/stream", "/public/stream")


@dataclass(frozen=True, slots=True)
class Connection:
    """One connection to keep: its URL, the symbols it carries and whether it carries depth streams."""

    url: str
    symbols: tuple[str, ...]
    depth: bool = False


def routed_url(url: str, route: str) -> str:
    """`…/market/stream` or `…/public/stream` with the path for `route`; other paths (a legacy
    `/stream`, the local feed's) unchanged."""
    base, _, query = url.partition("?")
    for path in _ROUTED:
        if base.endswith(path):
            base = f"{base[: -len(path)]}/{route}/stream"
            break
    return f"{base}?{query}" if query else base


def stream_name(kind: str, symbol: str, depth_speed_ms: int) -> str:
    if kind == "depth":
        return depth_stream(symbol, depth_speed_ms)
    if kind == "bookTicker":
        return book_ticker_stream(symbol)
    return f"{symbol.lower()}@{kind}"


def connections(src: SourceConfig, symbols: list[str]) -> list[Connection]:
    """The connections for `source.streams`: per routed path, groups of whole symbols with at most
    `max_streams_per_connection` streams each. Query parameters already in `source.url` (the local
    feed's fault controls) are kept after `streams=`."""
    out = []
    for route in ("market", "public"):
        kinds = [k for k in src.streams or [src.stream] if ROUTES[k] == route]
        if not kinds:
            continue
        base, _, query = routed_url(src.url or "", route).partition("?")
        per = max(1, src.max_streams_per_connection // len(kinds))
        for i in range(0, len(symbols), per):
            group = symbols[i : i + per]
            names = [stream_name(k, s, src.depth_speed_ms) for s in group for k in kinds]
            url = f"{base}?streams={'/'.join(names)}"
            out.append(Connection(f"{url}&{query}" if query else url, tuple(group), "depth" in kinds))
    return out


def connection_urls(src: SourceConfig, symbols: list[str]) -> list[str]:
    return [c.url for c in connections(src, symbols)]


class _Health:
    """What the slot judges a connection by: valid trades over time, and its share of rejects."""

    def _init_health(self, src: SourceConfig) -> None:
        self.last_frame = self.opened = time.monotonic()
        self.got_data = False
        self.first_trade = self.last_trade = 0.0
        self.window = src.reject_window
        self.max_rejects = src.reject_ratio_max * src.reject_window
        self.n_window = self.n_rejects = 0
        self.bad: str | None = None  # why the connection must go

    def note(self, status: str) -> None:
        if status == "trade" or status == "depth" or status == "quote":  # valid market data
            now = self.last_frame
            if not self.first_trade:
                self.first_trade = now
            self.last_trade = now
        elif status == "reject":
            self.n_rejects += 1
        self.n_window += 1
        if self.n_window >= self.window:
            if self.n_rejects > self.max_rejects and self.bad is None:
                self.bad = f"{self.n_rejects} of its last {self.n_window} messages were rejects"
            self.n_window = self.n_rejects = 0

    def healthy_for(self) -> float:
        """Seconds over which this connection has delivered valid trades."""
        return self.last_trade - self.first_trade if self.first_trade else -1.0


def _listener_class():
    from picows import WSListener, WSMsgType

    class _Conn(WSListener, _Health):
        """One WebSocket connection: frames go to the hub; the slot watches its health."""

        def __init__(self, hub: Hub, src: SourceConfig, hold: list | None = None) -> None:
            self.hub = hub
            self.transport = None
            self.hold = hold  # a rollover's new connection: book events kept until the switch
            self._init_health(src)

        def on_ws_connected(self, transport) -> None:  # type: ignore[no-untyped-def]
            self.transport = transport
            self.hub.transports.add(transport)
            if self.hub.paused:
                transport.underlying_transport.pause_reading()

        def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
            self.last_frame = time.monotonic()
            hub = self.hub
            t = frame.msg_type
            if t == WSMsgType.TEXT or t == WSMsgType.BINARY:
                self.got_data = True
                try:
                    self.note(hub.on_message(frame.get_payload_as_bytes(), self.hold))
                except Exception:  # never let one message kill the connection
                    hub.rejected += 1
                    traceback.print_exc()
                if self.bad is not None and not transport.is_disconnected:
                    hub.publish()
                    transport.send_close()
                    transport.disconnect()
            elif t == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            if frame.last_in_buffer:
                hub.publish()

        def on_ws_disconnected(self, transport) -> None:  # type: ignore[no-untyped-def]
            self.hub.transports.discard(transport)
            self.hub.publish()

        @property
        def closed(self) -> bool:
            return self.transport is None or self.transport.is_disconnected

        def close(self) -> None:
            if self.transport is not None and not self.transport.is_disconnected:
                self.hub.publish()
                self.transport.send_close()
                self.transport.disconnect()

    return _Conn


class _WsConn(_Health):
    """The same connection surface on the `websockets` library (`source.client: websockets`)."""

    def __init__(self, hub: Hub, ws, src: SourceConfig, hold: list | None = None) -> None:  # type: ignore[no-untyped-def]
        self.hub = hub
        self.ws = ws
        self.hold = hold
        self._init_health(src)
        self.task = asyncio.get_running_loop().create_task(self._read())
        hub.ws_conns.add(self)

    async def _read(self) -> None:
        import websockets

        hub = self.hub
        try:
            async for msg in self.ws:
                self.last_frame = time.monotonic()
                self.got_data = True
                try:
                    self.note(hub.on_message(msg if isinstance(msg, bytes) else msg.encode(), self.hold))
                except Exception:  # never let one message kill the connection
                    hub.rejected += 1
                    traceback.print_exc()
                if self.bad is not None:
                    break
                while hub.paused:  # the queue is full: stop reading, TCP pushes back on the sender
                    await asyncio.sleep(0.005)
        except (websockets.ConnectionClosed, OSError):
            pass
        finally:
            hub.publish()
            hub.ws_conns.discard(self)

    @property
    def closed(self) -> bool:
        return self.task.done()

    def close(self) -> None:
        self.hub.publish()
        self.task.cancel()
        asyncio.get_running_loop().create_task(self.ws.close())


class _Slot:
    """Keeps one group of streams connected: reconnects, watchdog, planned rollover."""

    def __init__(self, index: int, conn: Connection, hub: Hub, src: SourceConfig, seed: int | None = None) -> None:
        self.index = index
        self.conn = conn
        self.url = conn.url
        self.hub = hub
        self.src = src
        self.rng = random.Random(seed)
        self.conn_cls = _listener_class()

    async def _open(self, hold: list | None = None):  # type: ignore[no-untyped-def]
        if self.src.client == "websockets":
            import websockets

            ws = await websockets.connect(
                self.url,
                max_size=self.src.max_frame_bytes,
                max_queue=None,  # our own bounded queue applies the backpressure
                open_timeout=10,
                ping_interval=max(1.0, self.src.stall_s / 2),
                ping_timeout=max(1.0, self.src.stall_s / 2),
            )
            return _WsConn(self.hub, ws, self.src, hold)

        from picows import ws_connect

        hub, src = self.hub, self.src
        _, listener = await ws_connect(
            lambda: self.conn_cls(hub, src, hold),
            self.url,
            enable_auto_ping=True,
            auto_ping_idle_timeout=max(1.0, self.src.stall_s / 2),
            auto_ping_reply_timeout=max(1.0, self.src.stall_s / 2),
            websocket_handshake_timeout=10,
            max_frame_size=self.src.max_frame_bytes,
            read_buffer_init_size=1 << 20,  # more messages per socket read (and per GIL turn)
        )
        return listener

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(backoff_delay(attempt, self.src.backoff_initial_s, self.src.backoff_max_s, self.rng))

    async def _permit(self) -> None:
        """Wait until a connect keeps the last minute within `max_connects_per_minute` (all slots)."""
        hub, cap = self.hub, self.src.max_connects_per_minute
        times = hub.connect_times
        while True:
            now = time.monotonic()
            while times and now - times[0] > 60.0:
                times.popleft()
            if len(times) < cap:
                break
            wait = 60.0 - (now - times[0]) + 0.01
            print(f"[ticklens] {cap} connects in the last minute; next one in {wait:.1f}s", file=sys.stderr, flush=True)
            await asyncio.sleep(wait)
        times.append(time.monotonic())
        hub.connects += 1

    async def _connect(self, hold: list | None = None):  # type: ignore[no-untyped-def]
        await self._permit()
        if hold is None and self.conn.depth:
            # Before the connection's first event: the books learn that events may be missing.
            self.hub.on_connected(list(self.conn.symbols))
        return await self._open(hold)

    async def run(self) -> None:
        hub, src = self.hub, self.src
        attempt = 0
        first = True
        current = None
        while True:
            if current is None:
                try:
                    current = await self._connect()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # refused, handshake error, DNS: retry with backoff
                    hub.connected[self.index] = False
                    if attempt == 0 or attempt % 10 == 0:
                        print(f"[ticklens] connect {self.url}: {e}; retrying", file=sys.stderr, flush=True)
                    await self._backoff(attempt)
                    attempt += 1
                    continue
                if not first:
                    hub.reconnects += 1
                first = False
                hub.connected[self.index] = True
            reason = await self._watch(current)
            if current.healthy_for() >= src.healthy_after_s:
                attempt = 0
            if reason == "rollover":
                held: list | None = [] if self.conn.depth else None
                try:
                    new = await self._connect(held)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    current.opened = time.monotonic() - src.rollover_s + min(60.0, src.backoff_max_s)
                    continue
                # Both connections deliver for overlap_s; dedup drops the repeated trades, and the
                # new one's book events wait until the switch (one connection feeds a book).
                deadline = time.monotonic() + src.overlap_s
                while time.monotonic() < deadline and not current.closed:
                    await asyncio.sleep(WATCH_EVERY_S)
                current.close()
                if held is not None:
                    hub.release(held, list(self.conn.symbols))
                    new.hold = None
                current = new
                hub.rollovers += 1
                continue
            # Disconnected or stalled: drop it and reconnect after a jittered pause.
            current.close()
            current = None
            hub.connected[self.index] = False
            await self._backoff(attempt)
            attempt += 1

    async def _watch(self, conn) -> str:  # type: ignore[no-untyped-def]
        src = self.src
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            now = time.monotonic()
            if conn.bad is not None:
                print(f"[ticklens] {conn.bad} on {self.url}; reconnecting after backoff", file=sys.stderr, flush=True)
                return "rejecting"
            if conn.closed:
                return "disconnected"
            if self.hub.paused:  # we stopped reading (queue full): silence is ours, not a stall
                conn.last_frame = now
            if now - conn.last_frame > src.stall_s:
                print(
                    f"[ticklens] no data for {src.stall_s:g}s on {self.url}; reconnecting", file=sys.stderr, flush=True
                )
                return "stalled"
            if now - conn.opened >= src.rollover_s:
                return "rollover"


class Reader:
    """The background thread with its own asyncio loop, running every slot."""

    def __init__(self, hub: Hub, conns: list[Connection] | list[str], src: SourceConfig) -> None:
        self.hub = hub
        # (plain URLs: connections of trades only, as before books)
        items = [c if isinstance(c, Connection) else Connection(c, ()) for c in conns]
        self.slots = [_Slot(i, c, hub, src) for i, c in enumerate(items)]
        self.loop = asyncio.new_event_loop()
        hub.loop = self.loop
        self.tasks: list[asyncio.Task] = []
        self.thread = threading.Thread(target=self._main, name="ticklens-ws", daemon=True)

    def start(self) -> None:
        self.thread.start()

    async def _publisher(self) -> None:
        # A frame followed by a partial one in the same read is not "last in buffer";
        # without this it would wait for the next read, which may never come.
        while True:
            await asyncio.sleep(PUBLISH_EVERY_S)
            self.hub.publish()
            if self.hub.backfill is not None:
                self.hub.backfill.poll()
            self.hub.poll_snapshots()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.tasks = [self.loop.create_task(s.run()) for s in self.slots]
        self.tasks.append(self.loop.create_task(self._publisher()))
        try:
            self.loop.run_until_complete(asyncio.gather(*self.tasks, return_exceptions=True))
        finally:
            self.loop.close()

    async def _shutdown(self) -> None:
        if self.hub.backfill is not None:
            await self.hub.backfill.aclose()
        if self.hub.snapshots is not None:
            await self.hub.snapshots.aclose()  # type: ignore[attr-defined]
        for t in self.tasks:
            t.cancel()
        for tr in list(self.hub.transports):
            tr.send_close()
            tr.disconnect()
        for conn in list(self.hub.ws_conns):
            conn.task.cancel()
            await conn.ws.close()

    def stop(self, timeout: float = 5.0) -> None:
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
            self.thread.join(timeout)
        self.hub.close_record()
