"""The replay's read-ahead thread hands over every block in order, passes errors on, and stops when dropped."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator

import pytest

from ticklens.ingest.replay import Prefetch


def _threads() -> int:
    return sum(t.name == "replay-prefetch" for t in threading.enumerate())


def _wait_for(cond, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_items_arrive_in_order_and_the_end_is_final() -> None:
    p = Prefetch(iter([(k, k * 10) for k in range(50)]))  # type: ignore[arg-type]
    assert list(p) == [(k, k * 10) for k in range(50)]
    with pytest.raises(StopIteration):
        next(p)


def test_an_error_in_the_source_reaches_the_reader_after_the_items_before_it() -> None:
    def source() -> Iterator[tuple[int, int]]:
        yield (1, 1)
        yield (2, 2)
        raise ValueError("bad block at row 7")

    p = Prefetch(source())  # type: ignore[arg-type]
    assert next(p) == (1, 1)
    assert next(p) == (2, 2)
    with pytest.raises(ValueError, match="bad block at row 7"):
        next(p)
    with pytest.raises(ValueError):  # and stays raised
        next(p)


def test_dropping_it_mid_stream_stops_the_thread() -> None:
    before = _threads()
    p = Prefetch(iter([(k, k) for k in range(1_000)]))  # type: ignore[arg-type]
    assert next(p) == (0, 0)
    assert _wait_for(lambda: _threads() == before + 1)  # blocked, one item ahead
    del p
    gc.collect()
    assert _wait_for(lambda: _threads() == before), "the read-ahead thread outlived its reader"
