"""One client connection's stream: subscription, rendering in Binance's shapes, and the faults it asked for.

Routing follows Binance's split of the USD-M WebSocket (docs/feed.md): book streams
(`bookTicker`, `depth…`) are served on `/public`, `aggTrade` on `/market`, `trade` on
both; a stream asked on the wrong one is accepted and acknowledged but never sent
(as Binance does), and counted (`misrouted`). The legacy paths serve everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from ticklens.emulator.books import DEFAULT_SPEED, SPEEDS, SymbolBook, shift_event
from ticklens.emulator.tape import AGG, DEPTH, KIND_NAMES, QUOTE, TRADE, Rows
from ticklens.emulator.timeline import Timeline

MAX_BATCH = 2_048  # messages rendered per step of a session
MALFORMED_KINDS = ("bad_json", "missing_field", "ack", "unknown_event", "bad_value", "other_stream")
# Malformed kinds the client must reject (dead letters); `other_stream` is only skipped.
REJECTED_KINDS = frozenset(MALFORMED_KINDS) - {"other_stream"}


_TRADE_FMT = b'{"e":"trade","E":%d,"T":%d,"s":"%s","t":%d,"p":"%a","q":"%a","X":"MARKET","m":%s}'
_AGG_FMT = b'{"e":"aggTrade","E":%d,"a":%d,"s":"%s","p":"%a","q":"%a","f":%d,"l":%d,"T":%d,"m":%s}'
_BOOL = (b"false", b"true")


def render_event(
    want: int, sym: bytes, tid: int, ts: int, ev: int, price: float, qty: float, m: bool, f: int, la: int
) -> bytes:
    """One Binance-format trade or aggTrade event (E, T, upper-case s, prices as strings)."""
    if want == TRADE:
        return _TRADE_FMT % (ev, ts, sym, tid, price, qty, _BOOL[m])
    return _AGG_FMT % (ev, tid, sym, price, qty, f, la, ts, _BOOL[m])


def wrap(stream: bytes, data: bytes) -> bytes:
    return b'{"stream":"' + stream + b'","data":' + data + b"}"


_BAD_MS = 1_721_347_022_000  # a plausible time: each malformed message has exactly one defect


def malformed_message(kind: str, symbol: str, n: int) -> bytes:
    """A message the client must survive; `n` makes each one distinct."""
    s = symbol.upper().encode()
    stream = symbol.encode() + b"@trade"
    if kind == "bad_json":
        return b'{"stream":"' + stream + b'","data":{"e":"trade","E":' + str(n).encode()
    if kind == "missing_field":
        return wrap(
            stream, b'{"e":"trade","E":%d,"T":%d,"s":"%s","t":%d,"q":"1.0","m":true}' % (_BAD_MS, _BAD_MS, s, n)
        )
    if kind == "ack":
        return b'{"result":null,"id":%d}' % n
    if kind == "unknown_event":
        return wrap(stream, b'{"e":"tradeLite","E":1,"s":"%s","n":%d}' % (s, n))
    if kind == "bad_value":
        return wrap(
            stream,
            b'{"e":"trade","E":%d,"T":%d,"s":"%s","t":%d,"p":"-1","q":"1.0","m":true}' % (_BAD_MS, _BAD_MS, s, n),
        )
    if kind == "other_stream":
        bt = symbol.encode() + b"@bookTicker"
        return wrap(bt, b'{"e":"bookTicker","u":%d,"s":"%s","b":"1.0","B":"1","a":"1.1","A":"1"}' % (n, s))
    raise ValueError(f"unknown malformed kind {kind!r}")


# Which routed path serves which stream kind ("legacy": the unrouted /stream and /ws, everything).
ROUTE_KINDS = {
    "market": frozenset({TRADE, AGG}),
    "public": frozenset({TRADE, QUOTE, DEPTH}),
    "legacy": frozenset({TRADE, AGG, QUOTE, DEPTH}),
}


def book_kind(kind: str) -> tuple[int, int | None] | None:
    """(QUOTE | DEPTH, speed ms or None for the default) of a book stream suffix, else None."""
    if kind == "bookTicker":
        return QUOTE, None
    if kind == "depth":
        return DEPTH, None
    if kind.startswith("depth@") and kind.endswith("ms") and kind[6:-2].isdigit() and len(kind) <= 14:
        return DEPTH, int(kind[6:-2])
    return None


@dataclass
class Subscription:
    """What one connection asked for: streams per symbol index, and the wrapping."""

    combined: bool
    route: str = "legacy"  # market | public | legacy
    streams: dict[int, list[tuple[bytes, int]]] = field(default_factory=dict)  # sym → [(name, kind)] trades
    books: dict[int, list[tuple[bytes, int, int]]] = field(default_factory=dict)  # sym → [(name, kind, speed)]
    unknown: list[str] = field(default_factory=list)
    misrouted: list[str] = field(default_factory=list)  # accepted, never sent (wrong routed path)

    def add(self, stream: str, symbols: list[str], books: dict[int, SymbolBook] | None = None) -> bool:
        """Take one stream name; False if the feed cannot serve that kind of stream at all."""
        name, _, kind = stream.partition("@")
        name = name.lower()
        book = None if kind in KIND_NAMES else book_kind(kind)
        if kind not in KIND_NAMES and book is None:
            self.unknown.append(stream)
            return False
        code = KIND_NAMES[kind] if book is None else book[0]
        if code not in ROUTE_KINDS[self.route]:
            self.misrouted.append(stream)
            return True
        if name not in symbols:
            # Binance accepts any stream name and simply sends nothing for it.
            self.unknown.append(stream)
            return True
        s = symbols.index(name)
        full = f"{name}@{kind}".encode()
        if book is None:
            lst = self.streams.setdefault(s, [])
            if (full, code) not in lst:
                lst.append((full, code))
            return True
        speed = 0
        if code == DEPTH:
            sb = (books or {}).get(s)
            if sb is not None:
                speed = DEFAULT_SPEED[sb.market] if book[1] is None else book[1]
                if speed not in SPEEDS[sb.market] or (speed % sb.speed_ms if sb.speed_ms else 0):
                    self.unknown.append(stream)
                    return False  # not a speed of this market, or finer than the recording's
            elif book[1] is not None and book[1] not in SPEEDS["usdm"] + SPEEDS["spot"]:
                self.unknown.append(stream)
                return False
        entry = (full, code, speed)
        lst2 = self.books.setdefault(s, [])
        if entry not in lst2:
            lst2.append(entry)
        return True

    def remove(self, stream: str, symbols: list[str]) -> None:
        name, _, kind = stream.partition("@")
        full = f"{name.lower()}@{kind}".encode()
        for table in (self.streams, self.books):
            for s in list(table):
                table[s] = [e for e in table[s] if e[0] != full]  # type: ignore[assignment]
                if not table[s]:
                    del table[s]

    def names(self) -> list[str]:
        out = [n.decode() for lst in self.streams.values() for n, _ in lst]
        return out + [n.decode() for lst in self.books.values() for n, _, _ in lst]


@dataclass
class Faults:
    drop_after: int = 0  # drop this connection after N messages (0: never)
    malformed_every: int = 0  # one malformed message after every N trade messages
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    resend: int = 0  # start N positions before the current one (duplicates on reconnect)
    depth_drop_every: int = 0  # per symbol: after every N depth events sent, one is not (a pu break)
    depth_drop_count: int = 0  # at most this many dropped per connection (0: no limit)
    depth_drop_now: dict[int, int] = field(default_factory=dict)  # sym → drop its next N depth events


@dataclass
class Session:
    """One connection's progress through the timeline; pure: returns the bytes to send."""

    timeline: Timeline
    sub: Subscription
    faults: Faults
    pos: int = 0
    sent: int = 0  # messages sent on this connection
    trades_sent: int = 0
    malformed_sent: dict[str, int] = field(default_factory=dict)
    by_symbol: dict[int, int] = field(default_factory=dict)  # trades sent per symbol index
    lost: int = 0  # positions skipped because this reader fell out of the kept window
    last_ts: int = 0  # trade time of the last trade sent
    drop_now: bool = False
    quotes_sent: int = 0
    depth_sent: int = 0
    depth_dropped: int = 0
    dropped_ids: list[tuple[int, int]] = field(default_factory=list)  # (sym, u) of dropped depth events
    _depth_seen: dict[int, int] = field(default_factory=dict)  # sym → depth events due on this connection

    def begin(self, now: float) -> None:
        tl = self.timeline
        first = tl.wall0 is None
        tl.start(now)
        # Join the market where it is now (paced) or where the last reader got to (max speed);
        # the first client starts at the very beginning.
        hw = tl.high_water if (tl.speed is None or first) else max(tl.high_water, tl.due_position(now))
        self.pos = max(0, hw - self.faults.resend, tl.oldest_position())

    def step(self, now: float, max_msgs: int = MAX_BATCH) -> list[bytes]:
        """Messages due now (at most about `max_msgs`); sets `drop_now` when a drop is due."""
        tl = self.timeline
        due = tl.due_position(now)
        # A reader more than the kept window behind has lost those trades (as on Binance).
        oldest = tl.oldest_position()
        if self.pos < oldest:
            self.lost += oldest - self.pos
            self.pos = oldest
        end = min(due, self.pos + max_msgs)
        if self.faults.drop_after:
            end = min(end, self.pos + max(1, self.faults.drop_after - self.sent))
        out: list[bytes] = []
        while end > self.pos and len(out) < max_msgs:
            rows = tl.rows(self.pos, end)
            if rows is None:
                break
            self._render(rows, out)
            self.pos = rows.end
            tl.high_water = max(tl.high_water, self.pos)
        if self.faults.drop_after and self.sent >= self.faults.drop_after:
            self.drop_now = True
        return out

    def _formats(self) -> dict[int, list[tuple[bytes, bytes, bytes, int]]]:
        """Per symbol: (message format, prefix, suffix, kind) with stream name and symbol baked in."""
        out: dict[int, list[tuple[bytes, bytes, bytes, int]]] = {}
        for s, streams in self.sub.streams.items():
            sym = self.timeline.symbols[s].upper().encode()
            for name, want in streams:
                pre, suf = (b'{"stream":"' + name + b'","data":', b"}") if self.sub.combined else (b"", b"")
                body = (_TRADE_FMT if want == TRADE else _AGG_FMT).replace(b'"s":"%s"', b'"s":"' + sym + b'"')
                out.setdefault(s, []).append((pre + body + suf, pre, suf, want))
        return out

    def _render(self, rows: Rows, out: list[bytes]) -> None:
        books = self.sub.books
        if books and self.timeline.has_books:
            want = np.isin(rows.sym, list(books)) & (rows.kind >= QUOTE)
            if want.any():
                self._render_mixed(rows, out, np.flatnonzero(want))
                return
        self._render_trades(rows, out, None)

    def _trade_selection(self, rows: Rows) -> np.ndarray | None:
        """Indices of the rows to send as trades (None: all of them)."""
        sel = np.isin(rows.sym, list(self.sub.streams)) if len(self.sub.streams) < len(self.timeline.symbols) else None
        if self.timeline.has_books:
            trades = rows.kind <= AGG
            sel = trades if sel is None else sel & trades
        keep = self.timeline.keep_mask(rows)
        if keep is not None:
            sel = keep if sel is None else sel & keep
        return np.flatnonzero(sel) if sel is not None else None

    def _render_mixed(self, rows: Rows, out: list[bytes], book_idx: np.ndarray) -> None:
        """Trades and book events of one slice, in row order."""
        trade_idx = self._trade_selection(rows)
        assert trade_idx is not None  # a tape with books always selects trades by kind
        tout: list[bytes] = []
        marks: list[int] = []  # len(tout) after each trade row
        self._render_trades(rows, tout, trade_idx, marks)
        bout = self._render_books(rows, book_idx)
        ti, bi = trade_idx.tolist(), book_idx.tolist()
        a = b = 0
        done = 0
        while a < len(ti) or b < len(bi):
            if b >= len(bi) or (a < len(ti) and ti[a] < bi[b]):
                out.extend(tout[done : marks[a]])
                done = marks[a]
                a += 1
            else:
                out.extend(bout[b])
                b += 1

    def _render_books(self, rows: Rows, idx: np.ndarray) -> list[list[bytes]]:
        """The messages of each selected book row (bookTicker and depth streams, faults applied)."""
        tl = self.timeline
        tape = tl.tape
        assert tape is not None
        k = rows.loop
        d_ms = k * tl.span
        combined = self.sub.combined
        faults = self.faults
        result: list[list[bytes]] = []
        syms, kinds = rows.sym[idx].tolist(), rows.kind[idx].tolist()
        for r, s, kind in zip(idx.tolist(), syms, kinds, strict=True):
            msgs: list[bytes] = []
            result.append(msgs)
            d_id = k * int(tl.book_span[s])
            raw = tape.raw[rows.tape_start + r]
            assert raw is not None
            for name, want, speed in self.sub.books.get(s, ()):
                if want != kind:
                    continue
                if kind == QUOTE:
                    body = shift_event(raw, d_ms, d_id)
                    self.quotes_sent += 1
                else:
                    sb = tape.books.get(s)
                    if sb is None:
                        continue
                    if speed != sb.speed_ms:
                        e = int(np.searchsorted(sb.pos, rows.tape_start + r))
                        closes, merged = sb.merged(speed)
                        if not closes[e]:
                            continue
                        body = merged[e]
                    else:
                        body = raw
                    if self._drop_depth(s, int(rows.trade_id[r]), faults):
                        continue
                    body = shift_event(body, d_ms, d_id)
                    self.depth_sent += 1
                msgs.append(b'{"stream":"' + name + b'","data":' + body + b"}" if combined else body)
        self.sent += sum(map(len, result))
        return result

    def _drop_depth(self, s: int, u: int, f: Faults) -> bool:
        """The depth-drop fault: True if this depth event of symbol s is not sent."""
        now = f.depth_drop_now.get(s, 0)
        if now:
            f.depth_drop_now[s] = now - 1
        else:
            if not f.depth_drop_every or (f.depth_drop_count and self.depth_dropped >= f.depth_drop_count):
                return False
            seen = self._depth_seen.get(s, 0) + 1
            self._depth_seen[s] = seen
            if seen % (f.depth_drop_every + 1):
                return False
        self.depth_dropped += 1
        if len(self.dropped_ids) < 1_000:
            self.dropped_ids.append((s, u))
        return True

    def _render_trades(
        self, rows: Rows, out: list[bytes], idx: np.ndarray | None, marks: list[int] | None = None
    ) -> None:
        """The hot loop of the feed: one bytes % per message (floats as repr via %a)."""
        if idx is None:
            idx = self._trade_selection(rows)
        take = (lambda a: a[idx].tolist()) if idx is not None else (lambda a: a.tolist())  # noqa: E731
        sym, kind, tid, ts = take(rows.sym), take(rows.kind), take(rows.trade_id), take(rows.ts_ms)
        price, qty, maker = take(rows.price), take(rows.qty), take(rows.is_buyer_maker)
        first, last, ev = take(rows.first_id), take(rows.last_id), take(rows.event_ms)
        raws = rows.raw
        if raws is not None and idx is not None:
            raws = [raws[i] for i in idx.tolist()]
        if rows.live_event_time:
            ev = [time.time_ns() // 1_000_000] * len(ts)
        fmts = self._formats()
        every = self.faults.malformed_every
        append = out.append
        for i in range(len(ts)):
            for fmt, pre, suf, want in fmts[sym[i]]:
                raw = raws[i] if raws is not None else None
                if raw is not None and kind[i] == want:
                    append(pre + raw + suf)
                elif want == TRADE:
                    # A trade asked of aggTrade data: t = a.
                    append(fmt % (ev[i], ts[i], tid[i], price[i], qty[i], _BOOL[maker[i]]))
                else:
                    # An aggTrade asked of plain trades: a = f = l = t (first/last equal the id there).
                    append(fmt % (ev[i], tid[i], price[i], qty[i], first[i], last[i], ts[i], _BOOL[maker[i]]))
                if every:
                    self.trades_sent += 1
                    if self.trades_sent % every == 0:
                        self._malformed(self.timeline.symbols[sym[i]], out)
            if marks is not None:
                marks.append(len(out))
        n_trades = 0
        for s, c in enumerate(np.bincount(sym).tolist() if sym else []):
            if c and s in fmts:
                self.by_symbol[s] = self.by_symbol.get(s, 0) + c * len(fmts[s])
                n_trades += c * len(fmts[s])
        if not every:
            self.trades_sent += n_trades
        self.sent += n_trades  # malformed ones are counted in _malformed
        if ts:
            self.last_ts = ts[-1]

    def _malformed(self, symbol: str, out: list[bytes]) -> None:
        kinds = self.faults.malformed_kinds
        n = sum(self.malformed_sent.values())
        kind = kinds[n % len(kinds)]
        out.append(malformed_message(kind, symbol, n + 1))
        self.malformed_sent[kind] = self.malformed_sent.get(kind, 0) + 1
        self.sent += 1


ROUTES = ("/market/stream", "/stream", "/market/ws/", "/ws/", "/public/stream", "/public/ws/")


def parse_path(
    path: str, symbols: list[str], books: dict[int, SymbolBook] | None = None
) -> tuple[Subscription | None, dict[str, str], str]:
    """(subscription, query overrides, error) for a Binance-style request path."""
    parts = urlsplit(path)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    route = parts.path.rstrip("/") if not parts.path.endswith("/ws/") else parts.path
    kind = "market" if route.startswith("/market/") else "public" if route.startswith("/public/") else "legacy"
    if route in ("/market/stream", "/stream", "/public/stream"):
        sub = Subscription(combined=True, route=kind)
        names = [s for s in query.pop("streams", "").split("/") if s]
    elif any(parts.path.startswith(r) for r in ("/market/ws", "/ws", "/public/ws")):
        sub = Subscription(combined=False, route=kind)
        tail = parts.path.split("/ws", 1)[1].strip("/")
        names = [unquote(s) for s in tail.split("/") if s]
    else:
        return (
            None,
            query,
            (
                f"unknown path {parts.path!r}; use /market/stream?streams=… (trades), /public/stream?streams=… (books)"
                " or …/ws/<stream>"
            ),
        )
    for n in names:
        if not sub.add(n, symbols, books):
            return (
                None,
                query,
                (
                    f"unsupported stream {n!r} (trade, aggTrade, bookTicker, depth[@0ms|@100ms|@250ms|@500ms];"
                    " spot: depth[@100ms|@1000ms]; never finer than the recording)"
                ),
            )
    return sub, query, ""


# ---------------------------------------------------------------- socket part
