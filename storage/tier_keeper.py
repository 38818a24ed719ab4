"""The flow's tier-out thread: `tier_out` (storage.tier_out) every `store.tier_every_s` seconds.

Apart from tier_out so that a flow starts without polars and pyarrow; the first round loads them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from storage.port import Store

if TYPE_CHECKING:
    from storage.tier_out import Moved


class TierKeeper:
    """Runs `tier_out` every `every_s` seconds on a thread of its own (the flow's sink starts one).

    A failed round is reported and retried at the next; it never stops the flow. Daemon: a process
    that exits mid-round leaves both tiers consistent (see storage.tier's crash note).
    """

    def __init__(
        self,
        store: Store,
        cold_root: Path,
        hot_days: int,
        every_s: float,
        log: Callable[[str], None],
        first_after_s: float = 60.0,
    ) -> None:
        self.store, self.cold_root, self.hot_days, self.every_s, self.log = store, cold_root, hot_days, every_s, log
        self.first_after_s = min(first_after_s, every_s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tier-out", daemon=True)

    def start(self) -> TierKeeper:
        self.thread.start()
        return self

    def _run(self) -> None:
        wait = self.first_after_s
        while not self.stop.wait(wait):
            wait = self.every_s
            from storage.tier_out import tier_out  # polars and pyarrow (~0.15 s): loaded by the first round

            try:
                tier_out(self.store, self.cold_root, self.hot_days, stop=self.stop, on_moved=self._said)
            except Exception as e:  # noqa: BLE001 (reported; the next round tries again)
                self.log(f"tier-out failed: {type(e).__name__}: {e}")

    def _said(self, m: Moved) -> None:
        self.log(f"tier-out: {m.symbol} {m.day}: {m.rows:,} ticks to Parquet in {m.seconds:.1f} s")

    def close(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout_s)
