"""Ticks as PostgreSQL binary COPY data, built from the batch's numpy columns (no Python loop per row).

Binary COPY is a header, then per row a field count and each field as a length and its
big-endian bytes, then a trailer. A `Trades` batch is one symbol, so every row of it has
the same width: one numpy structured array per batch is the whole encoding.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ticklens.domain.records import COLUMNS, Trades

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
TICK_COLUMNS = ("symbol", *COLUMNS)  # the `ticks` table's column order
# PostgreSQL binary layout of each trade column (bool is one byte).
_WIRE = {
    "trade_id": ">i8",
    "ts_ms": ">i8",
    "price": ">f8",
    "qty": ">f8",
    "is_buyer_maker": "u1",
    "first_id": ">i8",
    "last_id": ">i8",
    "event_ms": ">i8",
    "recv_ms": ">i8",
}


def _row_dtype(symbol_len: int) -> np.dtype:
    fields: list[tuple[str, str]] = [("nfields", ">i2"), ("len_symbol", ">i4"), ("symbol", f"S{symbol_len}")]
    for name in COLUMNS:
        fields += [(f"len_{name}", ">i4"), (name, _WIRE[name])]
    return np.dtype(fields)


def first_copies(batches: Iterable[Trades]) -> list[Trades]:
    """The batches less any trade whose (symbol, id) came earlier in them: the first copy is kept."""
    out: list[Trades] = []
    seen: dict[str, list[np.ndarray]] = {}
    for t in batches:
        if not len(t):
            continue
        ids = t.trade_id
        earlier = seen.setdefault(t.symbol, [])
        dup = np.zeros(len(ids), dtype=bool)
        if earlier:
            dup |= np.isin(ids, np.concatenate(earlier))
        if len(ids) > 1 and not (np.all(ids[1:] > ids[:-1])):
            _, first = np.unique(ids, return_index=True)
            again = np.ones(len(ids), dtype=bool)
            again[first] = False
            dup |= again
        out.append(t.take(np.flatnonzero(~dup)) if dup.any() else t)
        earlier.append(ids)
    return out


def ticks_copy_data(batches: Iterable[Trades]) -> tuple[bytes, int]:
    """(binary COPY data for `ticks` in TICK_COLUMNS order, row count)."""
    parts = [HEADER]
    rows = 0
    for t in batches:
        n = len(t)
        if not n:
            continue
        sym = t.symbol.encode()
        dt = _row_dtype(len(sym))
        a = np.empty(n, dtype=dt)
        a["nfields"] = len(TICK_COLUMNS)
        a["len_symbol"] = len(sym)
        a["symbol"] = sym
        for name in COLUMNS:
            a[f"len_{name}"] = dt[name].itemsize
            a[name] = getattr(t, name)
        parts.append(a.tobytes())
        rows += n
    parts.append(TRAILER)
    return b"".join(parts), rows
