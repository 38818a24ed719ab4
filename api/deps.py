"""Dependencies shared by every router: the config, a store reader, the rule store, request parameters.

Routers get a `StoreReader` (storage.port), never a connection: which backend
answers is the store's business.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import Depends, HTTPException, Path, Query, Request, Response

from api.book_cache import BookCache
from api.supervisor import FlowSupervisor
from storage.port import RuleStore, Store, StoreReader
from ticklens.config import Config
from ticklens.domain.symbols import SYMBOL_PATTERN, normalise_symbol
from ticklens.domain.timeframes import Timeframe
from ticklens.domain.times import parse_time

MAX_LIMIT = 100_000


@dataclass(slots=True)
class AppState:
    """What the app runs with: the active config, its store backend and the flow supervisor."""

    cfg: Config
    store: Store
    supervisor: FlowSupervisor
    books: BookCache = field(default_factory=BookCache)
    recheck: Callable[[], None] = lambda: None  # ask for a store integrity check soon


async def get_app_state(request: Request) -> AppState:
    return request.app.state.ticklens


async def get_config(request: Request) -> Config:
    """The active configuration (`ticklens.config.load_config()`, TICKLENS_CONFIG honoured)."""
    return request.app.state.ticklens.cfg


async def get_reader(request: Request) -> AsyncIterator[StoreReader]:
    """A store reader for the length of one request (a pooled read-only connection for SQLite).

    Async so it runs on the event loop (no thread hop): taking a pooled connection does not block.
    """
    with request.app.state.ticklens.store.reader() as reader:
        yield reader


async def get_rules(request: Request) -> AsyncIterator[RuleStore]:
    """The rule store (alert CRUD), closed after the request."""
    rules = request.app.state.ticklens.store.rules()
    try:
        yield rules
    finally:
        rules.close()


Reader = Annotated[StoreReader, Depends(get_reader)]
Rules = Annotated[RuleStore, Depends(get_rules)]
Cfg = Annotated[Config, Depends(get_config)]
State = Annotated[AppState, Depends(get_app_state)]


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
TimeframeQuery = Annotated[Timeframe, Query(description="Bar length")]


@dataclass(frozen=True, slots=True)
class SymbolRead:
    """A read of one symbol's data: the symbol (path), the store reader, the app state, [start, end) (query)."""

    symbol: str
    reader: StoreReader
    state: AppState
    start: int | None
    end: int | None

    def status(self) -> str:
        """`require_symbol`: 'ok', 'no_data', or a 404."""
        return require_symbol(self.state, self.reader, self.symbol)

    def newest(self, fetch: Callable[..., list], *args: object, **kwargs: object) -> tuple[str, list]:
        """The status and `fetch(symbol, *args, start, end, **kwargs)`; a symbol without data is not asked for."""
        status = self.status()
        return status, fetch(self.symbol, *args, self.start, self.end, **kwargs) if status == "ok" else []


async def symbol_read(symbol: SymbolPath, reader: Reader, state: State, time_range: TimeRange) -> SymbolRead:
    return SymbolRead(symbol, reader, state, *time_range)


# On the OpenAPI page: the path's symbol, and start and end after the endpoint's own query parameters.
OneSymbol = Annotated[SymbolRead, Depends(symbol_read)]


def status_header(status: str) -> dict[str, str]:
    """The symbol's data status (`ok` or `no_data`) as a response header too."""
    return {"X-Ticklens-Status": status}


def listing(symbol: str, status: str, name: str, rows: list, **head: object) -> Response:
    """A per-symbol listing (api.models._SymbolRows): symbol, `head` (its timeframe), status, count, the rows."""
    body = {"symbol": symbol, **head, "status": status, "count": len(rows), name: rows}
    return json_response(body, headers=status_header(status))


def status_symbols(reader: StoreReader) -> set[str]:
    """Symbols the flow reported on (its per-symbol status rows), running or finished."""
    return {k.split(":", 1)[1] for k in reader.status_docs() if k.startswith("symbol:")}


def configured_symbols(state: AppState, reader: StoreReader) -> set[str]:
    """Symbols of the active config, of a flow the API started, and of the flow's status rows:
    a symbol added through POST /api/v1/start stays known after that flow has finished."""
    return set(state.cfg.symbols) | set(state.supervisor.flow_symbols()) | status_symbols(reader)


def known_symbols(state: AppState, reader: StoreReader) -> set[str]:
    """Configured (as above) or with stored data."""
    return configured_symbols(state, reader) | set(reader.symbols_with_data())


def require_symbol(state: AppState, reader: StoreReader, symbol: str) -> str:
    """'ok' if the store has data; 'no_data' if configured but empty; else 404."""
    if reader.has_data(symbol):
        return "ok"
    if symbol in configured_symbols(state, reader):
        return "no_data"
    raise HTTPException(404, f"unknown symbol {symbol!r}: not configured and no data stored")
