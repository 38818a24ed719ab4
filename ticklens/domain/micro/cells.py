"""One second of microstructure: the mergeable summary ("cell") every bar is built from.

A cell covers [s, s + 1000) ms of exchange time. Everything in it either adds
(time-weighted integrals, OFI, volumes, weighted spread sums), takes the first or
last (mids, depth, VPIN state) or the extreme (high, low, maximum spread) of its
cells, so a 1m or 5m bar is exactly the merge of its seconds, and a cell depends
only on the events (sorted by time and id) around it: never on how they were
batched or in which order they arrived.

Quantities that are summed (OFI, signed volume) are kept in integer units of
1e-8 (Binance's finest step) held in float64, so their sums are exact in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ticklens.domain.micro.formulas import ofi_terms, trade_against_quote

SECOND_MS = 1_000
QTY_UNITS = 1e8  # a quantity's integer units (1e-8 base)
NAN = float("nan")


@dataclass(slots=True)
class VpinState:
    """Volume buckets so far: full buckets, the open bucket's fill, the last imbalances."""

    buckets: int = 0
    buy_units: int = 0
    sell_units: int = 0
    recent: tuple[float, ...] = ()  # |V_buy − V_sell| / V of the last full buckets, newest last
    vpin: float = NAN  # mean of `recent` once it holds `n` buckets


@dataclass(slots=True)
class VpinBucket:
    """One full volume bucket: its index (0 = the first), the time of the trade that filled it."""

    symbol: str
    bucket: int
    end_ms: int
    buy_volume: float
    sell_volume: float
    vpin: float | None


@dataclass(slots=True)
class Cell:
    s: int
    quote_updates: int = 0
    depth_updates: int = 0
    trades: int = 0
    # L1 states inside the second (the carried-in one first)
    mid_open: float = NAN  # first defined mid
    mid_high: float = NAN
    mid_low: float = NAN
    mid_close: float = NAN  # the last state's mid
    spread_max: float = NAN
    micro_close: float = NAN
    spread_w: float = 0.0  # ms with a defined spread, and the integral of spread over them
    spread_int: float = 0.0
    imb_w: float = 0.0
    imb_int: float = 0.0
    ofi_units: float = NAN  # NaN: no defined L1 state in the second
    # the local book's levels
    ofi5_units: float = NAN
    depth_bid: float = NAN  # at the second's end
    depth_ask: float = NAN
    # trades against the prevailing quote
    buy_units: int = 0
    sell_units: int = 0
    signed_quote: float = 0.0  # Σ d·p·q
    eff_num: float = 0.0  # Σ q·effective spread, over trades with a prevailing mid
    eff_den: float = 0.0
    vpin: VpinState | None = None  # at the second's end
    # filled once the watermark passes s + 1000 + horizon
    horizon: bool = False
    real_num: float = 0.0
    imp_num: float = 0.0
    real_den: float = 0.0


def quote_part(cell: Cell, ts: np.ndarray, q: dict[str, np.ndarray]) -> None:
    """L1 measures of one second from the sorted quote buffer (`ts` and its derived columns)."""
    s = cell.s
    lo, hi = np.searchsorted(ts, (s, s + SECOND_MS), "left").tolist()
    c = lo - 1 if lo > 0 else lo  # the carried-in state, if there is one
    cell.quote_updates = hi - lo
    if hi <= c:
        return
    starts = ts[c:hi].astype(np.float64)
    if c < lo:
        starts[0] = s  # the carried-in state counts from the second's start
    w = np.diff(np.append(starts, s + SECOND_MS))
    spread, imb, mid = q["spread"][c:hi], q["imb"][c:hi], q["mid"][c:hi]
    ok = np.isfinite(spread)
    if ok.any():
        cell.spread_w = float(w[ok].sum())
        cell.spread_int = float(w[ok] @ spread[ok])
        cell.spread_max = float(spread[ok].max())
    ok = np.isfinite(imb)
    if ok.any():
        cell.imb_w = float(w[ok].sum())
        cell.imb_int = float(w[ok] @ imb[ok])
    fin = mid[np.isfinite(mid)]
    cell.mid_close = float(mid[-1])
    cell.micro_close = float(q["micro"][hi - 1])
    if fin.size == 0:
        return
    cell.mid_open, cell.mid_high, cell.mid_low = float(fin[0]), float(fin.max()), float(fin.min())
    a = max(lo, 1)
    if hi > a:
        e = ofi_terms(
            q["bid"][a - 1 : hi - 1],
            q["bq"][a - 1 : hi - 1],
            q["ask"][a - 1 : hi - 1],
            q["aq"][a - 1 : hi - 1],
            q["bid"][a:hi],
            q["bq"][a:hi],
            q["ask"][a:hi],
            q["aq"][a:hi],
        )
        cell.ofi_units = float(e.sum())
    else:
        cell.ofi_units = 0.0


def level_part(cell: Cell, ts: np.ndarray, lv: dict[str, np.ndarray]) -> None:
    """Multi-level OFI (levels 1–5) and depth at the second's end, from the book's level rows."""
    s = cell.s
    lo, hi = np.searchsorted(ts, (s, s + SECOND_MS), "left").tolist()
    c = lo - 1 if lo > 0 else lo
    cell.depth_updates = hi - lo
    if hi <= c:
        return
    cell.depth_bid = float(lv["db"][hi - 1])
    cell.depth_ask = float(lv["da"][hi - 1])
    bp, ap = lv["bp"], lv["ap"]
    if not (np.isfinite(bp[c:hi, 0]).any() or np.isfinite(ap[c:hi, 0]).any()):
        return
    a = max(lo, 1)
    if hi > a:
        bq, aq = lv["bq"], lv["aq"]
        e = ofi_terms(
            bp[a - 1 : hi - 1],
            bq[a - 1 : hi - 1],
            ap[a - 1 : hi - 1],
            aq[a - 1 : hi - 1],
            bp[a:hi],
            bq[a:hi],
            ap[a:hi],
            aq[a:hi],
        )
        cell.ofi5_units = float(e.sum())
    else:
        cell.ofi5_units = 0.0


def _trade_slice(cell: Cell, tr: dict[str, np.ndarray]) -> tuple[int, int]:
    lo, hi = np.searchsorted(tr["ts"], (cell.s, cell.s + SECOND_MS), "left").tolist()
    return lo, hi


def _mid_at(qts: np.ndarray, mid: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The mid of the latest L1 state with time ≤ t (ties: the last by update id); NaN before any."""
    i = np.searchsorted(qts, t, "right") - 1
    out = mid[np.maximum(i, 0)] if len(mid) else np.full(len(t), np.nan)
    return np.where(i >= 0, out, np.nan)


def trade_part(
    cell: Cell,
    tr: dict[str, np.ndarray],
    qts: np.ndarray,
    mid: np.ndarray,
    vpin: VpinState,
    bucket_units: int | None,
    n_buckets: int,
    symbol: str,
    buckets_out: list[VpinBucket],
) -> None:
    """Trades of one second against the prevailing quote, and the volume buckets they fill."""
    lo, hi = _trade_slice(cell, tr)
    cell.trades = hi - lo
    if hi > lo:
        price, qty, sign, units = tr["price"][lo:hi], tr["qty"][lo:hi], tr["sign"][lo:hi], tr["units"][lo:hi]
        buy = sign > 0
        cell.buy_units = int(units[buy].sum())
        cell.sell_units = int(units[~buy].sum())
        cell.signed_quote = float((sign * price * qty).sum())
        m = _mid_at(qts, mid, tr["ts"][lo:hi])
        eff, _, _ = trade_against_quote(price, sign, m)
        ok = np.isfinite(eff)
        cell.eff_num = float(qty[ok] @ eff[ok])
        cell.eff_den = float(qty[ok].sum())
        if bucket_units:
            vpin = _fill_buckets(vpin, tr, lo, hi, bucket_units, n_buckets, symbol, buckets_out)
    cell.vpin = vpin


def _fill_buckets(
    st: VpinState,
    tr: dict[str, np.ndarray],
    lo: int,
    hi: int,
    size: int,
    n: int,
    symbol: str,
    out: list[VpinBucket],
) -> VpinState:
    """Pour trades into volume buckets of `size` units; a trade larger than the room left spills on."""
    k, b, s_, recent, vpin = st.buckets, st.buy_units, st.sell_units, list(st.recent), st.vpin
    ts = tr["ts"]
    for i, u, sg in zip(range(lo, hi), tr["units"][lo:hi].tolist(), tr["sign"][lo:hi].tolist(), strict=True):
        while u > 0:
            take = min(u, size - b - s_)
            if sg > 0:
                b += take
            else:
                s_ += take
            u -= take
            if b + s_ == size:
                recent.append(abs(b - s_) / size)
                if len(recent) > n:
                    del recent[0]
                vpin = sum(recent) / n if len(recent) == n else NAN
                out.append(
                    VpinBucket(symbol, k, int(ts[i]), b / QTY_UNITS, s_ / QTY_UNITS, None if vpin != vpin else vpin)
                )
                k, b, s_ = k + 1, 0, 0
    return VpinState(k, b, s_, tuple(recent), vpin)


def horizon_part(cell: Cell, tr: dict[str, np.ndarray], qts: np.ndarray, mid: np.ndarray, horizon_ms: int) -> None:
    """Realized spread and price impact of the second's trades at the mid `horizon_ms` later."""
    lo, hi = _trade_slice(cell, tr)
    cell.horizon = True
    cell.real_num = cell.imp_num = cell.real_den = 0.0
    if hi <= lo:
        return
    t = tr["ts"][lo:hi]
    price, qty, sign = tr["price"][lo:hi], tr["qty"][lo:hi], tr["sign"][lo:hi]
    _, realized, impact = trade_against_quote(price, sign, _mid_at(qts, mid, t), _mid_at(qts, mid, t + horizon_ms))
    assert realized is not None and impact is not None
    ok = np.isfinite(realized)
    cell.real_num = float(qty[ok] @ realized[ok])
    cell.imp_num = float(qty[ok] @ impact[ok])
    cell.real_den = float(qty[ok].sum())
