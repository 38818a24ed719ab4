"""Pair and symbol statistics on aligned bar closes (pure computation, no I/O).

One code path serves the dataflow (bar by bar, as bars close) and the API (a
loop over aligned closes read from the store), so both give the same numbers.

What each value at bar t uses (no look-ahead: nothing after t, ever):
- `beta`, `alpha`: OLS of y on [1, x] over the `window` aligned bars ending at t
  (t included). Pair `a,b`: a is y, b is x; optionally on log prices.
- `spread` = y_t - beta_t * x_t - alpha_t (the residual of t's own fit at t).
- `spread_mean`, `spread_std` (ddof=1): over the `window` spreads strictly
  before t, so `zscore` = (spread_t - spread_mean) / spread_std compares the
  current spread with the past only. It needs 2 * window - 1 aligned bars.
- `corr`: Pearson correlation of the two legs' log returns over the `window`
  returns ending at t (window + 1 bars).
- Kalman (state beta, alpha; random walk): see `Kalman`. `k_zscore` is the
  innovation over its predicted standard deviation, so it uses the state
  before t and bar t's prices only.
- `half_life`, `adf_stat`, `adf_pvalue`, `eg_pvalue`: from the residuals of
  t's OLS fit over its window, computed every `adf_every` aligned bars with a
  full window (carried forward between refreshes; `coint_ms` says which bar).

Rolling sums are kept on values shifted by a recent reference and rebuilt
from the window every `window` updates, so they do not lose digits to
cancellation (prices near 60 000 with moves of a few dollars).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from flows.unitroot import ADF_N1_NOCONST, EG_N2_CONST, adf_stat_noconst, eg_critical_values, mackinnon_p

LN2 = math.log(2.0)


class RollingSums2:
    """Sums of two series over the last `size` values, shifted for stability."""

    __slots__ = ("size", "xs", "ys", "cx", "cy", "sx", "sy", "sxx", "syy", "sxy", "pushes", "runx", "runy")

    def __init__(self, size: int) -> None:
        self.size = size
        self.xs: deque[float] = deque()
        self.ys: deque[float] = deque()
        self.cx = self.cy = 0.0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0
        self.pushes = 0
        self.runx = self.runy = 0  # trailing values equal to the newest: a flat window is exact, not rounding

    def __len__(self) -> int:
        return len(self.xs)

    def push(self, x: float, y: float) -> None:
        self.runx = self.runx + 1 if self.xs and x == self.xs[-1] else 1
        self.runy = self.runy + 1 if self.ys and y == self.ys[-1] else 1
        if len(self.xs) == self.size:
            ox = self.xs.popleft() - self.cx
            oy = self.ys.popleft() - self.cy
            self.sx -= ox
            self.sy -= oy
            self.sxx -= ox * ox
            self.syy -= oy * oy
            self.sxy -= ox * oy
        self.xs.append(x)
        self.ys.append(y)
        self.pushes += 1
        if self.pushes >= self.size:
            self.refresh()
            return
        dx = x - self.cx
        dy = y - self.cy
        self.sx += dx
        self.sy += dy
        self.sxx += dx * dx
        self.syy += dy * dy
        self.sxy += dx * dy

    def refresh(self) -> None:
        """Rebuild the sums from the window around its newest values (bounds drift)."""
        self.pushes = 0
        self.cx, self.cy = self.xs[-1], self.ys[-1]
        dx = [v - self.cx for v in self.xs]
        dy = [v - self.cy for v in self.ys]
        self.sx, self.sy = math.fsum(dx), math.fsum(dy)
        self.sxx = math.fsum(v * v for v in dx)
        self.syy = math.fsum(v * v for v in dy)
        self.sxy = math.fsum(a * b for a, b in zip(dx, dy, strict=True))

    def moments(self) -> tuple[float, float, float, float, float]:
        """(mean x, mean y, Sxx, Syy, Sxy) with sums of centred products."""
        n = len(self.xs)
        mx, my = self.sx / n, self.sy / n
        sxx = max(self.sxx - self.sx * mx, 0.0)
        syy = max(self.syy - self.sy * my, 0.0)
        sxy = self.sxy - self.sx * my
        return self.cx + mx, self.cy + my, sxx, syy, sxy


class RollingSums1:
    """Sum and sum of squares of one series over the last `size` values (shifted)."""

    __slots__ = ("size", "xs", "c", "s", "ss", "pushes", "run")

    def __init__(self, size: int) -> None:
        self.size = size
        self.xs: deque[float] = deque()
        self.c = self.s = self.ss = 0.0
        self.pushes = 0
        self.run = 0

    def __len__(self) -> int:
        return len(self.xs)

    def push(self, x: float) -> None:
        self.run = self.run + 1 if self.xs and x == self.xs[-1] else 1
        if len(self.xs) == self.size:
            o = self.xs.popleft() - self.c
            self.s -= o
            self.ss -= o * o
        self.xs.append(x)
        self.pushes += 1
        if self.pushes >= self.size:
            self.pushes = 0
            self.c = x
            d = [v - x for v in self.xs]
            self.s = math.fsum(d)
            self.ss = math.fsum(v * v for v in d)
            return
        d = x - self.c
        self.s += d
        self.ss += d * d

    def mean_std(self) -> tuple[float, float]:
        """Mean and sample standard deviation (ddof=1)."""
        n = len(self.xs)
        m = self.s / n
        var = 0.0 if n < 2 or self.run >= n else max(self.ss - self.s * m, 0.0) / (n - 1)
        return self.c + m, math.sqrt(var)

    def total(self) -> float:
        return self.c * len(self.xs) + self.s


def ols_fit(rs: RollingSums2) -> tuple[float, float, float, float] | None:
    """(beta, alpha, mean x, mean y) of y = alpha + beta x over the window, or None if x is flat.

    x is flat when a leg did not trade for the whole window (carried forward).
    """
    if rs.runx >= len(rs):
        return None
    mx, my, sxx, _, sxy = rs.moments()
    if sxx <= 0.0:
        return None
    beta = sxy / sxx
    return beta, my - beta * mx, mx, my


def pearson(rs: RollingSums2) -> float | None:
    n = len(rs)
    if rs.runx >= n or rs.runy >= n:
        return None
    _, _, sxx, syy, sxy = rs.moments()
    if sxx <= 0.0 or syy <= 0.0:
        return None
    return sxy / math.sqrt(sxx * syy)


@dataclass(frozen=True, slots=True)
class CointResult:
    """Engle-Granger on a window's OLS residuals, and the AR(1) half-life."""

    adf_stat: float
    adf_pvalue: float  # plain ADF p-value (MacKinnon, N=1, no constant): for reference only
    eg_pvalue: float  # cointegration p-value (MacKinnon, N=2, constant): what to act on
    crit_1: float
    crit_5: float
    crit_10: float
    half_life: float | None  # bars; None when the spread does not revert
    lags: int
    nobs: int


def half_life(resid: np.ndarray) -> float | None:
    """AR(1) fit ds_t = c + b s_{t-1}: half-life = -ln 2 / ln(1 + b), for -1 < b < 0."""
    lag = resid[:-1]
    d = np.diff(resid)
    lc = lag - lag.mean()
    den = float(lc @ lc)
    if den <= 0:
        return None
    b = float(lc @ (d - d.mean())) / den
    if not -1.0 < b < 0.0:
        return None
    return -LN2 / math.log1p(b)


def coint_stats(y: np.ndarray, x: np.ndarray, beta: float, lags: int) -> CointResult | None:
    """ADF on the OLS residuals y - beta x - alpha, with Engle-Granger (N=2) p-value.

    The residuals come from an estimated beta, so their unit-root test has the
    MacKinnon *cointegration* distribution for N=2 variables with a constant
    (statsmodels `coint(trend='c')`), not the plain ADF one (N=1): a plain ADF
    p-value on a fitted spread is too optimistic. The ADF regression has no
    constant (residuals have mean zero) and a fixed number of lags, exactly
    as `statsmodels.tsa.stattools.coint(y, x, trend='c', maxlag=lags, autolag=None)`.
    """
    # alpha = mean(y) - beta mean(x), so the residuals in centred form (no cancellation):
    resid = (y - y.mean()) - beta * (x - x.mean())
    n = len(resid)
    if n < lags + 8 or float(np.ptp(resid)) == 0.0:
        return None
    stat = adf_stat_noconst(resid, lags)
    if not math.isfinite(stat):
        return None
    crit = eg_critical_values(n - 1)
    return CointResult(
        adf_stat=stat,
        adf_pvalue=mackinnon_p(stat, ADF_N1_NOCONST),
        eg_pvalue=mackinnon_p(stat, EG_N2_CONST),
        crit_1=float(crit[0]),
        crit_5=float(crit[1]),
        crit_10=float(crit[2]),
        half_life=half_life(resid),
        lags=lags,
        nobs=n,
    )


class Kalman:
    """Dynamic hedge ratio: state (beta, alpha) as a random walk, observed through y = beta x + alpha.

    Transition noise covariance Vw = delta / (1 - delta) * I, observation noise
    variance Ve = `obs_var` (both from PairConfig: `kalman_delta`, `kalman_obs_var`).
    Starts at beta = alpha = 0 with covariance `init_var` * I (`kalman_init_var`;
    0 by default, as in Chan 2013, ch. 3): with 0 the first bars put the price
    ratio into beta; a larger prior lets alpha find its level (prices far from
    zero need log prices or a large prior). Plain floats: a 2x2 filter is
    faster without numpy.
    """

    __slots__ = ("vw", "ve", "b", "a", "p00", "p01", "p10", "p11")

    def __init__(self, delta: float, obs_var: float, init_var: float = 0.0) -> None:
        self.vw = delta / (1.0 - delta)
        self.ve = obs_var
        self.b = self.a = 0.0
        self.p00, self.p01, self.p10, self.p11 = init_var, 0.0, 0.0, init_var

    def update(self, x: float, y: float) -> tuple[float, float]:
        """Fold in one bar; returns (innovation, innovation variance)."""
        r00, r01, r10, r11 = self.p00 + self.vw, self.p01, self.p10, self.p11 + self.vw
        e = y - (self.b * x + self.a)
        hr0 = x * r00 + r10  # (H R)_0
        hr1 = x * r01 + r11  # (H R)_1
        q = hr0 * x + hr1 + self.ve
        k0 = (r00 * x + r01) / q
        k1 = (r10 * x + r11) / q
        self.b += k0 * e
        self.a += k1 * e
        self.p00, self.p01 = r00 - k0 * hr0, r01 - k0 * hr1
        self.p10, self.p11 = r10 - k1 * hr0, r11 - k1 * hr1
        return e, q


@dataclass(slots=True)
class PairParams:
    window: int = 300
    log_prices: bool = False
    adf_every: int = 10
    adf_lags: int = 1
    kalman_delta: float = 1e-4
    kalman_obs_var: float = 1e-3
    kalman_init_var: float = 0.0


@dataclass(slots=True)
class PairRow:
    """Statistics of one aligned bar of a pair (None: not enough bars yet)."""

    start_ms: int
    close_a: float
    close_b: float
    beta: float | None = None
    alpha: float | None = None
    spread: float | None = None
    spread_mean: float | None = None
    spread_std: float | None = None
    zscore: float | None = None
    corr: float | None = None
    k_beta: float | None = None
    k_alpha: float | None = None
    k_beta_var: float | None = None
    k_spread: float | None = None
    k_innovation: float | None = None
    k_innovation_var: float | None = None
    k_zscore: float | None = None
    half_life: float | None = None
    adf_stat: float | None = None
    adf_pvalue: float | None = None
    eg_pvalue: float | None = None
    coint_ms: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


PAIR_ROW_FIELDS = tuple(f.name for f in fields(PairRow))


@dataclass(slots=True)
class PairAnalytics:
    """Incremental statistics of one pair at one timeframe, fed aligned closes in time order."""

    params: PairParams
    ols: RollingSums2 = field(init=False)
    spreads: RollingSums1 = field(init=False)
    rets: RollingSums2 = field(init=False)
    kalman: Kalman = field(init=False)
    prev: tuple[float, float] | None = None
    fitted: int = 0  # rows with a full OLS window so far
    last_coint: tuple[int, CointResult | None] | None = None

    def __post_init__(self) -> None:
        p = self.params
        self.ols = RollingSums2(p.window)
        self.spreads = RollingSums1(p.window)
        self.rets = RollingSums2(p.window)
        self.kalman = Kalman(p.kalman_delta, p.kalman_obs_var, p.kalman_init_var)

    def _coint(self, fit: tuple[float, float, float, float] | None) -> CointResult | None:
        if fit is None:
            return None
        n = self.params.window
        xs = np.fromiter(self.ols.xs, float, n)
        ys = np.fromiter(self.ols.ys, float, n)
        return coint_stats(ys, xs, fit[0], self.params.adf_lags)

    def update(self, start_ms: int, close_a: float, close_b: float, coint: str = "cadence") -> PairRow:
        """One aligned bar. `coint`: 'cadence' (every adf_every fitted bars) or 'none'."""
        p = self.params
        row = PairRow(start_ms, close_a, close_b)
        y, x = (math.log(close_a), math.log(close_b)) if p.log_prices else (close_a, close_b)
        self.ols.push(x, y)
        if len(self.ols) == p.window:
            fit = ols_fit(self.ols)
            self.fitted += 1
            if fit is not None:
                row.beta, row.alpha = fit[0], fit[1]
                # Centred form: y - beta x - alpha would cancel ~64 000 against ~64 000.
                row.spread = (y - fit[3]) - fit[0] * (x - fit[2])
                if len(self.spreads) == p.window:
                    m, s = self.spreads.mean_std()
                    row.spread_mean, row.spread_std = m, s
                    row.zscore = (row.spread - m) / s if s > 0 else None
                self.spreads.push(row.spread)
            if coint == "cadence" and (self.fitted - 1) % p.adf_every == 0:
                self.last_coint = (start_ms, self._coint(fit))
        if self.prev is not None:
            self.rets.push(math.log(close_b / self.prev[1]), math.log(close_a / self.prev[0]))
            if len(self.rets) == p.window:
                row.corr = pearson(self.rets)
        self.prev = (close_a, close_b)
        e, q = self.kalman.update(x, y)
        k = self.kalman
        row.k_beta, row.k_alpha, row.k_beta_var = k.b, k.a, k.p00
        row.k_spread = y - k.b * x - k.a
        row.k_innovation, row.k_innovation_var = e, q
        row.k_zscore = e / math.sqrt(q)
        if self.last_coint is not None:
            row.coint_ms = self.last_coint[0]
            c = self.last_coint[1]
            if c is not None:
                row.half_life, row.adf_stat = c.half_life, c.adf_stat
                row.adf_pvalue, row.eg_pvalue = c.adf_pvalue, c.eg_pvalue
        return row


def pair_rows(
    starts: np.ndarray, close_a: np.ndarray, close_b: np.ndarray, params: PairParams, coint: str = "cadence"
) -> list[PairRow]:
    """Batch form: the same incremental code over a whole aligned series."""
    pa = PairAnalytics(params)
    return [
        pa.update(s, a, b, coint) for s, a, b in zip(starts.tolist(), close_a.tolist(), close_b.tolist(), strict=True)
    ]


def coint_at(close_a: np.ndarray, close_b: np.ndarray, rows: list[PairRow], params: PairParams) -> PairRow | None:
    """The latest cadence row's Engle-Granger result, computed only there (for on-demand reads).

    Equals what `coint='cadence'` carries to the last row, without testing every cadence bar.
    """
    w = params.window
    count = len(rows) - w + 1  # rows with a full window
    if count <= 0:
        return None
    i = w - 1 + (count - 1) // params.adf_every * params.adf_every
    r = rows[i]
    out = PairRow(r.start_ms, r.close_a, r.close_b, coint_ms=r.start_ms)
    if r.beta is None or r.alpha is None:
        return out
    ya, xb = close_a[i - w + 1 : i + 1].tolist(), close_b[i - w + 1 : i + 1].tolist()
    if params.log_prices:  # math.log, as in PairAnalytics.update: bit-identical inputs
        ya, xb = [math.log(v) for v in ya], [math.log(v) for v in xb]
    c = coint_stats(np.array(ya, float), np.array(xb, float), r.beta, params.adf_lags)
    if c is not None:
        out.half_life, out.adf_stat, out.adf_pvalue, out.eg_pvalue = c.half_life, c.adf_stat, c.adf_pvalue, c.eg_pvalue
    return out


# --- per-symbol rolling statistics -------------------------------------------------


@dataclass(slots=True)
class SymbolRow:
    """Rolling statistics of one symbol at one bar (window of `window` bars ending here)."""

    start_ms: int
    close: float
    volume: float
    log_return: float | None = None
    mean: float | None = None  # of closes
    std: float | None = None  # of closes, ddof=1
    vwap: float | None = None  # sum(quote volume) / sum(volume)
    roll_volume: float | None = None
    realised_vol: float | None = None  # sqrt(sum of squared log returns), not annualised


SYMBOL_ROW_FIELDS = tuple(f.name for f in fields(SymbolRow))


@dataclass(slots=True)
class SymbolStats:
    """Incremental per-symbol statistics over aligned bars (an empty bar: close carried, volume 0)."""

    window: int
    closes: RollingSums1 = field(init=False)
    vol: deque = field(init=False)
    quote: deque = field(init=False)
    r2: RollingSums1 = field(init=False)
    prev: float | None = None

    def __post_init__(self) -> None:
        self.closes = RollingSums1(self.window)
        self.vol = deque(maxlen=self.window)
        self.quote = deque(maxlen=self.window)
        self.r2 = RollingSums1(self.window)

    def update(self, start_ms: int, close: float, volume: float, quote_volume: float) -> SymbolRow:
        row = SymbolRow(start_ms, close, volume)
        self.closes.push(close)
        self.vol.append(volume)
        self.quote.append(quote_volume)
        if self.prev is not None:
            row.log_return = math.log(close / self.prev)
            self.r2.push(row.log_return * row.log_return)
        self.prev = close
        if len(self.closes) == self.window:
            row.mean, row.std = self.closes.mean_std()
            v = math.fsum(self.vol)
            row.roll_volume = v
            row.vwap = math.fsum(self.quote) / v if v > 0 else None
        if len(self.r2) == self.window:
            row.realised_vol = math.sqrt(max(sum(self.r2.xs), 0.0))
        return row


# --- correlation matrix -------------------------------------------------------------


@dataclass(slots=True)
class CorrMatrix:
    """Rolling Pearson correlation of log returns for every pair of a symbol set."""

    symbols: list[str]
    window: int
    sums: dict[tuple[str, str], RollingSums2] = field(init=False)
    prev: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.symbols
        self.sums = {(a, b): RollingSums2(self.window) for i, a in enumerate(s) for b in s[i + 1 :]}

    def update(self, closes: dict[str, float]) -> dict[tuple[str, str], float | None]:
        out: dict[tuple[str, str], float | None] = {}
        if self.prev:
            rets = {s: math.log(closes[s] / self.prev[s]) for s in self.symbols}
            for (a, b), rs in self.sums.items():
                rs.push(rets[b], rets[a])
                out[(a, b)] = pearson(rs) if len(rs) == self.window else None
        self.prev = dict(closes)
        return out


# --- backtest -----------------------------------------------------------------------


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


@dataclass(slots=True)
class Backtest:
    trades: list[Trade]
    curve: list[tuple[int, float]]  # (start_ms, equity) marked to market at each close
    total_pnl: float
    mean_pnl: float | None
    win_rate: float | None
    sharpe: float | None  # mean / std of per-bar equity changes, times sqrt(bars per year)
    max_drawdown: float


def backtest(rows: list[PairRow], entry_z: float, exit_z: float, fee_bps: float, bars_per_year: float) -> Backtest:
    """Mean reversion on price-space rows: enter at |z| >= entry_z, exit at |z| <= exit_z.

    A decision at bar t uses only z_t (past-only spread statistics) and trades
    at close t; the hedge ratio is fixed at entry (beta_t of the entry bar).
    Fees are fee_bps of each leg's traded notional, on entry and on exit. A
    position still open at the last bar is marked there and flagged `open`.
    """
    fee = fee_bps / 1e4
    trades: list[Trade] = []
    curve: list[tuple[int, float]] = []
    realised = 0.0
    pos: Trade | None = None
    sign = 0.0
    for r in rows:
        z = r.zscore
        if pos is not None and z is not None and abs(z) <= exit_z:
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
