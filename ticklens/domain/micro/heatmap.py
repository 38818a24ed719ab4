"""Order-book liquidity heatmap: resting size per price bin and moment, downsampled (pure).

A column is the book at one moment; its levels are summed into fixed price bins (the same
bins for every column, so the picture is price × time). Levels outside the bins are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def price_bins(center: float, band_bps: float, rows: int) -> np.ndarray:
    """`rows` + 1 equal bin edges over center·(1 ∓ band_bps/10⁴)."""
    half = center * band_bps / 1e4
    return np.linspace(center - half, center + half, rows + 1)


def bin_levels(levels: Sequence[tuple[str, str]], edges: np.ndarray) -> np.ndarray:
    """Base quantity per bin [edge_i, edge_i+1) (the last bin closed) of [price, qty] levels."""
    if not levels:
        return np.zeros(len(edges) - 1)
    a = np.array(levels, dtype=np.float64).reshape(-1, 2)
    sums, _ = np.histogram(a[:, 0], bins=edges, weights=a[:, 1])
    return sums


def column_times(start_ms: int, end_ms: int, columns: int) -> list[int]:
    """`columns` moments evenly over [start, end], both ends included (one: the end)."""
    if columns <= 1 or end_ms <= start_ms:
        return [end_ms]
    step = (end_ms - start_ms) / (columns - 1)
    return sorted({int(round(start_ms + i * step)) for i in range(columns)})
