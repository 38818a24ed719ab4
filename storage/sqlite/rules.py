"""Alert rules and triggers in the store: CRUD for the API, reads and writes for the flow."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from storage.port import EVENT_COLUMNS
from storage.sqlite.connection import connect
from storage.sqlite.sql import insert_flat
from ticklens.domain.alerts.engine import AlertFired
from ticklens.domain.alerts.rules import AlertRule, StoredRule
from ticklens.domain.times import now_ms

_RULE_COLUMNS = "id, rule, enabled, version, created_ms, updated_ms"
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


def _to_stored(row: tuple) -> StoredRule:
    rid, text, enabled, version, _c, _u = row
    rule = AlertRule.model_validate({**orjson.loads(text), "enabled": bool(enabled)})
    return StoredRule(rid, version, rule)


def _next_updated(conn: sqlite3.Connection) -> int:
    """Wall ms, but strictly after any earlier edit so the flow's fingerprint always moves."""
    prev = conn.execute("SELECT COALESCE(MAX(updated_ms), 0) FROM alert_rules").fetchone()[0]
    return max(now_ms(), prev + 1)


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


class SqliteRules:
    """`RuleStore` over its own writable connection (the API's CRUD, webhook delivery state)."""

    def __init__(self, path: Path | str) -> None:
        self.conn = connect(path)

    def close(self) -> None:
        self.conn.close()

    def rule_row(self, rule_id: int) -> tuple | None:
        return self.conn.execute(f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE id=?", (rule_id,)).fetchone()

    def create_rule(self, rule: AlertRule) -> int:
        with self.conn:
            ts = _next_updated(self.conn)
            cur = self.conn.execute(
                "INSERT INTO alert_rules(rule, enabled, version, created_ms, updated_ms) VALUES(?,?,1,?,?)",
                (rule.model_dump_json(), int(rule.enabled), ts, ts),
            )
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def update_rule(self, rule_id: int, rule: AlertRule) -> bool:
        """Replace a rule; its evaluation state restarts (new version)."""
        with self.conn:
            cur = self.conn.execute(
                "UPDATE alert_rules SET rule=?, enabled=?, version=version+1, updated_ms=? WHERE id=?",
                (rule.model_dump_json(), int(rule.enabled), _next_updated(self.conn), rule_id),
            )
        return cur.rowcount > 0

    def delete_rule(self, rule_id: int) -> bool:
        """Delete a rule; its triggers stay in the history."""
        with self.conn:
            cur = self.conn.execute("DELETE FROM alert_rules WHERE id=?", (rule_id,))
        return cur.rowcount > 0

    def list_rules(self) -> list[tuple]:
        """(id, rule JSON, enabled, version, created_ms, updated_ms) rows, oldest first."""
        return self.conn.execute(f"SELECT {_RULE_COLUMNS} FROM alert_rules ORDER BY id").fetchall()

    def load_rules(self) -> list[StoredRule]:
        return [_to_stored(r) for r in self.list_rules()]

    def list_events(
        self,
        limit: int = 100,
        since_ms: int | None = None,
        rule_id: int | None = None,
    ) -> list[dict]:
        """Triggers newest first (by market time), optionally from `since_ms` on and for one rule."""
        where, args = [], []
        if since_ms is not None:
            where.append("event_ms >= ?")
            args.append(since_ms)
        if rule_id is not None:
            where.append("rule_id = ?")
            args.append(rule_id)
        sql = f"SELECT {','.join(EVENT_COLUMNS)} FROM alert_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY event_ms DESC, id DESC LIMIT ?"
        rows = self.conn.execute(sql, (*args, limit)).fetchall()
        return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]

    def pending_webhooks(self) -> list[dict]:
        """Triggers whose webhook was not delivered yet (e.g. the flow stopped first)."""
        rows = self.conn.execute(
            f"SELECT {','.join(EVENT_COLUMNS)} FROM alert_events WHERE webhook_status='pending' ORDER BY id"
        ).fetchall()
        return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]

    def mark_webhook(self, dedup: tuple[int, int, str, str], status: str, attempts: int) -> None:
        """Record a delivery outcome; `dedup` is (rule_id, event_ms, symbol, ref)."""
        with self.conn:
            self.conn.execute(
                "UPDATE alert_events SET webhook_status=?, webhook_attempts=? WHERE rule_id=? AND event_ms=? AND symbol=? AND ref=?",
                (status, attempts, *dedup),
            )


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
                rules = [
                    _to_stored(r) for r in self._conn.execute(f"SELECT {_RULE_COLUMNS} FROM alert_rules ORDER BY id")
                ]
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
