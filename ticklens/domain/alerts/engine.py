"""Alert evaluation: which values fire which rules (pure: no I/O).

A rule watches one metric of one or more symbols (each with its own state), a
pair, or the whole feed, and fires when its condition holds. Semantics, the
same for every metric:

- Level rules (`>`, `>=`, `<`, `<=`, `==`) start *armed*. An armed rule fires at the
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
- `min_duration_s`: the condition must hold that long before the rule fires.
  The hold starts at the value where an armed rule would have fired (for a
  crossing: the crossing) and ends at the first value where the condition is
  false (an undefined value does not end it); the rule fires at the first true
  value at least `min_duration_s` of event time after the start (and after the
  cooldown: a level rule waits for it, a crossing that matures inside it is spent).

Metrics and when they are evaluated (`on`):

- `price`, `trade_size`: every trade (`on: tick`, the default), in arrival order
  after deduplication; event time = trade time, reference = trade id. With
  `on: bar_close`: the close price / the largest trade of each closed bar of the
  rule's timeframe; event time = bar start, reference = `<timeframe>:<bar start>`.
- `volume` (base volume of the bar), `return` (log(close / previous closed
  bar's close)), `volatility` (sample standard deviation, ddof=1, of the last
  `window` bar returns; not annualised; undefined until `window` returns exist):
  every closed bar of the rule's timeframe (`on: bar_close`, the default);
  event time = bar start. `volume` and `return` with `on: tick`: at every trade,
  on the bar in progress: the bar's volume so far (trades in arrival order), and
  log(trade price / close of the newest earlier bar, as it stood when the trade
  arrived); event time = trade time.
- `spread`, `zscore`, `hedge_ratio`, `correlation`: every pair-analytics row of
  the rule's timeframe; event time = the row's bar start.
- Feed health (`health.py`): `stale_s` (seconds of exchange time since the
  symbol's last trade) and `gaps_open` (its open trade-id gaps) at every batch
  or clock of the symbol; `reconnects_per_min` and `rejected_per_min` (over the
  last 60 s of feed time) for the whole feed, at every clock, report and reject.

Cooldowns run on event (market) time, so a replay fires exactly as live did.
An undefined value (NaN: a rolling window not full yet, the first bar's return)
neither fires nor re-arms a rule; a crossing compares with the last defined value.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ticklens.domain.alerts.rules import (
    BAR_METRICS,
    HEALTH_METRICS,
    LEVEL_OPERATORS,
    MAX_WINDOW,
    MICRO_METRIC_COLUMNS,
    MICRO_METRICS,
    PAIR_METRICS,
    TRADE_METRICS,
    AlertRule,
    StoredRule,
)
from ticklens.domain.bars import Bar
from ticklens.domain.micro import MicroBar
from ticklens.domain.records import Trades
from ticklens.domain.timeframes import TIMEFRAME_MS
from ticklens.domain.times import FAR_PAST

INTRABAR_KEEP = 64  # recent buckets whose closes `return` on tick remembers (late trades reach back)


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
    pending_ms: int | None = None  # min_duration_s: event time the current hold started
    clock_ms: int = FAR_PAST  # running maximum of the event times seen (cooldowns and holds run on it)

    def __getstate__(self) -> tuple[int, bool, int | None, int | None, int]:
        return (self.version, self.armed, self.last_fire_ms, self.pending_ms, self.clock_ms)

    def __setstate__(self, state: tuple[int | bool | None, ...]) -> None:
        # A state pickled before `pending_ms` and `clock_ms` existed has three values.
        version, armed, last, *rest = state
        self.version, self.armed = int(version or 0), bool(armed)
        self.last_fire_ms = None if last is None else int(last)
        self.pending_ms = None if not rest or rest[0] is None else int(rest[0])
        self.clock_ms = int(rest[1]) if len(rest) > 1 and rest[1] is not None else FAR_PAST


def _enter(op: str, v: np.ndarray, thr: float) -> np.ndarray:
    if op in (">", "crosses_above"):
        return v > thr
    if op == ">=":
        return v >= thr
    if op in ("<", "crosses_below"):
        return v < thr
    if op == "==":
        return np.asarray(v == thr)
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
    if op == "==":
        return np.asarray((v != e) & ~np.isnan(v))
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
    if op == "==":
        return lo <= thr <= hi if armed else (lo != e or hi != e)
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
    ts_max: int | None = None,
) -> list[int]:
    """Indices where `rule` fires over a series, updating `state` (vectorised: work per trigger, not per value).

    `bounds` (min, max of `values`, no NaN) lets many rules over one batch skip
    it with two comparisons when nothing can happen (`ts_max`, the batch's newest
    time, then keeps the rule's clock without a pass over `ts`). Cooldown compares
    against the running maximum of `ts` across batches, so one late trade cannot
    reopen a cooldown that later trades already closed.
    """
    n = len(values)
    if n == 0:
        return []
    timed = rule.cooldown_s > 0 or rule.min_duration_s > 0
    if bounds is not None and state.pending_ms is None and not _may_change(rule, state.armed, *bounds):
        if timed:
            state.clock_ms = max(state.clock_ms, int(ts.max()) if ts_max is None else ts_max)
        return []
    if rule.min_duration_s > 0:
        return _scan_hold(rule, state, values, ts)
    enter_idx = np.flatnonzero(_enter(rule.operator, values, rule.threshold))
    if len(enter_idx) == 0 and state.armed:
        if timed:
            state.clock_ms = max(state.clock_ms, int(ts.max()) if ts_max is None else ts_max)
        return []
    release_idx = np.flatnonzero(_release(rule, values))
    cool_ms = int(round(rule.cooldown_s * 1000))
    if not cool_ms:
        fired, state.armed = _leapfrog(state.armed, enter_idx, release_idx)
        if len(fired):
            state.last_fire_ms = int(ts[fired[-1]])
        return [int(i) for i in fired]
    clock = _clock(state, ts)  # a cooldown from here on
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


def _clock(state: RuleState, ts: np.ndarray) -> np.ndarray:
    """Event time at each value: the running maximum, carried over from earlier batches, so a late
    value at the start of a batch cannot reopen a cooldown the previous batch had closed."""
    clock = np.maximum.accumulate(np.maximum(ts, state.clock_ms))
    state.clock_ms = int(clock[-1])
    return clock


def _scan_hold(rule: AlertRule, state: RuleState, values: np.ndarray, ts: np.ndarray) -> list[int]:
    """`scan` for a rule with `min_duration_s`: work per hold and trigger, not per value."""
    n = len(values)
    enter = _enter(rule.operator, values, rule.threshold)
    enter_idx = np.flatnonzero(enter)
    release_idx = np.flatnonzero(_release(rule, values))
    break_idx = np.flatnonzero(~enter & ~np.isnan(values))  # the condition is false: the hold ends
    clock = _clock(state, ts)
    hold_ms = int(round(rule.min_duration_s * 1000))
    cool_ms = int(round(rule.cooldown_s * 1000))
    level = rule.operator in LEVEL_OPERATORS
    fires: list[int] = []
    armed, last, pend = state.armed, state.last_fire_ms, state.pending_ms
    p = 0
    while p < n:
        if not armed:
            j = int(release_idx.searchsorted(p))
            if j == len(release_idx):
                break
            armed, pend, p = True, None, int(release_idx[j]) + 1
            continue
        if pend is None:
            j = int(enter_idx.searchsorted(p))
            if j == len(enter_idx):
                break
            p = int(enter_idx[j])
            pend = int(clock[p])
        k = int(break_idx.searchsorted(p))
        end = int(break_idx[k]) if k < len(break_idx) else n  # the hold lasts until here
        due = pend + hold_ms
        if level and last is not None:
            due = max(due, last + cool_ms)
        t = max(p, int(clock.searchsorted(due, side="left")))
        j = int(enter_idx.searchsorted(t))
        if j < len(enter_idx) and int(enter_idx[j]) < end:
            i = int(enter_idx[j])
            if not level and last is not None and clock[i] < last + cool_ms:
                armed, pend, p = False, None, i + 1  # matured inside the cooldown: spent
                continue
            fires.append(i)
            armed, pend, last, p = False, None, int(clock[i]), i + 1
            continue
        if end == n:
            break  # still holding when the batch ends: the hold goes on in the next one
        pend, p = None, end
    state.armed, state.last_fire_ms, state.pending_ms = armed, last, pend
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
    # `return` on tick: timeframe -> bucket start -> (close time, close id, close); made on first use.
    intrabar: dict[str, dict[int, tuple[int, int, float]]] | None = None
    health: Any = None  # StreamHealth of a symbol, FeedHealth of the feed (set by the flow step)
    micro_seen: dict[str, int] | None = None  # timeframe -> newest micro bar start evaluated

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

    def on_trades(self, rules: list[StoredRule], trades: Trades, bars: list[Bar] | None = None) -> list[AlertFired]:
        """Rules checked on every trade, over one batch in arrival order.

        `bars`: the batch's changed bars with their values after it (`SymbolOut.bars`),
        for `volume` and `return` on the bar in progress (`on: tick`).
        """
        out: list[AlertFired] = []
        if len(trades) == 0:
            return out
        bounds: dict[tuple[str, str | None], tuple[float, float]] = {}
        series: dict[tuple[str, str | None], np.ndarray] = {}
        ts_max = int(trades.ts_ms.max())
        fired: list[tuple[StoredRule, np.ndarray]] = []  # (rule, values at its triggers)
        at: list[np.ndarray] = []  # trade indices of the triggers
        for sr in rules:
            r = sr.rule
            m = r.metric
            if r.on != "tick" or m in HEALTH_METRICS:
                continue
            if m in TRADE_METRICS:
                k: tuple[str, str | None] = (m, None)
                if k not in series:
                    series[k] = trades.price if m == "price" else trades.qty
            elif m in BAR_METRICS and r.timeframe is not None:
                k = (m, r.timeframe)
                if k not in series:
                    series[k] = self._intrabar(m, r.timeframe, trades, bars or [])
            else:
                continue
            values = series[k]
            if k not in bounds:
                ok = values[~np.isnan(values)] if m in BAR_METRICS else values
                bounds[k] = (float(ok.min()), float(ok.max())) if len(ok) else (np.inf, -np.inf)
            b = bounds[k] if np.isfinite(bounds[k][0]) else None
            idx = scan(r, self._state(sr), values, trades.ts_ms, b, ts_max)
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

    def _intrabar(self, metric: str, tf: str, trades: Trades, bars: list[Bar]) -> np.ndarray:
        """`volume` or `return` of the bar in progress at each trade (NaN where unknown)."""
        tf_ms = TIMEFRAME_MS[tf]
        bucket = trades.ts_ms - trades.ts_ms % tf_ms
        if metric == "volume":
            # The bar's volume after the batch minus what later trades of the batch added to it.
            end = {b.start_ms: b.volume for b in bars if b.timeframe == tf}
            order = np.argsort(bucket, kind="stable")
            bk, q = bucket[order], trades.qty[order]
            first = np.concatenate(([True], bk[1:] != bk[:-1]))
            starts = np.flatnonzero(first)
            group = np.cumsum(first) - 1
            total = np.add.reduceat(q, starts)
            csum = np.cumsum(q)
            upto = csum - (csum[starts] - q[starts])[group]  # within the bucket, this trade included
            ends = np.array([end.get(int(b), np.nan) for b in bk[starts].tolist()])
            running = np.empty(len(q))
            running[order] = ends[group] - (total[group] - upto)
            return running
        return self._intrabar_returns(tf, tf_ms, bucket, trades)

    def _intrabar_returns(self, tf: str, tf_ms: int, bucket: np.ndarray, trades: Trades) -> np.ndarray:
        """log(price / close of the newest earlier bar), that close as it stood at each trade's arrival."""
        if self.intrabar is None:
            self.intrabar = {}
        book = self.intrabar.setdefault(tf, {})
        out = np.full(len(trades), np.nan)
        keys = sorted(book)
        for i, (b, t, tid, px) in enumerate(
            zip(bucket.tolist(), trades.ts_ms.tolist(), trades.trade_id.tolist(), trades.price.tolist(), strict=True)
        ):
            j = bisect_left(keys, b)
            if j:
                out[i] = math.log(px / book[keys[j - 1]][2])
            cur = book.get(b)
            if cur is None:
                book[b] = (t, tid, px)
                insort(keys, b)
            elif (t, tid) >= (cur[0], cur[1]):
                book[b] = (t, tid, px)
        for old in keys[: max(0, len(keys) - INTRABAR_KEEP)]:
            del book[old]
        return out

    def bar_series(self, timeframe: str, bars: list[Bar]) -> dict[str, np.ndarray]:
        """Per closed bar: volume, log return, close price and largest trade; advances the return history."""
        closes = np.array([b.close for b in bars])
        prev = np.concatenate(([self.closes.get(timeframe, np.nan)], closes[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            rets = np.log(closes / prev)
        self.closes[timeframe] = float(closes[-1])
        return {
            "volume": np.array([b.volume for b in bars]),
            "return": rets,
            "price": closes,
            "trade_size": np.array([b.max_qty for b in bars]),
        }

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
                if r.on != "bar_close" or r.timeframe != tf or r.metric not in BAR_METRICS | TRADE_METRICS:
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

    def on_values(self, rules: list[StoredRule], values: dict[str, float], event_ms: int, ref: str) -> list[AlertFired]:
        """Rules on single readings taken at one moment (feed health: `values` is metric -> reading)."""
        out: list[AlertFired] = []
        ts = np.array([event_ms], dtype=np.int64)
        for sr in rules:
            v = values.get(sr.rule.metric)
            if v is None:
                continue
            arr = np.array([v], dtype=float)
            if scan(sr.rule, self._state(sr), arr, ts):
                out.append(self._trigger(sr, float(v), event_ms, ref))
        for name, v in values.items():
            if not math.isnan(v):
                self.last[(name, None)] = float(v)
        return out

    def on_micro(self, rules: list[StoredRule], bars: list[MicroBar]) -> list[AlertFired]:
        """Microstructure rules on micro bars written for the first time (a bar written again, complete
        or revised, is not evaluated twice), per timeframe in time order."""
        seen = self.micro_seen if self.micro_seen is not None else {}
        self.micro_seen = seen
        out: list[AlertFired] = []
        by_tf: dict[str, dict[int, MicroBar]] = {}
        for b in bars:
            if b.start_ms > seen.get(b.timeframe, FAR_PAST):
                by_tf.setdefault(b.timeframe, {})[b.start_ms] = b
        for tf, fresh in by_tf.items():
            rows = [fresh[s] for s in sorted(fresh)]
            cols = {
                m: np.array([_micro_value(b, c) for b in rows], dtype=float) for m, c in MICRO_METRIC_COLUMNS.items()
            }
            out.extend(
                self.on_rows(rules, tf, np.array([b.start_ms for b in rows], dtype=np.int64), cols, MICRO_METRICS)
            )
            seen[tf] = rows[-1].start_ms
        out.sort(key=lambda a: a.event_ms)
        return out

    def on_rows(
        self,
        rules: list[StoredRule],
        timeframe: str,
        start_ms: np.ndarray,
        cols: dict[str, np.ndarray],
        metrics: frozenset[str] = PAIR_METRICS,
    ) -> list[AlertFired]:
        """Rules on rows of one timeframe, pair analytics or microstructure bars (`cols`: metric ->
        values, NaN where undefined, which never fires)."""
        out: list[AlertFired] = []
        if len(start_ms) == 0:
            return out
        for sr in rules:
            r = sr.rule
            if r.metric in metrics and r.timeframe == timeframe and r.metric in cols:
                self._fire(sr, cols[r.metric], start_ms, timeframe, out)
        for name, arr in cols.items():
            self.last[(name, timeframe)] = float(arr[-1])
        out.sort(key=lambda a: a.event_ms)
        return out


def _micro_value(bar: MicroBar, column: str) -> float:
    if column == "depth_10bps":  # both sides within 10 bps of the mid
        b, a = bar.depth_bid_10bps, bar.depth_ask_10bps
        return np.nan if b is None or a is None else b + a
    v = getattr(bar, column)
    return np.nan if v is None else float(v)


def rolling_volatility(history: np.ndarray, new: np.ndarray, window: int) -> np.ndarray:
    """Sample std (ddof=1) of the last `window` returns at each new return; NaN while fewer exist."""
    allr = np.concatenate((history[len(history) - (window - 1) :] if len(history) >= window - 1 else history, new))
    out = np.full(len(new), np.nan)
    if len(allr) < window:
        return out
    wins = np.lib.stride_tricks.sliding_window_view(allr, window)[-len(new) :]
    out[len(new) - len(wins) :] = wins.std(axis=1, ddof=1)  # NaN inside a window stays NaN
    return out
