"""The microstructure formulas themselves, vectorised over numpy arrays (pure, stateless).

Each function is one definition of docs/analytics.md ("Microstructure"), so the
incremental engine and anything else that needs a formula share a single copy.
NaN stands for "not defined" throughout (no quote yet, an empty book side).
"""

from __future__ import annotations

import math

import numpy as np

BPS = 1e4


def l1_measures(
    bid: np.ndarray, bid_qty: np.ndarray, ask: np.ndarray, ask_qty: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mid, spread in bps of mid, L1 size imbalance, microprice) of each L1 state."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mid = (bid + ask) / 2.0
        spread = BPS * (ask - bid) / mid
        depth = bid_qty + ask_qty
        imbalance = np.where(depth > 0, (bid_qty - ask_qty) / depth, np.nan)
        micro = np.where(depth > 0, (bid * ask_qty + ask * bid_qty) / depth, np.nan)
    return mid, spread, imbalance, micro


def ofi_terms(
    bid0: np.ndarray,
    bid_qty0: np.ndarray,
    ask0: np.ndarray,
    ask_qty0: np.ndarray,
    bid1: np.ndarray,
    bid_qty1: np.ndarray,
    ask1: np.ndarray,
    ask_qty1: np.ndarray,
) -> np.ndarray:
    """Cont, Kukanov & Stoikov (2014) order-flow terms e_n of transitions state 0 -> state 1.

    e = q^b_1·1{b_1 ≥ b_0} − q^b_0·1{b_1 ≤ b_0} − q^a_1·1{a_1 ≤ a_0} + q^a_0·1{a_1 ≥ a_0}.
    Arrays of any (same) shape, elementwise; a side whose price is undefined (NaN) in
    either state contributes 0 (its flow is unknown, not zero by observation).
    """
    with np.errstate(invalid="ignore"):
        bid_ok = np.isfinite(bid0) & np.isfinite(bid1)
        ask_ok = np.isfinite(ask0) & np.isfinite(ask1)
        bid_term = np.where(bid1 >= bid0, bid_qty1, 0.0) - np.where(bid1 <= bid0, bid_qty0, 0.0)
        ask_term = np.where(ask1 <= ask0, ask_qty1, 0.0) - np.where(ask1 >= ask0, ask_qty0, 0.0)
    return np.where(bid_ok, bid_term, 0.0) - np.where(ask_ok, ask_term, 0.0)


def trade_against_quote(
    price: np.ndarray, sign: np.ndarray, mid: np.ndarray, mid_later: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per-trade (effective, realized, impact) spreads in bps of the prevailing mid m.

    effective 2·d·(p − m)/m·10⁴, realized 2·d·(p − m_{t+h})/m·10⁴, impact
    2·d·(m_{t+h} − m)/m·10⁴ (realized + impact = effective).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = 2.0 * sign * (price - mid) / mid * BPS
        if mid_later is None:
            return eff, None, None
        realized = 2.0 * sign * (price - mid_later) / mid * BPS
        impact = 2.0 * sign * (mid_later - mid) / mid * BPS
    return eff, realized, impact


def ols_slope_t(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """OLS slope of y on x (with intercept) and its t-statistic; None where not defined.

    Needs 3 finite points and a non-constant x; the t-statistic also needs residuals.
    """
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3:
        return None, None
    dx = x - x.mean()
    dy = y - y.mean()
    sxx = float(dx @ dx)
    if sxx <= 0.0:
        return None, None
    slope = float(dx @ dy) / sxx
    resid = dy - slope * dx
    s2 = float(resid @ resid) / (n - 2)
    if s2 <= 0.0:
        return slope, None
    return slope, slope / math.sqrt(s2 / sxx)
