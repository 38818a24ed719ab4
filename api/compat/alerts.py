"""The original API's /api/alerts: rules in the `condition` form, their trigger counts, the trigger history.

A rule posted with several symbols is one rule that watches each of them
(listed once, one `trigger_count` over all its symbols). The rules are the
same as /api/v1/alerts' (one store), so either API sees the other's.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, Path, Query, Response

from api.compat.common import TAG, richer
from api.compat.models import AlertCreated, AlertDeleted, AlertItems, TriggerItems
from api.deps import Reader, Rules, State, json_response
from api.routers.alerts import MAX_ID, check_symbols, check_webhook, parse_rule
from ticklens.domain.alerts.rules import AlertRule, condition_text
from ticklens.domain.times import iso_ms

router = APIRouter(tags=[TAG])

_EXAMPLE = {
    "original": {
        "summary": "The original dashboard's rule: every symbol in one rule",
        "value": {"name": "BTC/ETH above 3000", "condition": "price > 3000", "symbols": ["btcusdt", "ethusdt"]},
    }
}


def _rule_id(alert_id: str) -> int:
    """The original's ids are strings: digits of an existing rule, else 404 (not a 422: it is just unknown)."""
    if not alert_id.isdigit() or not 1 <= int(alert_id) <= MAX_ID:
        raise HTTPException(404, f"no alert rule with id {alert_id!r}")
    return int(alert_id)


@router.post(
    "/api/alerts",
    response_model=AlertCreated,
    description=richer(
        "/api/v1/alerts",
        '`{"name", "condition": "price > 50000", "symbols": [...], "enabled": true}`: metrics `price`, `size`, '
        "`z_score` (and every ticklens metric), operators > < >= <= ==. Several symbols: one rule watching each. "
        "A symbol neither configured nor stored is refused (422). v1 takes the full rule object (hysteresis, "
        "cooldown, min_duration_s, on: tick | bar_close, webhooks).",
    ),
)
def create(
    rules: Rules, reader: Reader, state: State, body: Annotated[dict[str, Any], Body(openapi_examples=_EXAMPLE)]
) -> Response:
    if isinstance(body, dict) and "condition" in body and not body.get("name"):
        body = {**body, "name": str(body["condition"])[:200]}  # the original did not insist on a name
    rule = parse_rule(body)
    check_symbols(rule, state, reader)
    check_webhook(rule, state.cfg.alerts.webhook_allow)
    rid = rules.create_rule(rule)
    return json_response({"alert_id": str(rid), "status": "created"})


@router.get(
    "/api/alerts",
    response_model=AlertItems,
    description=richer("/api/v1/alerts", "Every rule with its condition text, symbols and trigger count."),
)
def list_rules(rules: Rules, reader: Reader) -> Response:
    counts = reader.alert_trigger_counts()
    out = []
    for rid, text, enabled, _version, created, _updated in rules.list_rules():
        rule = AlertRule.model_validate({**orjson.loads(text), "enabled": bool(enabled)})
        out.append(
            {
                "id": str(rid),
                "name": rule.name,
                "condition": rule.condition_text(),
                "symbols": rule.watched_symbols,
                "enabled": rule.enabled,
                "created_at": iso_ms(created),
                "trigger_count": counts.get(rid, 0),
            }
        )
    return json_response({"alerts": out})


@router.get(
    "/api/alerts/triggered",
    response_model=TriggerItems,
    description=richer(
        "/api/v1/alerts/triggered",
        "Triggers, newest first. `price` is the trade's price for price and size rules, else the metric's value "
        "(also in `value`). v1 adds the reference, webhook state and time filters.",
    ),
)
def triggered(
    rules: Rules,
    reader: Reader,
    limit: Annotated[int, Query(ge=1, le=100_000, description="How many triggers, newest first")] = 50,
) -> Response:
    out = []
    for e in rules.list_events(limit):
        price = e["value"]
        if e["metric"] == "trade_size" and e["ref"].isdigit():
            price = _trade_price(reader, e["symbol"], e["event_ms"], int(e["ref"]), price)
        out.append(
            {
                "rule_id": str(e["rule_id"]),
                "rule_name": e["rule_name"],
                "symbol": e["symbol"],
                "price": price,
                "value": e["value"],
                "metric": e["metric"],
                "timestamp": iso_ms(e["event_ms"]),
                "triggered_at": iso_ms(e["wall_ms"]),
                "condition": condition_text(e["metric"], e["operator"], e["threshold"]),
            }
        )
    return json_response({"alerts": out})


def _trade_price(reader: Any, symbol: str, ts_ms: int, trade_id: int, default: float) -> float:
    """The price of the trade that fired a size rule (it is stored; its time narrows the look-up)."""
    for row in reader.ticks(symbol, 1_000, ts_ms, ts_ms + 1):
        if row[0] == trade_id:
            return row[2]
    return default


@router.delete(
    "/api/alerts/{alert_id}",
    response_model=AlertDeleted,
    description=richer(
        "/api/v1/alerts/{alert_id}", "Delete a rule (its triggers stay in the history); 404 if unknown."
    ),
)
def delete(rules: Rules, alert_id: Annotated[str, Path(max_length=40, description="The rule's id")]) -> Response:
    rid = _rule_id(alert_id)
    if not rules.delete_rule(rid):
        raise HTTPException(404, f"no alert rule with id {alert_id!r}")
    return json_response({"status": "deleted"})
