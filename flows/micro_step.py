"""The microstructure step's adapter: one `MicroBook` per symbol in bytewax state.

In: a symbol's `BookOut` (its L1 quotes and the book's level rows) and its `SymbolOut`
(the deduplicated trades, the source clock). Out: `MicroOut` items, the micro bars and VPIN
buckets to store and the bars written for the first time (what alerts read). Every
computation is `MicroBook`'s (ticklens/domain/micro/); this only routes and picks the VPIN
bucket size.
"""

from __future__ import annotations

from flows.items import BookOut, MicroItem, SymbolOut
from storage import open_store
from storage.port import BAR_OUT_COLUMNS
from ticklens.config import Config
from ticklens.domain.micro import MicroBook, MicroParams
from ticklens.domain.timeframes import TIMEFRAME_MS

DAY_MS = 86_400_000
VOLUME = BAR_OUT_COLUMNS.index("volume")


def previous_day_volume(cfg: Config, symbol: str, at_ms: int) -> float | None:
    """The symbol's base volume in the store on the UTC day before `at_ms` (None: no bars then)."""
    tf = max(cfg.timeframes, key=TIMEFRAME_MS.__getitem__)
    day = at_ms - at_ms % DAY_MS
    store = open_store(cfg.store)
    try:
        with store.reader() as reader:
            rows = reader.bars(symbol, tf, DAY_MS // TIMEFRAME_MS[tf], day - DAY_MS, day)
    finally:
        store.close()
    total = sum(float(r[VOLUME]) for r in rows)
    return total if total > 0 else None


def micro_step(cfg: Config, day_volume=previous_day_volume):
    m = cfg.micro
    timeframes = {tf: TIMEFRAME_MS[tf] for tf in cfg.timeframes}

    def new_book(symbol: str, first_ms: int) -> MicroBook:
        bucket = m.bucket_for(symbol)
        if bucket is None:
            volume = day_volume(cfg, symbol, first_ms)
            bucket = None if volume is None else volume / 50
        params = MicroParams(
            timeframes=timeframes,
            lateness_ms=cfg.bars.lateness_ms,
            horizon_ms=int(m.horizon_s * 1000),
            window=m.window,
            vpin_bucket=bucket,
            vpin_buckets=m.vpin_buckets,
            keep_ms=int(m.keep_s * 1000),
            inputs=("trades", "book"),
        )
        return MicroBook(symbol, params)

    def step(state: MicroBook | None, item: BookOut | SymbolOut) -> tuple[MicroBook | None, MicroItem]:
        if state is None:
            first = _first_ms(item)
            if first is None:  # nothing to measure yet (a clock before any event)
                return None, MicroItem(item.symbol)
            state = new_book(item.symbol, first)
        if isinstance(item, BookOut):
            clock, path = item.clock, "book"
            if item.quotes is not None and len(item.quotes):
                state.add_quotes(item.quotes)
            if item.levels is not None and len(item.levels):
                state.add_levels(item.levels)
        else:
            if item.ticks is not None and len(item.ticks):
                state.add_trades(item.ticks)
            clock, path = item.clock, "trades"
        out = state.advance(clock, path)
        return state, MicroItem(state.symbol, out.bars, out.vpin, out.too_late, state.watermark)

    return step


def _first_ms(item: BookOut | SymbolOut) -> int | None:
    if isinstance(item, BookOut):
        if item.quotes is not None and len(item.quotes):
            return int(item.quotes.ts_ms.min())
        if item.levels is not None and len(item.levels):
            return int(item.levels.ts_ms.min())
        return None
    if item.ticks is not None and len(item.ticks):
        return int(item.ticks.ts_ms.min())
    return None
