"""The tick insert in C (`storage/sqlite/_tickinsert.c`) stores exactly what Python's sqlite3 binding
stores: the same `tick_rows`, row for row and type for type, on the bundled real trades, with
duplicates inside a batch, across batches of one transaction and against ticks stored before.

The oracle is the Python path of the same writer (`TICKLENS_SQLITE_C_TICKS=0`: parameters bound by
Python's sqlite3 module), not the code under test; the extension must be built (no skip here).
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from storage.port import StoreBatch, StoreWriteError
from storage.sqlite import SqliteStore, _tickinsert  # the extension must be built: no skip, no fallback here
from storage.sqlite.ticks import c_insert_unusable
from ticklens.domain.records import Trades

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
# Every column with SQLite's storage class of each value: a REAL stored as INTEGER would differ.
TABLE = (
    "SELECT s.symbol, t.*, typeof(t.price), typeof(t.qty), typeof(t.is_buyer_maker), typeof(t.recv_lag)"
    " FROM tick_rows AS t JOIN symbols AS s ON s.id = t.sym ORDER BY t.sym, t.trade_id"
)


def _recorded(symbol: str) -> Trades:
    """The bundled USD-M `@trade` recordings of one symbol (receive time from each line's ns)."""
    rows = []
    for p in sorted(SAMPLE.glob(f"um_{symbol}_*_trades.gz")):
        with gzip.open(p, "rt") as fh:
            for line in fh:
                ns, _, body = line.partition(" ")
                d = json.loads(body)["data"]
                rows.append((d["t"], d["T"], float(d["p"]), float(d["q"]), d["m"], d["E"], int(ns) // 1_000_000))
    ids, ts, price, qty, maker, event, recv = map(np.array, zip(*rows, strict=True))
    return Trades.from_columns(
        symbol, trade_id=ids, ts_ms=ts, price=price, qty=qty, is_buyer_maker=maker, event_ms=event, recv_ms=recv
    )


def _archive_hour() -> Trades:
    """The bundled archive hour (BTCUSDT trades, 2020-12-09 00:00): all the optional columns 0."""
    df = pl.read_csv(SAMPLE / "BTCUSDT-trades-2020-12-09T00.csv.gz")
    return Trades.from_columns(
        "btcusdt",
        trade_id=df["id"].to_numpy(),
        ts_ms=df["time"].to_numpy(),
        price=df["price"].to_numpy(),
        qty=df["qty"].to_numpy(),
        is_buyer_maker=df["is_buyer_maker"].to_numpy(),
    )


def _slice(t: Trades, lo: int, hi: int) -> Trades:
    return t.take(np.arange(lo, min(hi, len(t))))


def _changed(t: Trades) -> Trades:
    """The same ids with other values: a stored copy must stay as it was."""
    out = t.take(np.arange(len(t)))
    out.price = out.price * 2 + 1
    out.is_buyer_maker = ~out.is_buyer_maker
    return out


def _transactions() -> list[list[Trades]]:
    """Batches as the flow hands them over, one list a transaction."""
    hour, btc, eth = _archive_hour(), _recorded("btcusdt"), _recorded("ethusdt")
    dup = _slice(hour, 1000, 1500)
    return [
        [_slice(hour, 0, 30_000), _slice(btc, 0, 5000)],  # new symbols, ids given before the transaction
        [_slice(hour, 29_000, 70_000), _changed(_slice(hour, 0, 2000))],  # overlaps the ticks stored before
        [dup.take(np.r_[np.arange(len(dup)), np.arange(len(dup))[::-1]]), _slice(hour, 70_000, 10**9)],  # dups inside
        [_slice(btc, 4000, 10**9), eth, _changed(eth)],  # recorded lags (optional columns); eth twice, one commit
        [_slice(hour, 0, 10**9)],  # everything again: nothing new
    ]


def _store(path: Path, transactions: list[list[Trades]]) -> tuple[list[tuple], bool]:
    w = SqliteStore(path).writer()
    for batches in transactions:
        w.write(w.prepare(StoreBatch(ticks=batches)))
    c_ticks = w.c_ticks
    w.close()
    with sqlite3.connect(path) as conn:
        return conn.execute(TABLE).fetchall(), c_ticks


def test_c_insert_stores_what_pythons_binding_stores_row_for_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions = _transactions()
    in_c, used_c = _store(tmp_path / "c.db", transactions)
    monkeypatch.setenv("TICKLENS_SQLITE_C_TICKS", "0")
    in_python, used_python = _store(tmp_path / "py.db", transactions)
    assert used_c and not used_python
    distinct = {(t.symbol, i) for batches in transactions for t in batches for i in t.trade_id.tolist()}
    assert len(in_python) == len(distinct) > 150_000
    assert in_c == in_python
    # The first copy stays: the archive hour's first ticks were stored before their changed copies came.
    first = next(r for r in in_c if r[0] == "btcusdt" and r[2] == 307064552)
    assert first[4] == 18319.33 and first[6] == 0
    assert {r[-4:] for r in in_c} == {("real", "real", "integer", "integer")}


def test_a_failing_c_insert_rolls_the_batch_back_whole(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "full.db", max_size_mb=2)
    w = store.writer()
    assert w.c_ticks
    w.write(w.prepare(StoreBatch(ticks=[_slice(_archive_hour(), 0, 100)])))
    with pytest.raises(StoreWriteError, match="database or disk is full.*rolled back whole"):
        w.write(w.prepare(StoreBatch(ticks=[_archive_hour()])))
    assert not w.conn.in_transaction
    w.close()
    with sqlite3.connect(tmp_path / "full.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM tick_rows").fetchone()[0] == 100


def test_the_c_insert_is_refused_for_a_handle_that_is_not_the_writers(tmp_path: Path) -> None:
    """The check the writer makes before it trusts the handle read out of the connection object."""
    conn = sqlite3.connect(tmp_path / "a.db")
    assert c_insert_unusable(conn, tmp_path / "a.db") is None
    why = c_insert_unusable(conn, tmp_path / "b.db")
    assert why is not None and "a.db" in why and "b.db" in why
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError):  # a closed connection's handle is never used
        _tickinsert.filename(conn)


def test_the_c_insert_lets_other_threads_run(tmp_path: Path) -> None:
    """The loop runs with the GIL released: a Python thread counts on through one long call.

    Were the GIL held, the counter could move only in the one switch interval (5 ms) that may fall
    between reading it and the call; released, it moves for most of the call (2,000,001 rows).
    """
    conn = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    conn.execute("CREATE TABLE t(s INTEGER, a INTEGER, b REAL)")
    n = 2_000_001  # the last row in the one-row statement
    cols = (np.arange(n, dtype=np.int64), np.arange(n, dtype=np.float64))
    box = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            box[0] += 1

    t = threading.Thread(target=count)
    t.start()
    try:
        time.sleep(0.2)
        k0, t0 = box[0], time.perf_counter()
        time.sleep(0.2)
        rate = (box[0] - k0) / (time.perf_counter() - t0)  # counts a second, the thread alone
        conn.execute("BEGIN")
        before = box[0]
        statements = (
            (2, "INSERT INTO t(s, a, b) VALUES(?, ?, ?),(?, ?, ?)"),
            (1, "INSERT INTO t(s, a, b) VALUES(?, ?, ?)"),
        )
        assert _tickinsert.insert(conn, statements, 7, cols) == n
        during = box[0] - before
        conn.execute("COMMIT")
    finally:
        stop.set()
        t.join()
    conn.close()
    assert during > rate * 0.05, (during, rate)  # 10 switch intervals' worth at least
