"""The archive downloader: bounded parallel, verified, resumable, streamed to disk.

Each file: its `.CHECKSUM` first (a 404 there or on the zip means the day is missing: listed,
not fatal), then the zip streamed into `<name>.part` while hashing, so memory stays constant and
nothing is read twice. A complete, matching part is renamed to its final name (atomic on one
file system) after the `.CHECKSUM` is written beside it, and only then recorded in the manifest:
a final name always means verified. A mismatch deletes the part and downloads once more; a second
mismatch is a failure naming the file. An interrupted transfer (timeout, reset, a body shorter
than its Content-Length, a killed process) leaves the part, which the next attempt or run resumes
with an HTTP Range request; a resumed file is hashed whole, so resuming cannot hide corruption.

5xx, 429/418, timeouts and transport errors are retried with exponential backoff and jitter
(Retry-After honoured); other 4xx fail the file at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import httpx

from ticklens.history.checksums import MAX_CHECKSUM_BYTES, checksum_line, parse_checksum, sha256_file
from ticklens.history.manifest import Entry, Manifest
from ticklens.ingest.archive import ArchiveFile, Plan

Status = Literal["downloaded", "skipped", "missing", "failed"]
RETRY_STATUS = {418, 429, 500, 502, 503, 504}
T = TypeVar("T")


@dataclass(slots=True)
class Settings:
    base_url: str
    root: Path
    parallel: int = 4
    timeout_s: float = 30.0  # per connect / read / write: a stalled transfer is retried, not waited on
    attempts: int = 5  # per request, transient errors only
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    recheck: bool = False  # ask the archive for every checksum again (Binance does replace files)


@dataclass(slots=True)
class Outcome:
    file: ArchiveFile
    status: Status
    bytes: int = 0  # bytes received for this file in this run
    reason: str = ""


@dataclass(slots=True)
class Report:
    outcomes: list[Outcome]
    elapsed_s: float
    not_yet: list = field(default_factory=list)

    def of(self, status: Status) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.outcomes)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.of("failed")


class Missing(Exception):
    """The archive has no such file (404)."""


class Failed(Exception):
    """The file could not be fetched or verified; the message says why."""


class RangeRefused(Exception):
    """416: the part on disk is not a prefix of the remote file."""


class Progress:
    """What the downloader tells a progress display; the default shows nothing."""

    def start(self, files: int) -> None: ...
    def more(self, files: int) -> None: ...  # a monthly file became its days
    def received(self, n: int) -> None: ...
    def done(self, outcome: Outcome) -> None: ...
    def stop(self) -> None: ...


class Downloader:
    def __init__(self, settings: Settings, progress: Progress | None = None, rng: random.Random | None = None) -> None:
        self.s = settings
        self.progress = progress or Progress()
        self.rng = rng or random.Random()
        self.manifest = Manifest(settings.root)
        self.slots = asyncio.Semaphore(settings.parallel)
        self.client: httpx.AsyncClient | None = None

    async def run(self, plan: Plan) -> Report:
        t0 = time.monotonic()
        timeout = httpx.Timeout(self.s.timeout_s, connect=min(10.0, self.s.timeout_s))
        limits = httpx.Limits(max_connections=self.s.parallel, max_keepalive_connections=self.s.parallel)
        self.progress.start(len(plan.files))
        try:
            async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=True) as client:
                self.client = client
                results = await asyncio.gather(*(self._file(f) for f in plan.files))
        finally:
            self.progress.stop()
        outcomes = sorted((o for r in results for o in r), key=lambda o: o.file)
        return Report(outcomes, time.monotonic() - t0, list(plan.not_yet))

    def _finish(self, outcome: Outcome) -> list[Outcome]:
        self.progress.done(outcome)
        return [outcome]

    async def _file(self, f: ArchiveFile) -> list[Outcome]:
        final = f.path(self.s.root)
        if f.period == "monthly" and not final.exists():
            days = f.days()
            if all(self.manifest.verified(d.rel, d.path(self.s.root)) for d in days):
                # Fetched day by day before the monthly file existed: keep those, never both.
                self.progress.more(len(days) - 1)
                return [o for d in days for o in self._finish(Outcome(d, "skipped", reason="daily files"))]
        entry = self.manifest.verified(f.rel, final)
        if entry is None and final.exists():
            entry = await asyncio.to_thread(self._verify_local, f, final)
        if entry is not None and not self.s.recheck:
            return self._finish(Outcome(f, "skipped"))
        async with self.slots:
            try:
                digest = await self._checksum(f)
                if entry is not None and entry.sha256 == digest:
                    return self._finish(Outcome(f, "skipped"))
                received = await self._download_verified(f, digest)
                return self._finish(Outcome(f, "downloaded", received))
            except Missing as e:
                missing = Outcome(f, "missing", reason=str(e))
            except Failed as e:
                return self._finish(Outcome(f, "failed", reason=str(e)))
        if f.period == "monthly":
            # Not published (yet, or at all): the month's days one by one, outside our slot.
            self.progress.more(len(f.days()) - 1)
            results = await asyncio.gather(*(self._file(d) for d in f.days()))
            return [o for r in results for o in r]
        return self._finish(missing)

    def _verify_local(self, f: ArchiveFile, final: Path) -> Entry | None:
        """A final-named file without its manifest line: hash it against the `.CHECKSUM` beside it."""
        side = final.with_name(final.name + ".CHECKSUM")
        try:
            want = parse_checksum(side.read_text(), final.name)
        except (OSError, ValueError):
            return None
        got = sha256_file(final)
        if got != want:
            final.unlink()
            return None
        self.manifest.record(f.rel, final, got)
        return self.manifest.verified(f.rel, final)

    async def _download_verified(self, f: ArchiveFile, digest: str) -> int:
        final = f.path(self.s.root)
        part = final.with_name(final.name + ".part")
        final.parent.mkdir(parents=True, exist_ok=True)
        received = 0
        for attempt in (1, 2):
            n, got = await self._download(f, part)
            received += n
            if got == digest:
                side = final.with_name(final.name + ".CHECKSUM")
                tmp = side.with_name(side.name + ".part")
                tmp.write_text(checksum_line(digest, final.name))
                os.replace(tmp, side)
                os.replace(part, final)
                self.manifest.record(f.rel, final, digest)
                return received
            part.unlink(missing_ok=True)
            if attempt == 2:
                raise Failed(f"{f.name}: checksum mismatch twice (expected {digest}, got {got})")
        raise AssertionError("unreachable")

    async def _request(
        self, url: str, headers: Callable[[], dict[str, str]], body: Callable[[httpx.Response], Awaitable[T]]
    ) -> T:
        """GET with retries; `headers` is asked again for every attempt (a resumed part has grown),
        `body` consumes a 200/206 response while it streams."""
        assert self.client is not None
        last = ""
        for attempt in range(self.s.attempts):
            retry_after = 0.0
            try:
                async with self.client.stream("GET", url, headers=headers()) as r:
                    if r.status_code == 404:
                        raise Missing(f"404 {url}")
                    if r.status_code == 416:
                        raise RangeRefused(url)
                    if r.status_code in (200, 206):
                        return await body(r)
                    last = f"HTTP {r.status_code}"
                    if r.status_code not in RETRY_STATUS:
                        raise Failed(f"{url}: {last}")
                    with contextlib.suppress(ValueError):
                        retry_after = float(r.headers.get("Retry-After", 0))
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
            if attempt + 1 < self.s.attempts:
                d = min(self.s.backoff_cap_s, self.s.backoff_base_s * 2**attempt)
                await asyncio.sleep(max(retry_after, d / 2 + self.rng.uniform(0, d / 2)))
        raise Failed(f"{url}: gave up after {self.s.attempts} attempts ({last})")

    async def _checksum(self, f: ArchiveFile) -> str:
        async def body(r: httpx.Response) -> str:
            buf = b""
            async for chunk in r.aiter_bytes():
                buf += chunk
                if len(buf) > MAX_CHECKSUM_BYTES:
                    raise Failed(f"{f.name}.CHECKSUM: longer than {MAX_CHECKSUM_BYTES} bytes")
            try:
                return parse_checksum(buf.decode("utf-8", "replace"), f.name)
            except ValueError as e:
                raise Failed(str(e)) from None

        return await self._request(f.url(self.s.base_url) + ".CHECKSUM", dict, body)

    async def _download(self, f: ArchiveFile, part: Path) -> tuple[int, str]:
        """Fill `part` to the whole file (resuming what is there); (bytes received, sha256 of the whole)."""
        received = 0

        async def body(r: httpx.Response) -> str:
            nonlocal received
            have = part.stat().st_size if part.exists() else 0
            resumed = r.status_code == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {have}-")
            h = hashlib.sha256()
            if resumed:
                await asyncio.to_thread(_hash_into, h, part)
            else:
                have = 0
            expected = r.headers.get("Content-Length")
            got = 0
            with open(part, "ab" if resumed else "wb") as fh:
                async for chunk in r.aiter_bytes():  # as received: a cut transfer keeps all it got
                    fh.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    received += len(chunk)
                    self.progress.received(len(chunk))
            if expected is not None and got != int(expected):
                raise httpx.RemoteProtocolError(f"body {got} bytes, Content-Length {expected}")
            return h.hexdigest()

        def headers() -> dict[str, str]:
            have = part.stat().st_size if part.exists() else 0
            return {"Accept-Encoding": "identity"} | ({"Range": f"bytes={have}-"} if have else {})

        try:
            digest = await self._request(f.url(self.s.base_url), headers, body)
        except RangeRefused:
            part.unlink(missing_ok=True)  # not a prefix of this file: once more from the start
            digest = await self._request(f.url(self.s.base_url), headers, body)
        return received, digest


def _hash_into(h: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as fh:
        while buf := fh.read(1 << 20):
            h.update(buf)


def download(plan: Plan, settings: Settings, progress: Progress | None = None) -> Report:
    """Run the plan to the end (blocking); the report lists every file's outcome."""
    return asyncio.run(Downloader(settings, progress).run(plan))
