"""Alert rules and triggers in PostgreSQL: CRUD for the API, the flow's live reload by LISTEN/NOTIFY.

A trigger on `alert_rules` notifies `ticklens_rules` on every change (schema.py), so the
flow's rule feed re-reads the rules when told instead of polling; after a lost connection
it re-reads once (a notification may have been missed) and listens again.
"""

from __future__ import annotations

import sys
import threading
import time

import orjson
import psycopg

from storage.port import EVENT_COLUMNS
from storage.postgres.connection import Backoff, Target
from storage.postgres.schema import RULES_CHANNEL, create_schema
from ticklens.config import redact
from ticklens.domain.alerts.rules import AlertRule, StoredRule
from ticklens.domain.times import now_ms

_RULE_SELECT = "SELECT id, rule, enabled::int, version, created_ms, updated_ms FROM alert_rules"
_EVENT_SELECT = f"SELECT {','.join(EVENT_COLUMNS)} FROM alert_events"


def _to_stored(row: tuple) -> StoredRule:
    rid, text, enabled, version, _c, _u = row
    rule = AlertRule.model_validate({**orjson.loads(text), "enabled": bool(enabled)})
    return StoredRule(rid, version, rule)


class PostgresRules:
    """`RuleStore` over its own connection (autocommit: each call is its own transaction)."""

    def __init__(self, target: Target) -> None:
        self.conn = target.connect(autocommit=True, app="ticklens-rules")

    def close(self) -> None:
        self.conn.close()

    def _next_updated(self) -> int:
        """Wall ms, strictly after any earlier edit (the same order SQLite's fingerprint relies on)."""
        prev = self.conn.execute("SELECT COALESCE(MAX(updated_ms), 0) FROM alert_rules").fetchone()[0]  # type: ignore[index]
        return max(now_ms(), prev + 1)

    def rule_row(self, rule_id: int) -> tuple | None:
        return self.conn.execute(f"{_RULE_SELECT} WHERE id=%s", (rule_id,)).fetchone()

    def create_rule(self, rule: AlertRule) -> int:
        with self.conn.transaction():
            ts = self._next_updated()
            row = self.conn.execute(
                "INSERT INTO alert_rules(rule, enabled, version, created_ms, updated_ms) VALUES(%s,%s,1,%s,%s)"
                " RETURNING id",
                (rule.model_dump_json(), rule.enabled, ts, ts),
            ).fetchone()
        return int(row[0])  # type: ignore[index]

    def update_rule(self, rule_id: int, rule: AlertRule) -> bool:
        """Replace a rule; its evaluation state restarts (new version)."""
        with self.conn.transaction():
            cur = self.conn.execute(
                "UPDATE alert_rules SET rule=%s, enabled=%s, version=version+1, updated_ms=%s WHERE id=%s",
                (rule.model_dump_json(), rule.enabled, self._next_updated(), rule_id),
            )
        return cur.rowcount > 0

    def delete_rule(self, rule_id: int) -> bool:
        """Delete a rule; its triggers stay in the history."""
        cur = self.conn.execute("DELETE FROM alert_rules WHERE id=%s", (rule_id,))
        return cur.rowcount > 0

    def list_rules(self) -> list[tuple]:
        """(id, rule JSON, enabled, version, created_ms, updated_ms) rows, oldest first."""
        return self.conn.execute(f"{_RULE_SELECT} ORDER BY id").fetchall()

    def load_rules(self) -> list[StoredRule]:
        return [_to_stored(r) for r in self.list_rules()]

    def list_events(self, limit: int = 100, since_ms: int | None = None, rule_id: int | None = None) -> list[dict]:
        """Triggers newest first (by market time), optionally from `since_ms` on and for one rule."""
        where, args = [], []
        if since_ms is not None:
            where.append("event_ms >= %s")
            args.append(since_ms)
        if rule_id is not None:
            where.append("rule_id = %s")
            args.append(rule_id)
        q = _EVENT_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.conn.execute(q + " ORDER BY event_ms DESC, id DESC LIMIT %s", (*args, limit)).fetchall()
        return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]

    def pending_webhooks(self) -> list[dict]:
        """Triggers whose webhook was not delivered yet (e.g. the flow stopped first)."""
        rows = self.conn.execute(f"{_EVENT_SELECT} WHERE webhook_status='pending' ORDER BY id").fetchall()
        return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]

    def mark_webhook(self, dedup: tuple[int, int, str, str], status: str, attempts: int) -> None:
        """Record a delivery outcome; `dedup` is (rule_id, event_ms, symbol, ref)."""
        self.conn.execute(
            "UPDATE alert_events SET webhook_status=%s, webhook_attempts=%s"
            " WHERE rule_id=%s AND event_ms=%s AND symbol=%s AND ref=%s",
            (status, attempts, *dedup),
        )


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
            rules = [_to_stored(r) for r in rows]
            self.rules = rules
            self.ids = {r.id for r in rules}
            self.generation += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
