"""The tick insert into `tick_rows`: numpy columns inserted in C with the GIL released, or flat
parameter lists bound by Python's sqlite3 where the C insert cannot be used.

Both store the same rows (`INSERT OR IGNORE` on (symbol id, trade id), the compact schema v4
columns of docs/store.md) inside the writer's transaction. Which one a writer takes is decided once,
when it opens its connection (`c_insert_unusable`): the C insert (`_tickinsert.c`) reaches into
CPython's connection object and calls the libsqlite3 the `sqlite3` module uses, so it is used only
when both checks pass; `TICKLENS_SQLITE_C_TICKS=0` takes Python's binding (benchmarks, diagnosis).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.sqlite.sql import chunk_statements, insert_flat
from ticklens.domain.records import Trades

try:
    from storage.sqlite import _tickinsert
except ImportError as e:  # not built, or not this interpreter's sqlite3 (the reason is the message)
    _tickinsert = None
    _UNBUILT = str(e)

log = logging.getLogger(__name__)
_SWITCHED_OFF = "TICKLENS_SQLITE_C_TICKS=0"  # the user's choice: no warning

# tick_rows columns (schema v4): the four that are 0 for most trades are left out of a batch where they all are.
TICK_BASE = ("sym", "trade_id", "ts_ms", "price", "qty", "is_buyer_maker")
TICK_OPTIONAL = ("first_off", "last_span", "event_lag", "recv_lag")


def _derived(t: Trades) -> dict[str, np.ndarray]:
    return {
        "first_off": t.trade_id - t.first_id,
        "last_span": t.last_id - t.first_id,
        "event_lag": t.event_ms - t.ts_ms,
        "recv_lag": t.recv_ms - t.ts_ms,
    }


def _columns(batches: Iterable[Trades]) -> tuple[tuple[str, ...], list[tuple[Trades, dict[str, np.ndarray]]]]:
    parts = [(t, _derived(t)) for t in batches if len(t)]
    optional = tuple(c for c in TICK_OPTIONAL if any(d[c].any() for _, d in parts))
    return (*TICK_BASE, *optional), parts


def _head(columns: tuple[str, ...]) -> str:
    return f"INSERT OR IGNORE INTO tick_rows({','.join(columns)})"


@dataclass(slots=True)
class TickParams:
    """Ticks as one flat parameter list in `columns` order (no row tuples), for Python's binding.

    The sink builds it on the flow's thread, so the writer thread only binds and inserts. A symbol
    without an id yet has its name in its `sym` slots (listed in `unknown`): the writer gives it an
    id and fills them in before the insert.
    """

    columns: tuple[str, ...]
    flat: list[object]
    unknown: list[tuple[str, slice]]

    @classmethod
    def of(cls, batches: Iterable[Trades], ids: dict[str, int] | None = None) -> TickParams:
        ids = ids or {}
        columns, parts = _columns(batches)
        optional = columns[len(TICK_BASE) :]
        width = len(columns)
        flat: list[object] = []
        unknown: list[tuple[str, slice]] = []
        for t, derived in parts:
            n = len(t)
            part: list[object] = [None] * (n * width)
            sid = ids.get(t.symbol)
            part[0::width] = [t.symbol if sid is None else sid] * n
            if sid is None:
                unknown.append((t.symbol, slice(len(flat), len(flat) + n * width, width)))
            part[1::width] = t.trade_id.tolist()
            part[2::width] = t.ts_ms.tolist()
            part[3::width] = t.price.tolist()
            part[4::width] = t.qty.tolist()
            part[5::width] = t.is_buyer_maker.tolist()  # bools bind as 0/1
            for j, name in enumerate(optional, start=len(TICK_BASE)):
                part[j::width] = derived[name].tolist()
            flat += part
        return cls(columns, flat, unknown)

    def symbols(self) -> list[str]:
        """The symbols still without an id."""
        return [sym for sym, _ in self.unknown]

    def set_ids(self, ids: dict[str, int]) -> None:
        for sym, slots in self.unknown:
            self.flat[slots] = [ids[sym]] * len(range(*slots.indices(len(self.flat))))
        self.unknown.clear()

    def insert(self, conn: sqlite3.Connection) -> None:
        """A tick already stored (same symbol and id) is skipped. Every `sym` slot must hold an id."""
        if self.flat:
            insert_flat(conn, _head(self.columns), len(self.columns), self.flat)


@dataclass(slots=True)
class TickColumns:
    """Ticks as numpy columns, one group per symbol batch, for the C insert (no Python lists at all).

    `parts` holds (symbol, its id or None, the arrays of `columns[1:]`). The arrays are the batch's
    own (the flow never changes a `Trades` array in place) or derived from them; a symbol without
    an id yet gets one from the writer before the insert, as with `TickParams`.
    """

    columns: tuple[str, ...]
    parts: list[tuple[str, int | None, tuple[np.ndarray, ...]]]

    @classmethod
    def of(cls, batches: Iterable[Trades], ids: dict[str, int] | None = None) -> TickColumns:
        ids = ids or {}
        columns, found = _columns(batches)
        parts = []
        kinds = (np.int64, np.int64, np.float64, np.float64, np.bool_) + (np.int64,) * (len(columns) - len(TICK_BASE))
        for t, derived in found:
            base = (t.trade_id, t.ts_ms, t.price, t.qty, t.is_buyer_maker)
            arrays = (*base, *(derived[c] for c in columns[len(TICK_BASE) :]))
            # No copy when a column already is what the C loop reads (contiguous int64, float64, bool).
            own = tuple(np.ascontiguousarray(a, dtype=k) for a, k in zip(arrays, kinds, strict=True))
            parts.append((t.symbol, ids.get(t.symbol), own))
        return cls(columns, parts)

    def symbols(self) -> list[str]:
        return [sym for sym, sid, _ in self.parts if sid is None]

    def set_ids(self, ids: dict[str, int]) -> None:
        self.parts = [(sym, ids[sym] if sid is None else sid, arrays) for sym, sid, arrays in self.parts]

    def insert(self, conn: sqlite3.Connection) -> None:
        """Each batch in one call of the C loop, in the statements `insert_flat` uses; a tick already
        stored is skipped. Ids must be set."""
        assert _tickinsert is not None
        statements = chunk_statements(conn, _head(self.columns), len(self.columns))
        for _, sid, arrays in self.parts:
            _tickinsert.insert(conn, statements, sid, arrays)


def c_insert_unusable(conn: sqlite3.Connection, path: Path) -> str | None:
    """Why the C insert cannot be used on `conn`, the writer's connection to `path`; None when it can.

    The handle the extension reads from the connection object must name the file the writer
    opened: anything else means CPython's layout is not the one it was written for.
    """
    if os.environ.get("TICKLENS_SQLITE_C_TICKS", "1") == "0":
        return _SWITCHED_OFF
    if _tickinsert is None:
        return f"storage.sqlite._tickinsert cannot be imported ({_UNBUILT})"
    if sys.version_info[:2] not in ((3, 11), (3, 12), (3, 13)):
        return f"built for CPython 3.11-3.13, running {sys.version.split()[0]}"
    opened = os.path.realpath(path)
    named = _tickinsert.filename(conn)
    if named != opened:
        return f"the connection's handle names {named!r}, the writer opened {opened!r}"
    return None


def use_c_insert(conn: sqlite3.Connection, path: Path) -> bool:
    """Whether this writer inserts ticks in C; the reason is logged when it does not."""
    why = c_insert_unusable(conn, path)
    if why is not None and why != _SWITCHED_OFF:
        log.warning("store %s: ticks are inserted through Python's sqlite3, not in C: %s", path, why)
    return why is None
