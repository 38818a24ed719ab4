"""Feeding a recording to the product's microstructure state, the way the flow does: in batches."""

from __future__ import annotations

import json

from tests.micro_reference import Recording
from ticklens.domain.book import BookSnapshot, DepthUpdate, Quote, Quotes
from ticklens.domain.micro import MicroBar, MicroBook, MicroParams, VpinBucket
from ticklens.domain.micro.levels import LevelSync
from ticklens.domain.records import Trades
from ticklens.exchange.binance_book import parse_book_message


def parse(rec: Recording) -> list[object]:
    """Each raw line as the product's record (Trades of one trade, Quote, DepthUpdate, BookSnapshot)."""
    out: list[object] = []
    for raw in rec.lines:
        if b'"e":"trade"' in raw:
            d = json.loads(raw)["data"]
            out.append((d["t"], d["T"], float(d["p"]), float(d["q"]), d["m"]))
            continue
        out.append(parse_book_message(raw, 0, market="usdm", snapshot_symbol=rec.symbol))
    return out


def run(
    symbol: str, records: list[object], params: MicroParams, cuts: list[int], clock_end: bool = True
) -> tuple[dict[tuple[str, int], MicroBar], list[list[MicroBar]], dict[int, VpinBucket]]:
    """Feed `records` split at `cuts`; (final row per bar, the bars each step wrote, VPIN buckets)."""
    book = MicroBook(symbol, params)
    sync = LevelSync(symbol, "usdm")
    final: dict[tuple[str, int], MicroBar] = {}
    steps: list[list[MicroBar]] = []
    vpin: dict[int, VpinBucket] = {}
    bounds = [0, *sorted(set(cuts)), len(records)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        batch = records[a:b]
        for r in batch:  # the levels follow the book events in arrival order
            if isinstance(r, BookSnapshot):
                sync.on_snapshot(r)
            elif isinstance(r, DepthUpdate):
                sync.on_depth(r)
        quotes = [r for r in batch if isinstance(r, Quote)]
        trades = [r for r in batch if isinstance(r, tuple)]
        if quotes:
            book.add_quotes(Quotes.from_quotes(symbol, quotes))
        if trades:
            cols = list(zip(*trades, strict=True))
            book.add_trades(
                Trades.from_columns(
                    symbol, trade_id=cols[0], ts_ms=cols[1], price=cols[2], qty=cols[3], is_buyer_maker=cols[4]
                )
            )
        book.add_levels(sync.drain_levels())
        out = book.advance()
        steps.append(out.bars)
        for bar in out.bars:
            final[(bar.timeframe, bar.start_ms)] = bar
        vpin.update((v.bucket, v) for v in out.vpin)
    if clock_end:
        out = book.advance(clock_ms=2**50)
        steps.append(out.bars)
        for bar in out.bars:
            final[(bar.timeframe, bar.start_ms)] = bar
        vpin.update((v.bucket, v) for v in out.vpin)
    return final, steps, vpin
