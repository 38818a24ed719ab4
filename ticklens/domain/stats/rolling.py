"""Rolling sums over a fixed window, kept without losing digits, and what they give (OLS, Pearson).

The sums are kept on values shifted by a recent reference and rebuilt from the
window every `window` updates, so they do not lose digits to cancellation
(prices near 60 000 with moves of a few dollars).
"""

from __future__ import annotations

import math
from collections import deque
from typing import ClassVar, Self


class _Window:
    """What both kinds of rolling sums share: the window's values in deques, copied by `clone`."""

    __slots__: tuple[str, ...] = ()
    _DEQUES: ClassVar[tuple[str, ...]]  # the slots holding the window's values
    xs: deque[float]

    def __len__(self) -> int:
        return len(self.xs)

    def clone(self) -> Self:
        """An independent copy (a checkpoint to rewind to)."""
        new = type(self).__new__(type(self))
        for k in self.__slots__:
            setattr(new, k, getattr(self, k))
        for k in self._DEQUES:
            setattr(new, k, getattr(self, k).copy())
        return new


class RollingSums2(_Window):
    """Sums of two series over the last `size` values, shifted for stability."""

    _DEQUES = ("xs", "ys")
    __slots__ = ("size", "xs", "ys", "cx", "cy", "sx", "sy", "sxx", "syy", "sxy", "pushes", "runx", "runy")

    def __init__(self, size: int) -> None:
        self.size = size
        self.xs: deque[float] = deque()
        self.ys: deque[float] = deque()
        self.cx = self.cy = 0.0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0
        self.pushes = 0
        self.runx = self.runy = 0  # trailing values equal to the newest: a flat window is exact, not rounding

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


class RollingSums1(_Window):
    """Sum and sum of squares of one series over the last `size` values (shifted)."""

    _DEQUES = ("xs",)
    __slots__ = ("size", "xs", "c", "s", "ss", "pushes", "run")

    def __init__(self, size: int) -> None:
        self.size = size
        self.xs: deque[float] = deque()
        self.c = self.s = self.ss = 0.0
        self.pushes = 0
        self.run = 0

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
            dev = [v - x for v in self.xs]
            self.s = math.fsum(dev)
            self.ss = math.fsum(v * v for v in dev)
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
