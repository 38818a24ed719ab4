"""The picows WebSocket server that only moves bytes, plus HTTP control (`/control/stats`, `/control/drop`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

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

    def add_closed(self, s: Session) -> None:
        # Fold into one summary session so the list stays short.
        if not self.closed:
            self.closed.append(Session(self.timeline, Subscription(True), Faults()))
        acc = self.closed[0]
        acc.trades_sent += s.trades_sent
        acc.lost += s.lost
        for k, v in s.malformed_sent.items():
            acc.malformed_sent[k] = acc.malformed_sent.get(k, 0) + v
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
                by_symbol[tl.symbols[k]] = by_symbol.get(tl.symbols[k], 0) + v
        # Behind: a connected session has not yet sent everything due (paced replay or simulation).
        rows_behind = None
        if self.connections and tl.wall0 is not None and tl.speed is not None:
            due = tl.due_position(time.monotonic())
            behind = [due - c.session.pos for c in self.connections]
            rows_behind = max(0, max(behind))
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
                    sub.add(str(name), self.state.timeline.symbols)
                transport.send(WSMsgType.TEXT, orjson.dumps({"result": None, "id": rid}))
            elif method == "UNSUBSCRIBE":
                for name in req.get("params") or []:
                    sym, _, _ = str(name).partition("@")
                    if sym in self.state.timeline.symbols:
                        sub.streams.pop(self.state.timeline.symbols.index(sym), None)
                transport.send(WSMsgType.TEXT, orjson.dumps({"result": None, "id": rid}))
            elif method == "LIST_SUBSCRIPTIONS":
                names = [n.decode() for lst in sub.streams.values() for n, _ in lst]
                transport.send(WSMsgType.TEXT, orjson.dumps({"result": names, "id": rid}))

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
                        await asyncio.sleep(min(0.05, max(0.001, st.timeline.next_due_in(s.pos, time.monotonic()))))
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
        sub, query, err = parse_path(path, state.timeline.symbols)
        if sub is None:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(400, err.encode()), None)
        f = state.faults
        try:
            faults = Faults(
                drop_after=int(query.get("drop_after", f.drop_after)),
                malformed_every=int(query.get("malformed_every", f.malformed_every)),
                malformed_kinds=f.malformed_kinds,
                resend=int(query.get("resend", f.resend)),
            )
        except ValueError as e:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(400, str(e).encode()), None)
        state.sessions_total += 1
        applies = bool(faults.drop_after) and (state.drop_count == 0 or state.drops_done < state.drop_count)
        if not applies:
            faults.drop_after = 0
        return conn_cls(state, Session(state.timeline, sub, faults), applies)

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


def _control(state: FeedState, path: str):  # type: ignore[no-untyped-def]
    from picows import WSUpgradeResponse

    route = urlsplit(path).path
    if route == "/control/stats":
        body = orjson.dumps(state.stats())
    elif route == "/control/drop":
        conns = list(state.connections)
        for c in conns:
            c.drop()
        body = orjson.dumps({"dropped": len(conns)})
    else:
        return WSUpgradeResponse.create_error_response(404, b"unknown control path")
    return WSUpgradeResponse.create_ok_response(body, {"Content-Type": "application/json"})
