"""Alert rules and their evaluation (pure: no I/O).

A rule watches one metric of one symbol (or pair) and fires when its condition
holds. Semantics, the same for every metric:

- Level rules (`>`, `>=`, `<`, `<=`) start *armed*. An armed rule fires at the
  first value where the condition is true and at least `cooldown_s` of event
  time has passed since its previous trigger; firing disarms it. It re-arms
  once the value is back on the other side of its exit level (`exit_threshold`,
  default: the threshold itself, i.e. "the condition is false"). So a level
  that stays true fires once, and a value flapping around the threshold fires
  once per flap at most once per cooldown; a separate exit level (arm at
  z ≥ 2, re-arm at z ≤ 0.5) stops the flapping altogether.
- Crossing rules fire on the crossing itself: `crosses_above` when the
  previous value ≤ threshold and the new value > threshold (`crosses_below`
  mirrored). A crossing inside the cooldown is dropped, not deferred. With an
  exit level, the next crossing counts only after the value went back past it.

Metrics and when they are evaluated:

- `price`, `trade_size`: every trade, in arrival order after deduplication;
  event time = trade time, reference = trade id.
- `volume` (base volume of the bar), `return` (log(close / previous closed
  bar's close)), `volatility` (sample standard deviation, ddof=1, of the last
  `window` bar returns, not annualised; undefined until `window` returns exist):
  every closed bar of the rule's timeframe; event time = bar start.
- `spread`, `zscore`, `hedge_ratio`, `correlation`: every pair-analytics row of
  the rule's timeframe; event time = the row's bar start.

Cooldowns run on event (market) time, so a replay fires exactly as live did.
An undefined value (NaN: a rolling window not full yet, the first bar's return)
neither fires nor re-arms a rule; a crossing compares with the last defined value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.bars import Bar
from flows.trades import Trades
from ticklens.config import Timeframe, normalise_symbol

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
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"webhook {v!r} must be an http:// or https:// URL")
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
        return self.symbol if self.symbol is not None else f"{self.pair[0]}-{self.pair[1]}"  # type: ignore[index]


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


# --- evaluation ---


@dataclass(frozen=True, slots=True)
class StoredRule:
    """A rule with its store identity; `version` changes on every edit."""

    id: int
    version: int
    rule: AlertRule


@dataclass(slots=True)
class AlertFired:
    """One trigger, as stored in `alert_events` and posted to a webhook."""

    rule_id: int
    rule_name: str
    key: str  # symbol, or pair as "a-b"
    metric: str
    timeframe: str | None
    operator: str
    value: float
    threshold: float
    event_ms: int  # market time of the trade, or the bar's start
    ref: str  # what fired it: trade id, or "<timeframe>:<bar start>"
    webhook: str | None = None

    @property
    def dedup_key(self) -> str:
        """Same trigger, same key: a replay or restart recognises it."""
        return f"{self.rule_id}:{self.key}:{self.ref}"


@dataclass(slots=True)
class RuleState:
    version: int
    armed: bool
    last_fire_ms: int | None = None


def _enter(op: str, v: np.ndarray, thr: float) -> np.ndarray:
    if op in (">", "crosses_above"):
        return v > thr
    if op == ">=":
        return v >= thr
    if op in ("<", "crosses_below"):
        return v < thr
    return v <= thr


def _release(rule: AlertRule, v: np.ndarray) -> np.ndarray:
    """Where the rule re-arms: on the other side of its exit level (NaN re-arms nothing)."""
    e = rule.threshold if rule.exit_threshold is None else rule.exit_threshold
    op = rule.operator
    if op in (">", "crosses_above"):
        return v <= e
    if op == ">=":
        return v < e
    if op in ("<", "crosses_below"):
        return v >= e
    return v > e


def _may_change(rule: AlertRule, armed: bool, lo: float, hi: float) -> bool:
    """Whether values within [lo, hi] can fire an armed rule or re-arm a disarmed one."""
    thr = rule.threshold
    e = thr if rule.exit_threshold is None else rule.exit_threshold
    op = rule.operator
    if op in (">", "crosses_above"):
        return hi > thr if armed else lo <= e
    if op == ">=":
        return hi >= thr if armed else lo < e
    if op in ("<", "crosses_below"):
        return lo < thr if armed else hi >= e
    return lo <= thr if armed else hi > e


def _leapfrog(armed: bool, enter: np.ndarray, release: np.ndarray) -> tuple[np.ndarray, bool]:
    """Without a cooldown an entry fires iff the rule re-armed since the previous entry.

    Entries and releases never share an index (the exit level is validated to lie on the
    release side), so counting releases before each entry decides it with no loop.
    Returns the firing entries and whether the rule is armed after the batch.
    """
    if len(enter) == 0:
        return enter, armed or len(release) > 0
    before = np.searchsorted(release, enter)  # releases before each entry
    fire = np.empty(len(enter), dtype=bool)
    fire[0] = armed or before[0] > 0
    np.greater(before[1:], before[:-1], out=fire[1:])
    return enter[fire], bool(len(release) > before[-1])  # re-armed after the last entry?


def scan(
    rule: AlertRule,
    state: RuleState,
    values: np.ndarray,
    ts: np.ndarray,
    bounds: tuple[float, float] | None = None,
) -> list[int]:
    """Indices where `rule` fires over a series, updating `state` (vectorised: work per trigger, not per value).

    `bounds` (min, max of `values`, no NaN) lets many rules over one batch skip
    it with two comparisons when nothing can happen. Cooldown compares against
    the running maximum of `ts`, so one late trade cannot reopen a cooldown
    that later trades already closed.
    """
    n = len(values)
    if n == 0 or (bounds is not None and not _may_change(rule, state.armed, *bounds)):
        return []
    enter_idx = np.flatnonzero(_enter(rule.operator, values, rule.threshold))
    if len(enter_idx) == 0 and state.armed:
        return []
    release_idx = np.flatnonzero(_release(rule, values))
    cool_ms = int(round(rule.cooldown_s * 1000))
    if not cool_ms:
        fired, state.armed = _leapfrog(state.armed, enter_idx, release_idx)
        if len(fired):
            state.last_fire_ms = int(ts[fired[-1]])
        return fired.tolist()
    clock = np.maximum.accumulate(ts)  # a cooldown from here on
    level = rule.operator in LEVEL_OPERATORS
    fires: list[int] = []
    armed, last = state.armed, state.last_fire_ms
    p = 0
    while p < n:
        if not armed:
            j = int(release_idx.searchsorted(p))  # the method: no numpy wrapper per trigger
            if j == len(release_idx):
                break
            armed, p = True, int(release_idx[j]) + 1
            continue
        j = int(enter_idx.searchsorted(p))
        if j == len(enter_idx):
            break
        i = int(enter_idx[j])
        if last is not None and clock[i] < last + cool_ms:
            if level:  # still armed: the first true value after the cooldown fires
                k = int(clock.searchsorted(last + cool_ms, side="left"))
                p = max(i + 1, k)
            else:  # a crossing inside the cooldown is spent
                armed, p = False, i + 1
            continue
        fires.append(i)
        armed, last, p = False, int(clock[i]), i + 1
    state.armed, state.last_fire_ms = armed, last
    return fires


@dataclass
class AlertBook:
    """Per-key evaluation state (one per symbol or pair); picklable for flow recovery."""

    key: str
    rules: dict[int, RuleState] = field(default_factory=dict)
    last: dict[tuple[str, str | None], float] = field(default_factory=dict)  # (metric, timeframe) -> last value
    closes: dict[str, float] = field(default_factory=dict)  # timeframe -> last closed bar's close
    returns: dict[str, np.ndarray] = field(default_factory=dict)  # timeframe -> last MAX_WINDOW bar log returns
    generation: int = -1  # of the rule set last synced with `forget`

    def _state(self, sr: StoredRule) -> RuleState:
        """A new or edited rule starts fresh; crossing rules arm from the metric's last value."""
        st = self.rules.get(sr.id)
        if st is None or st.version != sr.version:
            r = sr.rule
            if r.operator in LEVEL_OPERATORS:
                armed = True
            else:
                prev = self.last.get((r.metric, r.timeframe))
                armed = prev is not None and bool(_release(r, np.array([prev]))[0])
            st = RuleState(sr.version, armed)
            self.rules[sr.id] = st
        return st

    def forget(self, live_ids: set[int]) -> None:
        """Drop the state of deleted rules."""
        for rid in [r for r in self.rules if r not in live_ids]:
            del self.rules[rid]

    def _fire(self, sr: StoredRule, values: np.ndarray, starts: np.ndarray, tf: str, out: list[AlertFired]) -> None:
        """A bar or analytics rule over rows of one timeframe; the ref is '<timeframe>:<start>'."""
        idx = scan(sr.rule, self._state(sr), values, starts)
        if idx:
            out.extend(
                self._trigger(sr, v, t, f"{tf}:{t}")
                for v, t in zip(values[idx].tolist(), starts[idx].tolist(), strict=True)
            )

    def _trigger(self, sr: StoredRule, value: float, event_ms: int, ref: str) -> AlertFired:
        r = sr.rule
        return AlertFired(
            sr.id, r.name, self.key, r.metric, r.timeframe, r.operator, value, r.threshold, event_ms, ref, r.webhook
        )

    def on_trades(self, rules: list[StoredRule], trades: Trades) -> list[AlertFired]:
        """Price and trade-size rules over one batch, in arrival order."""
        out: list[AlertFired] = []
        if len(trades) == 0:
            return out
        bounds: dict[str, tuple[float, float]] = {}
        fired: list[tuple[StoredRule, np.ndarray]] = []  # (rule, values at its triggers)
        at: list[np.ndarray] = []  # trade indices of the triggers
        for sr in rules:
            m = sr.rule.metric
            if m in TRADE_METRICS:
                values = trades.price if m == "price" else trades.qty
                if m not in bounds:
                    bounds[m] = (float(values.min()), float(values.max()))
                idx = scan(sr.rule, self._state(sr), values, trades.ts_ms, bounds[m])
                if idx:
                    fired.append((sr, values[idx]))
                    at.append(np.asarray(idx))
        self.last[("price", None)] = float(trades.price[-1])
        self.last[("trade_size", None)] = float(trades.qty[-1])
        if not fired:
            return out
        # Triggers in (trade time, trade id) order, rule order among one trade's (a stable sort),
        # ordered before any object is built: a busy rule set fires on every tenth trade.
        where = np.concatenate(at)
        ts, ids = trades.ts_ms[where], trades.trade_id[where]
        order = np.lexsort((ids, ts))
        rule_no = np.repeat(np.arange(len(fired)), [len(a) for a in at])[order].tolist()
        values = np.concatenate([v for _, v in fired])[order].tolist()
        out.extend(
            self._trigger(fired[k][0], v, t, str(i))
            for k, v, t, i in zip(rule_no, values, ts[order].tolist(), ids[order].tolist(), strict=True)
        )
        return out

    def bar_series(self, timeframe: str, bars: list[Bar]) -> dict[str, np.ndarray]:
        """Volume and log return per closed bar, advancing the return history."""
        closes = np.array([b.close for b in bars])
        prev = np.concatenate(([self.closes.get(timeframe, np.nan)], closes[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            rets = np.log(closes / prev)
        self.closes[timeframe] = float(closes[-1])
        return {"volume": np.array([b.volume for b in bars]), "return": rets}

    def on_bars(self, rules: list[StoredRule], closed: list[Bar]) -> list[AlertFired]:
        """Bar rules on each bar that just closed, per timeframe, oldest first."""
        out: list[AlertFired] = []
        by_tf: dict[str, list[Bar]] = {}
        for b in closed:
            by_tf.setdefault(b.timeframe, []).append(b)
        for tf, bars in by_tf.items():
            bars.sort(key=lambda b: b.start_ms)
            series = self.bar_series(tf, bars)
            before = self.returns.get(tf, np.empty(0))
            self.returns[tf] = np.concatenate((before, series["return"]))[-MAX_WINDOW:]
            ts = np.array([b.start_ms for b in bars], dtype=np.int64)
            for sr in rules:
                r = sr.rule
                if r.metric not in BAR_METRICS or r.timeframe != tf:
                    continue
                if r.metric == "volatility":
                    values = rolling_volatility(before, series["return"], r.window)
                else:
                    values = series[r.metric]
                self._fire(sr, values, ts, tf, out)
            for name, arr in series.items():
                self.last[(name, tf)] = float(arr[-1])
        out.sort(key=lambda a: a.event_ms)
        return out

    def on_rows(
        self, rules: list[StoredRule], timeframe: str, start_ms: np.ndarray, cols: dict[str, np.ndarray]
    ) -> list[AlertFired]:
        """Pair-analytics rules on rows of one timeframe (`cols`: metric -> values, NaN where undefined)."""
        out: list[AlertFired] = []
        if len(start_ms) == 0:
            return out
        for sr in rules:
            r = sr.rule
            if r.metric in PAIR_METRICS and r.timeframe == timeframe and r.metric in cols:
                self._fire(sr, cols[r.metric], start_ms, timeframe, out)
        for name, arr in cols.items():
            self.last[(name, timeframe)] = float(arr[-1])
        out.sort(key=lambda a: a.event_ms)
        return out


def rolling_volatility(history: np.ndarray, new: np.ndarray, window: int) -> np.ndarray:
    """Sample std (ddof=1) of the last `window` returns at each new return; NaN while fewer exist."""
    allr = np.concatenate((history[len(history) - (window - 1) :] if len(history) >= window - 1 else history, new))
    out = np.full(len(new), np.nan)
    if len(allr) < window:
        return out
    wins = np.lib.stride_tricks.sliding_window_view(allr, window)[-len(new) :]
    out[len(new) - len(wins) :] = wins.std(axis=1, ddof=1)  # NaN inside a window stays NaN
    return out


def rules_for(rules: list[StoredRule], key: str) -> list[StoredRule]:
    return [sr for sr in rules if sr.rule.enabled and sr.rule.key == key]
