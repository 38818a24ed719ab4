"""Connecting to the PostgreSQL store: the URL without its password, retries with backoff.

The password comes from TICKLENS_PG_PASSWORD, else from the URL (the config keeps it
apart, as a secret); it is handed to libpq as a keyword and never appears in a
message: every error text that leaves this backend goes through `redact`.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass
from functools import lru_cache

import psycopg

from ticklens.config import StoreConfig, redact

# SQLSTATEs that mean "the server went away or is starting/stopping": retry on a new connection.
_TRANSIENT_STATES = {"57P01", "57P02", "57P03", "53300", "40001", "40P01"}


@lru_cache(maxsize=256)
def pg_placeholders(query: str) -> str:
    """The shared queries' `?` placeholders as psycopg's (the queries hold no other `?` or `%`)."""
    return query.replace("?", "%s")


@dataclass(frozen=True, slots=True)
class Target:
    """Where the store is: the URL (no password) and the password, kept out of every repr."""

    url: str
    password: str | None = None

    @classmethod
    def of(cls, cfg: StoreConfig) -> Target:
        pw = os.environ.get("TICKLENS_PG_PASSWORD") or (cfg.password.get_secret_value() if cfg.password else None)
        assert cfg.url, "store.url is required for postgres"
        return cls(cfg.url, pw)

    def __repr__(self) -> str:
        return f"Target({self.location!r})"

    @property
    def location(self) -> str:
        return redact(self.url)

    @property
    def kwargs(self) -> dict[str, object]:
        return {"password": self.password} if self.password else {}

    def connect(self, *, autocommit: bool = False, app: str = "ticklens") -> psycopg.Connection:
        try:
            return psycopg.connect(
                self.url, autocommit=autocommit, application_name=app, connect_timeout=10, **self.kwargs
            )
        except psycopg.Error as e:
            raise type(e)(redact(str(e))) from None


def is_transient(e: BaseException, conn: psycopg.Connection | None = None) -> bool:
    """A failure another connection may not have: server restart, lost socket, deadlock."""
    if not isinstance(e, psycopg.Error):
        return False
    if conn is not None and (conn.broken or conn.closed):
        return True
    state = getattr(e, "sqlstate", None)
    if state is None:
        return isinstance(e, psycopg.OperationalError)  # client side: no connection
    return state.startswith("08") or state in _TRANSIENT_STATES


class Backoff:
    """Exponential delays with full jitter, capped; `expired` once `limit_s` has passed."""

    def __init__(self, limit_s: float, first_s: float = 0.1, max_s: float = 5.0) -> None:
        self.start = time.monotonic()
        self.limit_s = limit_s
        self.first_s = first_s
        self.max_s = max_s
        self.attempt = 0

    @property
    def expired(self) -> bool:
        return time.monotonic() - self.start >= self.limit_s

    def wait(self, what: str, error: BaseException) -> None:
        self.attempt += 1
        delay = random.uniform(0, min(self.max_s, self.first_s * 2**self.attempt))
        delay = min(delay, max(0.0, self.limit_s - (time.monotonic() - self.start)))
        if self.attempt == 1 or self.attempt % 10 == 0:
            print(
                f"[ticklens] {what}: {redact(str(error)).splitlines()[0] if str(error) else type(error).__name__};"
                f" retrying (attempt {self.attempt}, up to {self.limit_s:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(delay)
