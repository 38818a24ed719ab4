"""Symbol names as ticklens keeps them: lower case, as Binance's stream names."""

from __future__ import annotations

import re

SYMBOL_RE = re.compile(r"^[a-z0-9]{2,30}$")
SYMBOL_PATTERN = r"^[A-Za-z0-9]{2,30}$"  # what the API accepts before lower-casing


def normalise_symbol(value: str) -> str:
    """`BTCUSDT` → `btcusdt`; ValueError naming the value when it is not a symbol."""
    sym = str(value).strip().lower()
    if not SYMBOL_RE.match(sym):
        raise ValueError(f"symbol {value!r} must match [a-z0-9]{{2,30}}")
    return sym
