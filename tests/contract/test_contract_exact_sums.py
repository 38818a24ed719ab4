"""The store contract for exact bar sums: every backend keeps a bar's sums as exact decimals.

For any price and quantity precision (a sub-cent symbol with 7-decimal prices and integer
quantities; a symbol whose quote sums pass 64 bits), after late partials merged into the
stored bars, in either arrival order: `exact_bar_sums` equals a `decimal` computation over
the trades, and the float columns of `bars` are those decimals correctly rounded.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from store_support import write_batch

from storage.port import BAR_OUT_COLUMNS, Store
from ticklens.domain.bars import Bar, aggregate
from ticklens.domain.records import Trades

T0 = 1_722_000_000_000  # a minute boundary
TF = "1m"


def _trades(symbol: str, prices: list[str], qtys: list[str], seed: int) -> tuple[Trades, list[dict]]:
    """Trades over ~3 minutes from decimal text, and the same as decimals (the reference's input)."""
    rng = np.random.default_rng(seed)
    n = len(prices)
    ts = T0 + np.sort(rng.integers(0, 180_000, n))
    maker = rng.random(n) < 0.5
    t = Trades.from_columns(
        symbol,
        trade_id=np.arange(1, n + 1, dtype=np.int64),
        ts_ms=ts,
        price=np.array([float(p) for p in prices]),
        qty=np.array([float(q) for q in qtys]),
        is_buyer_maker=maker,
    )
    ref = [
        {"id": i + 1, "ts": int(ts[i]), "p": Decimal(prices[i]), "q": Decimal(qtys[i]), "taker": not maker[i]}
        for i in range(n)
    ]
    return t, ref


def _reference(ref: list[dict]) -> dict[int, dict]:
    """Sums per bar start with Python's decimal, 80 digits (every sum here is exact)."""
    out: dict[int, dict] = {}
    with localcontext(prec=80):
        for t in ref:
            b = out.setdefault(t["ts"] - t["ts"] % 60_000, dict.fromkeys(("v", "q", "tv", "tq"), Decimal(0)))
            pq = t["p"] * t["q"]
            b["v"] += t["q"]
            b["q"] += pq
            if t["taker"]:
                b["tv"] += t["q"]
                b["tq"] += pq
    return out


def _partials(t: Trades, mask: np.ndarray, late: bool) -> list[Bar]:
    parts = aggregate(t.take(np.flatnonzero(mask)), TF, 60_000)
    for p in parts:
        if late:  # as the flow hands over a trade later than the bars it keeps in memory
            p.closed, p.revision = True, 1
    return parts


def _check(store: Store, symbol: str, ref: list[dict]) -> list[tuple]:
    want = _reference(ref)
    with store.reader() as r:
        sums = r.exact_bar_sums(symbol, TF)
        rows = r.bars(symbol, TF, 1000)
    assert [s.start_ms for s in sums] == sorted(want)
    for s in sums:
        w = want[s.start_ms]
        assert (s.volume, s.quote_volume, s.taker_buy_volume, s.taker_buy_quote_volume) == (
            w["v"],
            w["q"],
            w["tv"],
            w["tq"],
        ), s.start_ms
    cols = list(BAR_OUT_COLUMNS)
    for row in rows:
        b, w = dict(zip(cols, row, strict=True)), want[row[0]]
        assert b["volume"] == float(w["v"]) and b["quote_volume"] == float(w["q"])
        assert b["taker_buy_volume"] == float(w["tv"])
        assert b["vwap"] == float(Fraction(w["q"]) / Fraction(w["v"]))
    return rows


def _sub_cent(n: int, seed: int) -> tuple[list[str], list[str]]:
    """1000PEPEUSDT-like: ~0.0062 with 7 decimals, integer quantities; a few later prices with 9."""
    rng = np.random.default_rng(seed)
    units = 61_922 + np.cumsum(rng.integers(-3, 4, n))
    prices = [f"{Decimal(int(u)).scaleb(-7):f}" for u in units]
    for i in range(n - 40, n, 7):  # finer ticks late in the run: the decimals grow mid-bar
        prices[i] = f"{Decimal(int(units[i]) * 100 + 37).scaleb(-9):f}"
    return prices, [str(int(q)) for q in rng.integers(1, 500_000, n)]


def _past_64_bits(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Quote sums far past 2**63 units: 15-digit quantities with 8 decimals, prices with 6."""
    rng = np.random.default_rng(seed)
    prices = [f"{Decimal(int(u)).scaleb(-6):f}" for u in rng.integers(12_000_000_000, 13_000_000_000, n)]
    qtys = [f"{Decimal(int(u)).scaleb(-8):f}" for u in rng.integers(900_000_000_000_000, 999_999_999_999_999, n)]
    return prices, qtys


@pytest.mark.parametrize("kind", ["sub_cent", "past_64_bits"])
def test_bar_sums_stay_exact_decimals_through_late_merges_in_any_order(store: Store, kind: str) -> None:
    prices, qtys = (_sub_cent if kind == "sub_cent" else _past_64_bits)(1200, seed=7)
    t, ref = _trades("xusdt", prices, qtys, seed=8)
    late = np.random.default_rng(9).random(len(t)) < 0.3
    # The same trades in two orders: most first and the rest late, and the other way round;
    # the late ones in two batches, so one bar takes several merges (one batch may fold them).
    for symbol, first in (("ausdt", ~late), ("busdt", late)):
        ts = Trades.from_columns(
            symbol,
            trade_id=t.trade_id,
            ts_ms=t.ts_ms,
            price=t.price,
            qty=t.qty,
            is_buyer_maker=t.is_buyer_maker,
        )
        rest = np.flatnonzero(~first)
        halves = np.zeros(len(t), bool), np.zeros(len(t), bool)
        halves[0][rest[::2]], halves[1][rest[1::2]] = True, True
        write_batch(store, bars=_partials(ts, first, late=False))
        write_batch(store, bar_merges=_partials(ts, halves[0], True) + _partials(ts, halves[1], True))
    a, b = _check(store, "ausdt", ref), _check(store, "busdt", ref)
    rev = list(BAR_OUT_COLUMNS).index("revision")  # how many merges a bar took differs by order
    assert [r[:rev] + r[rev + 1 :] for r in a] == [r[:rev] + r[rev + 1 :] for r in b]
    if kind == "past_64_bits":  # in units of the trades' own decimals (1e-14), the sums pass 64 bits
        assert min(w["q"] for w in _reference(ref).values()) * 10**14 > 2**64
