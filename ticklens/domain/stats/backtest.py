"""A mean-reversion backtest over pair rows (z-score entries and exits, fees)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ticklens.domain.stats.pair import PairRow


@dataclass(slots=True)
class Trade:
    side: str  # long_spread (buy a, sell beta b) | short_spread
    entry_ms: int
    exit_ms: int | None
    entry_z: float
    exit_z: float | None
    beta: float
    entry_a: float
    entry_b: float
    exit_a: float
    exit_b: float
    pnl: float  # quote currency, after fees, for 1 unit of a and beta units of b
    fees: float
    open: bool = False


def _exits(z: float, sign: float, exit_z: float, rule: str) -> bool:
    if rule == "band":
        return abs(z) <= exit_z
    return z <= exit_z if sign < 0 else z >= -exit_z  # sign -1: short the spread (entered high)


@dataclass(slots=True)
class Backtest:
    trades: list[Trade]
    curve: list[tuple[int, float]]  # (start_ms, equity) marked to market at each close
    total_pnl: float
    mean_pnl: float | None
    win_rate: float | None
    sharpe: float | None  # mean / std of per-bar equity changes, times sqrt(bars per year)
    max_drawdown: float


def backtest(
    rows: list[PairRow],
    entry_z: float,
    exit_z: float,
    fee_bps: float,
    bars_per_year: float,
    exit_rule: Literal["band", "cross"] = "band",
) -> Backtest:
    """Mean reversion on price-space rows: enter at |z| >= entry_z, exit at |z| <= exit_z.

    A decision at bar t uses only z_t (past-only spread statistics) and trades
    at close t; the hedge ratio is fixed at entry (beta_t of the entry bar).
    Fees are fee_bps of each leg's traded notional, on entry and on exit. A
    position still open at the last bar is marked there and flagged `open`.
    `exit_rule="cross"` exits once z is back past the exit level on its way over,
    overshoot included: a short (entered at z >= entry_z) at z <= exit_z, a long
    at z >= -exit_z (so exit_z = 0 means "z crossed zero").
    """
    fee = fee_bps / 1e4
    trades: list[Trade] = []
    curve: list[tuple[int, float]] = []
    realised = 0.0
    pos: Trade | None = None
    sign = 0.0
    for r in rows:
        z = r.zscore
        if pos is not None and z is not None and _exits(z, sign, exit_z, exit_rule):
            gross = sign * ((r.close_a - pos.entry_a) - pos.beta * (r.close_b - pos.entry_b))
            exit_fee = fee * (r.close_a + abs(pos.beta) * r.close_b)
            pos.fees += exit_fee
            pos.pnl = gross - pos.fees
            pos.exit_ms, pos.exit_z, pos.exit_a, pos.exit_b = r.start_ms, z, r.close_a, r.close_b
            realised += gross - exit_fee
            pos = None
        elif pos is None and z is not None and r.beta is not None and abs(z) >= entry_z:
            sign = -1.0 if z > 0 else 1.0
            entry_fee = fee * (r.close_a + abs(r.beta) * r.close_b)
            pos = Trade(
                "short_spread" if z > 0 else "long_spread",
                r.start_ms,
                None,
                z,
                None,
                r.beta,
                r.close_a,
                r.close_b,
                r.close_a,
                r.close_b,
                -entry_fee,
                entry_fee,
            )
            trades.append(pos)
            realised -= entry_fee
        unrealised = 0.0
        if pos is not None:
            unrealised = sign * ((r.close_a - pos.entry_a) - pos.beta * (r.close_b - pos.entry_b))
        curve.append((r.start_ms, realised + unrealised))
    if pos is not None and rows:
        last = rows[-1]
        pos.exit_a, pos.exit_b = last.close_a, last.close_b
        pos.pnl = sign * ((last.close_a - pos.entry_a) - pos.beta * (last.close_b - pos.entry_b)) - pos.fees
        pos.open = True
    done = [t for t in trades if not t.open]
    eq = np.array([v for _, v in curve], dtype=float)
    sharpe = None
    if len(eq) > 2:
        d = np.diff(eq)
        sd = float(d.std(ddof=1))
        if sd > 0:
            sharpe = float(d.mean()) / sd * math.sqrt(bars_per_year)
    mdd = float(np.max(np.maximum.accumulate(np.concatenate(([0.0], eq)))[1:] - eq)) if len(eq) else 0.0
    return Backtest(
        trades=trades,
        curve=curve,
        total_pnl=float(eq[-1]) if len(eq) else 0.0,
        mean_pnl=math.fsum(t.pnl for t in done) / len(done) if done else None,
        win_rate=sum(t.pnl > 0 for t in done) / len(done) if done else None,
        sharpe=sharpe,
        max_drawdown=max(mdd, 0.0),
    )
