"""The picows WebSocket server that only moves bytes, plus HTTP: the REST depth snapshot and the control paths.

HTTP on the same port: `GET /fapi/v1/depth` (`/api/v3/depth` for spot recordings,
see `rest`), `/control/stats` (JSON counters), `/control/drop` (drop every connection
now), `/control/book` (the feed's book: ground truth for tests), `/control/faults`
(arm snapshot failures, stale snapshots, dropped depth events).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import orjson

from ticklens.emulator import rest
from ticklens.emulator.rest import BookFaults
from ticklens.emulator.session import REJECTED_KINDS, Faults, Session, Subscription, parse_path
from ticklens.emulator.timeline import Timeline


@dataclass
class FeedState:
    timeline: Timeline
    faults: Faults
    drop_count: int = 0  # how many connections the drop fault applies to (0: all)
    drops_done: int = 0
    connections: set = field(default_factory=set)
    sessions_total: int = 0
    messages: int = 0
    closed: list[Session] = field(default_factory=list)  # finished sessions, for the counters
    stop: Callable[[], None] | None = None  # set by serve(): ends the server
    book_faults: BookFaults = field(default_factory=BookFaults)
    misrouted: dict[str, int] = field(default_factory=dict)  # stream names asked on the wrong routed path
    # `--simulate` with recordings: their book streams on /public (and the REST depth), while the
    # simulated trades go out on /market. None: one timeline serves every path.
    book_timeline: Timeline | None = None

    @property
    def books_tl(self) -> Timeline:
        """The timeline of the book streams and the depth endpoint."""
        return self.book_timeline if self.book_timeline is not None else self.timeline

    def timeline_for(self, route: str) -> Timeline:
        """The timeline a WebSocket path is served from (`/public/…`: the books')."""
        return self.books_tl if route.startswith("/public/") else self.timeline

    @property
    def books(self) -> dict:
        tape = self.books_tl.tape
        return tape.books if tape is not None else {}

    def note_misrouted(self, sub: Subscription, path: str) -> None:
        for name in sub.misrouted:
            self.misrouted[name] = self.misrouted.get(name, 0) + 1
            print(
                f"ticklens feed: {name!r} is not served on {path} (as on Binance: accepted, never sent)",
                file=sys.stderr,
            )
        sub.misrouted.clear()

    def add_closed(self, s: Session) -> None:
        # Fold into one summary session so the list stays short.
        if not self.closed:
            self.closed.append(Session(self.timeline, Subscription(True), Faults()))
        acc = self.closed[0]
        acc.trades_sent += s.trades_sent
        acc.lost += s.lost
        acc.quotes_sent += s.quotes_sent
        acc.depth_sent += s.depth_sent
        acc.depth_dropped += s.depth_dropped
        acc.dropped_ids = (acc.dropped_ids + s.dropped_ids)[-1_000:]
        for k, v in s.malformed_sent.items():
            acc.malformed_sent[k] = acc.malformed_sent.get(k, 0) + v
        if s.timeline is self.timeline:  # indices of this timeline's symbols (book sessions send no trades)
            for k, v in s.by_symbol.items():
                acc.by_symbol[k] = acc.by_symbol.get(k, 0) + v

    def stats(self) -> dict[str, object]:
        tl = self.timeline
        total = tl.finite_total
        sessions = self.closed + [c.session for c in self.connections]
        malformed: dict[str, int] = {}
        by_symbol: dict[str, int] = {}
        for s in sessions:
            for k, v in s.malformed_sent.items():
                malformed[k] = malformed.get(k, 0) + v
            for k, v in s.by_symbol.items():
                name = s.timeline.symbols[k]
                by_symbol[name] = by_symbol.get(name, 0) + v
        # Behind: a connected session has not yet sent everything due (paced replay or simulation).
        rows_behind = None
        if self.connections and tl.wall0 is not None and tl.speed is not None:
            due = tl.due_position(time.monotonic())
            behind = [due - c.session.pos for c in self.connections if c.session.timeline is tl]
            rows_behind = max(0, max(behind, default=0))
        return {
            "connections": len(self.connections),
            "sessions_total": self.sessions_total,
            "messages": self.messages,
            "trades": sum(s.trades_sent for s in sessions),
            "trades_by_symbol": by_symbol,
            "malformed": malformed,
            "malformed_rejectable": sum(v for k, v in malformed.items() if k in REJECTED_KINDS),
            "drops": self.drops_done,
            "position": tl.high_water,
            "total": total,
            "at_end": total is not None and tl.high_water >= total,
            "rows_behind": rows_behind,
            "due": tl.due_position(time.monotonic()) if tl.wall0 is not None and tl.speed is not None else None,
            "lost": sum(s.lost for s in sessions),
            "symbols": tl.symbols,
            "quotes": sum(s.quotes_sent for s in sessions),
            "depth_events": sum(s.depth_sent for s in sessions),
            "depth_dropped": sum(s.depth_dropped for s in sessions),
            "depth_dropped_ids": [[s.timeline.symbols[sym], u] for s in sessions for sym, u in s.dropped_ids][-1_000:],
            "misrouted": dict(self.misrouted),
            "snapshots": self.book_faults.stats(),
            "books": rest.books_info(self.books_tl),
        }


def _listener_class():
    from picows import WSListener, WSMsgType

    class FeedConnection(WSListener):
        """One client: a task renders due messages and sends them; pauses when the socket is full."""

        def __init__(self, state: FeedState, session: Session, drop_applies: bool) -> None:
            self.state = state
            self.session = session
            self.drop_applies = drop_applies
            self.transport = None
            self.task: asyncio.Task | None = None
            self.writable = asyncio.Event()
            self.writable.set()

        def on_ws_connected(self, transport) -> None:  # type: ignore[no-untyped-def]
            self.transport = transport
            self.state.connections.add(self)
            self.session.begin(time.monotonic())
            self.task = asyncio.get_running_loop().create_task(self._run())

        def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
                return
            if frame.msg_type != WSMsgType.TEXT:
                return
            # Live SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, answered like Binance.
            try:
                req = orjson.loads(frame.get_payload_as_bytes())
                method, rid = req.get("method"), req.get("id")
            except (orjson.JSONDecodeError, AttributeError):
                transport.send(WSMsgType.TEXT, b'{"error":{"code":3,"msg":"Invalid JSON"}}')
                return
            sub = self.session.sub
            if method == "SUBSCRIBE":
                for name in req.get("params") or []:
                    sub.add(str(name), self.session.timeline.symbols, self.state.books)
                self.state.note_misrouted(sub, f"/{sub.route}")
                transport.send(WSMsgType.TEXT, orjson.dumps({"result": None, "id": rid}))
            elif method == "UNSUBSCRIBE":
                for name in req.get("params") or []:
                    sub.remove(str(name), self.session.timeline.symbols)
                transport.send(WSMsgType.TEXT, orjson.dumps({"result": None, "id": rid}))
            elif method == "LIST_SUBSCRIPTIONS":
                transport.send(WSMsgType.TEXT, orjson.dumps({"result": sub.names(), "id": rid}))

        def on_ws_disconnected(self, transport) -> None:  # type: ignore[no-untyped-def]
            if self in self.state.connections:
                self.state.connections.discard(self)
                self.state.add_closed(self.session)
            if self.task is not None:
                self.task.cancel()

        def pause_writing(self) -> None:
            self.writable.clear()

        def resume_writing(self) -> None:
            self.writable.set()

        def drop(self, graceful: bool = True) -> None:
            # Graceful: what was sent is flushed first, then TCP closes without a close frame
            # (as when Binance cuts a connection); the counters stay exact for tests.
            if self.transport is not None:
                self.transport.disconnect(graceful=graceful)

        async def _run(self) -> None:
            s, st, tr = self.session, self.state, self.transport
            text = WSMsgType.TEXT
            try:
                while True:
                    if not self.writable.is_set():
                        await self.writable.wait()
                    msgs = s.step(time.monotonic())
                    for m in msgs:
                        tr.send(text, m)
                    st.messages += len(msgs)
                    if s.drop_now and self.drop_applies:
                        st.drops_done += 1
                        self.drop()
                        return
                    if msgs:
                        await asyncio.sleep(0)
                    else:
                        await asyncio.sleep(min(0.05, max(0.001, s.timeline.next_due_in(s.pos, time.monotonic()))))
            except asyncio.CancelledError:
                pass

    return FeedConnection


async def serve(state: FeedState, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Run the server until cancelled; prints the listening line the test fixture waits for."""
    from picows import WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server

    conn_cls = _listener_class()

    def factory(request):  # type: ignore[no-untyped-def]
        path = request.path.decode("latin-1")
        if path.startswith("/control/"):
            return WSUpgradeResponseWithListener(_control(state, path), None)
        route = urlsplit(path).path
        if route in rest.PATHS:
            query = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
            now = time.monotonic()
            btl = state.books_tl
            pos = btl.current_position(now, bool(state.connections))
            status, body, headers = rest.depth(btl, state.book_faults, route, query, now, pos)
            return WSUpgradeResponseWithListener(_http(status, body, headers), None)
        tl = state.timeline_for(route)
        sub, query, err = parse_path(path, tl.symbols, state.books)
        if sub is None:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(400, err.encode()), None)
        state.note_misrouted(sub, route)
        f = state.faults
        try:
            faults = Faults(
                drop_after=int(query.get("drop_after", f.drop_after)),
                malformed_every=int(query.get("malformed_every", f.malformed_every)),
                malformed_kinds=f.malformed_kinds,
                resend=int(query.get("resend", f.resend)),
                depth_drop_every=int(query.get("depth_drop_every", f.depth_drop_every)),
                depth_drop_count=int(query.get("depth_drop_count", f.depth_drop_count)),
            )
        except ValueError as e:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(400, str(e).encode()), None)
        state.sessions_total += 1
        applies = bool(faults.drop_after) and (state.drop_count == 0 or state.drops_done < state.drop_count)
        if not applies:
            faults.drop_after = 0
        return conn_cls(state, Session(tl, sub, faults), applies)

    server = await ws_create_server(factory, host, port, enable_auto_ping=False, max_frame_size=1 << 20)
    actual = server.sockets[0].getsockname()[1]
    print(f"ticklens feed listening on ws://{host}:{actual}/market/stream", flush=True)
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    state.stop = stop.set
    try:
        await stop.wait()
    finally:
        # Not server.serve_forever(): cancelling it waits for every client to leave.
        server.close()
        for c in list(state.connections):
            c.drop(graceful=False)
            if c.task is not None:
                c.task.cancel()


def _http(status: int, body: bytes, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    from picows import WSUpgradeResponse

    if status == 200:
        return WSUpgradeResponse.create_ok_response(body, headers)
    return WSUpgradeResponse.create_error_response(status, body, headers)


def _arm(state: FeedState, query: dict[str, str]) -> dict[str, object]:
    """`/control/faults?…`: add snapshot failures / stale answers / dropped depth events, for a symbol or all."""
    bf = state.book_faults
    symbol = query.get("symbol", "*").lower()
    for key, table in (("depth_fail", bf.fail), ("depth_stale", bf.stale)):
        if key in query:
            table[symbol] = table.get(symbol, 0) + int(query[key])
    if "stale_by" in query:
        bf.stale_by = int(query["stale_by"])
    armed = 0
    if "depth_drop" in query:
        n = int(query["depth_drop"])
        syms = state.books_tl.symbols
        want = None if symbol == "*" else syms.index(symbol) if symbol in syms else -1
        for c in state.connections:
            subs = c.session.sub.books
            for s in subs if want is None else [want] if want in subs else []:
                c.session.faults.depth_drop_now[s] = c.session.faults.depth_drop_now.get(s, 0) + n
                armed += 1
    return {"armed_streams": armed, **bf.stats()}


def _control(state: FeedState, path: str):  # type: ignore[no-untyped-def]
    parts = urlsplit(path)
    route = parts.path
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if route == "/control/stats":
        body = orjson.dumps(state.stats())
    elif route == "/control/drop":
        conns = list(state.connections)
        for c in conns:
            c.drop()
        body = orjson.dumps({"dropped": len(conns)})
    elif route == "/control/book":
        return _http(
            *rest.truth(
                state.books_tl, query, state.books_tl.current_position(time.monotonic(), bool(state.connections))
            )
        )
    elif route == "/control/faults":
        try:
            body = orjson.dumps(_arm(state, query))
        except ValueError as e:
            return _http(400, orjson.dumps({"error": str(e)}), {"Content-Type": "application/json"})
    else:
        return _http(404, b"unknown control path", {})
    return _http(200, body, {"Content-Type": "application/json"})
