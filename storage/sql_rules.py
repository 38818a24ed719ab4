"""The `RuleStore` queries written once, for every SQL backend (as storage/sql_reader.py is for reads).

Both backends keep `alert_rules` and `alert_events` with the same columns (docs/store.md), so
the API's rule CRUD and the webhook delivery state are the same text, written here with `?`
placeholders. A backend says how a statement runs (`_execute`), what a transaction is
(`_transaction`), how it selects a rule row with `enabled` as 0/1 (`RULE_SELECT`) and how it
creates a rule (each has its own way of returning the new id).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

import orjson

from storage.port import EVENT_COLUMNS
from ticklens.domain.alerts.rules import AlertRule, StoredRule
from ticklens.domain.times import now_ms

C = TypeVar("C")  # the backend's connection
_EVENT_SELECT = f"SELECT {','.join(EVENT_COLUMNS)} FROM alert_events"


class _Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def to_stored(row: tuple) -> StoredRule:
    """A rule row (id, rule JSON, enabled, version, created_ms, updated_ms) as the flow's rule."""
    rid, text, enabled, version, _c, _u = row
    rule = AlertRule.model_validate({**orjson.loads(text), "enabled": bool(enabled)})
    return StoredRule(rid, version, rule)


class SqlRules(Generic[C]):
    """`RuleStore` over its own connection `conn`; a backend subclass supplies the hooks below."""

    RULE_SELECT: str  # SELECT id, rule, enabled (as 0/1), version, created_ms, updated_ms FROM alert_rules

    def __init__(self, conn: C) -> None:
        self.conn = conn

    # --- hooks -----------------------------------------------------------------------------

    def _execute(self, query: str, args: tuple | list = ()) -> _Cursor:
        """Run one statement (`?` placeholders) on `conn`."""
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[object]:
        """A transaction on `conn`: committed when the block ends, rolled back on an error."""
        raise NotImplementedError

    def create_rule(self, rule: AlertRule) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------

    def _next_updated(self) -> int:
        """Wall ms, but strictly after any earlier edit so the flow's fingerprint always moves."""
        prev = self._execute("SELECT COALESCE(MAX(updated_ms), 0) FROM alert_rules").fetchone()[0]
        return max(now_ms(), prev + 1)

    def rule_row(self, rule_id: int) -> tuple | None:
        return self._execute(f"{self.RULE_SELECT} WHERE id=?", (rule_id,)).fetchone()

    def update_rule(self, rule_id: int, rule: AlertRule) -> bool:
        """Replace a rule; its evaluation state restarts (new version)."""
        with self._transaction():
            cur = self._execute(
                "UPDATE alert_rules SET rule=?, enabled=?, version=version+1, updated_ms=? WHERE id=?",
                (rule.model_dump_json(), rule.enabled, self._next_updated(), rule_id),
            )
        return cur.rowcount > 0

    def delete_rule(self, rule_id: int) -> bool:
        """Delete a rule; its triggers stay in the history."""
        with self._transaction():
            cur = self._execute("DELETE FROM alert_rules WHERE id=?", (rule_id,))
        return cur.rowcount > 0

    def list_rules(self) -> list[tuple]:
        """(id, rule JSON, enabled, version, created_ms, updated_ms) rows, oldest first."""
        return self._execute(f"{self.RULE_SELECT} ORDER BY id").fetchall()

    def load_rules(self) -> list[StoredRule]:
        return [to_stored(r) for r in self.list_rules()]

    def list_events(self, limit: int = 100, since_ms: int | None = None, rule_id: int | None = None) -> list[dict]:
        """Triggers newest first (by market time), optionally from `since_ms` on and for one rule."""
        where, args = [], []
        if since_ms is not None:
            where.append("event_ms >= ?")
            args.append(since_ms)
        if rule_id is not None:
            where.append("rule_id = ?")
            args.append(rule_id)
        q = _EVENT_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._execute(q + " ORDER BY event_ms DESC, id DESC LIMIT ?", (*args, limit)).fetchall()
        return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]

    def pending_webhooks(self) -> list[dict]:
        """Triggers whose webhook was not delivered yet (e.g. the flow stopped first)."""
        rows = self._execute(f"{_EVENT_SELECT} WHERE webhook_status='pending' ORDER BY id").fetchall()
        return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]

    def mark_webhook(self, dedup: tuple[int, int, str, str], status: str, attempts: int) -> None:
        """Record a delivery outcome; `dedup` is (rule_id, event_ms, symbol, ref)."""
        with self._transaction():
            self._execute(
                "UPDATE alert_events SET webhook_status=?, webhook_attempts=?"
                " WHERE rule_id=? AND event_ms=? AND symbol=? AND ref=?",
                (status, attempts, *dedup),
            )
