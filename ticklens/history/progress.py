"""The download's progress bar (rich): files done of all, bytes, rate, time left.

Shown only when stdout is a terminal; a pipe or a log file gets the summary alone.
"""

from __future__ import annotations

import time
from collections import deque

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichBar

from ticklens.history.download import Outcome, Progress

RATE_WINDOW_S = 5.0


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class BarProgress(Progress):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.bar = RichBar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files  {task.fields[volume]}  {task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task = self.bar.add_task("download", total=None, volume="0 B", rate="", start=False)
        self.total_bytes = 0
        self.samples: deque[tuple[float, int]] = deque()
        self.shown = 0.0

    def start(self, files: int) -> None:
        self.bar.update(self.task, total=files)
        self.bar.start_task(self.task)
        self.bar.start()

    def more(self, files: int) -> None:
        task = self.bar.tasks[0]
        self.bar.update(self.task, total=(task.total or 0) + files)

    def received(self, n: int) -> None:
        self.total_bytes += n
        now = time.monotonic()
        if now - self.shown < 0.2:  # a field update per chunk would cost more than the chunk
            return
        self.shown = now
        self.samples.append((now, self.total_bytes))
        while self.samples and now - self.samples[0][0] > RATE_WINDOW_S:
            self.samples.popleft()
        t0, b0 = self.samples[0]
        rate = (self.total_bytes - b0) / (now - t0) if now > t0 else 0.0
        self.bar.update(self.task, volume=human_bytes(self.total_bytes), rate=f"{human_bytes(rate)}/s")

    def done(self, outcome: Outcome) -> None:
        self.bar.update(self.task, advance=1, volume=human_bytes(self.total_bytes))

    def stop(self) -> None:
        self.bar.stop()
