"""The five levels per side that microstructure records after every depth event (`LevelSync`) are a
plain book's: the recordings replayed through `tests/book_reference.RefBook` (json + Decimal, nothing
of ticklens), its best levels taken after each applied event."""

from __future__ import annotations

import heapq
import json
import math
from decimal import Decimal

import numpy as np
import pytest
from book_reference import STREAMS, RefBook, raw_lines

from ticklens.domain.book import BookSnapshot, DepthUpdate
from ticklens.domain.micro.engine import LEVELS
from ticklens.domain.micro.levels import LevelSync
from ticklens.exchange.binance_book import parse_book_message


def ref_top(side: dict[Decimal, Decimal], bids: bool, n: int) -> list[tuple[Decimal, Decimal]]:
    return [(p, side[p]) for p in (heapq.nlargest if bids else heapq.nsmallest)(n, side)]


@pytest.mark.parametrize("name", ["btc_0808", "eth_0808"])
def test_levels_recorded_per_event_are_the_reference_books_best_five(name: str) -> None:
    symbol, market, paths = STREAMS[name]
    ref = RefBook(spot=False)
    sync = LevelSync(symbol, market)
    expected: dict[int, list[float]] = {}  # final update id -> the reference's 5+5 prices and quantities
    for raw in raw_lines(paths):
        msg = json.loads(raw)
        applied = ref.on_message(msg)
        if "lastUpdateId" in msg or (applied is not None and ref.last_u is not None):
            row = []
            for side, is_bid in ((ref.bids, True), (ref.asks, False)):
                best = ref_top(side, is_bid, LEVELS) + [(None, None)] * LEVELS
                for col in (0, 1):
                    row += [math.nan if lv[col] is None else float(lv[col]) for lv in best[:LEVELS]]
            expected[ref.last_u] = row  # type: ignore[index]
        rec = parse_book_message(raw, 0, market="usdm", snapshot_symbol=symbol)
        if isinstance(rec, BookSnapshot):
            sync.on_snapshot(rec)
        elif isinstance(rec, DepthUpdate):
            sync.on_depth(rec)
    rows = sync.drain_levels()
    assert sync.counters.applied == ref.applied > 2_000
    checked = from_buffer = 0
    for k in range(len(rows.ts_ms)):
        assert rows.seq[k] % 2 == 0  # no gap in these recordings
        if int(rows.seq[k]) // 2 not in expected:  # applied from the buffer at the snapshot: the
            from_buffer += 1  # reference takes those in one go
            continue
        got = np.concatenate([rows.bid_px[k], rows.bid_qty[k], rows.ask_px[k], rows.ask_qty[k]])
        assert np.array_equal(got, expected[int(rows.seq[k]) // 2], equal_nan=True), (name, k)
        checked += 1
    assert checked + from_buffer == ref.applied and from_buffer < 20
