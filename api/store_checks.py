"""The store's integrity check, at start and on a schedule, off the event loop.

`Store.check()` (SQLite: `PRAGMA quick_check`) reads the whole store, so it runs in a
worker thread: the API answers while it runs. Its answer is kept on the store, which
then refuses readers while it names a problem (503 naming it; /health says degraded).
A read that fails with a driver error asks for a check at once (`soon`); while degraded,
checks come every minute at least, so a store repaired in place is served again. A check
that cannot run (PostgreSQL unreachable) changes nothing: the reads' own 503s say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from storage.port import Store

SOON_GAP_S = 5.0  # a check asked for by failing reads waits this long after the last one began
DEGRADED_EVERY_S = 60.0  # while a check fails, the next comes this soon (a store restored from a backup)


class StoreChecks:
    def __init__(self, store: Store, interval_s: float) -> None:
        self.store = store
        self.interval_s = interval_s  # 0: at start (and when asked) only
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="store-checks")

    def soon(self) -> None:
        """Check again now (callable from any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            was_ok = self.store.last_check is None or self.store.last_check.ok
            try:
                h = await asyncio.to_thread(self.store.check)
            except Exception as e:  # noqa: BLE001 - a check that cannot run is reported, not fatal
                print(f"[ticklens] store check could not run: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            else:
                if not h.ok:
                    print(f"[ticklens] degraded: {h.problem}", file=sys.stderr, flush=True)
                elif not was_ok:
                    print(
                        f"[ticklens] store {h.location} passes its integrity check again", file=sys.stderr, flush=True
                    )
            self._wake.clear()
            timeout = self.interval_s or None
            if self.store.last_check is not None and not self.store.last_check.ok:
                timeout = min(timeout or DEGRADED_EVERY_S, DEGRADED_EVERY_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
                await asyncio.sleep(max(0.0, began + SOON_GAP_S - loop.time()))  # woken: not in a storm
