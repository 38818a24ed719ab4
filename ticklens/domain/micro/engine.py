"""The microstructure state of one symbol: events in, closed micro bars and VPIN buckets out.

`MicroBook` keeps the recent quotes (L1 states), trades and book-level rows sorted by
(exchange time, id), summarises every closed second into a `Cell` and merges cells
into 1s/1m/5m bars, exactly like `bars` in exchange event time [start, start + tf).
The watermark is the newest event time (or the source clock) minus the lateness: a
bar is written once the watermark passes its end, with realized spread and price
impact NULL until the watermark also passes end + horizon (so nothing written ever
used a mid from after the moment it was written), then written again complete.

A late event (time before the watermark) recomputes the seconds it touches and every
closed second after them (the carried-in L1 state, the volume buckets and the
rolling Kyle regression all run forward); a bar whose values change is written again
with `revision` + 1. Because everything is recomputed from the sorted events, the
stored rows do not depend on arrival order or batching. Events older than
`keep_ms` behind the watermark can no longer be placed and are counted in `too_late`.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from dataclasses import dataclass, field, fields

import numpy as np

from ticklens.domain.book import Quotes
from ticklens.domain.micro.cells import (
    NAN,
    QTY_UNITS,
    SECOND_MS,
    Cell,
    VpinBucket,
    VpinState,
    horizon_part,
    level_part,
    quote_part,
    trade_part,
)
from ticklens.domain.micro.formulas import l1_measures, ols_slope_t
from ticklens.domain.records import Trades
from ticklens.domain.times import FAR_PAST

LEVELS = 5  # book levels in ofi_l5


@dataclass(slots=True)
class BookLevels:
    """The local book after applied depth events, columnar: the best `LEVELS` levels and the
    quantity within 10 bps of the book's mid (NaN where not known: outside the range the
    snapshot covered). A row of NaN levels marks the book unknown from its time (a gap)."""

    symbol: str
    ts_ms: np.ndarray
    seq: np.ndarray  # orders rows of one ms: 2 × the event's final update id (odd: a gap marker)
    bid_px: np.ndarray  # (n, LEVELS), NaN-padded
    bid_qty: np.ndarray
    ask_px: np.ndarray
    ask_qty: np.ndarray
    depth_bid: np.ndarray  # (n,)
    depth_ask: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass(slots=True)
class MicroParams:
    timeframes: dict[str, int]
    lateness_ms: int = 2_000
    horizon_ms: int = 5_000
    window: int = 300  # bars in the Kyle regression
    vpin_bucket: float | None = None  # base units per volume bucket (None: no VPIN)
    vpin_buckets: int = 50
    keep_ms: int = 10_000  # how far behind the watermark a late event still revises bars
    # Inputs that arrive on separate paths ("trades", "book"): the watermark is the least of their
    # progress (each one's newest event or clock), so one path running ahead of the other never
    # makes the other's events late. Empty: the newest event of any kind (one ordered input).
    inputs: tuple[str, ...] = ()


# The micro_bars columns, in storage order (docs/store.md).
MICRO_COLUMNS = (
    "symbol",
    "timeframe",
    "start_ms",
    "quote_updates",
    "depth_updates",
    "trades",
    "mid_open",
    "mid_high",
    "mid_low",
    "mid_close",
    "spread_bps_twa",
    "spread_bps_max",
    "imbalance_l1_twa",
    "microprice_close",
    "ofi",
    "ofi_l5",
    "depth_bid_10bps",
    "depth_ask_10bps",
    "imbalance_depth_10bps",
    "eff_spread_bps",
    "realized_spread_bps",
    "price_impact_bps",
    "signed_volume",
    "trade_imbalance",
    "signed_quote_volume",
    "kyle_lambda",
    "kyle_t",
    "vpin",
    "vpin_buckets",
    "complete",
    "revision",
)
HORIZON_COLUMNS = ("realized_spread_bps", "price_impact_bps")


@dataclass(slots=True)
class MicroBar:
    symbol: str
    timeframe: str
    start_ms: int
    quote_updates: int
    depth_updates: int
    trades: int
    mid_open: float | None
    mid_high: float | None
    mid_low: float | None
    mid_close: float | None
    spread_bps_twa: float | None
    spread_bps_max: float | None
    imbalance_l1_twa: float | None
    microprice_close: float | None
    ofi: float | None
    ofi_l5: float | None
    depth_bid_10bps: float | None
    depth_ask_10bps: float | None
    imbalance_depth_10bps: float | None
    eff_spread_bps: float | None
    realized_spread_bps: float | None
    price_impact_bps: float | None
    signed_volume: float | None
    trade_imbalance: float | None
    signed_quote_volume: float | None
    kyle_lambda: float | None
    kyle_t: float | None
    vpin: float | None
    vpin_buckets: int
    complete: int  # 1 once realized spread and price impact are in
    revision: int = 0

    def row(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in MICRO_COLUMNS)

    def values(self, horizon: bool) -> tuple[object, ...]:
        names = MICRO_COLUMNS[3:-2] if horizon else [c for c in MICRO_COLUMNS[3:-2] if c not in HORIZON_COLUMNS]
        return tuple(getattr(self, n) for n in names)


assert tuple(f.name for f in fields(MicroBar)) == MICRO_COLUMNS


@dataclass(slots=True)
class MicroOut:
    bars: list[MicroBar] = field(default_factory=list)  # written or rewritten, oldest first per timeframe
    vpin: list[VpinBucket] = field(default_factory=list)
    too_late: int = 0  # events dropped in this step (older than keep_ms behind the watermark)


def _num(x: float) -> float | None:
    return None if x != x or math.isinf(x) else float(x)


class _Sorted:
    """A columnar buffer kept sorted by (ts, id), duplicates of a key dropped (first kept).

    Batches are appended to a list and joined (and sorted, if one came out of order) only
    when the columns are read, so a busy live feed of small batches costs no copy per batch.
    """

    def __init__(self) -> None:
        self._cols: dict[str, np.ndarray] = {}
        self._parts: list[dict[str, np.ndarray]] = []
        self._last: tuple[int, int] | None = None  # the greatest key so far
        self._unsorted = False

    def __len__(self) -> int:
        return (0 if not self._cols else len(self._cols["ts"])) + sum(len(p["ts"]) for p in self._parts)

    @property
    def cols(self) -> dict[str, np.ndarray]:
        if self._parts:
            parts = ([self._cols] if self._cols else []) + self._parts
            self._cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            self._parts = []
            if self._unsorted:
                self._sort()
                self._unsorted = False
        return self._cols

    def insert(self, new: dict[str, np.ndarray]) -> None:
        if len(new["ts"]) == 0:
            return
        first = (int(new["ts"][0]), int(new["id"][0]))
        last = (int(new["ts"][-1]), int(new["id"][-1]))
        if (self._last is not None and first <= self._last) or not _strictly_sorted(new["ts"], new["id"]):
            self._unsorted = True
            i = int(np.lexsort((new["id"], new["ts"]))[-1])
            last = (int(new["ts"][i]), int(new["id"][i]))
        self._last = last if self._last is None else max(self._last, last)
        self._parts.append(new)

    def _sort(self) -> None:
        ts, ids = self._cols["ts"], self._cols["id"]
        order = np.lexsort((ids, ts))
        ts, ids = ts[order], ids[order]
        keep = np.ones(len(ts), dtype=bool)
        keep[1:] = (ts[1:] != ts[:-1]) | (ids[1:] != ids[:-1])
        # lexsort is stable: of a duplicated key the first arrival comes first and stays.
        idx = order[keep]
        self._cols = {k: v[idx] for k, v in self._cols.items()}
        self._last = (int(self._cols["ts"][-1]), int(self._cols["id"][-1]))

    def first_ts(self) -> int | None:
        cols = self.cols
        return int(cols["ts"][0]) if cols else None

    def evict(self, before_ms: int, keep_last: bool) -> None:
        """Drop rows older than `before_ms`; `keep_last` keeps the one state carried into it."""
        cols = self.cols
        if not cols:
            return
        i = int(np.searchsorted(cols["ts"], before_ms, "left"))
        if keep_last:
            i -= 1
        if i > 0:
            self._cols = {k: v[i:] for k, v in cols.items()}

    def next_at_or_after(self, t: int) -> int | None:
        cols = self.cols
        if not cols:
            return None
        ts = cols["ts"]
        i = int(np.searchsorted(ts, t, "left"))
        return int(ts[i]) if i < len(ts) else None


def _strictly_sorted(ts: np.ndarray, ids: np.ndarray) -> bool:
    if len(ts) < 2:
        return True
    dt = np.diff(ts)
    return bool(np.all((dt > 0) | ((dt == 0) & (np.diff(ids) > 0))))


def _units(x: np.ndarray) -> np.ndarray:
    """Quantities in exact integer units of 1e-8, held as float64 (NaN stays NaN)."""
    return np.rint(np.asarray(x, dtype=np.float64) * QTY_UNITS)


class MicroBook:
    """Microstructure of one symbol across all timeframes (pickled into the flow's recovery state)."""

    def __init__(self, symbol: str, params: MicroParams) -> None:
        self.symbol = symbol
        self.p = params
        self.quotes = _Sorted()
        self.trades = _Sorted()
        self.levels = _Sorted()
        self.cells: dict[int, Cell] = {}
        self.cell_keys: list[int] = []  # sorted
        self.newest_ts: int | None = None
        self.progress: dict[str, int] = {}  # input -> newest event time or clock
        self.watermark = FAR_PAST
        self.base_to: int | None = None  # cells before this have their base part
        self.real_to: int | None = None  # cells before this have their horizon part
        self.dirty: int | None = None  # earliest cell a late event touched
        self.emitted: dict[str, dict[int, MicroBar]] = {tf: {} for tf in params.timeframes}
        self.series: dict[str, dict[int, tuple[float, float]]] = {tf: {} for tf in params.timeframes}
        self.series_keys: dict[str, list[int]] = {tf: [] for tf in params.timeframes}
        self.vpin_floor = VpinState()  # the state before the oldest cell kept
        self.too_late = 0
        self.revisions = 0
        self._pending_late = 0
        self._bucket_units = None if not params.vpin_bucket else int(round(params.vpin_bucket * QTY_UNITS))
        self._max_tf = max(params.timeframes.values())

    # -- inputs

    def add_quotes(self, q: Quotes) -> None:
        if len(q) == 0:
            return
        mid, spread, imb, micro = l1_measures(q.bid, q.bid_qty, q.ask, q.ask_qty)
        cols = {
            "ts": q.ts_ms.astype(np.int64),
            "id": q.update_id.astype(np.int64),
            "bid": q.bid.astype(np.float64),
            "bq": _units(q.bid_qty),
            "ask": q.ask.astype(np.float64),
            "aq": _units(q.ask_qty),
            "mid": mid,
            "spread": spread,
            "imb": imb,
            "micro": micro,
        }
        self._insert(self.quotes, cols, quote=True, path="book")

    def add_trades(self, t: Trades) -> None:
        if len(t) == 0:
            return
        sign = np.where(t.is_buyer_maker, -1.0, 1.0)  # the buyer was the maker: a taker sell
        cols = {
            "ts": t.ts_ms.astype(np.int64),
            "id": t.trade_id.astype(np.int64),
            "price": t.price.astype(np.float64),
            "qty": t.qty.astype(np.float64),
            "sign": sign,
            "units": np.rint(t.qty * QTY_UNITS).astype(np.int64),
        }
        self._insert(self.trades, cols, quote=False, path="trades")

    def add_levels(self, lv: BookLevels) -> None:
        if len(lv) == 0:
            return

        def pad(a: np.ndarray) -> np.ndarray:
            a = np.asarray(a, dtype=np.float64).reshape(len(lv), -1)[:, :LEVELS]
            if a.shape[1] < LEVELS:
                a = np.hstack((a, np.full((len(a), LEVELS - a.shape[1]), np.nan)))
            return a

        cols = {
            "ts": lv.ts_ms.astype(np.int64),
            "id": lv.seq.astype(np.int64),
            "bp": pad(lv.bid_px),
            "bq": _units(pad(lv.bid_qty)),
            "ap": pad(lv.ask_px),
            "aq": _units(pad(lv.ask_qty)),
            "db": np.asarray(lv.depth_bid, dtype=np.float64),
            "da": np.asarray(lv.depth_ask, dtype=np.float64),
        }
        self._insert(self.levels, cols, quote=False, path="book")

    def _insert(self, buf: _Sorted, cols: dict[str, np.ndarray], quote: bool, path: str) -> None:
        ts = cols["ts"]
        if self.base_to is not None:
            floor = self.base_to - self.p.keep_ms
            late = ts < floor
            if late.any():
                self._pending_late += int(late.sum())
                keep = ~late
                cols = {k: v[keep] for k, v in cols.items()}
                ts = cols["ts"]
                if len(ts) == 0:
                    return
        lo = int(ts.min())
        hi = int(ts.max())
        self.newest_ts = hi if self.newest_ts is None else max(self.newest_ts, hi)
        self.progress[path] = max(self.progress.get(path, hi), hi)
        if self.base_to is not None:
            # A quote also moves the mid `horizon` later of the trades before it.
            touch = lo - self.p.horizon_ms if quote else lo
            assert self.real_to is not None
            if lo < self.base_to or touch < self.real_to:
                cell = touch - touch % SECOND_MS
                self.dirty = cell if self.dirty is None else min(self.dirty, cell)
        buf.insert(cols)

    # -- output

    def advance(self, clock_ms: int | None = None, path: str | None = None) -> MicroOut:
        """Move the watermark (`clock_ms`: the source's clock, on input `path` if the inputs are
        separate); (re)compute closed seconds and return the bars to write."""
        out = MicroOut(too_late=self._pending_late)
        self.too_late += self._pending_late
        self._pending_late = 0
        far = FAR_PAST
        if self.p.inputs:
            if clock_ms is not None and path is not None:
                self.progress[path] = max(self.progress.get(path, far), clock_ms)
            newest = min(self.progress.get(name, far) for name in self.p.inputs)
        else:
            newest = max(self.newest_ts if self.newest_ts is not None else far, clock_ms or far)
        self.watermark = max(self.watermark, newest - self.p.lateness_ms)
        wm = self.watermark
        if self.base_to is None:
            first = [t for t in (b.first_ts() for b in (self.quotes, self.trades, self.levels)) if t is not None]
            if not first:
                return out
            start = min(first)
            self.base_to = self.real_to = start - start % SECOND_MS
        assert self.real_to is not None
        h = self.p.horizon_ms
        new_base = max(self.base_to, wm - wm % SECOND_MS)
        new_real = max(self.real_to, min(new_base, (wm - h) - (wm - h) % SECOND_MS))
        dirty = self.dirty
        self.dirty = None
        base_from = self.base_to if dirty is None else min(self.base_to, dirty)
        real_from = self.real_to if dirty is None else min(self.real_to, dirty)
        if base_from >= new_base and real_from >= new_real:
            return out
        touched = self._compute(base_from, new_base, real_from, new_real, out.vpin)
        self.base_to, self.real_to = new_base, new_real
        if touched is not None:
            for tf, tf_ms in self.p.timeframes.items():
                self._bars(tf, tf_ms, touched, out.bars)
        self._evict()
        return out

    def _compute(
        self, base_from: int, base_to: int, real_from: int, real_to: int, vpin_out: list[VpinBucket]
    ) -> int | None:
        """Base parts of cells [base_from, base_to), horizon parts of [real_from, real_to)."""
        qts = self.quotes.cols.get("ts", np.empty(0, dtype=np.int64))
        q = self.quotes.cols
        mid = q.get("mid", np.empty(0))
        tr = self.trades.cols or {k: np.empty(0) for k in ("ts", "price", "qty", "sign", "units")}
        lts = self.levels.cols.get("ts", np.empty(0, dtype=np.int64))
        touched: int | None = None
        if base_from < base_to:
            i = bisect_left(self.cell_keys, base_from)
            vstate = self.cells[self.cell_keys[i - 1]].vpin if i > 0 else self.vpin_floor
            assert vstate is not None
            s = base_from
            step_big = self._max_tf
            while s < base_to:
                if s % step_big == 0 and s + step_big <= base_to:
                    nxt = self._next_event(s)
                    if nxt is None or nxt >= s + step_big:  # a quiet stretch: no bar there to write
                        jump = base_to if nxt is None else nxt - nxt % step_big
                        s = max(s + step_big, min(jump, base_to - base_to % step_big))
                        continue
                cell = Cell(s)
                if len(qts):
                    quote_part(cell, qts, q)
                if len(lts):
                    level_part(cell, lts, self.levels.cols)
                trade_part(
                    cell,
                    tr,
                    qts,
                    mid,
                    vstate,
                    self._bucket_units,
                    self.p.vpin_buckets,
                    self.symbol,
                    vpin_out,
                )
                assert cell.vpin is not None
                vstate = cell.vpin
                if s not in self.cells:
                    insort(self.cell_keys, s)
                self.cells[s] = cell
                touched = s if touched is None else min(touched, s)
                s += SECOND_MS
        if real_from < real_to:
            lo = bisect_left(self.cell_keys, real_from)
            hi = bisect_left(self.cell_keys, real_to)
            for s in self.cell_keys[lo:hi]:
                horizon_part(self.cells[s], tr, qts, mid, self.p.horizon_ms)
                touched = s if touched is None else min(touched, s)
        return touched

    def _next_event(self, t: int) -> int | None:
        nxt = [x for x in (b.next_at_or_after(t) for b in (self.quotes, self.trades, self.levels)) if x is not None]
        return min(nxt) if nxt else None

    def _bars(self, tf: str, tf_ms: int, touched: int, out: list[MicroBar]) -> None:
        """Rebuild the closed bars of `tf` from the first touched second on; write those that changed."""
        base_to, real_to = self.base_to, self.real_to
        assert base_to is not None and real_to is not None
        first = touched - touched % tf_ms
        keys = self.cell_keys[bisect_left(self.cell_keys, first) :]
        starts = sorted({k - k % tf_ms for k in keys})
        emitted = self.emitted[tf]
        for start in starts:
            end = start + tf_ms
            if end > base_to:
                break
            lo = bisect_left(self.cell_keys, start)
            hi = bisect_left(self.cell_keys, end)
            cells = [self.cells[k] for k in self.cell_keys[lo:hi]]
            if not any(c.quote_updates or c.depth_updates or c.trades for c in cells):
                continue
            bar = self._merge(tf, start, cells, complete=end <= real_to)
            self._kyle(tf, tf_ms, bar)
            prev = emitted.get(start)
            if prev is not None:
                if prev.row()[3:-1] == bar.row()[3:-1]:
                    continue
                revised = prev.values(horizon=False) != bar.values(horizon=False) or (
                    prev.complete and prev.values(horizon=True) != bar.values(horizon=True)
                )
                bar.revision = prev.revision + (1 if revised else 0)
                self.revisions += 1 if revised else 0
            emitted[start] = bar
            out.append(bar)

    def _merge(self, tf: str, start: int, cells: list[Cell], complete: bool) -> MicroBar:
        def total(name: str) -> float:
            return float(sum(getattr(c, name) for c in cells))

        opens = [c.mid_open for c in cells if c.mid_open == c.mid_open]
        highs = [c.mid_high for c in cells if c.mid_high == c.mid_high]
        lows = [c.mid_low for c in cells if c.mid_low == c.mid_low]
        smax = [c.spread_max for c in cells if c.spread_max == c.spread_max]
        ofis = [c.ofi_units for c in cells if c.ofi_units == c.ofi_units]
        ofi5 = [c.ofi5_units for c in cells if c.ofi5_units == c.ofi5_units]
        last = cells[-1]
        sw, iw = total("spread_w"), total("imb_w")
        db, da = last.depth_bid, last.depth_ask
        buy, sell = sum(c.buy_units for c in cells), sum(c.sell_units for c in cells)
        eff_den = total("eff_den")
        real_den = total("real_den")
        n_trades = sum(c.trades for c in cells)
        v = last.vpin or VpinState()
        return MicroBar(
            symbol=self.symbol,
            timeframe=tf,
            start_ms=start,
            quote_updates=sum(c.quote_updates for c in cells),
            depth_updates=sum(c.depth_updates for c in cells),
            trades=n_trades,
            mid_open=opens[0] if opens else None,
            mid_high=max(highs) if highs else None,
            mid_low=min(lows) if lows else None,
            mid_close=_num(last.mid_close),
            spread_bps_twa=total("spread_int") / sw if sw > 0 else None,
            spread_bps_max=max(smax) if smax else None,
            imbalance_l1_twa=total("imb_int") / iw if iw > 0 else None,
            microprice_close=_num(last.micro_close),
            ofi=sum(ofis) / QTY_UNITS if ofis else None,
            ofi_l5=sum(ofi5) / QTY_UNITS if ofi5 else None,
            depth_bid_10bps=_num(db),
            depth_ask_10bps=_num(da),
            imbalance_depth_10bps=(db - da) / (db + da) if db == db and da == da and db + da > 0 else None,
            eff_spread_bps=total("eff_num") / eff_den if eff_den > 0 else None,
            realized_spread_bps=total("real_num") / real_den if complete and real_den > 0 else None,
            price_impact_bps=total("imp_num") / real_den if complete and real_den > 0 else None,
            signed_volume=(buy - sell) / QTY_UNITS if n_trades else None,
            trade_imbalance=(buy - sell) / (buy + sell) if buy + sell > 0 else None,
            signed_quote_volume=total("signed_quote") if n_trades else None,
            kyle_lambda=None,
            kyle_t=None,
            vpin=_num(v.vpin),
            vpin_buckets=v.buckets,
            complete=int(complete),
        )

    def _kyle(self, tf: str, tf_ms: int, bar: MicroBar) -> None:
        """Rolling OLS of Δmid (bar close to bar close) on signed quote volume over `window` bars."""
        series, keys = self.series[tf], self.series_keys[tf]
        if bar.start_ms not in series:
            insort(keys, bar.start_ms)
        series[bar.start_ms] = (
            bar.signed_quote_volume or 0.0,
            NAN if bar.mid_close is None else bar.mid_close,
        )
        j = bisect_left(keys, bar.start_ms)
        w = self.p.window
        take = keys[max(0, j - w) : j + 1]  # the window's bars and the one before them
        if len(take) < 2:
            return
        xs = np.array([series[k][0] for k in take[1:]])
        mids = np.array([series[k][1] for k in take])
        bar.kyle_lambda, bar.kyle_t = ols_slope_t(xs, np.diff(mids))

    def _evict(self) -> None:
        assert self.base_to is not None
        # Raw events: what recomputing any second a late event may still touch reads.
        raw_cut = self.base_to - self.p.keep_ms - self.p.horizon_ms - 2 * SECOND_MS
        # Cells: also the rest of the longest bar such a second belongs to.
        cut = raw_cut - self._max_tf
        n = bisect_left(self.cell_keys, cut)
        if n:
            last_gone = self.cells[self.cell_keys[n - 1]].vpin
            if last_gone is not None:
                self.vpin_floor = last_gone
            for k in self.cell_keys[:n]:
                del self.cells[k]
            del self.cell_keys[:n]
        self.quotes.evict(raw_cut, keep_last=True)
        self.levels.evict(raw_cut, keep_last=True)
        self.trades.evict(raw_cut, keep_last=False)
        for tf, tf_ms in self.p.timeframes.items():
            emitted = self.emitted[tf]
            for start in [s for s in emitted if s + tf_ms < cut]:
                del emitted[start]
            keys = self.series_keys[tf]
            limit = self.p.window + 2 + (self.p.keep_ms + self._max_tf) // tf_ms + 2
            if len(keys) > limit:
                for k in keys[: len(keys) - limit]:
                    del self.series[tf][k]
                del keys[: len(keys) - limit]
