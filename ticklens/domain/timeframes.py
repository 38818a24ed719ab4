"""The bar timeframes: one definition, used by config, flow, API and store."""

from __future__ import annotations

from typing import Literal

Timeframe = Literal["1s", "1m", "5m"]
TIMEFRAME_MS: dict[str, int] = {"1s": 1_000, "1m": 60_000, "5m": 300_000}
TIMEFRAMES: tuple[str, ...] = tuple(TIMEFRAME_MS)  # finest first
TIMEFRAME_PATTERN = "^(" + "|".join(TIMEFRAMES) + ")$"
