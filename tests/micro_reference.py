"""An independent microstructure reference for the tests: plain Python over the raw recordings.

Reads Binance's raw websocket recordings with gzip/orjson, keeps its own local book (plain
dicts and bisect-sorted price lists), sums quantities as Decimal, and computes every
micro_bars column bar by bar straight from the definitions in docs/analytics.md, with
loops and case analysis instead of the product's vectorised cells. Nothing here imports
ticklens, so a bug there cannot hide in the expectation.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson

from tests.book_reference import raw_lines

LEVELS = 5


@dataclass
class Recording:
    symbol: str
    quotes: list[tuple[int, int, float, float, float, float]] = field(default_factory=list)  # T, u, b, B, a, A
    quote_qty: list[tuple[Decimal, Decimal]] = field(default_factory=list)  # B, A exact
    trades: list[tuple[int, int, float, Decimal, bool]] = field(default_factory=list)  # T, t, p, q, m
    # after each applied depth event: T, top-5 bids [(p, q)], top-5 asks, depth within 10 bps (bid, ask)
    books: list[tuple[int, list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]], tuple[float, float]]] = field(
        default_factory=list
    )
    lines: list[bytes] = field(default_factory=list)  # the raw messages in arrival order


class _Book:
    """Binance's USD-M local-book procedure over plain dicts {float price: quantity string}, with
    sorted price lists (bisect) for the top levels and the 10 bps band; the depth at each second's
    end is taken just before an event of a later second is applied (and after the last event)."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec
        self.bids: dict[float, str] = {}
        self.asks: dict[float, str] = {}
        self.bid_keys: list[float] = []  # ascending
        self.ask_keys: list[float] = []
        self.snapshot_id: int | None = None
        self.last_u: int | None = None
        self.buffer: list[dict] = []
        self.complete: tuple[Decimal, Decimal] | None = None
        self.open_row: int | None = None

    def snapshot(self, msg: dict) -> None:
        self.snapshot_id = msg["lastUpdateId"]
        self.bids = {float(p): q for p, q in msg["bids"] if Decimal(q) != 0}
        self.asks = {float(p): q for p, q in msg["asks"] if Decimal(q) != 0}
        self.bid_keys, self.ask_keys = sorted(self.bids), sorted(self.asks)
        self.complete = (min(Decimal(p) for p, _ in msg["bids"]), max(Decimal(p) for p, _ in msg["asks"]))
        pending, self.buffer = self.buffer, []
        for ev in pending:
            self.event(ev)

    def event(self, ev: dict) -> None:
        if self.snapshot_id is None:
            self.buffer.append(ev)
            return
        if self.last_u is None:
            if ev["u"] < self.snapshot_id:
                return
            assert ev["U"] <= self.snapshot_id <= ev["u"]
        else:
            assert ev["pu"] == self.last_u, "the recordings have no chain break"
        books = self.rec.books
        if self.open_row is not None and ev["T"] // 1000 != books[self.open_row][0] // 1000:
            self.close_row()
        for side, book, keys in (("b", self.bids, self.bid_keys), ("a", self.asks, self.ask_keys)):
            for p, q in ev[side]:
                price = float(p)
                if Decimal(q) == 0:
                    if book.pop(price, None) is not None:
                        del keys[bisect_left(keys, price)]
                else:
                    if price not in book:
                        insort(keys, price)
                    book[price] = q
        self.last_u = ev["u"]
        bids = [(Decimal(repr(p)), Decimal(self.bids[p])) for p in reversed(self.bid_keys[-LEVELS:])]
        asks = [(Decimal(repr(p)), Decimal(self.asks[p])) for p in self.ask_keys[:LEVELS]]
        books.append((ev["T"], bids, asks, (math.nan, math.nan)))
        self.open_row = len(books) - 1

    def close_row(self) -> None:
        if self.open_row is not None:
            row = self.rec.books[self.open_row]
            self.rec.books[self.open_row] = (*row[:3], self.depth())
            self.open_row = None

    def depth(self) -> tuple[float, float]:
        """Base quantity within 10 bps of the mid, NaN if the band leaves the snapshot's range."""
        mid = (Decimal(repr(self.bid_keys[-1])) + Decimal(repr(self.ask_keys[0]))) / 2
        lo, hi = mid * Decimal("0.999"), mid * Decimal("1.001")
        if self.complete is None or lo < self.complete[0] or hi > self.complete[1]:
            return (math.nan, math.nan)
        # float keys order like the decimals; only the band's edges need the exact comparison
        i = bisect_left(self.bid_keys, float(lo)) - 2
        bids = [p for p in self.bid_keys[max(i, 0) :] if Decimal(repr(p)) >= lo]
        j = bisect_right(self.ask_keys, float(hi)) + 2
        asks = [p for p in self.ask_keys[:j] if Decimal(repr(p)) <= hi]
        return (
            float(sum((Decimal(self.bids[p]) for p in bids), Decimal(0))),
            float(sum((Decimal(self.asks[p]) for p in asks), Decimal(0))),
        )


def load(symbol: str, paths: list[Path]) -> Recording:
    rec = Recording(symbol)
    rec.lines = raw_lines(paths)
    book = _Book(rec)
    for raw in rec.lines:
        msg = orjson.loads(raw)
        if "lastUpdateId" in msg:
            book.snapshot(msg)
            continue
        data = msg["data"]
        kind = data["e"]
        if kind == "bookTicker":
            rec.quotes.append(
                (data["T"], data["u"], float(data["b"]), float(data["B"]), float(data["a"]), float(data["A"]))
            )
            rec.quote_qty.append((Decimal(data["B"]), Decimal(data["A"])))
        elif kind == "trade":
            rec.trades.append((data["T"], data["t"], float(data["p"]), Decimal(data["q"]), data["m"]))
        elif kind == "depthUpdate":
            book.event(data)
    book.close_row()
    return rec


def _e(b0, bq0, a0, aq0, b1, bq1, a1, aq1) -> Decimal:
    """One OFI term, by cases (Cont, Kukanov & Stoikov 2014, eq. 2)."""
    if b1 > b0:
        bid = bq1
    elif b1 < b0:
        bid = -bq0
    else:
        bid = bq1 - bq0
    if a1 < a0:
        ask = -aq1
    elif a1 > a0:
        ask = aq0
    else:
        ask = -(aq1 - aq0)
    return bid + ask


def _ols(x: list[float], y: list[float]) -> tuple[float | None, float | None]:
    if len(x) < 3:
        return None, None
    xa = np.array(x)
    xc = xa - xa.mean()
    if not np.any(xc):
        return None, None
    design = np.column_stack((np.ones(len(x)), xc))
    beta, *_ = np.linalg.lstsq(design, np.array(y), rcond=None)
    resid = np.array(y) - design @ beta
    s2 = float(resid @ resid) / (len(x) - 2)
    cov = s2 * np.linalg.inv(design.T @ design)
    slope = float(beta[1])
    return slope, (slope / math.sqrt(cov[1, 1]) if s2 > 0 else None)


def expected_bars(
    rec: Recording, tf_ms: int, horizon_ms: int, window: int, vpin_size: Decimal, vpin_n: int
) -> dict[int, dict[str, object]]:
    """start_ms -> every micro_bars column, for each bucket with at least one event."""
    q = sorted(range(len(rec.quotes)), key=lambda i: rec.quotes[i][:2])
    quotes = [rec.quotes[i] for i in q]
    qqty = [rec.quote_qty[i] for i in q]
    qkeys = [(t, u) for t, u, *_ in quotes]
    qts = [t for t, *_ in quotes]
    trades = sorted(rec.trades, key=lambda r: (r[0], r[1]))
    books = rec.books  # in applied order, which is time order
    bts = [b[0] for b in books]

    def mid(i: int) -> float:
        return (quotes[i][2] + quotes[i][4]) / 2

    def mid_at(t: int) -> float | None:
        i = bisect_right(qts, t) - 1
        return mid(i) if i >= 0 else None

    starts = sorted({t - t % tf_ms for t in qts} | {r[0] - r[0] % tf_ms for r in trades} | {t - t % tf_ms for t in bts})
    # VPIN: run the buckets over all trades once, noting the state after each trade
    vpin_after: list[tuple[int, float | None]] = []
    fill_b = fill_s = Decimal(0)
    imbs: list[float] = []
    for _, _, _, qty, maker in trades:
        left = qty
        while left > 0:
            take = min(left, vpin_size - fill_b - fill_s)
            if maker:
                fill_s += take
            else:
                fill_b += take
            left -= take
            if fill_b + fill_s == vpin_size:
                imbs.append(float(abs(fill_b - fill_s) / vpin_size))
                fill_b = fill_s = Decimal(0)
        last = imbs[-vpin_n:]
        vpin_after.append((len(imbs), sum(last) / vpin_n if len(last) == vpin_n else None))
    t_keys = [r[0] for r in trades]

    out: dict[int, dict[str, object]] = {}
    prev_close: float | None = None
    kyle_pts: list[tuple[float, float | None]] = []
    for s in starts:
        e = s + tf_ms
        row: dict[str, object] = {}
        lo = bisect_right(qkeys, (s, -1))
        hi = bisect_right(qkeys, (e, -1))
        idx = ([lo - 1] if lo > 0 else []) + list(range(lo, hi))
        row["quote_updates"] = hi - lo
        if idx:
            mids = [mid(i) for i in idx]
            spreads = [1e4 * (quotes[i][4] - quotes[i][2]) / mid(i) for i in idx]
            imb = [(quotes[i][3] - quotes[i][5]) / (quotes[i][3] + quotes[i][5]) for i in idx]
            begin = [max(quotes[i][0], s) for i in idx]
            w = [b - a for a, b in zip(begin, begin[1:] + [e], strict=True)]
            row["mid_open"], row["mid_high"], row["mid_low"], row["mid_close"] = mids[0], max(mids), min(mids), mids[-1]
            row["spread_bps_twa"] = sum(a * b for a, b in zip(w, spreads, strict=True)) / sum(w)
            row["spread_bps_max"] = max(spreads)
            row["imbalance_l1_twa"] = sum(a * b for a, b in zip(w, imb, strict=True)) / sum(w)
            i = idx[-1]
            bq, aq = quotes[i][3], quotes[i][5]
            row["microprice_close"] = (quotes[i][2] * aq + quotes[i][4] * bq) / (bq + aq)
            ofi = Decimal(0)
            for n in range(max(lo, 1), hi):
                p, c = quotes[n - 1], quotes[n]
                ofi += _e(p[2], qqty[n - 1][0], p[4], qqty[n - 1][1], c[2], qqty[n][0], c[4], qqty[n][1])
            row["ofi"] = float(ofi)
        else:
            for k in ("mid_open", "mid_high", "mid_low", "mid_close", "spread_bps_twa", "spread_bps_max"):
                row[k] = None
            row["imbalance_l1_twa"] = row["microprice_close"] = row["ofi"] = None
        # the book's levels
        blo = bisect_right(bts, s - 1)
        bhi = bisect_right(bts, e - 1)
        row["depth_updates"] = bhi - blo
        if bhi > 0:
            ofi5 = Decimal(0)
            for n in range(max(blo, 1), bhi):
                (_, pb, pa, _), (_, cb, ca, _) = books[n - 1], books[n]
                for m in range(LEVELS):
                    if m < len(pb) and m < len(cb):
                        ofi5 += _e(
                            pb[m][0], pb[m][1], Decimal(0), Decimal(0), cb[m][0], cb[m][1], Decimal(0), Decimal(0)
                        )
                    if m < len(pa) and m < len(ca):
                        ofi5 += _e(
                            Decimal(0), Decimal(0), pa[m][0], pa[m][1], Decimal(0), Decimal(0), ca[m][0], ca[m][1]
                        )
            row["ofi_l5"] = float(ofi5)
            db, da = books[bhi - 1][3]
            row["depth_bid_10bps"] = None if math.isnan(db) else db
            row["depth_ask_10bps"] = None if math.isnan(da) else da
            row["imbalance_depth_10bps"] = None if math.isnan(db) else (db - da) / (db + da)
        else:
            row["ofi_l5"] = row["depth_bid_10bps"] = row["depth_ask_10bps"] = row["imbalance_depth_10bps"] = None
        # trades against the prevailing quote
        tlo, thi = bisect_right(t_keys, s - 1), bisect_right(t_keys, e - 1)
        row["trades"] = thi - tlo
        eff_n = eff_d = real_n = imp_n = real_d = 0.0
        buy = sell = Decimal(0)
        signed_quote = 0.0
        for t, _, p, qty, maker in trades[tlo:thi]:
            d = -1.0 if maker else 1.0
            qf = float(qty)
            signed_quote += d * p * qf
            if maker:
                sell += qty
            else:
                buy += qty
            m = mid_at(t)
            if m is None:
                continue
            eff_n += qf * 2 * d * (p - m) / m * 1e4
            eff_d += qf
            mh = mid_at(t + horizon_ms)
            if mh is not None:
                real_n += qf * 2 * d * (p - mh) / m * 1e4
                imp_n += qf * 2 * d * (mh - m) / m * 1e4
                real_d += qf
        row["eff_spread_bps"] = eff_n / eff_d if eff_d else None
        row["realized_spread_bps"] = real_n / real_d if real_d else None
        row["price_impact_bps"] = imp_n / real_d if real_d else None
        n_tr = thi - tlo
        row["signed_volume"] = float(buy - sell) if n_tr else None
        row["trade_imbalance"] = float((buy - sell) / (buy + sell)) if buy + sell else None
        row["signed_quote_volume"] = signed_quote if n_tr else None
        # Kyle's lambda over the last `window` bars
        close = row["mid_close"]
        dy = None if close is None or prev_close is None else close - prev_close  # type: ignore[operator]
        kyle_pts.append((signed_quote, dy))
        prev_close = close  # type: ignore[assignment]
        pts = [(x, y) for x, y in kyle_pts[-window:] if y is not None]
        row["kyle_lambda"], row["kyle_t"] = _ols([x for x, _ in pts], [y for _, y in pts])
        # VPIN after the bar's last trade (before any trade: none)
        j = bisect_right(t_keys, e - 1) - 1
        buckets, vp = vpin_after[j] if j >= 0 else (0, None)
        row["vpin"], row["vpin_buckets"] = vp, buckets
        out[s] = row
    return out
