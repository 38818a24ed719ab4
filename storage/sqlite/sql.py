"""Multi-row INSERTs over a flat parameter list: the SQLite backend's fast write path."""

from __future__ import annotations

import functools
import sqlite3

# Multi-row VALUES: one statement step per up to 2,048 rows instead of one per row is ~35 %
# faster than executemany over row tuples, and SQLite releases the GIL for the whole step
# (docs/performance.md). The tail goes in smaller statements.
_CHUNK_ROWS = (2048, 128, 8, 1)


@functools.cache
def _values_sql(head: str, width: int, rows: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return f"{head} VALUES{','.join([one] * rows)}"


def insert_flat(conn: sqlite3.Connection, head: str, width: int, flat: list[object]) -> None:
    """`head VALUES (…),(…)` over `flat`: the rows' parameters one after another, `width` per row."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    pos, end = 0, len(flat)
    for rows in _CHUNK_ROWS:
        if rows > limit:
            continue
        step = rows * width
        stop = pos + (end - pos) // step * step
        if stop > pos:
            conn.executemany(_values_sql(head, width, rows), [flat[i : i + step] for i in range(pos, stop, step)])
            pos = stop
