"""A simulated market for any symbols: random walks with bursts, in Binance's trade shape."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np


@dataclass
class SymbolModel:
    price: float
    tick: float
    lot: float
    next_id: int
    weight: float  # share of the trade rate


def _symbol_model(symbol: str) -> SymbolModel:
    """Binance-like starting price, tick, lot and id for any symbol (stable per name)."""
    known = {
        "btcusdt": (64_000.0, 0.1, 0.001, 5_180_000_000, 4.0),
        "ethusdt": (3_400.0, 0.01, 0.001, 4_250_000_000, 3.0),
    }
    if symbol in known:
        p, tick, lot, first, w = known[symbol]
        return SymbolModel(p, tick, lot, first, w)
    h = int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big")
    price = float(10 ** ((h % 5000) / 1000 - 1))  # 0.1 … 10,000
    tick = 10 ** math.floor(math.log10(price) - 4)
    lot = 10 ** max(-3, math.floor(3 - math.log10(price)))
    return SymbolModel(price, tick, lot, 100_000_000 + h % 900_000_000, 1.0)


class Simulator:
    """A plausible market for any symbols: correlated random walks, bursts, Binance-like ids and sizes."""

    def __init__(self, symbols: list[str], rate: float, seed: int = 7, bursts: bool = True) -> None:
        self.symbols = symbols
        self.models = [_symbol_model(s) for s in symbols]
        w = np.asarray([m.weight for m in self.models])
        self.lam = rate * w / w.sum() / 1000.0  # trades per ms per symbol
        self.log_price = np.log([m.price for m in self.models])
        self.rng = np.random.default_rng(seed)
        self.bursts = bursts
        self.burst_until = 0
        self.burst_factor = 1.0

    def generate(self, t0: int, t1: int) -> dict[str, np.ndarray]:
        """Trades with times in [t0, t1) ms, sorted by (time, symbol)."""
        n_ms, n_sym = max(0, t1 - t0), len(self.symbols)
        rng = self.rng
        mult = np.ones(n_ms)
        if self.bursts:
            # A burst (news, liquidations) every ~20 s on average: 5-15x the rate for 0.5-3 s.
            for i in range(n_ms):
                t = t0 + i
                if t < self.burst_until:
                    mult[i] = self.burst_factor
                elif rng.random() < 1 / 20_000:
                    self.burst_until = t + int(rng.uniform(500, 3_000))
                    self.burst_factor = float(rng.uniform(5, 15))
        counts = rng.poisson(np.outer(mult, self.lam))  # (ms, symbol)
        # Correlated per-ms returns: one market factor plus idiosyncratic noise.
        market = rng.normal(0, 2e-5, n_ms)[:, None]
        idio = rng.normal(0, 1.2e-5, (n_ms, n_sym))
        paths = self.log_price + np.cumsum(market + idio, axis=0)
        self.log_price = paths[-1] if n_ms else self.log_price
        ms_idx, sym_idx = np.nonzero(counts)
        reps = counts[ms_idx, sym_idx]
        ms = np.repeat(ms_idx, reps)
        sym = np.repeat(sym_idx, reps).astype(np.int32)
        n = len(ms)
        ticks = np.asarray([m.tick for m in self.models])[sym]
        lots = np.asarray([m.lot for m in self.models])[sym]
        price = np.exp(paths[ms, sym]) * (1 + rng.normal(0, 2e-6, n))
        price = np.maximum(np.round(price / ticks), 1) * ticks
        qty = np.maximum(np.round(rng.lognormal(0, 1.6, n) * 30 * lots / lots), 1) * lots
        trade_id = np.empty(n, dtype=np.int64)
        for i, m in enumerate(self.models):
            sel = sym == i
            k = int(sel.sum())
            trade_id[sel] = np.arange(m.next_id, m.next_id + k)
            m.next_id += k
        ts = (t0 + ms).astype(np.int64)
        # Round again: float noise from the tick multiplication would show in the JSON.
        decimals = np.asarray([max(0, -math.floor(math.log10(m.tick) + 1e-9)) for m in self.models])
        for i, d in enumerate(decimals.tolist()):
            sel = sym == i
            price[sel] = np.round(price[sel], int(d))
        qty = np.round(qty, 8)
        return {
            "sym": sym,
            "kind": np.zeros(n, dtype=np.int8),
            "trade_id": trade_id,
            "ts_ms": ts,
            "price": price,
            "qty": qty,
            "is_buyer_maker": rng.random(n) < 0.5,
            "first_id": trade_id,
            "last_id": trade_id,
            "event_ms": ts,
        }
