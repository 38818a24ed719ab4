"""Bar sums stay exact and storable for any size: busy 5m bars and huge-quantity symbols."""

from __future__ import annotations

from decimal import Decimal
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
    # 199,999 trades of 90,000,000.5 at 0.0123457: Σ price × qty is 2.2e19 units of 1e-8 (> 2^63).
    t = _trades(199_999, 0.0123457, 90_000_000.5)
    changed, _ = book.add(t)
    bar = changed[0]
    exact_volume = Decimal("90000000.5") * 199_999
    exact_quote = Decimal("0.0123457") * Decimal("90000000.5") * 199_999
    assert Fraction(bar.volume_units, 10**bar.qty_dp) == Fraction(exact_volume)
    assert Fraction(bar.quote_units, 10**bar.quote_dp) == Fraction(exact_quote)
    assert bar.quote_units > 2**63
    assert bar.volume == float(exact_volume) and bar.quote_volume == float(exact_quote)

    w = SqliteStore(tmp_path / "s.db").writer()
    w.write(w.prepare(StoreBatch(bars=[bar])))
    vol, quote, units, kind, dp = w.conn.execute(
        "SELECT volume, quote_volume, quote_units, typeof(quote_units), quote_dp FROM bars"
    ).fetchone()
    assert vol == float(exact_volume) and quote == float(exact_quote)
    assert kind == "text" and Fraction(int(units), 10**dp) == Fraction(exact_quote)  # not rounded to REAL
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
