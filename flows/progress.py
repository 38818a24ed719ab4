"""Running counters of the flow, printed to the terminal and stored as status rows.

Trade and duplicate totals and each symbol's last trade time come from the
flow's own (recovered) state, carried on every `SymbolOut`: a run resumed from
its recovery snapshot goes on from where the stopped one was, instead of
starting again at zero while the store holds everything it wrote before.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass

from flows.items import BookOut, SymbolOut
from ticklens.domain.records import FeedStats
from ticklens.domain.status import flow_key
from ticklens.domain.times import iso_ms


@dataclass
class SymbolHealth:
    trades: int = 0
    last_trade_ms: int = 0
    last_recv_ms: int = 0
    duplicates: int = 0
    conflicts: int = 0  # duplicates whose values differed (each also a `rejects` row)
    late_trades: int = 0
    revisions: int = 0
    bars_written: int = 0
    gaps_open: int = 0
    gaps_total: int = 0
    watermark_ms: int = 0


@dataclass
class BookHealth:
    live: bool = False  # the local book is known (synced, chain unbroken)
    last_update_id: int = 0
    applied: int = 0  # depth events applied (cumulative, from the book's state)
    quotes: int = 0  # L1 rows handed to the store
    snapshots: int = 0  # snapshots the book was (re)built from
    gaps: int = 0  # intervals the book was unknown
    dropped: int = 0
    duplicates: int = 0
    overflow: int = 0


class Progress:
    """Counts what was stored; prints a line every `interval_s` and yields status documents."""

    def __init__(self, interval_s: float, quiet: bool = False, worker: tuple[int, int] = (0, 1)) -> None:
        self.interval_s = interval_s
        self.worker, self.workers = worker
        self.quiet = quiet or os.environ.get("TICKLENS_QUIET") == "1"
        self.started = time.time()
        self.symbols: dict[str, SymbolHealth] = {}
        self.books: dict[str, BookHealth] = {}
        self.feeds: dict[str, FeedStats] = {}
        self.rejects_stored = 0
        self.trades_total = 0  # since the flow first started (resumed runs included)
        self.run_trades = 0  # by this process: the rate
        self._last_print = time.monotonic()
        self._last_trades = 0
        self.rate = 0.0

    def on_symbol(self, out: SymbolOut, wrote_bars: int, now_ms: int) -> None:
        h = self.symbols.setdefault(out.symbol, SymbolHealth())
        n = len(out.ticks) if out.ticks is not None else 0
        if n:
            self.run_trades += n
            h.last_trade_ms = max(h.last_trade_ms, int(out.ticks.ts_ms.max()))
            h.last_recv_ms = max(h.last_recv_ms, int(out.ticks.recv_ms.max()))
        # The flow's totals (they survive a resume); this run's own counts as a floor.
        h.trades = max(h.trades + n, out.trades_total)
        h.last_trade_ms = max(h.last_trade_ms, out.last_trade_ms)
        h.duplicates = max(h.duplicates + out.duplicates, out.duplicates_total)
        h.conflicts = max(h.conflicts + out.conflicts, out.conflicts_total)
        self.trades_total = sum(x.trades for x in self.symbols.values())
        h.late_trades = out.late_trades
        h.revisions = out.revisions
        h.bars_written += wrote_bars
        h.watermark_ms = out.watermark
        for g in out.gaps:
            if g.status == "open":
                h.gaps_open += 1
                h.gaps_total += 1
            elif g.status == "filled":
                h.gaps_open = max(0, h.gaps_open - 1)

    def on_book(self, out: BookOut) -> None:
        h = self.books.setdefault(out.symbol, BookHealth())
        h.quotes += 0 if out.quotes is None else len(out.quotes)
        h.live, h.last_update_id = out.live, out.last_update_id
        c = out.counters
        if c is not None:
            h.applied, h.snapshots, h.gaps = c.applied, c.snapshots, c.gaps
            h.dropped, h.duplicates, h.overflow = c.dropped, c.duplicates, c.overflow

    def due(self) -> bool:
        return time.monotonic() - self._last_print >= self.interval_s

    def status_docs(self) -> dict[str, object]:
        now = time.monotonic()
        dt = max(now - self._last_print, 1e-6)
        self.rate = (self.run_trades - self._last_trades) / dt
        self._last_print, self._last_trades = now, self.run_trades
        docs: dict[str, object] = {
            flow_key(self.worker, self.workers): {
                "pid": os.getpid(),
                "worker": self.worker,
                "workers": self.workers,
                "started_ms": int(self.started * 1000),
                "trades_total": self.trades_total,
                "trades_per_s": round(self.rate, 1),
                "rejects": self.rejects_stored,
                "feeds": {k: asdict(v) for k, v in self.feeds.items()},
            }
        }
        for sym, h in self.symbols.items():
            docs[f"symbol:{sym}"] = asdict(h)
        for sym, b in self.books.items():
            docs[f"book:{sym}"] = asdict(b)
        return docs

    def print_line(self) -> None:
        if self.quiet:
            return
        reconnects = sum(f.reconnects for f in self.feeds.values())
        rejected = sum(f.rejected for f in self.feeds.values())
        parts = [
            f"{self.rate:,.0f} trades/s",
            f"total {self.trades_total:,}",
            f"bars {sum(h.bars_written for h in self.symbols.values()):,}",
            f"reconnects {reconnects}",
            f"rejected {rejected}",
        ]
        syms = " ".join(
            f"{s}@{iso_ms(h.last_trade_ms) if h.last_trade_ms else None}" for s, h in sorted(self.symbols.items())
        )
        who = f"[ticklens w{self.worker}]" if self.workers > 1 else "[ticklens]"
        print(f"{who} {' | '.join(parts)} | {syms}", file=sys.stderr, flush=True)
