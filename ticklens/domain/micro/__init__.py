"""Microstructure analytics per symbol and bar: L1 quote measures, order-flow imbalance, depth,
effective and realized spread, price impact, Kyle's lambda and VPIN (docs/analytics.md).

`formulas` holds the definitions, `cells` one second's mergeable summary, `engine` the
incremental per-symbol state the flow keeps (`MicroBook`).
"""

from ticklens.domain.micro.cells import VpinBucket
from ticklens.domain.micro.engine import MICRO_COLUMNS, BookLevels, MicroBar, MicroBook, MicroOut, MicroParams

__all__ = ["MICRO_COLUMNS", "BookLevels", "MicroBar", "MicroBook", "MicroOut", "MicroParams", "VpinBucket"]
