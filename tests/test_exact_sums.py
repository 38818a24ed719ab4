"""Sub-cent symbols get exact bars: every field equals a `decimal` computation, in any arrival order.

A 1000PEPEUSDT-like symbol (price ~0.0062 with 7 decimals, integer quantities) is made from the
bundled hour of real BTCUSDT trades by scaling prices and quantities, written once as an archive
CSV (in order) and once as a WebSocket recording shuffled across bar boundaries, and run through
the real flow. The reference reads the decimal text back with Python's `decimal`.
"""

from __future__ import annotations

import csv
import decimal
import gzip
import json
import random
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from tests.flow_support import BTC_2020, query, run_flow, write_config

SYMBOL = "1000pepeusdt"
PRICE_FACTOR = Decimal("0.000000338")  # 18,319.33 → 0.0061920
TICK = Decimal("0.0000001")  # 7 decimals
QTY_FACTOR = 10_000  # 0.105 BTC → 1050: integer quantities
TF_MS = {"1s": 1_000, "1m": 60_000, "5m": 300_000}
COLUMNS = (
    "open, high, low, close, volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, vwap,"
    " max_qty, messages, open_ts, open_id, close_ts, close_id, first_id, last_id, closed,"
    " volume_units, quote_units, taker_buy_volume_units, taker_buy_quote_units, qty_dp, quote_dp"
)


def _pepe_trades() -> list[dict]:
    """The BTCUSDT hour as decimal text of a sub-cent symbol: (id, time, price, qty, maker)."""
    out = []
    with gzip.open(BTC_2020, "rt") as fh:
        for r in csv.DictReader(fh):
            price = (Decimal(r["price"]) * PRICE_FACTOR).quantize(TICK, rounding=decimal.ROUND_HALF_EVEN)
            qty = Decimal(r["qty"]) * QTY_FACTOR
            assert qty == qty.to_integral_value()
            out.append(
                {
                    "id": int(r["id"]),
                    "time": int(r["time"]),
                    "price": f"{price:f}",
                    "qty": str(int(qty)),
                    "maker": r["is_buyer_maker"] == "true",
                }
            )
    return out


def _write_csv(trades: list[dict], path: Path) -> None:
    with gzip.open(path, "wt") as fh:
        fh.write("id,price,qty,quote_qty,time,is_buyer_maker\n")
        for t in trades:
            quote = Decimal(t["price"]) * Decimal(t["qty"])
            fh.write(f"{t['id']},{t['price']},{t['qty']},{quote:f},{t['time']},{str(t['maker']).lower()}\n")


def _write_shuffled_recording(trades: list[dict], path: Path, max_shift_ms: int, seed: int) -> None:
    """`<recv ns> <combined-stream JSON>` lines whose order is shuffled by up to max_shift_ms."""
    rng = random.Random(seed)
    keyed = sorted(trades, key=lambda t: t["time"] + rng.uniform(0, max_shift_ms))
    inversions = sum(1 for a, b in zip(keyed, keyed[1:], strict=False) if b["time"] < a["time"])
    assert inversions > 1000
    with gzip.open(path, "wt") as fh:
        for t in keyed:
            data = {
                "e": "trade",
                "E": t["time"],
                "T": t["time"],
                "s": SYMBOL.upper(),
                "t": t["id"],
                "p": t["price"],
                "q": t["qty"],
                "X": "MARKET",
                "m": t["maker"],
            }
            fh.write(f"{t['time'] * 1_000_000} {json.dumps({'stream': f'{SYMBOL}@trade', 'data': data})}\n")


def _reference(trades: list[dict], tf_ms: int) -> dict[int, dict]:
    """Bars by bucket start, with Python's decimal (60 digits: every sum here is exact)."""
    decimal.getcontext().prec = 60
    buckets: dict[int, list[dict]] = defaultdict(list)
    for t in sorted(trades, key=lambda t: (t["time"], t["id"])):
        buckets[t["time"] - t["time"] % tf_ms].append(t)
    out = {}
    for start, ts in buckets.items():
        p = [Decimal(t["price"]) for t in ts]
        q = [Decimal(t["qty"]) for t in ts]
        taker = [not t["maker"] for t in ts]
        volume = sum(q, Decimal(0))
        quote = sum((a * b for a, b in zip(p, q, strict=True)), Decimal(0))
        tb_volume = sum((b for b, k in zip(q, taker, strict=True) if k), Decimal(0))
        tb_quote = sum((a * b for a, b, k in zip(p, q, taker, strict=True) if k), Decimal(0))
        out[start] = {
            "open": float(p[0]),
            "high": float(max(p)),
            "low": float(min(p)),
            "close": float(p[-1]),
            "volume": float(volume),
            "quote_volume": float(quote),
            "trades": len(ts),
            "taker_buy_volume": float(tb_volume),
            "taker_buy_quote_volume": float(tb_quote),
            # The exact ratio, correctly rounded (Fraction → float is).
            "vwap": float(Fraction(quote) / Fraction(volume)),
            "max_qty": float(max(q)),
            "messages": len(ts),
            "open_ts": ts[0]["time"],
            "open_id": ts[0]["id"],
            "close_ts": ts[-1]["time"],
            "close_id": ts[-1]["id"],
            "first_id": min(t["id"] for t in ts),
            "last_id": max(t["id"] for t in ts),
            "closed": 1,
            "exact": (volume, quote, tb_volume, tb_quote),
        }
    return out


def _stored(db: Path, tf: str) -> dict[int, dict]:
    names = [c.strip() for c in COLUMNS.split(",")]
    rows = query(db, f"SELECT start_ms, {COLUMNS} FROM bars WHERE symbol=? AND timeframe=?", (SYMBOL, tf))
    return {r[0]: dict(zip(names, r[1:], strict=True)) for r in rows}


@pytest.fixture(scope="module")
def pepe(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path, Path]:
    """(trades, in-order store from the archive CSV, store from the shuffled recording)."""
    tmp = tmp_path_factory.mktemp("pepe")
    trades = _pepe_trades()
    stores = []
    for name, source, bars in (
        ("csv", {"paths": [str(tmp / "1000PEPEUSDT-trades-2020-12-09T00.csv.gz")]}, {}),
        ("shuffled", {"paths": [str(tmp / "pepe_shuffled.gz")], "batch_rows": 97}, {"lateness_ms": 100}),
    ):
        work = tmp / name
        work.mkdir()
        cfg = write_config(work, symbols=[SYMBOL], source=source, bars=bars, pairs=[])
        stores.append(work / "ticklens.db")
        if name == "csv":
            _write_csv(trades, tmp / "1000PEPEUSDT-trades-2020-12-09T00.csv.gz")
        else:
            _write_shuffled_recording(trades, tmp / "pepe_shuffled.gz", max_shift_ms=400, seed=11)
        res = run_flow(cfg, "--no-recovery")
        assert res.returncode == 0, res.stderr[-3000:]
    return trades, stores[0], stores[1]


@pytest.mark.parametrize("tf", ["1s", "1m", "5m"])
def test_sub_cent_bars_equal_a_decimal_computation_in_every_field(pepe: tuple, tf: str) -> None:
    trades, db, _ = pepe
    want = _reference(trades, TF_MS[tf])
    got = _stored(db, tf)
    assert sorted(got) == sorted(want)
    if tf == "1s":
        assert len(got) > 3000
    for start, ref in want.items():
        bar = got[start]
        exact = ref.pop("exact")
        assert {k: bar[k] for k in ref} == ref, start
        # The exact sums behind the REAL columns are the decimal sums themselves.
        qd, pd = bar["qty_dp"], bar["quote_dp"]
        sums = (bar["volume_units"], bar["quote_units"], bar["taker_buy_volume_units"], bar["taker_buy_quote_units"])
        assert tuple(Fraction(int(u), 10**d) for u, d in zip(sums, (qd, pd, qd, pd), strict=True)) == tuple(
            Fraction(x) for x in exact
        ), start


def test_sub_cent_bars_are_bit_identical_whatever_the_arrival_order(pepe: tuple) -> None:
    _, in_order, shuffled = pepe
    sql = f"SELECT symbol, timeframe, start_ms, {COLUMNS} FROM bars ORDER BY symbol, timeframe, start_ms"
    a, b = query(in_order, sql), query(shuffled, sql)
    assert len(a) > 3000 and a == b
    # Some trades came after their bar had closed and revised it (the order really differed).
    assert query(shuffled, "SELECT COUNT(*) FROM bars WHERE revision > 0")[0][0] > 0
