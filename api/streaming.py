"""Streamed answers (exports) that fail the way a client can see.

A streamed body's status line is sent before its last chunk is read, so a failure
after the first byte cannot become a 503 any more. `guarded` makes it end as an
error instead: it names the failure on the API's stderr and re-raises, and the
server then closes the connection without the chunked terminator (HTTP/1.1), which
every client reports as an incomplete body, never as a clean 200 with the rows cut
off. `prefetched` reads the first chunk before the status line, so a store that
cannot be read at all is still a 503.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from itertools import chain
from typing import TypeVar

T = TypeVar("T")


class StreamAborted(RuntimeError):
    """A streamed answer stopped part way; the connection is closed to say so."""


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """`items` with its first element already read (here: still inside the request's error handling)."""
    first = next(items, None)
    return items if first is None else chain([first], items)


def guarded(chunks: Iterator[bytes], what: str, on_error: Callable[[], None] | None = None) -> Iterator[bytes]:
    sent = 0
    try:
        for chunk in chunks:
            sent += len(chunk)
            yield chunk
    except Exception as e:
        print(
            f"[ticklens] {what} failed mid-stream after {sent:,} bytes: {type(e).__name__}: {e};"
            " closing the connection so the client sees an incomplete answer",
            file=sys.stderr,
            flush=True,
        )
        if on_error is not None:
            on_error()
        raise StreamAborted(f"{what} failed mid-stream: {e}") from None
