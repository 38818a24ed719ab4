"""Dependencies shared by every router: settings, the store, request parameters.

The store is opened read-only (WAL: readers never block the flow's writer) from
a small pool; a store that does not exist yet is created first so the API can
start before the flow.
"""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path as FsPath
from typing import Annotated, Any

import orjson
from fastapi import Depends, HTTPException, Path, Query, Request, Response

from storage.sqlite import reader as queries
from storage.sqlite.writer import connect
from ticklens.config import Config, load_config
from ticklens.domain.symbols import normalise_symbol
from ticklens.domain.times import parse_time

SYMBOL_PATTERN = r"^[A-Za-z0-9]{2,30}$"
MAX_LIMIT = 100_000


class Store:
    """The store file and a pool of read-only connections to it."""

    def __init__(self, path: FsPath) -> None:
        self.path = path
        if not path.exists():
            connect(path).close()  # creates the schema
        self._free: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()

    def acquire(self) -> sqlite3.Connection:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            return connect(self.path, readonly=True)

    def release(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.rollback()
        self._free.put(conn)

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        conn = self.acquire()
        try:
            yield conn
        finally:
            self.release(conn)

    def close(self) -> None:
        while True:
            try:
                self._free.get_nowait().close()
            except queue.Empty:
                return


class Settings:
    """What the app was started with: the active config and where it came from."""

    def __init__(self, cfg: Config | None = None) -> None:
        self.cfg = cfg or load_config()
        self.store = Store(self.cfg.store.path)


async def get_state(request: Request) -> Settings:
    return request.app.state.ticklens


async def get_settings(request: Request) -> Config:
    """The active configuration (`ticklens.config.load_config()`, TICKLENS_CONFIG honoured)."""
    return request.app.state.ticklens.cfg


async def get_store(request: Request) -> Store:
    return request.app.state.ticklens.store


async def get_conn(request: Request) -> AsyncIterator[sqlite3.Connection]:
    """A read-only connection to the store for the length of one request.

    Async so it runs on the event loop (no thread hop): taking a pooled connection does not block.
    """
    store: Store = request.app.state.ticklens.store
    conn = store.acquire()
    try:
        yield conn
    finally:
        store.release(conn)


Conn = Annotated[sqlite3.Connection, Depends(get_conn)]
Cfg = Annotated[Config, Depends(get_settings)]
State = Annotated[Settings, Depends(get_state)]


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON built straight from rows (orjson), skipping per-row model validation on hot paths."""
    return Response(orjson.dumps(body), status_code=status_code, headers=headers, media_type="application/json")


def param_error(where: str, name: str, msg: str, value: Any = None) -> HTTPException:
    """A 422 in FastAPI's own validation-error shape, naming the parameter."""
    return HTTPException(
        status_code=422,
        detail=[{"type": "value_error", "loc": [where, name], "msg": f"{name}: {msg}", "input": value}],
    )


async def symbol_path(
    symbol: Annotated[str, Path(pattern=SYMBOL_PATTERN, description="Symbol, any case: `btcusdt`, `BTCUSDT`")],
) -> str:
    return normalise_symbol(symbol)


SymbolPath = Annotated[str, Depends(symbol_path)]

_TIME_DOC = "ISO-8601 (`2024-07-18T23:59:00Z`; no zone means UTC) or epoch milliseconds"


async def time_range(
    start: Annotated[str | None, Query(description=f"Inclusive start: {_TIME_DOC}", max_length=40)] = None,
    end: Annotated[str | None, Query(description=f"Exclusive end: {_TIME_DOC}", max_length=40)] = None,
) -> tuple[int | None, int | None]:
    """Parses `start`/`end`; a bad one is a 422 naming it."""
    out: list[int | None] = []
    for name, text in (("start", start), ("end", end)):
        if text is None:
            out.append(None)
            continue
        try:
            out.append(parse_time(text))
        except ValueError as e:
            raise param_error("query", name, str(e), text) from None
    s, e = out
    if s is not None and e is not None and e <= s:
        raise param_error("query", "end", "must be after start", end)
    return s, e


TimeRange = Annotated[tuple[int | None, int | None], Depends(time_range)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many rows, 1 … 100,000 (the newest ones)")]


def configured_symbols(state: Settings) -> set[str]:
    """Symbols of the active config plus those of a flow the API started."""
    syms = set(state.cfg.symbols)
    sup = getattr(state, "supervisor", None)
    if sup is not None:
        syms |= set(sup.flow_symbols())
    return syms


def require_symbol(state: Settings, conn: sqlite3.Connection, symbol: str) -> str:
    """'ok' if the store has data; 'no_data' if configured but empty; else 404."""
    if queries.has_data(conn, symbol):
        return "ok"
    if symbol in configured_symbols(state):
        return "no_data"
    raise HTTPException(404, f"unknown symbol {symbol!r}: not configured and no data stored")
