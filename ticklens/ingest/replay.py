"""Readers for recorded trades and books, merged across files in event-time order.

Reads Binance data-archive CSVs (`aggTrades` and `trades` layouts, header or
not, plain/.gz/.zip, ms or µs times) and raw WebSocket recordings
(`<receive ns> <JSON>` per line, gzip: `../shared/data/binance/um_ws/`, and
what our own `record:` option writes). From recordings, the book kinds asked
for (`kinds`: quotes, depth updates, REST snapshot lines) come too, each file's
in its own order -- a recording's snapshot line comes after the event that
straddles it, and the flow's book buffers for it -- merged with the trades by
time (transaction time; spot quotes, which carry none, by receive time).
"""

from __future__ import annotations

import functools
import gzip
import io
import queue
import re
import threading
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ticklens.domain.book import BookBatch, BookRecord, BookSnapshot, Quote, Quotes, SnapshotFailure
from ticklens.domain.records import COLUMNS, Rejected, Trades
from ticklens.exchange.binance import (
    MAX_TIME_MS,
    MICROS_THRESHOLD,
    MIN_TIME_MS,
    TRADE_KINDS,
    archive_row,
    parse_message,
    rejected,
    valid_columns,
)
from ticklens.ingest.child_reader import ChildIterator, put_until_stopped
from ticklens.ingest.recording import recording_lines

if TYPE_CHECKING:
    import pyarrow as pa

AGG_COLS = ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker"]
TRADE_COLS = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker"]
_NAME_RE = re.compile(r"^([A-Za-z0-9]+)[-_](aggTrades|trades)[-_]", re.IGNORECASE)
BLOCK_ROWS = 65_536
# A recording at least this large is read and parsed in a child process when the replay asks
# for it (`Replay(readahead=True)`, as the flow does): on another core, beside the flow.
READAHEAD_MIN_BYTES = 1 << 20
# A child hands a block over in parts, the first small, so the flow starts while it reads on.
FIRST_PART_ROWS, MAX_PART_ROWS = 512, 16_384
MIN_SLICE_MS, MAX_SLICE_MS = 1, 3_600_000  # bounds of the merge's time slice


def file_kind(path: Path) -> tuple[str, str | None]:
    """("agg"|"trades", symbol) for archive CSVs, ("ws", None) for recordings."""
    m = _NAME_RE.match(path.name)
    if m and (".csv" in path.name.lower() or path.name.lower().endswith(".zip")):  # Binance names zips X.zip
        return ("agg" if m.group(2).lower() == "aggtrades" else "trades", m.group(1).lower())
    return ("ws", None)


def _open_bytes(path: Path) -> io.BufferedIOBase:
    name = path.name.lower()
    if name.endswith(".zip"):
        zf = zipfile.ZipFile(path)
        inner = [n for n in zf.namelist() if n.lower().endswith(".csv")]
        if not inner:
            raise ValueError(f"{path}: zip holds no .csv file")
        return zf.open(inner[0])  # type: ignore[return-value]
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115


TRADE, BOOK, QUOTE = 0, 1, 2  # a block entry's kind


@dataclass
class Block:
    """Rows of one or more symbols, in file (arrival) order: trades, and from recordings book records.

    Without book records the block's entries are its trade rows. With them, `kinds` lists the
    entries' kinds in file order (TRADE, BOOK: a depth event or snapshot record, QUOTE: a row of
    `quotes`, bookTicker kept in columns) with their times and positions, so a slice of entries is
    a range of trades plus a range of book records plus a range of quotes.
    """

    symbols: np.ndarray  # object array of symbol strings
    cols: dict[str, np.ndarray]
    pos: np.ndarray  # file position (rows or lines consumed) after each row
    rejects: list[Rejected] = field(default_factory=list)  # rows of this block refused (CSV)
    book: list[BookRecord] = field(default_factory=list)
    quotes: Quotes | None = None  # every symbol's, in file order (`quote_symbols` names each row's)
    quote_symbols: np.ndarray | None = None
    kinds: np.ndarray | None = None
    entry_ts: np.ndarray | None = None
    entry_pos: np.ndarray | None = None
    _before: tuple[np.ndarray, np.ndarray] | None = None  # trades and quotes before each entry

    def __len__(self) -> int:
        return len(self.cols["ts_ms"]) if self.kinds is None else len(self.kinds)

    @property
    def ts(self) -> np.ndarray:
        return self.cols["ts_ms"] if self.entry_ts is None else self.entry_ts

    @property
    def positions(self) -> np.ndarray:
        return self.pos if self.entry_pos is None else self.entry_pos

    def entries(self, lo: int, hi: int) -> Block:
        """Entries [lo, hi) as a block of their own (trades, book records and quotes)."""
        if self.kinds is None:
            return Block(self.symbols[lo:hi], {k: v[lo:hi] for k, v in self.cols.items()}, self.pos[lo:hi])
        if self._before is None:
            zero = np.zeros(1, dtype=np.int64)
            self._before = (
                np.concatenate([zero, np.cumsum(self.kinds == TRADE)]),
                np.concatenate([zero, np.cumsum(self.kinds == QUOTE)]),
            )
        tb, qb = self._before
        t0, t1, q0, q1 = int(tb[lo]), int(tb[hi]), int(qb[lo]), int(qb[hi])
        quotes = self.quotes
        return Block(
            self.symbols[t0:t1],
            {k: v[t0:t1] for k, v in self.cols.items()},
            self.pos[t0:t1],
            book=self.book[lo - t0 - q0 : hi - t1 - q1],
            quotes=None if quotes is None or q0 == q1 else quotes.take(slice(q0, q1)),
            quote_symbols=None if self.quote_symbols is None else self.quote_symbols[q0:q1],
        )

    def rest(self, lo: int) -> Block:
        """Entries [lo, end) with their kinds, times and positions (what `join_blocks` continues)."""
        part = self.entries(lo, len(self))
        if self.kinds is not None:
            part.kinds, part.entry_ts, part.entry_pos = self.kinds[lo:], self.ts[lo:], self.positions[lo:]
        return part

    def mixed(self) -> Block:
        """The same entries with `kinds`, entry times and positions (a block of trades has none)."""
        if self.kinds is not None:
            return self
        n = len(self.pos)
        return replace(self, kinds=np.zeros(n, dtype=np.int8), entry_ts=self.cols["ts_ms"], entry_pos=self.pos)


def join_blocks(a: Block, b: Block) -> Block:
    """The entries of `a` then those of `b` (parts of one block of a recording)."""
    if a.kinds is None and b.kinds is None:
        return Block(
            np.concatenate([a.symbols, b.symbols]),
            {k: np.concatenate([v, b.cols[k]]) for k, v in a.cols.items()},
            np.concatenate([a.pos, b.pos]),
        )
    a, b = a.mixed(), b.mixed()
    quotes = a.quotes if b.quotes is None else b.quotes if a.quotes is None else a.quotes.then(b.quotes)
    qs = [x for x in (a.quote_symbols, b.quote_symbols) if x is not None]
    cat = np.concatenate
    return Block(
        cat([a.symbols, b.symbols]),
        {k: cat([v, b.cols[k]]) for k, v in a.cols.items()},
        cat([a.pos, b.pos]),
        book=a.book + b.book,
        quotes=quotes,
        quote_symbols=cat(qs) if qs else None,
        kinds=cat([a.kinds, b.kinds]),
        entry_ts=cat([a.entry_ts, b.entry_ts]),  # type: ignore[list-item]
        entry_pos=cat([a.entry_pos, b.entry_pos]),  # type: ignore[list-item]
    )


CSV_CHUNK_BYTES = 2 << 20


def _line_chunks(raw: io.BufferedIOBase, size: int = CSV_CHUNK_BYTES) -> Iterator[bytes]:
    """Whole lines, about `size` bytes at a time: memory stays bounded whatever the file size
    (pyarrow's streaming reader reads a plain file far ahead of its consumer)."""
    rest = b""
    while buf := raw.read(size):
        buf = rest + buf
        cut = buf.rfind(b"\n")
        if cut < 0:
            rest = buf
            continue
        yield buf[: cut + 1]
        rest = buf[cut + 1 :]
    if rest.strip():
        yield rest


def _csv_blocks(path: Path, kind: str, symbol: str, skip: int) -> Iterator[tuple[Block, int]]:
    """(block, rows consumed) from an archive CSV, streaming (see `_csv_block_reader`).

    pyarrow is imported here, on the caller's thread, not in the generator a prefetch thread
    runs: a precaution (a process of ours aborted once at exit with "terminate called without an
    active exception", cause not found; pyarrow first loaded in a thread was one suspect).
    Imported only here, a process reading only recordings (a replay's child) never loads it.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return _csv_block_reader(pa, pacsv, path, kind, symbol, skip)


def _csv_block_reader(
    pa: Any, pacsv: Any, path: Path, kind: str, symbol: str, skip: int
) -> Iterator[tuple[Block, int]]:
    """Yield (block, rows consumed) from an archive CSV, streaming.

    A chunk is typed strictly by pyarrow and its values checked in columns; a chunk that
    fails either (an id beyond int64, a float id, `nan`, …) is read again row by row, so the
    bad rows become rejects and the good ones around them are kept.
    """
    names = AGG_COLS if kind == "agg" else TRADE_COLS
    int_cols = [n for n in names if n.endswith("_id") or n in ("id", "time", "transact_time")]
    conv = pacsv.ConvertOptions(
        column_types={n: pa.float64() for n in ("price", "quantity", "qty")}
        | {"is_buyer_maker": pa.bool_()}
        | {n: pa.int64() for n in int_cols},
        true_values=["true", "True", "TRUE"],
        false_values=["false", "False", "FALSE"],
        include_columns=[n for n in names if n != "quote_qty"],  # not parsing what we do not use
    )
    seen = 0
    with _open_bytes(path) as raw:
        for i, chunk in enumerate(_line_chunks(raw)):
            has_header = i == 0 and not chunk[:1].isdigit()
            opts = pacsv.ReadOptions(column_names=names, skip_rows=1 if has_header else 0, use_threads=False)
            try:
                table = pacsv.read_csv(pa.py_buffer(chunk), read_options=opts, convert_options=conv)
                cols = _csv_columns(table, kind)
                fast = bool(valid_columns(cols).all())
            except pa.ArrowInvalid:
                fast = False
            if not fast:
                block, seen = _csv_rows(chunk, has_header, kind, symbol, path, seen, skip)
                if block is not None:
                    yield block, seen
                continue
            n = table.num_rows
            if seen + n <= skip:
                seen += n
                continue
            start = max(0, skip - seen)
            seen += n
            cols = {k: v[start:] for k, v in cols.items()}
            pos = np.arange(seen - len(cols["ts_ms"]) + 1, seen + 1, dtype=np.int64)
            yield Block(np.full(len(pos), symbol, dtype=object), cols, pos), seen


def _csv_columns(table: pa.Table, kind: str) -> dict[str, np.ndarray]:
    def get(c: str) -> np.ndarray:
        return table.column(c).to_numpy()

    if kind == "agg":
        tid, qty = get("agg_trade_id"), get("quantity")
        first_id, last_id, ts = get("first_trade_id"), get("last_trade_id"), get("transact_time")
    else:
        tid, qty, ts = get("id"), get("qty"), get("time")
        first_id = last_id = tid
    ts = np.asarray(ts, dtype=np.int64)
    ts = np.where(ts >= MICROS_THRESHOLD, ts // 1000, ts)  # per row: one bad time must not rescale the rest
    return {
        "trade_id": np.asarray(tid, dtype=np.int64),
        "ts_ms": ts,
        "price": np.asarray(get("price"), dtype=np.float64),
        "qty": np.asarray(qty, dtype=np.float64),
        "is_buyer_maker": np.asarray(get("is_buyer_maker"), dtype=np.bool_),
        "first_id": np.asarray(first_id, dtype=np.int64),
        "last_id": np.asarray(last_id, dtype=np.int64),
        "event_ms": ts,
        "recv_ms": ts,
    }


def _csv_rows(
    chunk: bytes, has_header: bool, kind: str, symbol: str, path: Path, seen: int, skip: int
) -> tuple[Block | None, int]:
    """The row-by-row reading of a chunk: (block of the good rows past `skip`, rows consumed)."""
    lines = [ln for ln in chunk.split(b"\n") if ln.strip()]
    if has_header:
        lines = lines[1:]
    rows: list[tuple] = []
    pos: list[int] = []
    rejects: list[Rejected] = []
    for line in lines:
        seen += 1
        if seen <= skip:
            continue
        row = archive_row(kind, line.rstrip(b"\r").split(b","))
        if isinstance(row, str):
            rejects.append(rejected(line.rstrip(b"\r"), row, 0, str(path)))
        else:
            rows.append(row)
            pos.append(seen)
    if not rows and not rejects:
        return None, seen
    block = _rows_block([symbol] * len(rows), rows, pos)
    block.rejects = rejects
    return block, seen


class Prefetch(Iterator[tuple[Block, int]]):
    """An iterator run one item ahead in a daemon thread.

    pyarrow's CSV parser and the decompressors release the GIL, and so does SQLite
    while it inserts, so the next block is parsed on the otherwise idle second core
    while the flow works on this one. Memory stays bounded: one block waits at most.
    The thread holds no reference to this object, so dropping it stops the thread.
    """

    def __init__(self, source: Iterator[tuple[Block, int]]) -> None:
        self._queue: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._end: BaseException | None = None
        args = (source, self._queue, self._stop)
        threading.Thread(target=_prefetch, args=args, name="replay-prefetch", daemon=True).start()

    def __next__(self) -> tuple[Block, int]:
        if self._end is not None:
            raise self._end
        ok, item = self._queue.get()
        if ok:
            return item  # type: ignore[return-value]
        self._end = item  # type: ignore[assignment]
        raise item  # type: ignore[misc]

    def __del__(self) -> None:
        self._stop.set()


def _prefetch(source: Iterator[object], out: queue.Queue[tuple[bool, object]], stop: threading.Event) -> None:
    put = functools.partial(put_until_stopped, out, stop)

    try:
        for item in source:
            if not put((True, item)):
                return
        put((False, StopIteration()))
    except BaseException as e:  # handed to the reader, raised there
        put((False, e))


@dataclass
class RecordingStats:
    skipped: int = 0
    rejected: int = 0


def _record_ts(rec: BookRecord) -> int:
    """A book record's place on the replay's time axis (transaction time, else what there is)."""
    if type(rec) is SnapshotFailure:
        return rec.recv_ms
    t = getattr(rec, "txn_ms", None)
    if t is None:
        t = getattr(rec, "event_ms", None)
    return int(rec.recv_ms if t is None else t)  # type: ignore[union-attr]


BOOK_STATUSES = frozenset({"quote", "depth", "snapshot", "snapshot_failure"})


def _ws_blocks(
    path: Path,
    skip: int,
    stats: RecordingStats,
    rejects: list[Rejected],
    window_ms: int | None,
    kinds: frozenset[str] = TRADE_KINDS,
    part_rows: tuple[int, int] | None = None,
    block_rows: int | None = None,
) -> Iterator[tuple[Block, int, bool]]:
    """Yield (block or part of one, lines consumed, whether the block ends) from a `<ns> <json>`
    recording; with `window_ms`, times are checked against each line's own receive time, as they
    were live. A block holds `block_rows` entries (BLOCK_ROWS: where the replay's batches are cut);
    `part_rows` (first, most): it comes in parts of the first size, then twice as large each, up
    to the most (default: whole blocks).

    A bare REST snapshot line (Binance's body has no symbol) belongs to the file's depth stream:
    it takes the symbol of the depth events before it (or, if none came yet, of the next one;
    the block then waits for it). In a file of several depth symbols it is a reject.
    """
    rows: list[tuple] = []
    syms: list[str] = []
    pos: list[int] = []
    book: list[BookRecord] = []
    quotes: list[Quote] = []
    order: list[int] = []
    ets: list[int] = []
    epos: list[int] = []
    depth_symbols: set[str] = set()
    unnamed: list[tuple[BookSnapshot, int]] = []  # bare snapshots waiting for the file's symbol
    line_no = skip
    size = BLOCK_ROWS if block_rows is None else block_rows
    limit, most = (size, size) if part_rows is None else part_rows
    done = 0  # entries of this block in parts already yielded
    for line_no, raw in recording_lines(path, skip):
        head, _, body = raw.partition(b" ")
        recv_ms = int(head) // 1_000_000 if head.isdigit() else 0
        if not MIN_TIME_MS <= recv_ms <= MAX_TIME_MS:  # none, or one no clock can have had
            stats.rejected += 1
            rejects.append(rejected(raw, "recording line without a valid receive time", 0, str(path)))
            continue
        status, what, row = parse_message(body, recv_ms, window_ms, kinds)
        if status == "trade":
            order.append(TRADE)
            ets.append(row[1])
            epos.append(line_no)
            syms.append(what)
            rows.append(row)  # type: ignore[arg-type]
            pos.append(line_no)
        elif status in BOOK_STATUSES:
            if status == "snapshot_failure":
                row = SnapshotFailure(what, recv_ms, row)
            elif status == "depth":
                depth_symbols.add(what)
            elif status == "snapshot" and not what:
                unnamed.append((row, line_no))
                row = None
            if unnamed and depth_symbols:
                if len(depth_symbols) > 1:
                    for snap, _ in unnamed:
                        stats.rejected += 1
                        reason = "depth snapshot without a symbol in a recording of several symbols"
                        rejects.append(rejected(b"lastUpdateId %d" % snap.last_update_id, reason, recv_ms, str(path)))
                else:
                    (name,) = depth_symbols
                    for snap, at in unnamed:  # before the event that named them
                        snap.symbol = name
                        order.append(BOOK)
                        ets.append(_record_ts(snap))
                        epos.append(at)
                        book.append(snap)
                unnamed = []
            if status == "quote":
                order.append(QUOTE)
                ets.append(_record_ts(row))
                epos.append(line_no)
                quotes.append(row)
            elif row is not None:
                order.append(BOOK)
                ets.append(_record_ts(row))
                epos.append(line_no)
                book.append(row)
        elif status == "skip":
            stats.skipped += 1
        else:
            stats.rejected += 1
            rejects.append(rejected(body, what, recv_ms, str(path)))
        if (len(order) >= limit or done + len(order) >= size) and not unnamed:
            ends = done + len(order) >= size
            done = 0 if ends else done + len(order)
            yield _mixed_block(syms, rows, pos, book, quotes, order, ets, epos), line_no, ends
            limit = min(limit * 2, most)
            rows, syms, pos, book, quotes, order, ets, epos = [], [], [], [], [], [], [], []
    for snap, _ in unnamed:
        stats.rejected += 1
        reason = "depth snapshot without a symbol (no depth event in the recording names it)"
        rejects.append(rejected(b"lastUpdateId %d" % snap.last_update_id, reason, 0, str(path)))
    yield _mixed_block(syms, rows, pos, book, quotes, order, ets, epos), line_no, True


def ws_blocks_child(
    path: Path, skip: int, window_ms: int | None, kinds: frozenset[str], parts: tuple[int, int], block_rows: int
) -> Iterator[tuple[Block, int, bool, RecordingStats, list[Rejected]]]:
    """`_ws_blocks` as a child process runs it (`ChildIterator`), in parts: each with the stats
    and rejects it added, which the flow's process adds to its own."""
    stats, rejects = RecordingStats(), list[Rejected]()
    for block, line_no, ends in _ws_blocks(path, skip, stats, rejects, window_ms, kinds, parts, block_rows):
        yield block, line_no, ends, stats, rejects[:]
        stats.skipped = stats.rejected = 0
        rejects.clear()


def _reads_ahead(path: Path) -> bool:
    """Whether a replay that reads ahead reads this file in a child process."""
    try:
        return file_kind(path)[0] == "ws" and path.stat().st_size >= READAHEAD_MIN_BYTES
    except OSError:  # missing: the replay says so
        return False


_ChildKey = tuple[str, int | None, frozenset[str], tuple[int, int], int]
_STARTED: dict[_ChildKey, ChildIterator] = {}  # readers started ahead of their replay (`start_readers`)


def _child_key(path: Path, window_ms: int | None, kinds: frozenset[str]) -> _ChildKey:
    return (str(path), window_ms, kinds, (FIRST_PART_ROWS, MAX_PART_ROWS), BLOCK_ROWS)


def start_readers(paths: Iterable[Path], window_ms: int | None, kinds: frozenset[str]) -> None:
    """Start reading these recordings from their beginning in child processes now, before the
    replay that reads them exists: a `Replay(readahead=True)` of one from position 0 with the
    same window and kinds takes its reader over. The flow's process spends its first second
    importing on one core; the readers use it to get ahead on the other. A reader no replay
    takes over ends with the process (or when one starts the file elsewhere)."""
    for path in dict.fromkeys(Path(p) for p in paths):
        key = _child_key(path, window_ms, kinds)
        if key not in _STARTED and _reads_ahead(path):
            _STARTED[key] = ChildIterator(f"{__name__}:ws_blocks_child", path, 0, window_ms, kinds, *key[3:])


def _from_child(
    path: Path, skip: int, stats: RecordingStats, rejects: list[Rejected], window_ms: int | None, kinds: frozenset[str]
) -> Iterator[tuple[Block, int, bool]]:
    """`_ws_blocks` computed in a child process, started now (or by `start_readers`): the same
    blocks (in parts), stats and rejects."""
    key = _child_key(path, window_ms, kinds)
    child = _STARTED.pop(key, None)
    if child is not None and skip != 0:  # started for a start from the beginning: not this one
        child.close()
        child = None
    if child is None:
        child = ChildIterator(f"{__name__}:ws_blocks_child", path, skip, window_ms, kinds, *key[3:])
    return _child_parts(child, stats, rejects)


def _child_parts(
    child: ChildIterator, stats: RecordingStats, rejects: list[Rejected]
) -> Iterator[tuple[Block, int, bool]]:
    try:
        for block, line_no, ends, more, found in child:
            stats.skipped += more.skipped
            stats.rejected += more.rejected
            rejects.extend(found)
            yield block, line_no, ends
    finally:
        child.close()


def _whole(blocks: Iterator[tuple[Block, int]]) -> Iterator[tuple[Block, int, bool]]:
    for block, end in blocks:
        yield block, end, True


def _mixed_block(
    syms: list[str],
    rows: list[tuple],
    pos: list[int],
    book: list[BookRecord],
    quotes: list[Quote],
    order: list[int],
    ets: list[int],
    epos: list[int],
) -> Block:
    """The block of these entries; quotes go into columns here, once, as the book step passes them on."""
    block = _rows_block(syms, rows, pos)
    if book or quotes:
        block.book = book
        if quotes:
            block.quotes = Quotes.from_quotes("", quotes)
            block.quote_symbols = np.array([q.symbol for q in quotes], dtype=object)
        block.kinds = np.asarray(order, dtype=np.int8)
        block.entry_ts = np.asarray(ets, dtype=np.int64)
        block.entry_pos = np.asarray(epos, dtype=np.int64)
    return block


def _rows_block(syms: list[str], rows: list[tuple], pos: list[int]) -> Block:
    if not rows:
        empty = Trades.empty("")
        return Block(np.empty(0, dtype=object), {n: getattr(empty, n) for n in COLUMNS}, np.empty(0, dtype=np.int64))
    t = Trades.from_columns("", **dict(zip(COLUMNS, zip(*rows, strict=True), strict=True)))
    return Block(np.asarray(syms, dtype=object), {n: getattr(t, n) for n in COLUMNS}, np.asarray(pos, dtype=np.int64))


@dataclass
class FileStream:
    """One file read block by block; `position` counts rows (CSV) or lines (recording) consumed."""

    path: Path
    position: int = 0
    stats: RecordingStats = field(default_factory=RecordingStats)
    rejects: list[Rejected] = field(default_factory=list)
    _blocks: Iterator[tuple[Block, int, bool]] | None = None
    _buf: Block | None = None
    _buf_end_pos: int = 0
    _buf_offset: int = 0
    _buf_whole: bool = True  # the buffer reaches its block's end (else more parts of it follow)
    _env: np.ndarray | None = None
    done: bool = False
    window_ms: int | None = None
    kinds: frozenset[str] = TRADE_KINDS
    readahead: bool = False  # a large recording read in a child process

    def __post_init__(self) -> None:
        if self.readahead and _reads_ahead(self.path):
            # Started now, so the child's start-up overlaps the flow's.
            args = (self.path, self.position, self.stats, self.rejects, self.window_ms, self.kinds)
            self._blocks = _from_child(*args)

    def _fill(self) -> None:
        if self._blocks is None:
            kind, symbol = file_kind(self.path)
            if kind == "ws":
                args = (self.path, self.position, self.stats, self.rejects, self.window_ms, self.kinds)
                self._blocks = _ws_blocks(*args)
            else:  # no shared state in CSV blocks, so they can be read ahead in a thread
                self._blocks = _whole(Prefetch(_csv_blocks(self.path, kind, symbol or "", self.position)))
        while self._buf is None or self._buf_offset >= len(self._buf):
            if not self._next_part(join=False):
                return

    def _next_part(self, join: bool) -> bool:
        """Read the next block or part of one into the buffer (`join`: after what is left of it);
        False at the end of the file."""
        assert self._blocks is not None
        try:
            block, end_pos, whole = next(self._blocks)
        except StopIteration:
            self.done = True
            self._buf = None
            return False
        if block.rejects:
            self.stats.rejected += len(block.rejects)
            self.rejects.extend(block.rejects)
        # Arrival order is kept (late trades stay late); merging uses the running max over the block.
        env = np.maximum.accumulate(block.ts) if len(block) else block.ts
        if not self._buf_whole and self._env is not None and len(self._env) and len(env):
            env = np.maximum(env, self._env[-1])  # a later part of the same block
        if join and self._buf is not None:
            lo = self._buf_offset
            block = join_blocks(self._buf.rest(lo), block)
            env = np.concatenate([self._env[lo:], env])  # type: ignore[index]
        self._env, self._buf, self._buf_offset = env, block, 0
        self._buf_end_pos, self._buf_whole = end_pos, whole
        if len(block) == 0:
            self.position = end_pos
        return True

    def head_ts(self) -> int | None:
        if not self.done:
            self._fill()
        if self.done or self._buf is None:
            return None
        return int(self._env[self._buf_offset])

    def take_until(self, limit_ts: int, max_rows: int) -> Block:
        """Rows with ts <= limit_ts (at least one), at most max_rows."""
        self._fill()
        while True:
            buf, ts, lo = self._buf, self._env, self._buf_offset
            assert buf is not None and ts is not None
            hi = int(np.searchsorted(ts, limit_ts, side="right"))
            hi = max(lo + 1, min(hi, lo + max_rows))
            # A block cut short by its part's end: take in its next part and look again.
            if hi < len(buf) or hi - lo >= max_rows or self._buf_whole or not self._next_part(join=True):
                break
        out = buf.entries(lo, hi)
        self._buf_offset = hi
        # Exact resume point: past the last emitted row (and, at block end, past skipped lines).
        at_end = hi >= len(buf) and self._buf_whole
        self.position = self._buf_end_pos if at_end else int(buf.positions[hi - 1])
        return out


def quote_batches(block: Block) -> list[Quotes]:
    """The block's quotes per symbol, each symbol's in file order."""
    q, syms = block.quotes, block.quote_symbols
    if q is None or syms is None or not len(q):
        return []
    return [q.take(rows, sym) for sym, rows in _symbol_rows(syms)]


def book_batches(block: Block) -> list[BookBatch]:
    """The block's book records per symbol, each symbol's in file order."""
    if not block.book:
        return []
    out: dict[str, BookBatch] = {}
    for rec in block.book:
        batch = out.get(rec.symbol)
        if batch is None:
            batch = out[rec.symbol] = BookBatch(rec.symbol, [])
        batch.records.append(rec)
    return list(out.values())


def _symbol_rows(syms: np.ndarray) -> list[tuple[str, slice | np.ndarray]]:
    """Each symbol of a block's rows, in order of first appearance, with its rows (a slice of
    all of them when one symbol has every row: the common case, checked without a pass if it can)."""
    if len(syms) == 0:
        return []
    first = syms[0]
    if syms[-1] == first and (len(syms) < 3 or np.all(syms == first)):
        return [(first, slice(None))]
    return [(sym, np.flatnonzero(syms == sym)) for sym in dict.fromkeys(syms.tolist())]


def split_by_symbol(block: Block) -> list[Trades]:
    return [
        Trades(symbol=sym, **{k: v[rows] for k, v in block.cols.items()}) for sym, rows in _symbol_rows(block.symbols)
    ]


class Replay:
    """Merge of several files by trade time, in adaptive time slices, resumable."""

    def __init__(
        self,
        paths: list[Path],
        positions: dict[str, int] | None = None,
        window_ms: int | None = None,
        kinds: frozenset[str] = TRADE_KINDS,
        readahead: bool = False,
    ) -> None:
        """`readahead`: large recordings are read and parsed in child processes (`READAHEAD_MIN_BYTES`)."""
        missing = [str(p) for p in paths if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"replay files not found: {', '.join(missing)}")
        positions = positions or {}
        self.files = [
            FileStream(Path(p), positions.get(str(p), 0), window_ms=window_ms, kinds=kinds, readahead=readahead)
            for p in paths
        ]
        self.slice_ms = 1_000

    def positions(self) -> dict[str, int]:
        return {str(f.path): f.position for f in self.files}

    def stats(self) -> RecordingStats:
        return RecordingStats(
            skipped=sum(f.stats.skipped for f in self.files),
            rejected=sum(f.stats.rejected for f in self.files),
        )

    def drain_rejects(self) -> list[Rejected]:
        out: list[Rejected] = []
        for f in self.files:
            out.extend(f.rejects)
            f.rejects.clear()
        return out

    def next_ts(self) -> int | None:
        heads = [h for h in (f.head_ts() for f in self.files) if h is not None]
        return min(heads) if heads else None

    def take(self, max_rows: int, until_ts: int | None = None) -> list[Trades | Quotes | BookBatch] | None:
        """Next rows in time order (None at end of input); [] if nothing is due before until_ts.
        Trades per symbol, then (recordings, with book kinds) quotes and book records per symbol.

        Files are merged in time slices, not row by row: everything up to the
        slice end comes from every file (each file in its own order), so two
        symbols trading in the same milliseconds still make large batches. The
        slice adapts so one call yields about max_rows rows.
        """
        heads = sorted((h, i) for i, f in enumerate(self.files) if (h := f.head_ts()) is not None)
        if not heads:
            return None
        h0 = heads[0][0]
        if until_ts is not None and h0 > until_ts:
            return []
        end = h0 + self.slice_ms
        if until_ts is not None:
            end = min(end, until_ts)
        out: list[Trades | Quotes | BookBatch] = []
        total = 0
        for head, i in heads:
            if head > end or total >= max_rows:
                break
            block = self.files[i].take_until(end, max_rows - total)
            total += len(block)
            out.extend(split_by_symbol(block))
            out.extend(quote_batches(block))
            out.extend(book_batches(block))
        if total < max_rows // 2:
            self.slice_ms = min(self.slice_ms * 2, MAX_SLICE_MS)
        elif total >= max_rows:
            self.slice_ms = max(self.slice_ms // 2, MIN_SLICE_MS)
        return out
