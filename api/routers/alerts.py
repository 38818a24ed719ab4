"""/api/v1/alerts: create, list, edit and delete alert rules; read the trigger history.

Rules live in the store's rule store, which the flow reads them from; the
running flow applies a change within a second. Rules can be created before the
flow has ever run.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field, ValidationError

from api.deps import Reader, Rules, State, known_symbols, param_error
from storage.port import RuleStore, StoreReader
from ticklens.domain.alerts.rules import (
    AlertRule,
    ConditionError,
    merge_patch,
    parse_webhook,
    rule_from_payload,
    webhook_refusal,
)
from ticklens.domain.times import iso_ms, parse_time

router = APIRouter(prefix="/alerts", tags=["alerts"])

_EXAMPLES = {
    "rule": {
        "summary": "A rule",
        "value": {
            "name": "btc breakout",
            "metric": "price",
            "symbol": "btcusdt",
            "operator": "crosses_above",
            "threshold": 98000,
            "cooldown_s": 0,
            "enabled": True,
        },
    },
    "pair": {
        "summary": "A pair rule with a separate exit level",
        "value": {
            "name": "z stretched",
            "metric": "zscore",
            "pair": ["btcusdt", "ethusdt"],
            "timeframe": "1m",
            "operator": ">=",
            "threshold": 2,
            "exit_threshold": 0.5,
            "cooldown_s": 300,
            "webhook": "http://127.0.0.1:9000/hook",
        },
    },
    "condition": {
        "summary": "The original design's form (one rule watching each symbol)",
        "value": {"name": "above 50k", "condition": "price > 50000", "symbols": ["btcusdt", "ethusdt"]},
    },
    "held": {
        "summary": "A condition that must hold for a minute, checked at 1m bar closes",
        "value": {
            "name": "btc held above 98k",
            "metric": "price",
            "symbol": "btcusdt",
            "on": "bar_close",
            "timeframe": "1m",
            "operator": ">",
            "threshold": 98000,
            "min_duration_s": 60,
        },
    },
    "health": {
        "summary": "Feed health: a symbol without trades for 30 s of exchange time",
        "value": {"name": "btc stalled", "metric": "stale_s", "symbol": "btcusdt", "operator": ">", "threshold": 30},
    },
}


class AlertOut(AlertRule):
    """A stored rule: the rule's fields plus its identity."""

    id: int
    version: int = Field(description="Grows by one on every edit (evaluation state restarts)")
    created: str
    updated: str


class AlertList(BaseModel):
    count: int
    alerts: list[AlertOut]


class AlertEvent(BaseModel):
    id: int
    rule_id: int
    rule_name: str
    symbol: str = Field(description="Symbol, or pair as `a-b`")
    metric: str
    timeframe: str | None
    operator: str
    value: float = Field(description="The metric's value at the trigger")
    threshold: float
    time: str = Field(description="Market time of the trade, or the bar's start, ISO-8601 UTC")
    event_ms: int
    ref: str = Field(description="What fired: trade id, or `<timeframe>:<bar start ms>`")
    wall_time: str = Field(description="When the flow stored it")
    wall_ms: int
    webhook_status: str | None = Field(description="`pending`, `sent`, `failed`, or null without a webhook")
    dedup_key: str


class EventList(BaseModel):
    count: int
    events: list[AlertEvent]


class AlertPatch(BaseModel):
    """Fields to change; anything left out keeps its value. `condition` (the original design's
    form, e.g. `"price > 50000"`, optionally with `symbols`) replaces metric, operator and threshold."""

    model_config = {"extra": "allow"}

    enabled: bool | None = None
    condition: str | None = Field(None, max_length=400)


MAX_ID = 2**63 - 1  # a 64-bit integer key
AlertId = Annotated[int, Path(ge=1, le=MAX_ID, description="The rule's id")]


def _out(row: tuple) -> AlertOut:
    rid, text, enabled, version, created, updated = row
    return AlertOut.model_validate(
        {
            **orjson.loads(text),
            "enabled": bool(enabled),
            "id": rid,
            "version": version,
            "created": iso_ms(created),
            "updated": iso_ms(updated),
        }
    )


def _invalid(e: ValidationError | ConditionError) -> HTTPException:
    """A 422 naming the field and the problem."""
    if isinstance(e, ConditionError):
        return HTTPException(422, [{"type": "value_error", "loc": ["body", "condition"], "msg": str(e)}])
    detail = [
        {
            "type": err["type"],
            "loc": ["body", *err["loc"]],
            "msg": f"{'.'.join(map(str, err['loc'])) or 'rule'}: {err['msg'].removeprefix('Value error, ')}",
            "input": err.get("input") if not isinstance(err.get("input"), dict) else None,
        }
        for err in e.errors(include_url=False)
    ]
    return HTTPException(422, detail)


def parse_rule(body: Any) -> AlertRule:
    if not isinstance(body, dict):
        raise HTTPException(422, [{"type": "type_error", "loc": ["body"], "msg": "the body must be a JSON object"}])
    try:
        return rule_from_payload(body)
    except (ValidationError, ConditionError) as e:
        raise _invalid(e) from None


def check_symbols(rule: AlertRule, state: State, reader: StoreReader, had: list[str] | None = None) -> None:
    """A rule on a symbol that is neither configured nor stored could never fire: a 422 naming the known ones.

    `had`: the symbols an edited rule watched already (an edit that keeps them is not refused).
    """
    wanted = [s for s in rule.watched_symbols if s not in (had or [])]
    if not wanted:
        return
    known = known_symbols(state, reader)
    unknown = [s for s in wanted if s not in known]
    if unknown:
        where = "pair" if rule.pair is not None else ("symbols" if rule.symbols else "symbol")
        listed = ", ".join(sorted(known)) or "none yet"
        raise HTTPException(
            422,
            [
                {
                    "type": "value_error",
                    "loc": ["body", where],
                    "msg": f"{where}: {', '.join(repr(s) for s in unknown)} is neither configured nor stored, so the "
                    f"rule could never fire; known symbols: {listed} (collect it first: POST /api/v1/start)",
                    "input": unknown,
                }
            ],
        )


def literal_address(host: str) -> str | None:
    """The address a webhook host names without DNS: an IP literal (also the legacy forms
    `2130706433`, `127.1`, `0x7f.0.0.1` that resolvers accept), or `localhost` (RFC 6761)."""
    h = host.strip("[]").lower().rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(h.split("%", 1)[0]))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(h))
    except OSError:
        return None  # a host name: checked when a trigger is delivered (ticklens.notify.webhooks)


def check_webhook(rule: AlertRule, allow: Sequence[str]) -> None:
    """A webhook to an address deliveries would refuse (loopback, private, link-local, …) is a 422
    naming why, unless `alerts.webhook_allow` lists it; host names are resolved at delivery."""
    if rule.webhook is None:
        return
    _, host, _ = parse_webhook(rule.webhook)
    address = literal_address(host)
    why = webhook_refusal(address, host, allow) if address is not None else None
    if why:
        raise HTTPException(
            422, [{"type": "value_error", "loc": ["body", "webhook"], "msg": f"webhook: {why}", "input": rule.webhook}]
        )


def _get(rules: RuleStore, alert_id: int) -> tuple:
    row = rules.rule_row(alert_id)
    if row is None:
        raise HTTPException(404, f"no alert rule with id {alert_id}")
    return row


@router.post("", status_code=201, response_model=AlertOut)
def create_alert(
    rules: Rules,
    reader: Reader,
    state: State,
    body: Annotated[dict[str, Any], Body(openapi_examples=_EXAMPLES)],
) -> AlertOut:
    """Create a rule, as a rule object or as `{"name", "condition": "price > 50000", "symbols": [...]}`.

    Metrics: `price`, `trade_size` (every trade, or with `on: bar_close` the bar's close / largest
    trade); `volume`, `return`, `volatility` (every closed bar of `timeframe`, default 1m; `volume`
    and `return` also `on: tick`, on the bar in progress); `spread`, `zscore`, `hedge_ratio`,
    `correlation` (every pair-analytics row; `pair` instead of `symbol`); feed health: `stale_s`,
    `gaps_open` (per symbol), `reconnects_per_min`, `rejected_per_min` (the whole feed).
    `symbols` (several) makes one rule that watches each of them. `min_duration_s`: the condition
    must hold that long (event time) before the rule fires. A symbol that is neither configured
    nor stored is refused (422, naming the known ones). A webhook to a loopback, private,
    link-local or other internal address is refused (422) unless `alerts.webhook_allow` lists it.
    """
    rule = parse_rule(body)
    check_symbols(rule, state, reader)
    check_webhook(rule, state.cfg.alerts.webhook_allow)
    rid = rules.create_rule(rule)
    return _out(_get(rules, rid))


@router.get("", response_model=AlertList)
def list_alerts(rules: Rules) -> AlertList:
    """Every rule, oldest first."""
    alerts = [_out(r) for r in rules.list_rules()]
    return AlertList(count=len(alerts), alerts=alerts)


@router.get("/triggered", response_model=EventList)
def triggered(
    rules: Rules,
    limit: Annotated[int, Query(ge=1, le=100_000, description="How many triggers, newest first")] = 100,
    since: Annotated[
        str | None,
        Query(max_length=40, description="Only triggers at or after this market time (ISO-8601 or epoch ms)"),
    ] = None,
    rule_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this rule's triggers")] = None,
) -> EventList:
    """The trigger history, newest (by market time) first."""
    since_ms = None
    if since is not None:
        try:
            since_ms = parse_time(since)
        except ValueError as e:
            raise param_error("query", "since", str(e), since) from None
    rows = rules.list_events(limit, since_ms, rule_id)
    events = [
        AlertEvent(
            **{k: v for k, v in r.items() if k not in ("webhook", "webhook_attempts")},
            time=iso_ms(r["event_ms"]),
            wall_time=iso_ms(r["wall_ms"]),
            dedup_key=f"{r['rule_id']}:{r['symbol']}:{r['ref']}",
        )
        for r in rows
    ]
    return EventList(count=len(events), events=events)


@router.get("/{alert_id}", response_model=AlertOut)
def get_alert(rules: Rules, alert_id: AlertId) -> AlertOut:
    return _out(_get(rules, alert_id))


@router.patch("/{alert_id}", response_model=AlertOut)
def patch_alert(
    rules: Rules, reader: Reader, state: State, alert_id: AlertId, body: Annotated[AlertPatch, Body()]
) -> AlertOut:
    """Change some fields (e.g. `{"enabled": false}`, or `{"condition": "price > 60000"}`); the rule is
    validated again as a whole. A changed rule starts afresh (new `version`)."""
    stored = _out(_get(rules, alert_id))
    current = stored.model_dump(exclude={"id", "version", "created", "updated"})
    changes = body.model_dump(exclude_unset=True)
    try:
        rule = merge_patch(current, changes)
    except (ValidationError, ConditionError) as e:
        raise _invalid(e) from None
    check_symbols(rule, state, reader, had=AlertRule.model_validate(current).watched_symbols)
    check_webhook(rule, state.cfg.alerts.webhook_allow)
    rules.update_rule(alert_id, rule)
    return _out(_get(rules, alert_id))


@router.delete("/{alert_id}", status_code=204)
def delete_alert(rules: Rules, alert_id: AlertId) -> Response:
    """Delete a rule (its past triggers stay in the history)."""
    if not rules.delete_rule(alert_id):
        raise HTTPException(404, f"no alert rule with id {alert_id}")
    return Response(status_code=204)
