"""The ADF regression and MacKinnon's p-values and critical values, in numpy and math only.

The flow tests cointegration every few bars of every pair, so this is on the hot path:
statsmodels' `adfuller` + `mackinnonp` cost ~1.9 ms per test (most of it in generic
machinery and scipy's `norm.cdf`) and importing them ~1 s; this does the same
arithmetic in ~0.1 ms. statsmodels stays the test oracle (tests/test_analytics.py,
tests/test_unitroot.py).

The coefficients are the published ones: p-values from MacKinnon (1994), "Approximate
asymptotic distribution functions for unit-root and cointegration tests", JBES 12(2),
Table 3 (small-p and large-p polynomials with their bounds); critical values from
MacKinnon (2010), "Critical values for cointegration tests", QED WP 1227, Table 2.
Only the two cases the product uses are here: plain ADF without constant (N=1, "n")
and Engle-Granger on residuals of a regression with constant (N=2, "c").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class _PCurve:
    """p = Phi(poly(tau)), small-p polynomial at or below `star`, large-p above; 0/1 outside [lo, hi]."""

    lo: float
    hi: float
    star: float
    small: tuple[float, ...]  # ascending powers of tau
    large: tuple[float, ...]


ADF_N1_NOCONST = _PCurve(
    lo=-19.04,
    hi=math.inf,
    star=-1.04,
    small=(0.6344, 1.2378, 3.2496e-2),
    large=(0.4797, 9.3557e-1, -0.6999e-1, 3.3066e-2),
)
EG_N2_CONST = _PCurve(
    lo=-18.86,
    hi=0.92,
    star=-2.62,
    small=(2.92, 1.5012, 3.9796e-2),
    large=(2.1945, 6.4695e-1, -2.9198e-1, -4.2377e-2),
)
# Engle-Granger N=2 with constant: (tau_inf, tau_1, tau_2) per level; crit = tau_inf + tau_1/T + tau_2/T^2.
_EG_N2_CONST_CRIT = {
    "1%": (-3.89644, -10.9519, -33.527),
    "5%": (-3.33613, -6.1101, -6.823),
    "10%": (-3.04445, -4.2412, -2.72),
}


def mackinnon_p(stat: float, curve: _PCurve) -> float:
    """MacKinnon's approximate asymptotic p-value of an ADF-type t statistic."""
    if stat > curve.hi:
        return 1.0
    if stat < curve.lo:
        return 0.0
    coef = curve.small if stat <= curve.star else curve.large
    z = 0.0
    for c in reversed(coef):  # Horner
        z = z * stat + c
    return 0.5 * math.erfc(-z / math.sqrt(2.0))  # standard normal CDF


def eg_critical_values(nobs: int) -> tuple[float, float, float]:
    """Engle-Granger (N=2, constant) 1 %, 5 %, 10 % critical values for `nobs` observations."""
    inv = 1.0 / nobs
    c1, c5, c10 = (t0 + t1 * inv + t2 * inv * inv for t0, t1, t2 in _EG_N2_CONST_CRIT.values())
    return c1, c5, c10


def adf_stat_noconst(x: np.ndarray, lags: int) -> float:
    """t statistic of gamma in  dx_t = gamma x_{t-1} + sum_i phi_i dx_{t-i} + e_t  (no constant).

    The sample is the one statsmodels' `adfuller(x, maxlag=lags, autolag=None,
    regression="n")` uses: the last len(x) - 1 - lags differences.
    """
    n = len(x)
    d = np.diff(x)
    nobs = n - 1 - lags
    k = lags + 1
    if nobs <= k:
        return math.nan
    level = x[lags : n - 1]
    y = d[lags:]
    if lags <= 1:  # the default: a 2x2 (or 1x1) system in closed form, a third of the SVD's time
        return _t_two(level, d[lags - 1 : n - 2] if lags else None, y, nobs)
    xs = np.empty((nobs, k))
    xs[:, 0] = level
    for i in range(1, k):
        xs[:, i] = d[lags - i : n - 1 - i]
    # SVD: the coefficients and (X'X)^-1 [0, 0] from one factorisation, stable for near-collinear lags.
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    if s[-1] <= s[0] * 1e-12:
        return math.nan
    coef = vt.T @ ((u.T @ y) / s)
    resid = y - xs @ coef
    sigma2 = float(resid @ resid) / (nobs - k)
    var0 = float(np.sum((vt[:, 0] / s) ** 2)) * sigma2
    if var0 <= 0.0:
        return math.nan
    return float(coef[0]) / math.sqrt(var0)


def _t_two(a: np.ndarray, b: np.ndarray | None, y: np.ndarray, nobs: int) -> float:
    """t statistic of the first coefficient of y on [a] or [a, b], via the normal equations."""
    aa = float(a @ a)
    if b is None:
        if aa <= 0.0:
            return math.nan
        c0 = float(a @ y) / aa
        e = y - c0 * a
        var0 = float(e @ e) / (nobs - 1) / aa
    else:
        ab, bb = float(a @ b), float(b @ b)
        det = aa * bb - ab * ab
        if not det > 1e-10 * aa * bb:  # (near) collinear: no meaningful statistic
            return math.nan
        ay, by = float(a @ y), float(b @ y)
        c0 = (bb * ay - ab * by) / det
        c1 = (aa * by - ab * ay) / det
        e = y - c0 * a - c1 * b
        var0 = float(e @ e) / (nobs - 2) * bb / det
    if not var0 > 0.0:
        return math.nan
    return c0 / math.sqrt(var0)
