"""The store contract for microstructure: micro_bars and vpin, in every backend, through the port."""

from __future__ import annotations

import math

import numpy as np
from store_support import write_batch

from storage.port import MICRO_OUT_COLUMNS, VPIN_OUT_COLUMNS, Store
from ticklens.domain.book import Quote, Quotes
from ticklens.domain.micro import MicroBar, MicroBook, MicroParams
from ticklens.domain.records import Trades

T0 = 1_722_000_000_000


def _micro(n: int = 400, seed: int = 3) -> tuple[list[MicroBar], list]:
    """Bars and VPIN buckets of a random quote/trade stream, as the flow emits them (some twice)."""
    rng = np.random.default_rng(seed)
    book = MicroBook("btcusdt", MicroParams({"1s": 1_000, "1m": 60_000}, vpin_bucket=2.0, vpin_buckets=3, window=5))
    ts = T0 + np.sort(rng.integers(0, 90_000, n))
    mid = 60_000 + np.round(rng.standard_normal(n).cumsum(), 1)
    quotes = [
        Quote(
            "btcusdt", i + 1, int(t), int(t), f"{m - 0.05:.2f}", "1.5", f"{m + 0.05:.2f}", f"{rng.random() * 3:.3f}", 0
        )
        for i, (t, m) in enumerate(zip(ts[::2], mid[::2], strict=False))
    ]
    trade_ts = ts[1::2]
    trades = Trades.from_columns(
        "btcusdt",
        trade_id=np.arange(len(trade_ts)),
        ts_ms=trade_ts,
        price=mid[1::2],
        qty=np.round(rng.random(len(trade_ts)) + 0.001, 3),
        is_buyer_maker=rng.random(len(trade_ts)) < 0.5,
    )
    bars, vpin = [], []
    for lo in range(T0, T0 + 90_000, 3_000):  # 3 s of quotes and trades per batch
        batch = [q for q in quotes if lo <= q.txn_ms < lo + 3_000]  # type: ignore[operator]
        if batch:
            book.add_quotes(Quotes.from_quotes("btcusdt", batch))
        book.add_trades(trades.take(np.flatnonzero((trades.ts_ms >= lo) & (trades.ts_ms < lo + 3_000))))
        out = book.advance()
        bars += out.bars
        vpin += out.vpin
    out = book.advance(clock_ms=2**50)
    return bars + out.bars, vpin + out.vpin


def _same(got: tuple, want: tuple) -> bool:
    return all(
        (g is None and w is None)
        or (g is not None and w is not None and math.isclose(float(g), float(w), rel_tol=1e-15))
        for g, w in zip(got, want, strict=True)
    )


def test_micro_bars_read_back_as_their_last_written_version(store: Store) -> None:
    bars, vpin = _micro()
    half = len(bars) // 2
    write_batch(store, micro_bars=bars[:half], vpin=vpin)
    write_batch(store, micro_bars=bars[half:])  # incomplete rows of the first half come back complete here
    last = {(b.timeframe, b.start_ms): b for b in bars}
    assert any(b.complete == 0 for b in bars) and all(b.complete for b in last.values())
    for tf in ("1s", "1m"):
        want = [last[k].row()[2:] for k in sorted(last) if k[0] == tf]
        with store.reader() as r:
            got = r.micro_bars("btcusdt", tf, 100_000)
        assert len(got) == len(want) > 1
        for g, w in zip(got, want, strict=True):
            assert _same(g, w), (g, w)
        assert any(v is None for row in got for v in row)  # NULLs stay NULL


def test_micro_bars_newest_limit_in_a_time_range_oldest_first(store: Store) -> None:
    bars, _ = _micro()
    write_batch(store, micro_bars=bars)
    starts = sorted({b.start_ms for b in bars if b.timeframe == "1s"})
    lo, hi = starts[10], starts[40]
    with store.reader() as r:
        got = r.micro_bars("btcusdt", "1s", 5, lo, hi)
        none = r.micro_bars("ethusdt", "1s", 5)
    want = [s for s in starts if lo <= s < hi][-5:]
    assert [g[0] for g in got] == want and none == []
    assert MICRO_OUT_COLUMNS[0] == "start_ms"


def test_vpin_buckets_upsert_by_index_and_read_by_fill_time(store: Store) -> None:
    _, vpin = _micro()
    assert len(vpin) > 10
    write_batch(store, vpin=vpin)
    write_batch(store, vpin=vpin[-3:])  # told again (a recomputation): stored once
    with store.reader() as r:
        got = r.vpin_buckets("btcusdt", 100_000)
        window = r.vpin_buckets("btcusdt", 2, vpin[3].end_ms, vpin[8].end_ms)
    want = [(v.bucket, v.end_ms, v.buy_volume, v.sell_volume, v.vpin) for v in vpin]
    assert got == want
    assert len(VPIN_OUT_COLUMNS) == len(got[0])
    inside = [w for w in want if vpin[3].end_ms <= w[1] < vpin[8].end_ms]
    assert window == inside[-2:]
