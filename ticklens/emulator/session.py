"""One client connection's stream: subscription, rendering in Binance's shapes, and the faults it asked for."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from ticklens.emulator.tape import KIND_NAMES, TRADE, Rows
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


@dataclass
class Subscription:
    """What one connection asked for: streams per symbol index, and the wrapping."""

    combined: bool
    streams: dict[int, list[tuple[bytes, int]]] = field(default_factory=dict)  # sym → [(name, kind)]
    unknown: list[str] = field(default_factory=list)

    def add(self, stream: str, symbols: list[str]) -> bool:
        name, _, kind = stream.partition("@")
        name = name.lower()
        if kind not in KIND_NAMES:
            self.unknown.append(stream)
            return False
        if name not in symbols:
            # Binance accepts any stream name and simply sends nothing for it.
            self.unknown.append(stream)
            return True
        entry = (f"{name}@{kind}".encode(), KIND_NAMES[kind])
        lst = self.streams.setdefault(symbols.index(name), [])
        if entry not in lst:
            lst.append(entry)
        return True


@dataclass
class Faults:
    drop_after: int = 0  # drop this connection after N messages (0: never)
    malformed_every: int = 0  # one malformed message after every N trade messages
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    resend: int = 0  # start N positions before the current one (duplicates on reconnect)


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
        """The hot loop of the feed: one bytes % per message (floats as repr via %a)."""
        sel = np.isin(rows.sym, list(self.sub.streams)) if len(self.sub.streams) < len(self.timeline.symbols) else None
        keep = self.timeline.keep_mask(rows)
        if keep is not None:
            sel = keep if sel is None else sel & keep
        idx = np.flatnonzero(sel) if sel is not None else None
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
        n_trades = 0
        for s, c in enumerate(np.bincount(sym).tolist() if sym else []):
            if c:
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


def parse_path(path: str, symbols: list[str]) -> tuple[Subscription | None, dict[str, str], str]:
    """(subscription, query overrides, error) for a Binance-style request path."""
    parts = urlsplit(path)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    route = parts.path.rstrip("/") if not parts.path.endswith("/ws/") else parts.path
    if route in ("/market/stream", "/stream", "/public/stream"):
        sub = Subscription(combined=True)
        names = [s for s in query.pop("streams", "").split("/") if s]
    elif any(parts.path.startswith(r) for r in ("/market/ws", "/ws", "/public/ws")):
        sub = Subscription(combined=False)
        tail = parts.path.split("/ws", 1)[1].strip("/")
        names = [unquote(s) for s in tail.split("/") if s]
    else:
        return None, query, f"unknown path {parts.path!r}; use /market/stream?streams=… or /market/ws/<stream>"
    for n in names:
        if not sub.add(n, symbols):
            return None, query, f"unsupported stream {n!r} (trade and aggTrade only)"
    return sub, query, ""


# ---------------------------------------------------------------- socket part
