"""The tape: every trade and book event of the input files in time order, as columns (recordings keep their JSON).

Book events (`bookTicker`, `depthUpdate`) of recordings are rows too, paced on the
same timeline as the trades: a row's time is the exchange's transaction time `T`
(spot depth: `E`; spot bookTicker, which has no time: the newest exchange time read
before it in its file). Their update ids sit in the id columns (`trade_id` = u,
`first_id` = U, `last_id` = pu or -1). The REST depth snapshots in the recordings
are not rows: they start the feed's own book (`ticklens.emulator.books`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ticklens.domain.book import BookSnapshot, DepthUpdate, Quote
from ticklens.domain.records import TradeColumns
from ticklens.emulator.books import SymbolBook
from ticklens.exchange.binance import parse_message
from ticklens.exchange.binance_book import parse_book_message, parse_depth_snapshot
from ticklens.ingest.recording import read_recording
from ticklens.ingest.replay import FileStream, file_kind

TRADE, AGG, QUOTE, DEPTH = 0, 1, 2, 3
KIND_NAMES = {"trade": TRADE, "aggTrade": AGG}
_SPEED = re.compile(rb'^\{"stream":"[^"@]+@depth(?:@(\d+)ms)?"')


@dataclass
class Rows(TradeColumns):
    """A slice of the timeline: columns of consecutive positions [start, end) (book rows: ids as above)."""

    start: int
    end: int
    sym: np.ndarray  # int32 index into the symbol list
    kind: np.ndarray  # int8: TRADE | AGG (as recorded) | QUOTE | DEPTH
    raw: list[bytes | None] | None = None  # original event JSON (recordings, first pass only)
    live_event_time: bool = False  # E = send time (simulation)
    loop: int = 0  # the loop pass (times and ids of book events are shifted by it)
    tape_start: int = 0  # tape index of the first row (for the book events' JSON)


@dataclass
class Tape:
    """Recorded trades of any symbols, merged in (time, symbol, id) order."""

    symbols: list[str]
    cols: dict[str, np.ndarray]
    raw: list[bytes | None]
    books: dict[int, SymbolBook] = field(default_factory=dict)  # by symbol index: recorded depth chains
    quote_syms: set[int] = field(default_factory=set)  # symbols with bookTicker rows
    notes: list[str] = field(default_factory=list)  # input lines skipped, books not servable

    @property
    def has_books(self) -> bool:
        return bool(self.books or self.quote_syms)

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
        trades = c["kind"] <= AGG
        for i in range(len(self.symbols)):
            m = (c["sym"] == i) & trades
            if m.any():
                msg[i] = int(c["trade_id"][m].max() - c["trade_id"][m].min()) + 1
                under[i] = int(c["last_id"][m].max() - c["first_id"][m].min()) + 1
        return msg, under

    def book_spans(self) -> np.ndarray:
        """Per symbol: how far a loop pass moves the update ids of its book events."""
        span = np.zeros(len(self.symbols), dtype=np.int64)
        c = self.cols
        for i in range(len(self.symbols)):
            if i in self.books:
                span[i] = self.books[i].id_span
            elif i in self.quote_syms:
                u = c["trade_id"][(c["sym"] == i) & (c["kind"] == QUOTE)]
                span[i] = int(u.max() - u.min()) + 1
        return span


def _event_data(body: bytes) -> bytes | None:
    """The inner event of a combined-stream message, by slicing (Binance puts `data` last)."""
    if body.startswith(b'{"stream":'):
        i = body.find(b',"data":')
        if i > 0 and body.endswith(b"}"):
            return body[i + 8 : -1]
        return None
    return body if body.startswith(b'{"e":') else None


def _book_line(body: bytes) -> int | None:
    """QUOTE, DEPTH, -1 (a REST depth snapshot) or None (not a book message), from the bytes."""
    head = body[:48]
    if b'"e":"depthUpdate"' in body:
        return DEPTH
    if b'"e":"bookTicker"' in body or b'@bookTicker"' in head or body.startswith(b'{"u":'):
        return QUOTE
    if body.startswith(b'{"lastUpdateId":'):
        return -1
    return None


@dataclass
class _BookInput:
    """Book rows read from the recordings, before the tape is sorted."""

    rows: list[tuple[int, int, int, int, int, int, int]] = field(default_factory=list)  # sym kind u U pu ts E
    bodies: list[bytes] = field(default_factory=list)
    snapshots: dict[int, list[BookSnapshot]] = field(default_factory=dict)
    market: dict[int, str] = field(default_factory=dict)
    speed: dict[int, int] = field(default_factory=dict)
    skipped: int = 0


def _read_ws(path: Path, idx, books: _BookInput):  # type: ignore[no-untyped-def]
    """Trade rows (as before) of one recording, and its book lines into `books`."""
    rows, syms, kinds, bodies = [], [], [], []
    pending_snaps: list[tuple[bytes, int, int | None]] = []  # body, recv ms, symbol of the depth line before
    untimed: list[int] = []  # book rows (index into books.rows) still waiting for an exchange time
    clock: int | None = None  # newest exchange time seen in this file
    last_depth_sym: int | None = None
    file_syms: set[int] = set()
    for rec in read_recording(path):
        if rec.recv_ns is None:
            continue
        body = rec.body
        book = _book_line(body)
        if book is None:
            status, what, row = parse_message(body, 0, window_ms=None)  # no receive time here
            if status != "trade":
                continue
            rows.append(row)
            s = idx(what)
            syms.append(s)
            file_syms.add(s)
            kinds.append(AGG if b'"e":"aggTrade"' in body else TRADE)
            bodies.append(_event_data(body))
            clock = max(clock or 0, row[1])
            continue
        recv_ms = rec.recv_ns // 1_000_000
        if book == -1:
            pending_snaps.append((body, recv_ms, last_depth_sym))
            continue
        parsed = parse_book_message(body, recv_ms)
        if not isinstance(parsed, Quote | DepthUpdate):
            books.skipped += 1
            continue
        s = idx(parsed.symbol)
        file_syms.add(s)
        raw = _event_data(body) or body
        if isinstance(parsed, DepthUpdate):
            last_depth_sym = s
            usdm = parsed.prev_final_id is not None
            books.market.setdefault(s, "usdm" if usdm else "spot")
            m = _SPEED.match(body)
            if s not in books.speed:
                books.speed[s] = int(m.group(1)) if m and m.group(1) else (0 if usdm else 100)
            pu = parsed.prev_final_id if usdm else -1
            ts = parsed.txn_ms
            books.rows.append((s, DEPTH, parsed.final_id, parsed.first_id, pu, ts, parsed.event_ms))
            clock = max(clock or 0, ts, parsed.event_ms)
        else:
            t = parsed.txn_ms if parsed.txn_ms is not None else parsed.event_ms
            if t is None:  # spot bookTicker: the newest exchange time read so far
                if clock is None:
                    untimed.append(len(books.rows))
                t = clock or 0
            ev = parsed.event_ms if parsed.event_ms is not None else t
            books.rows.append((s, QUOTE, parsed.update_id, parsed.update_id, parsed.update_id, t, ev))
            if parsed.txn_ms is not None or parsed.event_ms is not None:
                clock = max(clock or 0, t, ev)
        books.bodies.append(raw)
    for r in untimed:  # before the first timed line: the first exchange time of the file
        s, k, u, first, pu, _, _ = books.rows[r]
        books.rows[r] = (s, k, u, first, pu, clock or 0, clock or 0)
    for body, recv_ms, near in pending_snaps:
        # A REST snapshot names no symbol: the file's, or the symbol of the depth line before it.
        sym = next(iter(file_syms)) if len(file_syms) == 1 else near
        if sym is None:
            books.skipped += 1
            continue
        snap = parse_depth_snapshot(body, idx.symbols[sym], recv_ms)
        if isinstance(snap, BookSnapshot):
            books.snapshots.setdefault(sym, []).append(snap)
        else:
            books.skipped += 1
    return rows, syms, kinds, bodies


def load_tape(paths: Iterable[Path]) -> Tape:
    """Every trade and book event of the files, in time order; recordings keep their original JSON."""
    symbols: list[str] = []
    sym_index: dict[str, int] = {}
    parts: list[dict[str, np.ndarray]] = []
    raws: list[bytes | None] = []
    books = _BookInput()

    def idx(s: str) -> int:
        if s not in sym_index:
            sym_index[s] = len(symbols)
            symbols.append(s)
        return sym_index[s]

    idx.symbols = symbols  # type: ignore[attr-defined]

    for path in map(Path, paths):
        kind, _ = file_kind(path)
        if kind == "ws":
            rows, syms, kinds, bodies = _read_ws(path, idx, books)
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
    if books.rows:
        b = np.asarray(books.rows, dtype=np.int64)
        n = len(b)
        parts.append(
            {
                "trade_id": b[:, 2],
                "ts_ms": b[:, 5],
                "price": np.zeros(n),
                "qty": np.zeros(n),
                "is_buyer_maker": np.zeros(n, dtype=np.bool_),
                "first_id": b[:, 3],
                "last_id": b[:, 4],
                "event_ms": b[:, 6],
                "sym": b[:, 0].astype(np.int32),
                "kind": b[:, 1].astype(np.int8),
            }
        )
        raws.extend(books.bodies)
    if not parts:
        raise ValueError("no trades or book events in the input files")
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((cols["trade_id"], cols["sym"], cols["ts_ms"]))
    cols = {k: v[order] for k, v in cols.items()}
    tape = Tape(symbols, cols, [raws[i] for i in order.tolist()])
    _index_books(tape, books)
    return tape


def _index_books(tape: Tape, books: _BookInput) -> None:
    c = tape.cols
    if books.skipped:
        tape.notes.append(f"{books.skipped} book lines of the recordings were malformed and are not served")
    for s, name in enumerate(tape.symbols):
        quotes = np.flatnonzero((c["sym"] == s) & (c["kind"] == QUOTE))
        if quotes.size:
            if not np.all(np.diff(c["trade_id"][quotes]) > 0):
                raise ValueError(f"{name}: bookTicker update ids do not increase with time (files overlap?)")
            tape.quote_syms.add(s)
        pos = np.flatnonzero((c["sym"] == s) & (c["kind"] == DEPTH))
        if not pos.size:
            continue
        raws = [tape.raw[i] for i in pos.tolist()]
        quote_ids = [int(c["trade_id"][quotes].min()), int(c["trade_id"][quotes].max())] if quotes.size else []
        market = books.market[s]
        try:
            book = SymbolBook(
                name,
                market,  # type: ignore[arg-type]
                books.speed[s],
                pos,
                c["first_id"][pos],
                c["trade_id"][pos],
                c["last_id"][pos],
                c["event_ms"][pos],
                c["ts_ms"][pos],
                raws,  # type: ignore[arg-type]
                books.snapshots.get(s, []),
                quote_ids,
            )
        except ValueError as e:
            raise ValueError(f"{e} (files overlap, or are out of order?)") from None
        tape.books[s] = book
        tape.notes.extend(f"{name}: {p}; GET depth answers 503 for it" for p in book.problems)
