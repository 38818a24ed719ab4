"""The store contract suite runs once per backend: each test gets a fresh, empty `Store`.

A backend joins the suite by adding a factory to BACKENDS (a context manager
that yields a fresh store and removes it afterwards).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from storage.port import Store
from storage.sqlite import SqliteStore


@contextmanager
def _sqlite(tmp: Path) -> Iterator[Store]:
    store = SqliteStore(tmp / "contract.db")
    store.ensure()
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _postgres(tmp: Path) -> Iterator[Store]:
    """A new database on the session's private PostgreSQL server (tests/pg_support.py)."""
    from pg_support import server

    from storage.postgres import PostgresStore
    from ticklens.config import StoreConfig

    pg = server()
    db = pg.create_database("contract")
    store = PostgresStore(StoreConfig(kind="postgres", url=pg.url(db)))
    store.ensure()
    try:
        yield store
    finally:
        store.close()
        pg.drop_database(db)


BACKENDS: dict[str, Callable[[Path], AbstractContextManager[Store]]] = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with BACKENDS[request.param](tmp_path) as s:
        yield s
