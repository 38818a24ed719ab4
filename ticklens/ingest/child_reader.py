"""A generator run in a child Python process, its items handed back pickled through a pipe.

The flow's process runs its worker and its store writer under one GIL, so a replay's
reading and parsing (decompressing, one parse per line: the largest part of a book replay)
competes with the flow for one core. Run in a child process it takes the second core; the
flow's process only unpickles what arrives. The child is told which generator to run by
name (`module:function` and its arguments), so it imports only what that needs.

Frames on the child's stdout: 8 bytes of length (little endian), then a pickle of
`(True, item)`, `(False, exception)` (raised to the reader), or `(False, None)` at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gc
import importlib
import io
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_LEN = struct.Struct("<Q")
PIPE_BYTES = 1 << 20  # Linux's default limit for an unprivileged process
AHEAD = 2  # items unpickled and waiting in the reader's process (besides one in the pipe)
CHILD_AHEAD = 64  # pickled items waiting in the child for the pipe (a replay part is ~1-2 MB)
# The package root this code runs from: the child imports the same checkout, whatever it finds first.
_ROOT = str(Path(__file__).resolve().parent.parent.parent)


class ChildIterator(Iterator[Any]):
    """The items of `module:function(*args)`, computed in a child process, read ahead by a thread.

    Memory stays bounded: the child blocks on a full pipe, the reader holds `AHEAD` items.
    `close` (or dropping the iterator) ends the child.
    """

    def __init__(self, target: str, *args: object) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            bufsize=0,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        # A read releases and retakes the GIL, and each retake can wait out a switch interval of
        # the busy flow thread: a large pipe means a block comes in a few reads, not hundreds.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._proc.stdin.write(pickle.dumps((target, args), protocol=pickle.HIGHEST_PROTOCOL))
        self._proc.stdin.close()
        self._queue: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=AHEAD)
        self._stop = threading.Event()
        self._end: BaseException | None = None
        reader = (self._proc.stdout, self._queue, self._stop, self._proc)
        threading.Thread(target=_read, args=reader, name="replay-child-reader", daemon=True).start()

    def __next__(self) -> Any:
        if self._end is not None:
            raise self._end
        ok, item = self._queue.get()
        if ok:
            return item
        self._end = StopIteration() if item is None else item  # type: ignore[assignment]
        self.close()
        raise self._end  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown
            self.close()


def _read_exactly(pipe: IO[bytes], n: int) -> bytearray | None:
    """`n` bytes from the pipe (None at its end), read straight into one buffer."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = pipe.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            return None
        got += k
    return buf


def put_until_stopped(out: queue.Queue[tuple[bool, object]], stop: threading.Event, item: tuple[bool, object]) -> bool:
    """Hand `item` over through the bounded queue; False if the consumer stopped first (then it is dropped)."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _read(
    pipe: IO[bytes], out: queue.Queue[tuple[bool, object]], stop: threading.Event, proc: subprocess.Popen[bytes]
) -> None:
    put = functools.partial(put_until_stopped, out, stop)

    try:
        while not stop.is_set():
            head = _read_exactly(pipe, _LEN.size)
            body = None if head is None else _read_exactly(pipe, _LEN.unpack(head)[0])
            if body is None:
                code = proc.wait()
                put((False, RuntimeError(f"the replay's reader process ended without finishing (exit code {code})")))
                return
            ok, item = pickle.loads(body)
            if not put((ok, item)) or not ok:
                return
    except BaseException as e:  # noqa: BLE001 (handed to the reader, raised there)
        put((False, e))


def _dumps(frame: tuple[bool, object]) -> bytes:
    """The frame pickled without the memo: the items are trees of records, not graphs (a string
    met twice is written twice), and not memoizing every object halves the time to pickle."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(frame)
    return buf.getvalue()


def _frame(frame: tuple[bool, object]) -> bytes:
    """A frame's bytes: its length, then its pickle."""
    try:
        data = _dumps(frame)
    except Exception as e:  # noqa: BLE001 (an exception that does not pickle is still reported)
        data = pickle.dumps((False, RuntimeError(f"{type(frame[1]).__name__}: {frame[1]} ({e})")))
    return _LEN.pack(len(data)) + data


def _pipe_writer(out: IO[bytes], frames: queue.Queue[bytes | None]) -> None:
    """The child's writer thread: frames onto the pipe until the end (None). A closed pipe means
    the parent is gone or done: nothing to report, nor to flush."""
    try:
        while (data := frames.get()) is not None:
            out.write(data)
            out.flush()
    except BrokenPipeError:
        os._exit(0)


def _child() -> None:
    """The child's side: run the generator named on stdin, each item a frame on stdout."""
    # Only the parent ends it (`close`, or the pipe closing when the parent is gone): a Ctrl-C or
    # a SIGTERM to the process group must leave the parent's graceful stop to the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the pipe
    target, args = pickle.loads(sys.stdin.buffer.read())
    # Frames wait here while the pipe is full, so the child keeps parsing while the parent is
    # still starting (its first second is imports): up to CHILD_AHEAD frames.
    frames: queue.Queue[bytes | None] = queue.Queue(maxsize=CHILD_AHEAD)
    writer = threading.Thread(target=_pipe_writer, args=(out, frames), name="child-pipe-writer", daemon=True)
    writer.start()
    try:
        module, _, name = target.partition(":")
        items = getattr(importlib.import_module(module), name)(*args)
        # As the flow's runner does: the collector's full passes over millions of young records
        # would cost more than the parsing (docs/performance.md).
        gc.freeze()
        gc.set_threshold(10_000, 50, 50)
        for item in items:
            frames.put(_frame((True, item)))
        frames.put(_frame((False, None)))
    except BaseException as e:  # noqa: BLE001 (raised in the parent)
        frames.put(_frame((False, e)))
    frames.put(None)
    writer.join()


if __name__ == "__main__":
    _child()
