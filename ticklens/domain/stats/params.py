"""The parameters of a pair's analytics: what the config reads, kept apart from the numpy code
that uses them, so reading a config (the CLI, the cluster's supervisor) does not import numpy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PairParams:
    window: int = 300
    log_prices: bool = False
    adf_every: int = 10
    adf_lags: int = 1
    kalman_delta: float = 1e-4
    kalman_obs_var: float = 1e-3
    kalman_init_var: float = 0.0
    kalman_warmup: int | None = None  # aligned bars before the Kalman values are published; None: window

    @property
    def kalman_first(self) -> int:
        """Bars the Kalman filter sees before its values are published (at least 1)."""
        return max(1, self.kalman_warmup if self.kalman_warmup is not None else self.window)
