"""A recording read in a child process (`Replay(readahead=True)`) replays exactly as one read in
the flow's own process: the same batches, resume positions, stats and rejects."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.flow_support import SHARED
from ticklens.domain.book import BookBatch, Quotes
from ticklens.domain.records import COLUMNS, Trades
from ticklens.exchange.binance import record_kinds
from ticklens.ingest import replay
from ticklens.ingest.replay import Replay

WS = SHARED / "um_ws"
PAIR = [WS / "btcusdt_20240808.gz", WS / "ethusdt_20240808.gz"]
BOOKS = record_kinds(["trade", "bookTicker", "depth"])
QUOTE_COLS = ("update_id", "ts_ms", "event_ms", "recv_ms", "bid", "bid_qty", "ask", "ask_qty")


def _item(x: object) -> tuple:
    if isinstance(x, Trades):
        return ("trades", x.symbol, [getattr(x, c).tolist() for c in COLUMNS])
    if isinstance(x, Quotes):
        return ("quotes", x.symbol, x.source, [getattr(x, c).tolist() for c in QUOTE_COLS])
    assert isinstance(x, BookBatch)
    return ("book", x.symbol, list(x.records))


def _replay_all(r: Replay, max_rows: int, stop_after: int | None = None) -> list[object]:
    out: list[object] = []
    while (chunk := r.take(max_rows)) is not None:
        out.append(([_item(x) for x in chunk], r.positions()))
        if stop_after is not None and len(out) >= stop_after:
            break
    stats = r.stats()
    out.append((stats.skipped, stats.rejected, [(x.reason, x.raw, x.source) for x in r.drain_rejects()]))
    return out


def _small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 50 entries in parts of 3, 6, 12, 12: every kind of cut, in a small file."""
    monkeypatch.setattr(replay, "BLOCK_ROWS", 50)
    monkeypatch.setattr(replay, "FIRST_PART_ROWS", 3)
    monkeypatch.setattr(replay, "MAX_PART_ROWS", 12)
    monkeypatch.setattr(replay, "READAHEAD_MIN_BYTES", 0)


def _recording(path: Path) -> Path:
    """The first 1,500 lines of a recording, its REST snapshot moved to the top (it waits for the
    symbol of a later depth event), with lines the replay skips or rejects among them."""
    with gzip.open(WS / "btcusdt_20240808.gz", "rb") as fh:
        lines = [line for _, line in zip(range(1_500), fh, strict=False)]
    snap = next(i for i, line in enumerate(lines) if b'{"lastUpdateId"' in line[:40])
    lines.insert(0, lines.pop(snap))
    lines[10:10] = [b"no-time {}\n", b"\n", b"1723161256300000000 not json\n"]
    lines[700:700] = [b'1723161256300000000 {"stream":"btcusdt@kline_1m","data":{"e":"kline"}}\n']
    path.write_bytes(gzip.compress(b"".join(lines)))
    return path


@pytest.mark.parametrize("max_rows", [7, 200, 50_000])
def test_a_small_recording_in_parts_replays_as_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_rows: int
) -> None:
    _small(monkeypatch)
    path = _recording(tmp_path / "btcusdt_test.gz")
    here = _replay_all(Replay([path], kinds=BOOKS), max_rows)
    child = _replay_all(Replay([path], kinds=BOOKS, readahead=True), max_rows)
    assert child == here
    assert here[-1][1] >= 3  # the bad lines were rejected (and the kline skipped) in both


def test_a_resumed_child_replay_goes_on_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _small(monkeypatch)
    path = _recording(tmp_path / "btcusdt_test.gz")
    first = Replay([path], kinds=BOOKS, readahead=True)
    _replay_all(first, 40, stop_after=9)
    at = first.positions()
    here = _replay_all(Replay([path], positions=at, kinds=BOOKS), 40)
    child = _replay_all(Replay([path], positions=at, kinds=BOOKS, readahead=True), 40)
    assert child == here and len(here) > 2


def test_the_child_raises_what_the_reading_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _small(monkeypatch)
    path = tmp_path / "btcusdt_cut.gz"
    path.write_bytes(_recording(tmp_path / "btcusdt_test.gz").read_bytes()[:-100])  # cut mid-member
    for readahead in (False, True):
        with pytest.raises(EOFError):
            _replay_all(Replay([path], kinds=BOOKS, readahead=readahead), 200)


@pytest.mark.skipif(not all(p.exists() for p in PAIR), reason="needs the 2024-08-08 recordings")
def test_the_recordings_replay_in_child_processes_as_in_process() -> None:
    """Both 2024-08-08 files, as the flow reads them (50,000 rows a batch, trades and books)."""
    here = _replay_all(Replay(PAIR, kinds=BOOKS), 50_000)
    child = _replay_all(Replay(PAIR, kinds=BOOKS, readahead=True), 50_000)
    assert child == here
    assert sum(len(t[2][0]) for batch, _ in here[:-1] for t in batch if t[0] == "trades") == 35_389


def test_readers_started_ahead_are_taken_over_from_the_beginning_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`start_readers` (the runner calls it before its imports): a replay from position 0 takes
    the reader over; one resuming elsewhere starts its own, and the early one is ended."""
    _small(monkeypatch)
    path = _recording(tmp_path / "btcusdt_test.gz")
    here = _replay_all(Replay([path], kinds=BOOKS), 40)
    replay.start_readers([path, path], None, BOOKS)
    assert len(replay._STARTED) == 1
    early = next(iter(replay._STARTED.values()))
    assert _replay_all(Replay([path], kinds=BOOKS, readahead=True), 40) == here
    assert not replay._STARTED and early._proc.poll() is not None  # taken over, and done

    first = Replay([path], kinds=BOOKS)
    _replay_all(first, 40, stop_after=5)
    replay.start_readers([path], None, BOOKS)
    stale = next(iter(replay._STARTED.values()))
    at = first.positions()
    resumed = _replay_all(Replay([path], positions=at, kinds=BOOKS, readahead=True), 40)
    assert resumed == _replay_all(Replay([path], positions=at, kinds=BOOKS), 40)
    assert not replay._STARTED and stale._proc.wait(timeout=10) is not None
