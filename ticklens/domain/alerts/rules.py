"""Alert rules: the model a rule is stored as, and the condition text parser (pure)."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ticklens.domain.records import FEED_KEY
from ticklens.domain.symbols import normalise_symbol
from ticklens.domain.timeframes import Timeframe

Metric = Literal[
    "price",
    "trade_size",
    "volume",
    "return",
    "volatility",
    "spread",
    "zscore",
    "hedge_ratio",
    "correlation",
    "stale_s",
    "gaps_open",
    "reconnects_per_min",
    "rejected_per_min",
    "spread_bps",
    "ofi",
    "imbalance",
    "eff_spread_bps",
    "kyle_lambda",
    "vpin",
    "depth",
]
Operator = Literal[">", ">=", "<", "<=", "==", "crosses_above", "crosses_below"]
On = Literal["tick", "bar_close"]
TRADE_METRICS = frozenset({"price", "trade_size"})
BAR_METRICS = frozenset({"volume", "return", "volatility"})
PAIR_METRICS = frozenset({"spread", "zscore", "hedge_ratio", "correlation"})
# Feed health: per symbol (seconds since its last trade, open trade-id gaps) and feed-wide.
SYMBOL_HEALTH_METRICS = frozenset({"stale_s", "gaps_open"})
FEED_METRICS = frozenset({"reconnects_per_min", "rejected_per_min"})
HEALTH_METRICS = SYMBOL_HEALTH_METRICS | FEED_METRICS
# Microstructure, per symbol, read from each new micro bar (docs/analytics.md): metric -> its column
# ("depth": bid + ask depth within 10 bps).
MICRO_METRIC_COLUMNS = {
    "spread_bps": "spread_bps_twa",
    "ofi": "ofi",
    "imbalance": "imbalance_l1_twa",
    "eff_spread_bps": "eff_spread_bps",
    "kyle_lambda": "kyle_lambda",
    "vpin": "vpin",
    "depth": "depth_10bps",
}
MICRO_METRICS = frozenset(MICRO_METRIC_COLUMNS)
SYMBOL_METRICS = TRADE_METRICS | BAR_METRICS | SYMBOL_HEALTH_METRICS | MICRO_METRICS
ALL_METRICS = SYMBOL_METRICS | PAIR_METRICS | FEED_METRICS
# Bar metrics that can also be watched on the bar in progress, trade by trade.
TICK_BAR_METRICS = frozenset({"volume", "return"})
LEVEL_OPERATORS = frozenset({">", ">=", "<", "<=", "=="})
DEFAULT_TIMEFRAME: Timeframe = "1m"
MAX_WINDOW = 1_000
MAX_SYMBOLS = 200


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


def _symbol_list(v: Any) -> Any:
    """`symbols` as given: a list of symbols, or one string of them separated by commas or spaces."""
    if v is None:
        return None
    if isinstance(v, str):
        v = [s for s in re.split(r"[,\s]+", v) if s]
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"symbols must be a list of symbols, got {v!r}")
    out: list[str] = []
    for s in v:
        sym = normalise_symbol(s)
        if sym not in out:
            out.append(sym)
    return out


def _symbol_pair(v: Any) -> Any:
    """`pair` as given: two symbols, or one string of them separated by '-', '/', a comma or a space."""
    if v is None:
        return None
    if isinstance(v, str):
        v = re.split(r"[-,/ ]+", v.strip())
    legs = [normalise_symbol(s) for s in v]
    if len(legs) != 2 or legs[0] == legs[1]:
        raise ValueError(f"pair must be two different symbols, got {v!r}")
    return tuple(legs)


class AlertRule(BaseModel):
    """One alert rule as stored and as posted to the API."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    metric: Metric
    symbol: str | None = None
    # Several symbols: the rule watches each of them (one state per symbol, one rule to list).
    symbols: Annotated[list[str] | None, BeforeValidator(_symbol_list)] = Field(None, max_length=MAX_SYMBOLS)
    pair: Annotated[tuple[str, str] | None, BeforeValidator(_symbol_pair)] = None
    timeframe: Timeframe | None = None
    # When the metric is checked: on every trade (`tick`) or when a bar of `timeframe` closes.
    on: On | None = None
    operator: Operator
    threshold: float
    # Hysteresis: where a fired rule re-arms (default: the threshold). Also accepted as "exit".
    exit_threshold: float | None = Field(None, validation_alias=AliasChoices("exit_threshold", "exit"))
    cooldown_s: float = Field(0.0, ge=0, le=30 * 86_400)
    # The condition must hold this long (event time) before the rule fires.
    min_duration_s: float = Field(0.0, ge=0, le=86_400)
    window: int = Field(20, ge=2, le=MAX_WINDOW)  # bars, for `volatility`
    enabled: bool = True
    webhook: str | None = Field(None, max_length=2_000)

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str | None) -> str | None:
        return None if v is None else normalise_symbol(v)

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
        self._targets()
        self._timing()
        e = self.exit_threshold
        if e is not None:
            if self.operator == "==":
                raise ValueError("'==' re-arms when the value differs: it takes no exit_threshold")
            up = self.operator in (">", ">=", "crosses_above")
            if (up and e > self.threshold) or (not up and e < self.threshold):
                side = "at or below" if up else "at or above"
                raise ValueError(
                    f"exit_threshold {e} must be {side} the threshold {self.threshold} for {self.operator!r}"
                )
        if m == "volatility" and self.on == "tick":
            raise ValueError("metric 'volatility' is a statistic of closed bars: it takes on 'bar_close' only")
        return self

    def _targets(self) -> None:
        """Which stream(s): a symbol (or several), a pair, or the whole feed."""
        m = self.metric
        if m in PAIR_METRICS:
            if self.pair is None or self.symbol is not None or self.symbols is not None:
                raise ValueError(f"metric {m!r} is a pair metric: give 'pair': [a, b] and no 'symbol'")
        elif m in FEED_METRICS:
            if self.pair is not None or self.symbol is not None or self.symbols:
                raise ValueError(f"metric {m!r} watches the whole feed: give no 'symbol', 'symbols' or 'pair'")
            self.symbols = None
        else:
            if self.pair is not None:
                raise ValueError(f"metric {m!r} is per symbol: give 'symbol' (or 'symbols') and no 'pair'")
            if self.symbol is not None and self.symbols is not None:
                if self.symbols != [self.symbol]:
                    raise ValueError("give either 'symbol' or 'symbols', not both")
                self.symbols = None
            if self.symbols is not None:
                if not self.symbols:
                    raise ValueError(f"metric {m!r} is per symbol: 'symbols' must name at least one")
                if len(self.symbols) == 1:  # one symbol is stored in the one-symbol shape
                    self.symbol, self.symbols = self.symbols[0], None
            if self.symbol is None and self.symbols is None:
                raise ValueError(f"metric {m!r} is per symbol: give 'symbol' (or 'symbols')")

    def _timing(self) -> None:
        """`on` and `timeframe` defaults per metric; combinations that cannot be evaluated are refused."""
        m = self.metric
        if m in HEALTH_METRICS:
            if self.on == "bar_close":
                raise ValueError(f"metric {m!r} is checked as the feed reports: it takes no on 'bar_close'")
            if self.timeframe is not None:
                raise ValueError(f"metric {m!r} is checked as the feed reports and takes no 'timeframe'")
            self.on = "tick"
            return
        if m in PAIR_METRICS | MICRO_METRICS and self.on == "tick":
            raise ValueError(f"metric {m!r} is computed when bars close: it takes on 'bar_close' only")
        if self.on is None:
            self.on = "tick" if m in TRADE_METRICS else "bar_close"
        if m in TRADE_METRICS and self.on == "tick":
            if self.timeframe is not None:
                raise ValueError(
                    f"metric {m!r} is checked on every trade and takes no 'timeframe' (or set on: 'bar_close')"
                )
        elif self.timeframe is None:
            self.timeframe = DEFAULT_TIMEFRAME

    @property
    def keys(self) -> list[str]:
        """The streams the rule watches: symbols, a pair as `a-b` (as in `PairConfig.name`), or the feed."""
        if self.metric in FEED_METRICS:
            return [FEED_KEY]
        if self.pair is not None:
            return [f"{self.pair[0]}-{self.pair[1]}"]
        return list(self.symbols) if self.symbols is not None else [self.symbol]  # type: ignore[list-item]

    @property
    def key(self) -> str:
        """One text for the streams watched (several symbols joined with ',')."""
        return ",".join(self.keys)

    @property
    def watched_symbols(self) -> list[str]:
        """Every symbol the rule needs data of (a pair's two legs; none for the whole feed)."""
        if self.pair is not None:
            return list(self.pair)
        return [] if self.metric in FEED_METRICS else self.keys

    def condition_text(self) -> str:
        """The rule as the original design's condition string, e.g. `price > 50000`."""
        return condition_text(self.metric, self.operator, self.threshold)


CONDITION_NAMES = {"trade_size": "size", "zscore": "z_score"}  # the original's names, where they differ


def condition_text(metric: str, operator: str, threshold: float) -> str:
    """`price > 50000`: a condition string `parse_condition` reads back to the same rule."""
    return f"{CONDITION_NAMES.get(metric, metric)} {operator} {number_text(threshold)}"


def number_text(v: float) -> str:
    """50000.0 → '50000', 61700.05 → '61700.05' (shortest text that reads back the same)."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else repr(float(v))


# --- the original design's form: {"name", "condition": "price > 50000", "symbols": [...]} ---


class ConditionError(ValueError):
    """A condition string we cannot read; the message says where and why."""


_OPERATOR_WORDS = {
    ">": ">",
    ">=": ">=",
    "<": "<",
    "<=": "<=",
    "==": "==",
    "=": "==",
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
    "stale": "stale_s",
    "feed_lag": "stale_s",
    "gap_open": "gaps_open",
    "gaps": "gaps_open",
    "reconnects": "reconnects_per_min",
    "rejected": "rejected_per_min",
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
    if metric not in ALL_METRICS:
        known = ", ".join(sorted(ALL_METRICS))
        raise ConditionError(f"{where}: unknown metric {toks[0][1]!r} (known: {known})")
    rest = toks[1:]
    op: str | None = None
    if rest and rest[0][0] == "op":
        op = _OPERATOR_WORDS.get(rest[0][1])
        if op is None:
            raise ConditionError(
                f"{where}: operator {rest[0][1]!r} is not supported (use >, >=, <, <=, ==, crosses_above, crosses_below)"
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
            f"{where}: expected an operator (>, >=, <, <=, ==, crosses_above, crosses_below) after {toks[0][1]!r}"
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
    """Accept the rule form or the original design's `condition` + `symbols` form.

    In the condition form, a per-symbol metric with several symbols is one rule
    watching each of them; a pair metric takes exactly two (the pair).
    """
    if "condition" not in body:
        return AlertRule.model_validate(body)
    body = dict(body)
    metric, operator, threshold = parse_condition(body.pop("condition"))
    symbols = body.pop("symbols", None)
    if symbols is None and "symbol" in body:
        symbols = [body.pop("symbol")]
    if isinstance(symbols, str):
        symbols = [s for s in re.split(r"[,\s]+", symbols) if s]
    rule: dict[str, Any] = {**body, "metric": metric, "operator": operator, "threshold": threshold}
    if metric in FEED_METRICS:
        if symbols:
            raise ConditionError(f"metric {metric!r} watches the whole feed: give no 'symbols'")
        return AlertRule.model_validate(rule)
    if not isinstance(symbols, list) or not symbols:
        raise ConditionError(
            "'symbols' must list the symbol(s) (or the two legs of a pair metric) the condition applies to"
        )
    if metric in PAIR_METRICS:
        if len(symbols) != 2:
            raise ConditionError(f"metric {metric!r} needs exactly two symbols (the pair), got {symbols!r}")
        rule["pair"] = symbols
    else:
        rule["symbols"] = symbols
    return AlertRule.model_validate(rule)


def merge_patch(current: dict[str, Any], changes: dict[str, Any]) -> AlertRule:
    """A stored rule with some fields changed, validated again as a whole.

    `changes` may carry the original design's `condition` (with or without
    `symbols`): it replaces metric, operator and threshold; without `symbols` the
    rule keeps the streams it watched. A metric change drops `on`, `timeframe` and
    `window` unless they are given, so the new metric gets its own defaults.
    """
    changes = dict(changes)
    if "exit" in changes:  # the alias, so that it replaces the stored exit_threshold
        changes["exit_threshold"] = changes.pop("exit")
    base = dict(current)
    if "condition" in changes:
        metric, operator, threshold = parse_condition(changes.pop("condition"))
        changes.update(metric=metric, operator=operator, threshold=threshold)
        if not {"symbol", "symbols", "pair"} & set(changes):
            streams = (
                list(base.get("pair") or [])
                or list(base.get("symbols") or [])
                or ([base["symbol"]] if base.get("symbol") else [])
            )
            if metric in PAIR_METRICS:
                if len(streams) != 2:
                    raise ConditionError(f"metric {metric!r} needs a pair: give 'symbols': [a, b] with the condition")
                changes["pair"] = streams
            elif metric not in FEED_METRICS:
                if not streams:
                    raise ConditionError(f"metric {metric!r} is per symbol: give 'symbols' with the condition")
                changes["symbols"] = streams
        elif metric in PAIR_METRICS and "symbols" in changes:
            changes["pair"] = changes.pop("symbols")
    if {"symbol", "symbols", "pair"} & set(changes):
        for k in ("symbol", "symbols", "pair"):
            base.pop(k, None)
    if changes.get("metric", base.get("metric")) != base.get("metric"):
        for k in ("on", "timeframe", "window"):
            if k not in changes:
                base.pop(k, None)
    return AlertRule.model_validate({**base, **changes})


@dataclass(frozen=True, slots=True)
class StoredRule:
    """A rule with its store identity; `version` changes on every edit."""

    id: int
    version: int
    rule: AlertRule
