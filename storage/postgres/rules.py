"""Alert rules and triggers in PostgreSQL: CRUD for the API, the flow's live reload by LISTEN/NOTIFY.

A trigger on `alert_rules` notifies `ticklens_rules` on every change (schema.py), so the
flow's rule feed re-reads the rules when told instead of polling; after a lost connection
it re-reads once (a notification may have been missed) and listens again.
"""

from __future__ import annotations

import sys
import threading
import time

import psycopg

from storage.postgres.connection import Backoff, Target, pg_placeholders
from storage.postgres.schema import RULES_CHANNEL, create_schema
from storage.sql_rules import SqlRules, to_stored
from ticklens.config import redact
from ticklens.domain.alerts.rules import AlertRule, StoredRule

_RULE_SELECT = "SELECT id, rule, enabled::int, version, created_ms, updated_ms FROM alert_rules"


class PostgresRules(SqlRules[psycopg.Connection]):
    """`RuleStore` over its own connection (autocommit: each call is its own transaction)."""

    RULE_SELECT = _RULE_SELECT

    def __init__(self, target: Target) -> None:
        super().__init__(target.connect(autocommit=True, app="ticklens-rules"))

    def _execute(self, query: str, args: tuple | list = ()) -> psycopg.Cursor:
        return self.conn.execute(pg_placeholders(query), args)  # type: ignore[arg-type]

    def _transaction(self) -> psycopg.Transaction:
        return self.conn.transaction()

    def close(self) -> None:
        self.conn.close()

    def create_rule(self, rule: AlertRule) -> int:
        with self.conn.transaction():
            ts = self._next_updated()
            row = self.conn.execute(
                "INSERT INTO alert_rules(rule, enabled, version, created_ms, updated_ms) VALUES(%s,%s,1,%s,%s)"
                " RETURNING id",
                (rule.model_dump_json(), rule.enabled, ts, ts),
            ).fetchone()
        return int(row[0])  # type: ignore[index]


class PostgresRuleFeed:
    """The flow's view of the rules: a listener thread marks them stale on every NOTIFY,
    `refresh` (called per item by the alert step) re-reads them only then — an Event check
    otherwise. One per process, shared by every key's state."""

    def __init__(self, target: Target, retry_s: float = 3600.0) -> None:
        self.target = target
        self.retry_s = retry_s
        self.rules: list[StoredRule] = []
        self.ids: set[int] = set()
        self.generation = 0  # bumps on every reload
        self._stale = threading.Event()
        self._stale.set()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._retry_at = 0.0
        self._thread = threading.Thread(target=self._listen, name="pg-rule-feed", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        backoff = Backoff(self.retry_s)
        while not self._stop.is_set():
            try:
                with self.target.connect(autocommit=True, app="ticklens-rule-feed") as conn:
                    create_schema(conn)
                    conn.execute(f"LISTEN {RULES_CHANNEL}")
                    self._stale.set()  # whatever changed while we were not listening
                    self._listening.set()
                    backoff = Backoff(self.retry_s)
                    while not self._stop.is_set():
                        for _n in conn.notifies(timeout=0.5, stop_after=1):
                            self._stale.set()
            except psycopg.Error as e:
                self._listening.clear()
                if self._stop.is_set() or backoff.expired:
                    print(f"[ticklens] rule feed stopped: {redact(str(e))}", file=sys.stderr, flush=True)
                    return
                backoff.wait("rule feed: store unreachable", e)

    def wait_listening(self, timeout: float = 10.0) -> bool:
        return self._listening.wait(timeout)

    def refresh(self) -> None:
        if not self._stale.is_set() or time.monotonic() < self._retry_at:
            return
        with self._lock:
            if not self._stale.is_set():
                return
            self._stale.clear()
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self.target.connect(autocommit=True, app="ticklens-rule-feed")
                rows = self._conn.execute(f"{_RULE_SELECT} ORDER BY id").fetchall()
            except psycopg.Error:
                self._stale.set()  # table not there yet or server away: try again in a second
                self._retry_at = time.monotonic() + 1.0
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                return
            rules = [to_stored(r) for r in rows]
            self.rules = rules
            self.ids = {r.id for r in rules}
            self.generation += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
