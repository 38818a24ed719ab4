"""Bar sums stay exact and storable for any size: busy 5m bars and huge-quantity symbols."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from storage.port import StoreBatch
from storage.sqlite import SqliteStore
from ticklens.domain.bars import BarBook
from ticklens.domain.records import Trades


def _trades(n: int, price: float, qty: float, start_id: int = 1) -> Trades:
    ids = np.arange(start_id, start_id + n)
    return Trades.from_columns(
        "pepeusdt",
        trade_id=ids,
        ts_ms=1_700_000_100_000 + ids % 250_000,  # all inside one 5m bucket
        price=np.full(n, price),
        qty=np.full(n, qty),
        is_buyer_maker=ids % 2 == 0,
    )


def test_sums_beyond_64_bits_are_exact_in_memory_and_stored_without_error(tmp_path: Path) -> None:
    book = BarBook("pepeusdt", {"5m": 300_000}, lateness_ms=0, keep_closed_ms=0)
    # 200,000 trades of 90 million units each: 1.8e13 base units, 1.8e21 in 1e-8 units (> 2^63).
    t = _trades(200_000, 0.0123, 90_000_000.0)
    changed, _ = book.add(t)
    bar = changed[0]
    assert bar.volume_units == 200_000 * 90_000_000 * 10**8
    assert bar.volume == 1.8e13
    exact_quote = Fraction(0.0123) * Fraction(90_000_000.0) * 200_000
    assert abs(Fraction(bar.quote_volume) - exact_quote) / exact_quote < 1e-12

    w = SqliteStore(tmp_path / "s.db").writer()
    w.write(w.prepare(StoreBatch(bars=[bar])))
    vol, units = w.conn.execute("SELECT volume, volume_units FROM bars").fetchone()
    assert vol == 1.8e13 and int(units) == bar.volume_units
    w.close()


def test_order_does_not_change_the_sums_even_past_int64() -> None:
    t = _trades(50_000, 1.23456789, 123_456_789.0)
    rng = np.random.default_rng(3)
    parts = np.array_split(rng.permutation(len(t)), 7)
    a = BarBook("pepeusdt", {"5m": 300_000}, 0, 0)
    b = BarBook("pepeusdt", {"5m": 300_000}, 0, 0)
    a.add(t)
    for idx in parts:
        b.add(t.take(np.sort(idx)))
    ra, rb = a.book["5m"], b.book["5m"]
    assert [x.row() for x in ra.values()] == [x.row() for x in rb.values()]
