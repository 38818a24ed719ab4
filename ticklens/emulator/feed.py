"""The local Binance-compatible trade feed (`ticklens feed`), for demos, tests and benchmarks.

A WebSocket server on 127.0.0.1 that speaks Binance's routed paths and
wrapping (`/market/stream?streams=…` combined, `/market/ws/<stream>` raw, and
the legacy `/stream`, `/ws`). It replays recorded files (our readers in
`flows.replay`: WS recordings and archive CSVs) paced by trade time × speed,
or simulates a market for any symbols. It can misbehave on request (drop
connections, skip id ranges, resend already sent trades, inject malformed
messages) so the client's recovery paths are tested against a real socket.

The module has two rooms: the pure "what to send next" part (`Tape`,
`Simulator`, `Timeline`, `Session`, `render_*`), and the picows server below
it that only moves bytes. The whole input is held in memory (recordings are
small; a benchmark uses `--simulate`).

Stream types: a client asking `@aggTrade` of data recorded as plain trades
gets each trade as an aggTrade with a = f = l = t, and one asking `@trade` of
aggTrade data gets each aggTrade as one trade with t = a (Binance itself
would send the underlying trades; we do not have them).

Control over plain HTTP on the same port (tests): `GET /control/stats`
(JSON counters), `GET /control/drop` (drop every connection now). Per
connection, query parameters override the command line: `drop_after`,
`malformed_every`, `resend`, e.g. `/market/stream?streams=…&drop_after=500`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import orjson

from ticklens.exchange.binance import parse_message
from ticklens.ingest.recording import read_recording
from ticklens.ingest.replay import FileStream, file_kind

TRADE, AGG = 0, 1
KIND_NAMES = {"trade": TRADE, "aggTrade": AGG}
MAX_BATCH = 2_048  # messages rendered per step of a session
MALFORMED_KINDS = ("bad_json", "missing_field", "ack", "unknown_event", "bad_value", "other_stream")
# Malformed kinds the client must reject (dead letters); `other_stream` is only skipped.
REJECTED_KINDS = frozenset(MALFORMED_KINDS) - {"other_stream"}


# ---------------------------------------------------------------- pure part


@dataclass
class Rows:
    """A slice of the timeline: columns of consecutive positions [start, end)."""

    start: int
    end: int
    sym: np.ndarray  # int32 index into the symbol list
    kind: np.ndarray  # int8: TRADE | AGG (as recorded)
    trade_id: np.ndarray
    ts_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    is_buyer_maker: np.ndarray
    first_id: np.ndarray
    last_id: np.ndarray
    event_ms: np.ndarray
    raw: list[bytes | None] | None = None  # original event JSON (recordings, first pass only)
    live_event_time: bool = False  # E = send time (simulation)


@dataclass
class Tape:
    """Recorded trades of any symbols, merged in (time, symbol, id) order."""

    symbols: list[str]
    cols: dict[str, np.ndarray]
    raw: list[bytes | None]

    def __len__(self) -> int:
        return len(self.cols["ts_ms"])

    @property
    def span_ms(self) -> int:
        ts = self.cols["ts_ms"]
        return int(ts[-1] - ts[0]) + 1

    def id_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """Per symbol: (message id span, underlying trade id span), so looped ids stay consecutive."""
        msg = np.zeros(len(self.symbols), dtype=np.int64)
        under = np.zeros(len(self.symbols), dtype=np.int64)
        c = self.cols
        for i in range(len(self.symbols)):
            m = c["sym"] == i
            if m.any():
                msg[i] = int(c["trade_id"][m].max() - c["trade_id"][m].min()) + 1
                under[i] = int(c["last_id"][m].max() - c["first_id"][m].min()) + 1
        return msg, under


def _event_data(body: bytes) -> bytes | None:
    """The inner event of a combined-stream message, by slicing (Binance puts `data` last)."""
    if body.startswith(b'{"stream":'):
        i = body.find(b',"data":')
        if i > 0 and body.endswith(b"}"):
            return body[i + 8 : -1]
        return None
    return body if body.startswith(b'{"e":') else None


def load_tape(paths: Iterable[Path]) -> Tape:
    """Every trade of the files, in time order; recordings keep their original JSON."""
    symbols: list[str] = []
    sym_index: dict[str, int] = {}
    parts: list[dict[str, np.ndarray]] = []
    raws: list[bytes | None] = []

    def idx(s: str) -> int:
        if s not in sym_index:
            sym_index[s] = len(symbols)
            symbols.append(s)
        return sym_index[s]

    for path in map(Path, paths):
        kind, _ = file_kind(path)
        if kind == "ws":
            rows, syms, kinds, bodies = [], [], [], []
            for rec in read_recording(path):
                status, what, row = parse_message(rec.body, 0)
                if status != "trade" or rec.recv_ns is None:
                    continue
                rows.append(row)
                syms.append(idx(what))
                kinds.append(AGG if b'"e":"aggTrade"' in rec.body else TRADE)
                bodies.append(_event_data(rec.body))
            if not rows:
                continue
            cols = list(zip(*rows, strict=True))
            part = {
                "trade_id": np.asarray(cols[0], dtype=np.int64),
                "ts_ms": np.asarray(cols[1], dtype=np.int64),
                "price": np.asarray(cols[2], dtype=np.float64),
                "qty": np.asarray(cols[3], dtype=np.float64),
                "is_buyer_maker": np.asarray(cols[4], dtype=np.bool_),
                "first_id": np.asarray(cols[5], dtype=np.int64),
                "last_id": np.asarray(cols[6], dtype=np.int64),
                "event_ms": np.asarray(cols[7], dtype=np.int64),
                "sym": np.asarray(syms, dtype=np.int32),
                "kind": np.asarray(kinds, dtype=np.int8),
            }
            parts.append(part)
            raws.extend(bodies)
        else:
            fs = FileStream(path)
            while fs.head_ts() is not None:
                block = fs.take_until(np.iinfo(np.int64).max, 1 << 22)
                n = len(block)
                part = {k: v for k, v in block.cols.items() if k != "recv_ms"}
                part["sym"] = np.asarray([idx(s) for s in block.symbols.tolist()], dtype=np.int32)
                part["kind"] = np.full(n, AGG if kind == "agg" else TRADE, dtype=np.int8)
                parts.append(part)
                raws.extend([None] * n)
    if not parts:
        raise ValueError("no trades in the input files")
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((cols["trade_id"], cols["sym"], cols["ts_ms"]))
    cols = {k: v[order] for k, v in cols.items()}
    return Tape(symbols, cols, [raws[i] for i in order.tolist()])


@dataclass
class SymbolModel:
    price: float
    tick: float
    lot: float
    next_id: int
    weight: float  # share of the trade rate


def _symbol_model(symbol: str) -> SymbolModel:
    """Binance-like starting price, tick, lot and id for any symbol (stable per name)."""
    known = {
        "btcusdt": (64_000.0, 0.1, 0.001, 5_180_000_000, 4.0),
        "ethusdt": (3_400.0, 0.01, 0.001, 4_250_000_000, 3.0),
    }
    if symbol in known:
        p, tick, lot, first, w = known[symbol]
        return SymbolModel(p, tick, lot, first, w)
    h = int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big")
    price = float(10 ** ((h % 5000) / 1000 - 1))  # 0.1 … 10,000
    tick = 10 ** math.floor(math.log10(price) - 4)
    lot = 10 ** max(-3, math.floor(3 - math.log10(price)))
    return SymbolModel(price, tick, lot, 100_000_000 + h % 900_000_000, 1.0)


class Simulator:
    """A plausible market for any symbols: correlated random walks, bursts, Binance-like ids and sizes."""

    def __init__(self, symbols: list[str], rate: float, seed: int = 7, bursts: bool = True) -> None:
        self.symbols = symbols
        self.models = [_symbol_model(s) for s in symbols]
        w = np.asarray([m.weight for m in self.models])
        self.lam = rate * w / w.sum() / 1000.0  # trades per ms per symbol
        self.log_price = np.log([m.price for m in self.models])
        self.rng = np.random.default_rng(seed)
        self.bursts = bursts
        self.burst_until = 0
        self.burst_factor = 1.0

    def generate(self, t0: int, t1: int) -> dict[str, np.ndarray]:
        """Trades with times in [t0, t1) ms, sorted by (time, symbol)."""
        n_ms, n_sym = max(0, t1 - t0), len(self.symbols)
        rng = self.rng
        mult = np.ones(n_ms)
        if self.bursts:
            # A burst (news, liquidations) every ~20 s on average: 5-15x the rate for 0.5-3 s.
            for i in range(n_ms):
                t = t0 + i
                if t < self.burst_until:
                    mult[i] = self.burst_factor
                elif rng.random() < 1 / 20_000:
                    self.burst_until = t + int(rng.uniform(500, 3_000))
                    self.burst_factor = float(rng.uniform(5, 15))
        counts = rng.poisson(np.outer(mult, self.lam))  # (ms, symbol)
        # Correlated per-ms returns: one market factor plus idiosyncratic noise.
        market = rng.normal(0, 2e-5, n_ms)[:, None]
        idio = rng.normal(0, 1.2e-5, (n_ms, n_sym))
        paths = self.log_price + np.cumsum(market + idio, axis=0)
        self.log_price = paths[-1] if n_ms else self.log_price
        ms_idx, sym_idx = np.nonzero(counts)
        reps = counts[ms_idx, sym_idx]
        ms = np.repeat(ms_idx, reps)
        sym = np.repeat(sym_idx, reps).astype(np.int32)
        n = len(ms)
        ticks = np.asarray([m.tick for m in self.models])[sym]
        lots = np.asarray([m.lot for m in self.models])[sym]
        price = np.exp(paths[ms, sym]) * (1 + rng.normal(0, 2e-6, n))
        price = np.maximum(np.round(price / ticks), 1) * ticks
        qty = np.maximum(np.round(rng.lognormal(0, 1.6, n) * 30 * lots / lots), 1) * lots
        trade_id = np.empty(n, dtype=np.int64)
        for i, m in enumerate(self.models):
            sel = sym == i
            k = int(sel.sum())
            trade_id[sel] = np.arange(m.next_id, m.next_id + k)
            m.next_id += k
        ts = (t0 + ms).astype(np.int64)
        # Round again: float noise from the tick multiplication would show in the JSON.
        decimals = np.asarray([max(0, -math.floor(math.log10(m.tick) + 1e-9)) for m in self.models])
        for i, d in enumerate(decimals.tolist()):
            sel = sym == i
            price[sel] = np.round(price[sel], int(d))
        qty = np.round(qty, 8)
        return {
            "sym": sym,
            "kind": np.zeros(n, dtype=np.int8),
            "trade_id": trade_id,
            "ts_ms": ts,
            "price": price,
            "qty": qty,
            "is_buyer_maker": rng.random(n) < 0.5,
            "first_id": trade_id,
            "last_id": trade_id,
            "event_ms": ts,
        }


class Timeline:
    """The one market all connections see: global positions, paced by wall time.

    Positions count rows from the start (across loops). A tape is paced from
    the moment the first client connects; `speed=None` sends as fast as the
    client reads. A simulation runs on the wall clock.
    """

    def __init__(
        self,
        tape: Tape | None = None,
        simulator: Simulator | None = None,
        speed: float | None = 1.0,
        loop: bool = False,
        skip_ids: list[tuple[str, int, int]] | None = None,
        offset_ms: int = 0,
    ) -> None:
        if (tape is None) == (simulator is None):
            raise ValueError("a timeline replays a tape or runs a simulator")
        self.tape = tape
        self.sim = simulator
        self.symbols = tape.symbols if tape else simulator.symbols  # type: ignore[union-attr]
        self.speed = speed
        self.loop = loop
        self.wall0: float | None = None
        self.high_water = 0  # furthest position any session has sent
        self.skip = [(self.symbols.index(s), a, b) for s, a, b in skip_ids or [] if s in self.symbols]
        if tape is not None:
            self.n = len(tape)
            self.span = tape.span_ms
            self.msg_span, self.under_span = tape.id_spans()
        else:
            self.n = 0
            self.sim_chunks: list[dict[str, np.ndarray]] = []
            self.sim_bases: list[int] = []
            self.sim_until = 0  # ms generated so far (exclusive)
        # A looped tape may start `offset_ms` into its endless sequence (times and ids shifted
        # on), e.g. at the wall clock, so a restarted demo sends ids the store has not seen.
        self.offset_ms = offset_ms if (tape is not None and loop) else 0
        self.base = 0
        if self.offset_ms:
            ts = tape.cols["ts_ms"]  # type: ignore[union-attr]
            k0, rest = divmod(self.offset_ms, self.span)
            self.base = k0 * self.n + int(np.searchsorted(ts, int(ts[0]) + rest, side="left"))
        self.high_water = self.base

    def start(self, now: float) -> None:
        if self.wall0 is None:
            self.wall0 = now
            if self.sim is not None:
                self.sim_until = int(time.time() * 1000)

    @property
    def finite_total(self) -> int | None:
        return self.n if (self.tape is not None and not self.loop) else None

    def due_position(self, now: float) -> int:
        """First position not yet due at monotonic time `now`."""
        self.start(now)
        if self.sim is not None:
            self._simulate_until(int(time.time() * 1000))
            return self.sim_bases[-1] + len(self.sim_chunks[-1]["ts_ms"]) if self.sim_chunks else 0
        if self.speed is None:
            return self.n if not self.loop else 1 << 62
        ts = self.tape.cols["ts_ms"]  # type: ignore[union-attr]
        due_ts = int(ts[0]) + self.offset_ms + int((now - self.wall0) * 1000 * self.speed)  # type: ignore[operator]
        k = (due_ts - int(ts[0])) // self.span
        if not self.loop:
            return self.n if k >= 1 else int(np.searchsorted(ts, due_ts, side="right"))
        return k * self.n + int(np.searchsorted(ts, due_ts - k * self.span, side="right"))

    def oldest_position(self) -> int:
        """The oldest position still held (a simulation keeps only the last 15 s)."""
        return self.sim_bases[0] if self.sim is not None and self.sim_bases else self.base

    def next_due_in(self, pos: int, now: float) -> float:
        """Seconds until position `pos` is due (for sleeping between sends)."""
        if self.sim is not None or self.speed is None or self.wall0 is None:
            return 0.005
        if not self.loop and pos >= self.n:
            return 0.25
        ts = self.tape.cols["ts_ms"]  # type: ignore[union-attr]
        k, i = divmod(pos, self.n)
        due_ts = int(ts[i]) + k * self.span
        return max(0.0, (due_ts - int(ts[0]) - self.offset_ms) / 1000 / self.speed - (now - self.wall0))

    def _simulate_until(self, now_ms: int) -> None:
        assert self.sim is not None
        while self.sim_until < now_ms:
            t1 = min(now_ms, self.sim_until + 1_000)
            chunk = self.sim.generate(self.sim_until, t1)
            base = self.sim_bases[-1] + len(self.sim_chunks[-1]["ts_ms"]) if self.sim_chunks else 0
            self.sim_chunks.append(chunk)
            self.sim_bases.append(base)
            self.sim_until = t1
        # Keep 15 s (memory at 100k trades/s): a client further behind has lost the data, as on Binance.
        while len(self.sim_chunks) > 2:
            ts = self.sim_chunks[0]["ts_ms"]
            if ts.size and now_ms - int(ts[-1]) <= 15_000:
                break
            self.sim_chunks.pop(0)
            self.sim_bases.pop(0)

    def rows(self, start: int, end: int) -> Rows | None:
        """Rows from `start` towards `end` (possibly fewer: one loop or chunk at a time)."""
        if end <= start:
            return None
        if self.sim is not None:
            if not self.sim_chunks:
                return None
            start = max(start, self.sim_bases[0])
            i = int(np.searchsorted(self.sim_bases, start, side="right")) - 1
            base, chunk = self.sim_bases[i], self.sim_chunks[i]
            lo, hi = start - base, min(end - base, len(chunk["ts_ms"]))
            if hi <= lo:
                return None
            sl = {k: v[lo:hi] for k, v in chunk.items()}
            return Rows(start, base + hi, raw=None, live_event_time=True, **sl)
        assert self.tape is not None
        k, i = divmod(start, self.n)
        if not self.loop and k >= 1:
            return None
        j = min(self.n, i + (end - start))
        c = {name: v[i:j] for name, v in self.tape.cols.items()}
        raw = self.tape.raw[i:j]
        if k:
            sym = c["sym"]
            c["ts_ms"] = c["ts_ms"] + k * self.span
            c["event_ms"] = c["event_ms"] + k * self.span
            c["trade_id"] = c["trade_id"] + k * self.msg_span[sym]
            c["first_id"] = c["first_id"] + k * self.under_span[sym]
            c["last_id"] = c["last_id"] + k * self.under_span[sym]
            raw = None
        return Rows(start, k * self.n + j, raw=raw, **c)

    def keep_mask(self, rows: Rows) -> np.ndarray | None:
        """False for rows inside a requested skip range (None: keep all)."""
        if not self.skip:
            return None
        keep = np.ones(len(rows.ts_ms), dtype=bool)
        for s, a, b in self.skip:
            keep &= ~((rows.sym == s) & (rows.trade_id >= a) & (rows.trade_id <= b))
        return keep


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


def malformed_message(kind: str, symbol: str, n: int) -> bytes:
    """A message the client must survive; `n` makes each one distinct."""
    s = symbol.upper().encode()
    stream = symbol.encode() + b"@trade"
    if kind == "bad_json":
        return b'{"stream":"' + stream + b'","data":{"e":"trade","E":' + str(n).encode()
    if kind == "missing_field":
        return wrap(stream, b'{"e":"trade","E":1,"T":1,"s":"%s","t":%d,"q":"1.0","m":true}' % (s, n))
    if kind == "ack":
        return b'{"result":null,"id":%d}' % n
    if kind == "unknown_event":
        return wrap(stream, b'{"e":"tradeLite","E":1,"s":"%s","n":%d}' % (s, n))
    if kind == "bad_value":
        return wrap(stream, b'{"e":"trade","E":1,"T":1,"s":"%s","t":%d,"p":"-1","q":"1.0","m":true}' % (s, n))
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


def _parse_skip(spec: str) -> tuple[str, int, int]:
    try:
        sym, _, rng = spec.partition(":")
        a, _, b = rng.partition("-")
        return sym.lower(), int(a), int(b or a)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--skip-ids {spec!r}: expected SYMBOL:FROM-TO") from None


def _parse_speed(v: str) -> float | None:
    if v in ("max", "0"):
        return None
    x = float(v)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"--speed {v!r}: a positive factor, 0 or max")
    return x


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ticklens feed", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="WS recordings and/or archive CSVs to replay")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9443, help="0 picks a free port (printed)")
    p.add_argument("--speed", type=_parse_speed, default=1.0, help="trade-time factor; 0 or max: as fast as read")
    p.add_argument("--loop", action="store_true", help="start again at the end, times and ids shifted on")
    p.add_argument(
        "--start-now", action="store_true", help="with --loop: begin where the shifted trade times reach now"
    )
    p.add_argument("--simulate", action="store_true", help="generate a market instead of replaying files")
    p.add_argument("--symbols", default="btcusdt,ethusdt", help="simulated symbols, comma-separated")
    p.add_argument("--rate", type=float, default=50.0, help="simulated trades per second (all symbols)")
    p.add_argument("--no-bursts", action="store_true", help="simulate a steady rate (benchmarks)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--drop-after", type=int, default=0, help="drop a connection after N messages")
    p.add_argument("--drop-count", type=int, default=1, help="how many connections to drop (0: every one)")
    p.add_argument("--resend", type=int, default=0, help="a new connection starts N trades back (duplicates)")
    p.add_argument("--skip-ids", type=_parse_skip, action="append", default=[], help="SYMBOL:FROM-TO never sent")
    p.add_argument("--malformed-every", type=int, default=0, help="a malformed message after every N trades")
    p.add_argument("--malformed", default=",".join(MALFORMED_KINDS), help="kinds to inject, comma-separated")
    return p


def build_state(args: argparse.Namespace) -> FeedState:
    if args.simulate:
        symbols = [s.strip().lower() for s in args.symbols.split(",") if s.strip()]
        tl = Timeline(simulator=Simulator(symbols, args.rate, args.seed, not args.no_bursts), speed=1.0)
    else:
        if not args.files:
            raise SystemExit("ticklens feed: give files to replay, or --simulate --symbols …")
        tape = load_tape(args.files)
        offset = 0
        if args.loop and args.start_now and len(tape) and tape.span_ms > 0:
            offset = max(0, int(time.time() * 1000) - int(tape.cols["ts_ms"][0]))
        tl = Timeline(tape=tape, speed=args.speed, loop=args.loop, skip_ids=args.skip_ids, offset_ms=offset)
    if args.simulate and args.skip_ids:
        tl.skip = [(tl.symbols.index(s), a, b) for s, a, b in args.skip_ids if s in tl.symbols]
    kinds = tuple(k for k in args.malformed.split(",") if k)
    bad = [k for k in kinds if k not in MALFORMED_KINDS]
    if bad:
        raise SystemExit(f"ticklens feed: unknown --malformed kinds {bad}; known: {', '.join(MALFORMED_KINDS)}")
    faults = Faults(args.drop_after, args.malformed_every, kinds or MALFORMED_KINDS, args.resend)
    return FeedState(tl, faults, drop_count=args.drop_count)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("ticklens feed: binds to 127.0.0.1 only", file=sys.stderr)
        return 2
    state = build_state(args)
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(state, args.host, args.port))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: state.stop() if state.stop else task.cancel())
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
