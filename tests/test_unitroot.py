"""Our ADF statistic and MacKinnon p-values/critical values against statsmodels (the oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.tsa.adfvalues import mackinnoncrit, mackinnonp
from statsmodels.tsa.stattools import adfuller

from ticklens.domain.stats.unitroot import (
    ADF_N1_NOCONST,
    EG_N2_CONST,
    adf_stat_noconst,
    eg_critical_values,
    mackinnon_p,
)


def _series(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    e = rng.normal(size=n)
    if kind == "walk":
        x = np.cumsum(e)
    elif kind == "noise":
        x = e
    else:  # AR(1), phi 0.9: mean-reverting but slowly
        x = np.zeros(n)
        for t in range(1, n):
            x[t] = 0.9 * x[t - 1] + e[t]
    return x - x.mean()


@pytest.mark.parametrize("kind", ["walk", "noise", "ar1"])
@pytest.mark.parametrize("lags", [0, 1, 3, 8])
def test_adf_statistic_and_p_value_equal_statsmodels(kind: str, lags: int) -> None:
    rng = np.random.default_rng(100 * lags + len(kind))
    for n in (lags + 12, 60, 300, 1000):
        x = _series(kind, n, rng)
        ref_stat, ref_p = adfuller(x, maxlag=lags, autolag=None, regression="n", result_object=False)[:2]
        ours = adf_stat_noconst(x, lags)
        assert ours == pytest.approx(ref_stat, rel=1e-9)
        assert mackinnon_p(ours, ADF_N1_NOCONST) == pytest.approx(ref_p, rel=1e-9, abs=1e-12)


def test_p_value_curves_equal_statsmodels_over_the_whole_range() -> None:
    for stat in np.linspace(-25.0, 4.0, 2901):  # both sides of every bound and switch point
        assert mackinnon_p(stat, ADF_N1_NOCONST) == pytest.approx(mackinnonp(stat, "n", N=1), abs=1e-13)
        assert mackinnon_p(stat, EG_N2_CONST) == pytest.approx(mackinnonp(stat, "c", N=2), abs=1e-13)


@pytest.mark.parametrize("nobs", [20, 99, 299, 5000])
def test_engle_granger_critical_values_equal_statsmodels(nobs: int) -> None:
    assert eg_critical_values(nobs) == pytest.approx(tuple(mackinnoncrit(N=2, regression="c", nobs=nobs)), abs=1e-12)


def test_degenerate_input_gives_nan_not_an_error() -> None:
    assert math.isnan(adf_stat_noconst(np.zeros(50), 1))  # no variation: singular regression
    assert math.isnan(adf_stat_noconst(np.arange(4.0), 2))  # fewer observations than regressors
