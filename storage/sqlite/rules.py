"""Alert rules and triggers in the store: CRUD for the API, reads and writes for the flow."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from storage.sql_rules import SqlRules, to_stored
from storage.sqlite.connection import connect
from storage.sqlite.sql import insert_flat
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.alerts.rules import AlertRule, StoredRule

_RULE_SELECT = "SELECT id, rule, enabled, version, created_ms, updated_ms FROM alert_rules"
_EVENT_HEAD = (
    "INSERT OR IGNORE INTO alert_events(rule_id, rule_name, symbol, metric, timeframe, operator, value,"
    " threshold, event_ms, ref, wall_ms, webhook, webhook_status)"
)
_EVENT_WIDTH = 13
_EVENT_INSERT = f"{_EVENT_HEAD} VALUES({','.join('?' * _EVENT_WIDTH)})"
# Cheap: changes on every create, edit and delete.
_FINGERPRINT = (
    "SELECT COUNT(*), COALESCE(MAX(updated_ms), 0), COALESCE(SUM(version), 0), COALESCE(MAX(id), 0) FROM alert_rules"
)


def _event_row(e: AlertFired, wall_ms: int) -> tuple:
    return (
        e.rule_id,
        e.rule_name,
        e.key,
        e.metric,
        e.timeframe,
        e.operator,
        e.value,
        e.threshold,
        e.event_ms,
        e.ref,
        wall_ms,
        e.webhook,
        "pending" if e.webhook else None,
    )


def insert_events(conn: sqlite3.Connection, events: Sequence[AlertFired], wall_ms: int) -> list[AlertFired]:
    """Store triggers inside the caller's transaction; returns the webhook ones not stored before.

    Only triggers with a webhook need to know whether they are new (so a
    replay does not send them again); the rest go in multi-row statements.
    """
    fresh = []
    for e in events:
        if e.webhook and conn.execute(_EVENT_INSERT, _event_row(e, wall_ms)).rowcount > 0:
            fresh.append(e)
    plain = [v for e in events if not e.webhook for v in _event_row(e, wall_ms)]
    insert_flat(conn, _EVENT_HEAD, _EVENT_WIDTH, plain)
    return fresh


class SqliteRules(SqlRules[sqlite3.Connection]):
    """`RuleStore` over its own writable connection (the API's CRUD, webhook delivery state)."""

    RULE_SELECT = _RULE_SELECT

    def __init__(self, path: Path | str) -> None:
        super().__init__(connect(path))

    def _execute(self, query: str, args: tuple | list = ()) -> sqlite3.Cursor:
        return self.conn.execute(query, args)

    def _transaction(self) -> sqlite3.Connection:
        return self.conn  # sqlite3 opens a transaction before a write; the block's end commits it

    def close(self) -> None:
        self.conn.close()

    def create_rule(self, rule: AlertRule) -> int:
        with self.conn:
            ts = self._next_updated()
            cur = self.conn.execute(
                "INSERT INTO alert_rules(rule, enabled, version, created_ms, updated_ms) VALUES(?,?,1,?,?)",
                (rule.model_dump_json(), int(rule.enabled), ts, ts),
            )
        return int(cur.lastrowid)  # type: ignore[arg-type]


class SqliteRuleFeed:
    """The flow's view of the rules: re-read when they change, checked at most every `poll_s`.

    One per process, shared by every key's state; a store without the table yet
    (or no store at all) simply has no rules until it appears.
    """

    def __init__(self, path: Path | str, poll_s: float = 0.25) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self._conn: sqlite3.Connection | None = None
        self._checked = -1e18
        self._print: tuple | None = None
        self._lock = threading.Lock()
        self.rules: list[StoredRule] = []
        self.ids: set[int] = set()
        self.generation = 0  # bumps on every reload

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.poll_s:
            return
        with self._lock:
            if now - self._checked < self.poll_s:
                return
            self._checked = now
            try:
                if self._conn is None:
                    if not self.path.exists():
                        return
                    self._conn = connect(self.path, readonly=True)
                fp = self._conn.execute(_FINGERPRINT).fetchone()
                if fp == self._print:
                    return
                rules = [to_stored(r) for r in self._conn.execute(f"{_RULE_SELECT} ORDER BY id")]
            except sqlite3.Error:
                return  # table not there yet: try again at the next poll
            self._print = fp
            self.rules = rules
            self.ids = {r.id for r in rules}
            self.generation += 1

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
