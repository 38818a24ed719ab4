"""How failures answer: 503 naming a store problem, and error bodies that are always valid JSON.

A request may carry NaN or ±Infinity (Python's JSON reader takes `NaN`, `Infinity`
and `1e400`); FastAPI's own handlers echo the input into the 422 body, which strict
JSON cannot hold, and the answer became a 500. These handlers replace every
non-finite number in an error body with null (and write integers orjson cannot hold as text).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from api.deps import json_response
from storage.port import Store, StoreUnavailable


def finite(value: Any) -> Any:
    """`value` with every NaN and infinity inside it (dicts, lists, tuples) replaced by None, and
    integers beyond 64 bits (which orjson cannot write) by their decimal text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def install(app: FastAPI, store: Store, recheck: Callable[[], None]) -> None:
    """The app's exception handlers; `recheck` asks for an integrity check soon (a read just failed)."""

    async def store_unavailable(request: Request, exc: Exception) -> Response:
        last = store.last_check
        if last is not None and not last.ok:
            why = last.problem
        else:
            why = str(exc)
            if not isinstance(exc, StoreUnavailable):
                recheck()  # a driver error: damage, or just a lock; the check tells which
        return json_response({"detail": f"store unavailable: {why}"}, status_code=503)

    for exc in (StoreUnavailable, *store.unavailable_errors):
        app.add_exception_handler(exc, store_unavailable)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return json_response({"detail": finite(jsonable_encoder(exc.errors()))}, status_code=422)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return json_response(
            {"detail": finite(jsonable_encoder(exc.detail))}, status_code=exc.status_code, headers=exc.headers
        )

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
