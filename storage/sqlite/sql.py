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


def chunk_statements(conn: sqlite3.Connection, head: str, width: int) -> tuple[tuple[int, str], ...]:
    """(rows, `head VALUES (…),(…)…` of that many rows) for `width` parameters a row, most rows first,
    the ones that fit SQLite's limit on parameters (the C tick insert takes the same statements)."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    return tuple((rows, _values_sql(head, width, rows)) for rows in _CHUNK_ROWS if rows <= limit)


def insert_flat(conn: sqlite3.Connection, head: str, width: int, flat: list[object]) -> None:
    """`head VALUES (…),(…)` over `flat`: the rows' parameters one after another, `width` per row."""
    pos, end = 0, len(flat)
    for rows, sql in chunk_statements(conn, head, width):
        step = rows * width
        stop = pos + (end - pos) // step * step
        if stop > pos:
            conn.executemany(sql, [flat[i : i + step] for i in range(pos, stop, step)])
            pos = stop
