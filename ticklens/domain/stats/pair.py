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
  before t and bar t's prices only. Every `k_*` value stays None until the
  filter has seen `kalman_warmup` aligned bars (default: `window`, the bar the
  OLS beta starts at): the first innovations are measured against the prior
  (beta = alpha = 0), not against anything the data said (z-scores like 1867).
- `half_life`, `adf_stat`, `adf_pvalue`, `eg_pvalue`: from the residuals of
  t's OLS fit over its window, computed every `adf_every` aligned bars with a
  full window (carried forward between refreshes; `coint_ms` says which bar).

Rolling sums are kept on values shifted by a recent reference and rebuilt
from the window every `window` updates, so they do not lose digits to
cancellation (prices near 60 000 with moves of a few dollars).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ticklens.domain.stats.params import PairParams
from ticklens.domain.stats.rolling import RollingSums1, RollingSums2, ols_fit, pearson
from ticklens.domain.stats.unitroot import (
    ADF_N1_NOCONST,
    EG_N2_CONST,
    adf_stat_noconst,
    eg_critical_values,
    mackinnon_p,
)

LN2 = math.log(2.0)


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

    def clone(self) -> Kalman:
        new = Kalman.__new__(Kalman)
        for k in self.__slots__:
            setattr(new, k, getattr(self, k))
        return new

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

    def as_dict(self) -> dict[str, object]:
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
    kalman_bars: int = 0  # bars the Kalman filter has seen
    last_coint: tuple[int, CointResult | None] | None = None

    def __post_init__(self) -> None:
        p = self.params
        self.ols = RollingSums2(p.window)
        self.spreads = RollingSums1(p.window)
        self.rets = RollingSums2(p.window)
        self.kalman = Kalman(p.kalman_delta, p.kalman_obs_var, p.kalman_init_var)

    def clone(self) -> PairAnalytics:
        """An independent copy (a checkpoint to rewind to when a bar it used is revised)."""
        new = PairAnalytics.__new__(PairAnalytics)
        new.params, new.prev, new.fitted, new.kalman_bars = self.params, self.prev, self.fitted, self.kalman_bars
        new.last_coint = self.last_coint  # immutable
        new.ols, new.spreads, new.rets, new.kalman = (
            self.ols.clone(),
            self.spreads.clone(),
            self.rets.clone(),
            self.kalman.clone(),
        )
        return new

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
        self.kalman_bars += 1
        if self.kalman_bars >= p.kalman_first:  # warmed up (see the module docstring)
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


@dataclass(slots=True)
class PairOut:
    pair: str
    legs: tuple[str, str]
    timeframe: str
    window: int
    rows: list[PairRow]
    revised: bool = False  # rows computed again because a bar they used was revised
