"""Pacing: which tape position is due at a wall time (speed, loop, --start-now), with id and time shifts."""

from __future__ import annotations

import time

import numpy as np

from ticklens.emulator.simulator import Simulator
from ticklens.emulator.tape import AGG, Rows, Tape


class Timeline:
    """The one market all connections see: global positions, paced by wall time.

    Positions count rows from the start (across loops). A tape is paced from
    the moment the first client connects; `speed=None` sends as fast as the
    client reads. A simulation runs on the wall clock.
    """

    def __init__(
        self,
        tape: Tape | None = None,
        simulator: Simulator | None = None,
        speed: float | None = 1.0,
        loop: bool = False,
        skip_ids: list[tuple[str, int, int]] | None = None,
        offset_ms: int = 0,
    ) -> None:
        if (tape is None) == (simulator is None):
            raise ValueError("a timeline replays a tape or runs a simulator")
        self.tape = tape
        self.sim = simulator
        self.symbols = tape.symbols if tape else simulator.symbols  # type: ignore[union-attr]
        self.speed = speed
        self.loop = loop
        self.wall0: float | None = None
        self.high_water = 0  # furthest position any session has sent
        self.skip = [(self.symbols.index(s), a, b) for s, a, b in skip_ids or [] if s in self.symbols]
        if tape is not None:
            self.n = len(tape)
            self.span = tape.span_ms
            self.msg_span, self.under_span = tape.id_spans()
            self.book_span = tape.book_spans()
            self.has_books = tape.has_books
        else:
            self.n = 0
            self.has_books = False
            self.sim_chunks: list[dict[str, np.ndarray]] = []
            self.sim_bases: list[int] = []
            self.sim_until = 0  # ms generated so far (exclusive)
        # A looped tape may start `offset_ms` into its endless sequence (times and ids shifted
        # on), e.g. at the wall clock, so a restarted demo sends ids the store has not seen.
        self.offset_ms = offset_ms if (tape is not None and loop) else 0
        self.base = 0
        if self.offset_ms:
            ts = tape.cols["ts_ms"]  # type: ignore[union-attr]
            k0, rest = divmod(self.offset_ms, self.span)
            self.base = k0 * self.n + int(np.searchsorted(ts, int(ts[0]) + rest, side="left"))
        self.high_water = self.base

    def start(self, now: float) -> None:
        if self.wall0 is None:
            self.wall0 = now
            if self.sim is not None:
                self.sim_until = int(time.time() * 1000)

    @property
    def finite_total(self) -> int | None:
        return self.n if (self.tape is not None and not self.loop) else None

    def due_position(self, now: float) -> int:
        """First position not yet due at monotonic time `now`."""
        self.start(now)
        if self.sim is not None:
            self._simulate_until(int(time.time() * 1000))
            return self.sim_bases[-1] + len(self.sim_chunks[-1]["ts_ms"]) if self.sim_chunks else 0
        if self.speed is None:
            return self.n if not self.loop else 1 << 62
        ts = self.tape.cols["ts_ms"]  # type: ignore[union-attr]
        due_ts = int(ts[0]) + self.offset_ms + int((now - self.wall0) * 1000 * self.speed)  # type: ignore[operator]
        k = (due_ts - int(ts[0])) // self.span
        if not self.loop:
            return self.n if k >= 1 else int(np.searchsorted(ts, due_ts, side="right"))
        return k * self.n + int(np.searchsorted(ts, due_ts - k * self.span, side="right"))

    def oldest_position(self) -> int:
        """The oldest position still held (a simulation keeps only the last 15 s)."""
        return self.sim_bases[0] if self.sim is not None and self.sim_bases else self.base

    def next_due_in(self, pos: int, now: float) -> float:
        """Seconds until position `pos` is due (for sleeping between sends)."""
        if self.sim is not None or self.speed is None or self.wall0 is None:
            return 0.005
        if not self.loop and pos >= self.n:
            return 0.25
        ts = self.tape.cols["ts_ms"]  # type: ignore[union-attr]
        k, i = divmod(pos, self.n)
        due_ts = int(ts[i]) + k * self.span
        return max(0.0, (due_ts - int(ts[0]) - self.offset_ms) / 1000 / self.speed - (now - self.wall0))

    def _simulate_until(self, now_ms: int) -> None:
        assert self.sim is not None
        while self.sim_until < now_ms:
            t1 = min(now_ms, self.sim_until + 1_000)
            chunk = self.sim.generate(self.sim_until, t1)
            base = self.sim_bases[-1] + len(self.sim_chunks[-1]["ts_ms"]) if self.sim_chunks else 0
            self.sim_chunks.append(chunk)
            self.sim_bases.append(base)
            self.sim_until = t1
        # Keep 15 s (memory at 100k trades/s): a client further behind has lost the data, as on Binance.
        while len(self.sim_chunks) > 2:
            ts = self.sim_chunks[0]["ts_ms"]
            if ts.size and now_ms - int(ts[-1]) <= 15_000:
                break
            self.sim_chunks.pop(0)
            self.sim_bases.pop(0)

    def rows(self, start: int, end: int) -> Rows | None:
        """Rows from `start` towards `end` (possibly fewer: one loop or chunk at a time)."""
        if end <= start:
            return None
        if self.sim is not None:
            if not self.sim_chunks:
                return None
            start = max(start, self.sim_bases[0])
            i = int(np.searchsorted(self.sim_bases, start, side="right")) - 1
            base, chunk = self.sim_bases[i], self.sim_chunks[i]
            lo, hi = start - base, min(end - base, len(chunk["ts_ms"]))
            if hi <= lo:
                return None
            sl = {k: v[lo:hi] for k, v in chunk.items()}
            return Rows(start=start, end=base + hi, raw=None, live_event_time=True, **sl)
        assert self.tape is not None
        k, i = divmod(start, self.n)
        if not self.loop and k >= 1:
            return None
        j = min(self.n, i + (end - start))
        c = {name: v[i:j] for name, v in self.tape.cols.items()}
        raw = self.tape.raw[i:j]
        if k:
            sym = c["sym"]
            c["ts_ms"] = c["ts_ms"] + k * self.span
            c["event_ms"] = c["event_ms"] + k * self.span
            if self.has_books:
                # Book rows carry update ids (u, U, pu) in the id columns: shifted by the book's span.
                trade = c["kind"] <= AGG
                book = k * self.book_span[sym]
                c["trade_id"] = c["trade_id"] + np.where(trade, k * self.msg_span[sym], book)
                c["first_id"] = c["first_id"] + np.where(trade, k * self.under_span[sym], book)
                last = c["last_id"]
                c["last_id"] = last + np.where(trade, k * self.under_span[sym], np.where(last >= 0, book, 0))
            else:
                c["trade_id"] = c["trade_id"] + k * self.msg_span[sym]
                c["first_id"] = c["first_id"] + k * self.under_span[sym]
                c["last_id"] = c["last_id"] + k * self.under_span[sym]
            raw = None
        return Rows(start=start, end=k * self.n + j, raw=raw, loop=k, tape_start=i, **c)

    def keep_mask(self, rows: Rows) -> np.ndarray | None:
        """False for rows inside a requested skip range (None: keep all)."""
        if not self.skip:
            return None
        keep = np.ones(len(rows.ts_ms), dtype=bool)
        trade = rows.kind <= AGG  # the ranges are trade ids; book rows carry update ids
        for s, a, b in self.skip:
            keep &= ~((rows.sym == s) & (rows.trade_id >= a) & (rows.trade_id <= b) & trade)
        return keep

    def split(self, pos: int) -> tuple[int, int]:
        """(loop pass, tape index) of a position of a replayed tape."""
        k, i = divmod(pos, self.n)
        if not self.loop and k >= 1:
            return 0, self.n
        return k, i

    def current_position(self, now: float, connected: bool) -> int:
        """The replay position the market is at: the furthest any connection has been sent (what the
        feed has published), or with none connected what is due (paced; max speed: where the last one got to)."""
        if self.speed is None or connected:
            return self.high_water
        return self.due_position(now)
