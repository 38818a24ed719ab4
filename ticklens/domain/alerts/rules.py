"""Alert rules: the model a rule is stored as, and the condition text parser (pure)."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from ticklens.domain.symbols import normalise_symbol
from ticklens.domain.timeframes import Timeframe

Metric = Literal[
    "price", "trade_size", "volume", "return", "volatility", "spread", "zscore", "hedge_ratio", "correlation"
]
Operator = Literal[">", ">=", "<", "<=", "crosses_above", "crosses_below"]
TRADE_METRICS = frozenset({"price", "trade_size"})
BAR_METRICS = frozenset({"volume", "return", "volatility"})
PAIR_METRICS = frozenset({"spread", "zscore", "hedge_ratio", "correlation"})
LEVEL_OPERATORS = frozenset({">", ">=", "<", "<="})
DEFAULT_TIMEFRAME: Timeframe = "1m"
MAX_WINDOW = 1_000


def parse_webhook(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a webhook URL, or ValueError saying what is wrong with it.

    Only the URL's form is checked here (no DNS: this module is pure); where it may be sent
    is decided at delivery (`ticklens.notify.webhooks`) with `webhook_refusal`.
    """
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("webhook URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"webhook {url[:200]!r} is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"webhook {url[:200]!r} must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("webhook URL must not carry a user name or password")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"webhook {url[:200]!r} has no host")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def webhook_refusal(address: str, host: str, allow: Sequence[str]) -> str | None:
    """Why a webhook to `host`, resolved to `address`, may not be sent (None: it may).

    Loopback, private, link-local, multicast, reserved, unspecified and other non-global
    addresses (IPv4, IPv6, IPv4 inside IPv6) are refused unless the host name, or a network
    holding the address, is in `allow` (`alerts.webhook_allow`).
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    name = host.lower().rstrip(".").strip("[]")
    for entry in allow:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return None
        except ValueError:  # a host name, not a network
            if name == entry.rstrip("."):
                return None
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            break
    else:
        kind = "" if ip.is_global else "non-global"
    if not kind:
        return None
    return f"{host} is {ip} ({kind.replace('_', '-')}): add it to alerts.webhook_allow to allow it"


class AlertRule(BaseModel):
    """One alert rule as stored and as posted to the API."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    metric: Metric
    symbol: str | None = None
    pair: tuple[str, str] | None = None
    timeframe: Timeframe | None = None
    operator: Operator
    threshold: float
    # Hysteresis: where a fired rule re-arms (default: the threshold). Also accepted as "exit".
    exit_threshold: float | None = Field(None, validation_alias=AliasChoices("exit_threshold", "exit"))
    cooldown_s: float = Field(0.0, ge=0, le=30 * 86_400)
    window: int = Field(20, ge=2, le=MAX_WINDOW)  # bars, for `volatility`
    enabled: bool = True
    webhook: str | None = Field(None, max_length=2_000)

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str | None) -> str | None:
        return None if v is None else normalise_symbol(v)

    @field_validator("pair", mode="before")
    @classmethod
    def _pair(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, str):
            v = re.split(r"[-,/ ]+", v.strip())
        legs = [normalise_symbol(s) for s in v]
        if len(legs) != 2 or legs[0] == legs[1]:
            raise ValueError(f"pair must be two different symbols, got {v!r}")
        return tuple(legs)

    @field_validator("threshold", "exit_threshold")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        if v is not None:
            parse_webhook(v)
        return v

    @model_validator(mode="after")
    def _shape(self) -> AlertRule:
        m = self.metric
        if m in PAIR_METRICS:
            if self.pair is None or self.symbol is not None:
                raise ValueError(f"metric {m!r} is a pair metric: give 'pair': [a, b] and no 'symbol'")
        else:
            if self.symbol is None or self.pair is not None:
                raise ValueError(f"metric {m!r} is per symbol: give 'symbol' and no 'pair'")
        if m in TRADE_METRICS:
            if self.timeframe is not None:
                raise ValueError(f"metric {m!r} is checked on every trade and takes no 'timeframe'")
        elif self.timeframe is None:
            self.timeframe = DEFAULT_TIMEFRAME
        e = self.exit_threshold
        if e is not None:
            up = self.operator in (">", ">=", "crosses_above")
            if (up and e > self.threshold) or (not up and e < self.threshold):
                side = "at or below" if up else "at or above"
                raise ValueError(
                    f"exit_threshold {e} must be {side} the threshold {self.threshold} for {self.operator!r}"
                )
        return self

    @property
    def key(self) -> str:
        """The stream the rule watches: a symbol, or a pair as `a-b` (as in `PairConfig.name`)."""
        if self.symbol is not None:
            return self.symbol
        assert self.pair is not None  # the model validator requires one of the two
        return f"{self.pair[0]}-{self.pair[1]}"


# --- the original design's form: {"name", "condition": "price > 50000", "symbols": [...]} ---


class ConditionError(ValueError):
    """A condition string we cannot read; the message says where and why."""


_OPERATOR_WORDS = {
    ">": ">",
    ">=": ">=",
    "<": "<",
    "<=": "<=",
    "crosses_above": "crosses_above",
    "crosses_below": "crosses_below",
    "crosses above": "crosses_above",
    "crosses below": "crosses_below",
}
_METRIC_ALIASES = {
    "z": "zscore",
    "z_score": "zscore",
    "corr": "correlation",
    "beta": "hedge_ratio",
    "size": "trade_size",
    "qty": "trade_size",
    "vol": "volatility",
    "ret": "return",
}
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<op>>=|<=|>|<|==|!=|=)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<bad>\S))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind is not None:
            out.append((kind, m.group(kind)))
    return out


def parse_condition(text: str) -> tuple[str, str, float]:
    """`"price > 50000"` → ("price", ">", 50000.0). A tiny tokenizer; nothing is evaluated."""
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("condition is empty: write it as '<metric> <operator> <number>', e.g. 'price > 50000'")
    toks = _tokens(text)
    where = f"condition {text!r}"
    for kind, val in toks:
        if kind == "bad":
            raise ConditionError(f"{where}: unexpected character {val!r}")
    if not toks or toks[0][0] != "word":
        raise ConditionError(f"{where}: must start with a metric name, e.g. 'price > 50000'")
    metric = toks[0][1].lower()
    metric = _METRIC_ALIASES.get(metric, metric)
    if metric not in TRADE_METRICS | BAR_METRICS | PAIR_METRICS:
        known = ", ".join(sorted(TRADE_METRICS | BAR_METRICS | PAIR_METRICS))
        raise ConditionError(f"{where}: unknown metric {toks[0][1]!r} (known: {known})")
    rest = toks[1:]
    op: str | None = None
    if rest and rest[0][0] == "op":
        op = _OPERATOR_WORDS.get(rest[0][1])
        if op is None:
            raise ConditionError(
                f"{where}: operator {rest[0][1]!r} is not supported (use >, >=, <, <=, crosses_above, crosses_below)"
            )
        rest = rest[1:]
    elif rest and rest[0][0] == "word":
        word = rest[0][1].lower()
        if word == "crosses" and len(rest) > 1 and rest[1][0] == "word":
            word, rest = f"crosses {rest[1][1].lower()}", rest[1:]
        op = _OPERATOR_WORDS.get(word)
        if op is None:
            raise ConditionError(f"{where}: expected an operator after {toks[0][1]!r}, got {rest[0][1]!r}")
        rest = rest[1:]
    else:
        raise ConditionError(
            f"{where}: expected an operator (>, >=, <, <=, crosses_above, crosses_below) after {toks[0][1]!r}"
        )
    if not rest or rest[0][0] != "num":
        got = repr(rest[0][1]) if rest else "nothing"
        raise ConditionError(f"{where}: expected a number after {op!r}, got {got}")
    if len(rest) > 1:
        raise ConditionError(f"{where}: unexpected {rest[1][1]!r} after the number (one comparison per rule)")
    value = float(rest[0][1])
    if not math.isfinite(value):
        raise ConditionError(f"{where}: the number must be finite")
    return metric, op, value


def rule_from_payload(body: dict[str, Any]) -> AlertRule:
    """Accept the rule form or the original design's `condition` + `symbols` form."""
    if "condition" not in body:
        return AlertRule.model_validate(body)
    body = dict(body)
    metric, operator, threshold = parse_condition(body.pop("condition"))
    symbols = body.pop("symbols", None)
    if symbols is None and "symbol" in body:
        symbols = [body.pop("symbol")]
    if isinstance(symbols, str):
        symbols = [s for s in re.split(r"[,\s]+", symbols) if s]
    if not isinstance(symbols, list) or not symbols:
        raise ConditionError(
            "'symbols' must list the symbol (or the two legs of a pair metric) the condition applies to"
        )
    rule: dict[str, Any] = {**body, "metric": metric, "operator": operator, "threshold": threshold}
    if metric in PAIR_METRICS:
        if len(symbols) != 2:
            raise ConditionError(f"metric {metric!r} needs exactly two symbols (the pair), got {symbols!r}")
        rule["pair"] = symbols
    else:
        if len(symbols) != 1:
            raise ConditionError(
                f"metric {metric!r} is per symbol; got {len(symbols)} symbols {symbols!r}: post one rule per symbol"
            )
        rule["symbol"] = symbols[0]
    return AlertRule.model_validate(rule)


@dataclass(frozen=True, slots=True)
class StoredRule:
    """A rule with its store identity; `version` changes on every edit."""

    id: int
    version: int
    rule: AlertRule
