"""The writes the dataflow makes into SQLite: one transaction per epoch's `StoreBatch`."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from storage.port import StoreBatch, StoreWriteError
from storage.sqlite.analytics import analytics_rows
from storage.sqlite.connection import connect
from storage.sqlite.micro import micro_params, write_micro
from storage.sqlite.rules import insert_events
from storage.sqlite.sql import insert_flat
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.bars import BAR_COLUMNS, DERIVED, FIRST_KEY, LAST_KEY, MERGE_RULES
from ticklens.domain.records import COLUMNS as TRADE_COLUMNS
from ticklens.domain.records import Trades
from ticklens.domain.times import now_ms

_BAR_PLACEHOLDERS = ",".join("?" * (len(BAR_COLUMNS) + 1))
_BAR_HEAD = f"INSERT OR REPLACE INTO bars({','.join(BAR_COLUMNS)},updated_ms)"


def _merge_sql() -> str:
    """The late-trade upsert, generated from the domain's merge rule (`ticklens.domain.bars.MERGE_RULES`)."""

    def before(key: tuple[str, str], op: str) -> str:
        (t, i), x = key, "excluded."
        return f"({x}{t} {op} {t} OR ({x}{t} = {t} AND {x}{i} {op} {i}))"

    def merged(name: str) -> str:
        rule = MERGE_RULES[name]
        if rule == "sum":
            return f"{name} + excluded.{name}"
        if rule in ("max", "min"):
            return f"{rule.upper()}({name}, excluded.{name})"
        cond = before(FIRST_KEY, "<") if rule == "first" else before(LAST_KEY, ">")
        return f"CASE WHEN {cond} THEN excluded.{name} ELSE {name} END"

    sets = [f"{name} = {merged(name)}" for name in MERGE_RULES]
    sets += [f"{col} = ({merged(units)}) / {float(scale)}" for col, (units, scale) in DERIVED.items()]
    vol, quote = DERIVED["volume"], DERIVED["quote_volume"]
    sets.append(f"vwap = (({merged(quote[0])}) / {float(quote[1])}) / (({merged(vol[0])}) / {float(vol[1])})")
    sets += ["revision = revision + 1", "closed = 1", "origin = 'flow'", "updated_ms = excluded.updated_ms"]
    return (
        f"INSERT INTO bars({','.join(BAR_COLUMNS)},updated_ms) VALUES({_BAR_PLACEHOLDERS})"
        " ON CONFLICT(symbol, timeframe, start_ms) DO UPDATE SET " + ",\n  ".join(sets)
    )


# A late trade for a bar no longer held in memory is folded into the stored bar.
_BAR_MERGE = _merge_sql()

_GAP_UPSERT = (
    "INSERT INTO gaps(symbol, from_id, to_id, after_ts, detected_ms, filled_ms, status)"
    " VALUES(?,?,?,?,?,?,?) ON CONFLICT(symbol, from_id) DO UPDATE SET"
    " to_id=excluded.to_id,"
    " filled_ms=COALESCE(gaps.filled_ms, excluded.filled_ms),"
    # Two reporters (the source's backfill, the dedup step) may tell the same gap
    # in any order: filled outranks unfillable, which outranks open.
    " status=CASE WHEN gaps.status='filled' OR excluded.status='filled' THEN 'filled'"
    " WHEN gaps.status='unfillable' OR excluded.status='unfillable' THEN 'unfillable'"
    " ELSE excluded.status END"
)
_TICK_COLUMNS = ("symbol", *TRADE_COLUMNS)
_TICK_HEAD = f"INSERT OR IGNORE INTO ticks({','.join(_TICK_COLUMNS)})"


@dataclass(slots=True)
class TickParams:
    """Ticks as one flat parameter list in `ticks` column order (no row tuples).

    The sink builds it on the flow's thread, so the writer thread only binds and inserts.
    """

    flat: list[object]

    @classmethod
    def of(cls, batches: Iterable[Trades]) -> TickParams:
        width = len(_TICK_COLUMNS)
        flat: list[object] = []
        for t in batches:
            n = len(t)
            if not n:
                continue
            part: list[object] = [None] * (n * width)
            part[0::width] = [t.symbol] * n
            done: list[tuple[np.ndarray, list]] = []
            for j, name in enumerate(TRADE_COLUMNS, start=1):
                col = getattr(t, name)
                # A trade's first/last id and event/receive times often repeat its id and time:
                # one Python list for equal columns (tolist is most of the cost here).
                same = next((v for a, v in done if a.dtype == col.dtype and np.array_equal(a, col)), None)
                values = same if same is not None else col.tolist()  # bools bind as 0/1
                done.append((col, values))
                part[j::width] = values
            flat += part
        return cls(flat)


@dataclass(slots=True)
class _Prepared:
    ts: int
    ticks: TickParams
    bars: list[object]  # flat, BAR_COLUMNS + updated_ms per bar
    merges: list[tuple]
    rejects: list[tuple]
    gaps: list[tuple]
    analytics: list[tuple[str, list[tuple]]]  # (INSERT head, rows)
    alerts: list[AlertFired]
    status: list[tuple]
    micro: tuple[list[object], list[object]]  # flat micro_bars and vpin parameters


def insert_ticks(conn: sqlite3.Connection, ticks: TickParams) -> None:
    """A tick already stored (same symbol and id) is skipped."""
    insert_flat(conn, _TICK_HEAD, len(_TICK_COLUMNS), ticks.flat)


class SqliteWriter:
    """Batched, transactional writes of the dataflow's outputs (`StoreWriter` of the port)."""

    def __init__(self, path: Path | str, max_size_mb: int | None = None, cache_mb: int = 64) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        self.conn.execute(f"PRAGMA cache_size={-int(cache_mb) * 1024}")
        # Checkpoint the WAL every ~40 MB rather than every 4 MB: fewer stalls in bulk ingest.
        self.conn.execute("PRAGMA wal_autocheckpoint=2500")
        if max_size_mb is not None:
            page = self.conn.execute("PRAGMA page_size").fetchone()[0]
            self.conn.execute(f"PRAGMA max_page_count={int(max_size_mb * 1024 * 1024 // page)}")
        self.conn.isolation_level = None  # explicit BEGIN/COMMIT

    def prepare(self, batch: StoreBatch) -> _Prepared:
        """Rows and flat parameter lists, built on the flow's thread (bars are copied by value here,
        so the flow may go on changing them while the writer thread inserts)."""
        ts = now_ms()
        # One row per bar: a batch may touch the same bar several times; the later value wins.
        latest = {(b.symbol, b.timeframe, b.start_ms): b for b in batch.bars}
        return _Prepared(
            ts=ts,
            ticks=TickParams.of(batch.ticks),
            bars=[v for b in latest.values() for v in (*b.row(), ts)],
            merges=[(*b.row(), ts) for b in batch.bar_merges],
            rejects=[(r.recv_ms, r.reason, r.source, r.raw) for r in batch.rejects],
            gaps=[
                (g.symbol, g.from_id, g.to_id, g.after_ts, ts, ts if g.status == "filled" else None, g.status)
                for g in batch.gaps
            ],
            analytics=analytics_rows(batch, ts),
            alerts=list(batch.alerts),
            status=[(k, orjson.dumps(v).decode(), ts) for k, v in batch.status.items()] if batch.status else [],
            micro=micro_params(batch.micro_bars, batch.vpin, ts),
        )

    def write(self, prepared: _Prepared) -> list[AlertFired]:
        """All of one dataflow batch in one transaction: a crash leaves none of it.

        Returns the webhook alert triggers not stored before (a replay finds the rest already there).
        """
        p = prepared
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            insert_ticks(c, p.ticks)
            insert_flat(c, _BAR_HEAD, len(BAR_COLUMNS) + 1, p.bars)
            c.executemany(_BAR_MERGE, p.merges)
            c.executemany("INSERT INTO rejects(recv_ms, reason, source, raw) VALUES(?,?,?,?)", p.rejects)
            c.executemany(_GAP_UPSERT, p.gaps)
            fresh = insert_events(c, p.alerts, p.ts) if p.alerts else []
            for head, rows in p.analytics:
                if rows:
                    insert_flat(c, head, len(rows[0]), [v for r in rows for v in r])
            write_micro(c, *p.micro)
            c.executemany("INSERT OR REPLACE INTO status(key, value, updated_ms) VALUES(?,?,?)", p.status)
            c.execute("COMMIT")
        except BaseException as e:
            if c.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # a failing disk may refuse this too
                    c.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StoreWriteError(
                    f"store {self.path} cannot be written ({e}); the last batch was rolled back whole,"
                    " everything before it is stored"
                ) from e
            raise
        return fresh

    def close(self) -> None:
        self.conn.close()
