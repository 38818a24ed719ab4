"""The chunked multi-row tick insert stores every tick once, exactly, for any batch size."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from storage.port import StoreBatch
from storage.sqlite import SqliteStore
from ticklens.domain.records import Trades

COLS = ["symbol", "trade_id", "ts_ms", "price", "qty", "is_buyer_maker", "first_id", "last_id", "event_ms", "recv_ms"]


def _batch(symbol: str, first: int, n: int, seed: int) -> Trades:
    rng = np.random.default_rng(seed)
    ids = np.arange(first, first + n, dtype=np.int64)
    return Trades.from_columns(
        symbol,
        trade_id=ids,
        ts_ms=1_700_000_000_000 + ids * 7,
        price=np.round(60_000 + rng.standard_normal(n).cumsum(), 1),
        qty=np.round(rng.random(n) * 3, 3),
        is_buyer_maker=rng.random(n) < 0.5,
        first_id=ids * 3,
        last_id=ids * 3 + rng.integers(0, 4, n),
        event_ms=1_700_000_000_000 + ids * 7 + 1,
        recv_ms=1_700_000_000_000 + ids * 7 + 5,
    )


def _frame(batches: list[Trades]) -> pl.DataFrame:
    """What the store must hold: the batches' columns, first occurrence of each (symbol, id)."""
    parts = [
        pl.DataFrame({"symbol": [t.symbol] * len(t)} | {c: getattr(t, c) for c in COLS[1:]}) for t in batches if len(t)
    ]
    df = pl.concat(parts).with_columns(pl.col("is_buyer_maker").cast(pl.Int64))
    return df.unique(["symbol", "trade_id"], keep="first", maintain_order=True).sort("symbol", "trade_id")


def _stored(path: Path) -> pl.DataFrame:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f"SELECT {','.join(COLS)} FROM ticks ORDER BY symbol, trade_id").fetchall()
    return pl.DataFrame(rows, schema=COLS, orient="row")


# Sizes around every chunk boundary of the multi-row statements (2048, 128, 8, 1 rows).
@pytest.mark.parametrize("sizes", [[0], [1], [7, 8, 9], [127, 128, 129], [2047, 2048, 2049], [5000, 0, 2193]])
def test_every_tick_is_stored_once_with_every_column(tmp_path: Path, sizes: list[int]) -> None:
    batches, first = [], 1
    for i, n in enumerate(sizes):
        batches.append(_batch("btcusdt" if i % 2 == 0 else "ethusdt", first, n, seed=i))
        first += n
    w = SqliteStore(tmp_path / "t.db").writer()
    w.write(w.prepare(StoreBatch(ticks=batches)))
    w.close()
    got = _stored(tmp_path / "t.db")
    if sum(sizes) == 0:
        assert got.height == 0
        return
    want = _frame(batches)
    assert got.height == sum(sizes)
    assert got.equals(want.select(COLS))


def test_replayed_and_overlapping_batches_keep_the_first_copy(tmp_path: Path) -> None:
    a = _batch("btcusdt", 1, 600, seed=1)
    b = _batch("btcusdt", 300, 600, seed=2)  # ids 300..899: 300 already stored, with other values
    w = SqliteStore(tmp_path / "t.db").writer()
    w.write(w.prepare(StoreBatch(ticks=[a])))
    w.write(w.prepare(StoreBatch(ticks=[b, a])))  # the whole of `a` again in the same transaction
    w.close()
    got = _stored(tmp_path / "t.db")
    assert got.height == 899
    assert got.equals(_frame([a, b]).select(COLS))


def test_trades_whose_ids_and_times_repeat_are_stored_column_for_column(tmp_path: Path) -> None:
    """A plain trade's first/last id equal its id and its event/receive times its time: the
    flattening shares those columns' values, and the stored columns must still be right."""
    ids = np.arange(10, 3010, dtype=np.int64)
    t = Trades.from_columns(
        "solusdt",
        trade_id=ids,
        ts_ms=1_700_000_000_000 + ids,
        price=ids * 0.5,
        qty=np.full(len(ids), 0.25),
        is_buyer_maker=ids % 3 == 0,
    )
    w = SqliteStore(tmp_path / "t.db").writer()
    w.write(w.prepare(StoreBatch(ticks=[t])))
    w.close()
    got = _stored(tmp_path / "t.db")
    assert got.equals(_frame([t]).select(COLS))
    assert got["first_id"].to_list() == got["last_id"].to_list() == ids.tolist()
    assert got["event_ms"].to_list() == got["recv_ms"].to_list() == (1_700_000_000_000 + ids).tolist()
