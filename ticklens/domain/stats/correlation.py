"""The rolling correlation matrix of log returns over a set of symbols."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ticklens.domain.stats.rolling import RollingSums2, pearson


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

    def clone(self) -> CorrMatrix:
        """An independent copy (a checkpoint to rewind to when a bar it used is revised)."""
        new = CorrMatrix.__new__(CorrMatrix)
        new.symbols, new.window, new.prev = self.symbols, self.window, dict(self.prev)
        new.sums = {k: rs.clone() for k, rs in self.sums.items()}
        return new

    def update(self, closes: dict[str, float]) -> dict[tuple[str, str], float | None]:
        out: dict[tuple[str, str], float | None] = {}
        if self.prev:
            rets = {s: math.log(closes[s] / self.prev[s]) for s in self.symbols}
            for (a, b), rs in self.sums.items():
                rs.push(rets[b], rets[a])
                out[(a, b)] = pearson(rs) if len(rs) == self.window else None
        self.prev = dict(closes)
        return out


@dataclass(slots=True)
class CorrOut:
    timeframe: str
    window: int
    rows: list[tuple[int, str, str, float | None]]  # (start_ms, a, b, corr)
