"""Recorded order books of the local feed: the depth chain indexed, the feed's own book at any position.

For each symbol with `depthUpdate` events in its recordings, a `SymbolBook` holds the
events in update-id order (their raw JSON stays in the tape) and knows where the
feed's book is known: from a recorded REST snapshot on, through the event that
straddles it and every later event that continues the chain (`pu` = previous `u`;
spot: `U` = previous `u` + 1), until a break. The book after any known event is
rebuilt on demand (`ticklens.domain.book.OrderBook`) from a checkpoint taken every
`CHECKPOINT_EVERY` events, so a snapshot or a ground-truth request costs at most
that many applied events.

`rest_state` answers "what would `GET /fapi/v1/depth` return at this replay
position": the book after the last depth event due, with a `lastUpdateId` that a
client following Binance's procedure can sync from whether or not it received
that event (see `rest_state`). Coarser depth speeds are merged from the recorded
events (`merged`): `@depth@100ms` asked of `@depth@0ms` data gets one event per
100 ms window with `U` of its first event, `u` and the levels' last quantities of
all of them, and `pu` of the first, so the merged stream is itself a valid chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import orjson

from ticklens.domain.book import BookSnapshot, Market, OrderBook

CHECKPOINT_EVERY = 256  # depth events between stored book states
SPEEDS: dict[str, tuple[int, ...]] = {"usdm": (0, 100, 250, 500), "spot": (100, 1000)}
DEFAULT_SPEED = {"usdm": 250, "spot": 1000}  # `<symbol>@depth` without a speed

_IDS = re.compile(rb'"(E|T|U|u|pu)":(\d+)')


def shift_event(raw: bytes, d_ms: int, d_id: int) -> bytes:
    """A book event with its times (E, T) and update ids (U, u, pu) moved on, bytes otherwise unchanged.

    Those keys occur only at the top level of a bookTicker or depthUpdate event (levels
    are arrays of strings), so one pass of the pattern over the whole event is exact.
    """
    if not d_ms and not d_id:
        return raw

    def sub(m: re.Match[bytes]) -> bytes:
        key = m.group(1)
        delta = d_ms if key in (b"E", b"T") else d_id
        return b'"' + key + b'":' + str(int(m.group(2)) + delta).encode()

    return _IDS.sub(sub, raw)


@dataclass
class Segment:
    """A stretch of the chain in which the feed's book is known: from `snapshot`, events [start, end)."""

    snapshot: BookSnapshot
    start: int
    end: int
    checkpoints: list[tuple[int, bytes, tuple[float, float] | None]] = field(default_factory=list)


@dataclass
class BookState:
    """What the feed reports at a position: the book after an event, or a recorded snapshot."""

    symbol: str
    last_update_id: int
    event_ms: int | None
    txn_ms: int | None
    book: OrderBook
    known: bool = True


class SymbolBook:
    """The recorded depth chain of one symbol and the feed's book along it (pass 0 values; the
    timeline shifts ids by `id_span` and times by its span per loop pass)."""

    def __init__(
        self,
        symbol: str,
        market: Market,
        speed_ms: int,
        pos: np.ndarray,
        first: np.ndarray,
        final: np.ndarray,
        prev: np.ndarray,
        event_ms: np.ndarray,
        txn_ms: np.ndarray,
        raws: list[bytes],
        snapshots: list[BookSnapshot],
        other_ids: list[int],
    ) -> None:
        self.symbol = symbol
        self.market: Market = market
        self.speed_ms = speed_ms
        self.pos = pos  # tape index of each depth event, increasing
        self.U, self.u, self.pu = first, final, prev  # pu: -1 for spot
        self.E, self.T = event_ms, txn_ms
        self.raws = raws
        n = len(final)
        if n and not (np.all(np.diff(final) > 0) and np.all(final >= first)):
            raise ValueError(f"{symbol}: depth events are not in strictly increasing update-id order")
        # Where the recorded chain continues from the event before (the first event: no predecessor).
        if market == "usdm":
            self.cont = np.concatenate([[False], prev[1:] == final[:-1]]) if n else np.zeros(0, bool)
        else:
            self.cont = np.concatenate([[False], first[1:] == final[:-1] + 1]) if n else np.zeros(0, bool)
        ids = [int(x) for x in (first.min(), final.max()) if n] + other_ids + [s.last_update_id for s in snapshots]
        if market == "usdm" and n:
            ids += [int(prev.min())]
        self.id_lo, self.id_hi = (min(ids), max(ids)) if ids else (0, 0)
        # One loop pass moves ids on by more than the whole range: a pass's first event never
        # continues the last one (its pu/U-1 is above the previous u), so a client sees the break.
        self.id_span = self.id_hi - self.id_lo + 1
        self.segments = self._segments(snapshots)
        self._seg_starts = np.asarray([s.start for s in self.segments], dtype=np.int64)
        self._merged: dict[int, tuple[np.ndarray, dict[int, bytes]]] = {}
        self._cursor: tuple[int, int, OrderBook] | None = None  # (segment, event, book after it)
        self.problems: list[str] = []
        if n and not self.segments:
            self.problems.append("no recorded REST snapshot is straddled by its depth events")

    # -- where the book is known

    def _segments(self, snapshots: list[BookSnapshot]) -> list[Segment]:
        """Each usable snapshot starts a segment at the event that straddles it; it runs to the next break."""
        n = len(self.u)
        out: list[Segment] = []
        for snap in sorted(snapshots, key=lambda s: s.last_update_id):
            target = snap.last_update_id if self.market == "usdm" else snap.last_update_id + 1
            s = int(np.searchsorted(self.u, target, side="left"))  # first event with u >= target
            if s >= n or self.U[s] > target:
                continue  # never straddled: the events between it and the stream are missing
            if out and s < out[-1].end:
                continue  # inside a stretch already known
            end = s + 1
            while end < n and self.cont[end]:
                end += 1
            out.append(Segment(snap, s, end))
        return out

    def segment_of(self, i: int) -> int | None:
        """The segment in which the book is known after event i, or None."""
        k = int(np.searchsorted(self._seg_starts, i, side="right")) - 1
        if k >= 0 and i < self.segments[k].end:
            return k
        return None

    def next_segment(self, i: int) -> int | None:
        """The first segment starting after event i (the book becomes known there)."""
        k = int(np.searchsorted(self._seg_starts, i, side="right"))
        return k if k < len(self.segments) else None

    # -- the book after an event

    def _event_levels(self, i: int) -> tuple[list[list[str]], list[list[str]]]:
        ev = orjson.loads(self.raws[i])
        return ev["b"], ev["a"]

    def _apply(self, book: OrderBook, i: int) -> None:
        bids, asks = self._event_levels(i)
        book.apply_pairs(bids, asks, int(self.u[i]), int(self.T[i]))

    def _build_checkpoints(self, seg: Segment) -> None:
        book = OrderBook(self.symbol)
        book.load_snapshot(seg.snapshot)
        for i in range(seg.start, seg.end):
            self._apply(book, i)
            if (i - seg.start) % CHECKPOINT_EVERY == 0:
                snap = book.snapshot()
                seg.checkpoints.append((i, orjson.dumps([snap.bids, snap.asks]), snap.complete_range))

    def book_after(self, i: int) -> OrderBook:
        """The feed's book after event i (which must be known). Do not modify it."""
        k = self.segment_of(i)
        if k is None:
            raise ValueError(f"{self.symbol}: the book after event {i} is not known")
        cur = self._cursor
        if cur is not None and cur[0] == k and cur[1] <= i:
            _, at, book = cur
        else:
            seg = self.segments[k]
            if not seg.checkpoints:
                self._build_checkpoints(seg)
            j = min((i - seg.start) // CHECKPOINT_EVERY, len(seg.checkpoints) - 1)
            at, blob, complete = seg.checkpoints[j]
            bids, asks = orjson.loads(blob)
            book = OrderBook(self.symbol)
            book.load_snapshot(
                BookSnapshot(self.symbol, int(self.u[at]), None, int(self.T[at]), 0, bids, asks, None, complete)
            )
        for e in range(at + 1, i + 1):
            self._apply(book, e)
        self._cursor = (k, i, book)
        return book

    def snapshot_book(self, seg: int) -> OrderBook:
        book = OrderBook(self.symbol)
        book.load_snapshot(self.segments[seg].snapshot)
        return book

    # -- what the feed reports

    def last_event_before(self, j: int) -> int:
        """The last depth event at a tape index below j (-1: none)."""
        return int(np.searchsorted(self.pos, j, side="left")) - 1

    def rest_state(self, i: int) -> BookState | None:
        """The snapshot the feed serves once event i is the last depth event due (i = -1: none yet).

        Known book: the book after event i. Its `lastUpdateId` is, when the next event
        continues the chain and spans more than one update id, that event's first id U —
        as on Binance, the snapshot lands inside the event that straddles it, so a client
        keeps the next event whether or not it received event i. Otherwise (spot, whose
        rule is U = lastUpdateId + 1, or a one-id next event, or no next one) it is u of
        event i. Unknown book (before the recorded snapshot is straddled, or after a break
        in the recording): the next recorded snapshot, newer than the stream (the client
        buffers until the straddling event arrives), or None when there is none.
        """
        if i >= 0 and self.segment_of(i) is not None:
            book = self.book_after(i)
            last = int(self.u[i])
            nxt = i + 1
            if self.market == "usdm" and nxt < len(self.u) and self.cont[nxt] and self.U[nxt] < self.u[nxt]:
                last = int(self.U[nxt])
            return BookState(self.symbol, last, int(self.E[i]), int(self.T[i]), book)
        k = self.next_segment(i)
        if k is None:
            return None
        snap = self.segments[k].snapshot
        return BookState(self.symbol, snap.last_update_id, snap.event_ms, snap.txn_ms, self.snapshot_book(k))

    def truth(self, i: int) -> BookState | None:
        """The ground truth after event i: the feed's whole book there (None if not known)."""
        if i < 0 or self.segment_of(i) is None:
            return None
        return BookState(self.symbol, int(self.u[i]), int(self.E[i]), int(self.T[i]), self.book_after(i))

    # -- coarser speeds

    def merged(self, speed_ms: int) -> tuple[np.ndarray, dict[int, bytes]]:
        """(emit mask, merged pass-0 event by index) for a stream of `speed_ms` from these events.

        An event closes its window (time // speed_ms, by T; spot: E) when the next event is
        in a later window or does not continue the chain; the merged event is sent in its place.
        """
        if speed_ms in self._merged:
            return self._merged[speed_ms]
        n = len(self.u)
        win = (self.T if self.market == "usdm" else self.E) // speed_ms
        closes = np.ones(n, dtype=bool)
        if n > 1:
            closes[:-1] = (win[1:] != win[:-1]) | ~self.cont[1:]
        bodies: dict[int, bytes] = {}
        start = 0
        sym = self.symbol.upper()
        for i in np.flatnonzero(closes).tolist():
            bids: dict[str, str] = {}
            asks: dict[str, str] = {}
            for e in range(start, i + 1):
                b, a = self._event_levels(e)
                bids.update(b)  # a price keeps its first place, takes its last quantity
                asks.update(a)
            ev: dict[str, object] = {"e": "depthUpdate", "E": int(self.E[i])}
            if self.market == "usdm":
                ev["T"] = int(self.T[i])
            ev.update(s=sym, U=int(self.U[start]), u=int(self.u[i]))
            if self.market == "usdm":
                ev["pu"] = int(self.pu[start])
            ev["b"] = [[p, q] for p, q in bids.items()]
            ev["a"] = [[p, q] for p, q in asks.items()]
            bodies[i] = orjson.dumps(ev)
            start = i + 1
        self._merged[speed_ms] = (closes, bodies)
        return closes, bodies


def levels_json(levels: list[tuple[str, str]]) -> list[list[str]]:
    return [[p, q] for p, q in levels]
