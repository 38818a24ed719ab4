"""The store's 1m bars against Binance's own 1m klines, minute by minute and field by field (pure).

A minute of [start, end) is audited when Binance's klines cover its day (a kline file was read
for it). Outcomes per minute:

- `equal`: a stored bar and a kline agree on every field of AUDIT_FIELDS, or neither traded (a
  kline with 0 trades and no stored bar: the store keeps no row for a quiet minute);
- `differs`: both exist and at least one field disagrees (each listed with both values);
- `missing_in_store`: Binance traded in the minute, the store has no bar;
- `missing_in_klines`: the store has a bar in a minute the kline file of its day does not list.

Stored bars in days without klines are counted as unaudited, not as equal.

Prices and trade counts must be identical. Base volumes are exact sums (qty in 1e-8 units) and
Binance prints them exactly, so both parse to the same double: compared with a relative slack of
1e-12, a rounding of the last bit and nothing more. Quote volumes: Binance prints the exact sum of
price x qty; ours carries each product to 2^-24 (docs/store.md), so they may differ by up to
2^-24 per trade (measured on the bundled 2020 hour: at most 2.5e-6 on 2e7) plus the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from ticklens.domain.bars import KLINE_FIGURES
from ticklens.domain.times import iso_ms

MINUTE_MS = 60_000
DAY_MS = 86_400_000
AUDIT_FIELDS = KLINE_FIGURES
VOLUME_REL = 1e-12
QUOTE_PER_TRADE = 2.0**-24  # the store's quote units
MAX_LISTED = 100_000  # differing minutes listed one by one; beyond, only counted

Outcome = Literal["differs", "missing_in_store", "missing_in_klines"]


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute's figures, from a stored 1m bar or from a kline (same field order as AUDIT_FIELDS)."""

    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    taker_buy_volume: float


@dataclass(frozen=True, slots=True)
class FieldDiff:
    field: str
    ours: float | int
    binance: float | int


@dataclass(frozen=True, slots=True)
class MinuteDiff:
    start_ms: int
    outcome: Outcome
    fields: tuple[FieldDiff, ...] = ()  # for `differs`: the fields that disagree
    ours: Minute | None = None
    binance: Minute | None = None


@dataclass(slots=True)
class Audit:
    start_ms: int
    end_ms: int
    compared: int = 0  # audited minutes (in a day with klines, with a bar or a kline)
    equal: int = 0
    quiet: int = 0  # of the equal: no trade on either side
    differing: int = 0  # every non-equal audited minute
    by_outcome: dict[str, int] = field(
        default_factory=lambda: {"differs": 0, "missing_in_store": 0, "missing_in_klines": 0}
    )
    diffs: list[MinuteDiff] = field(default_factory=list)  # the first MAX_LISTED, oldest first
    bars: int = 0  # stored bars in range
    klines: int = 0  # kline rows in range
    unaudited_bars: int = 0  # stored bars in days without klines
    unaudited_days: list[int] = field(default_factory=list)  # day starts (ms) with bars but no klines

    @property
    def ok(self) -> bool:
        return self.differing == 0 and self.unaudited_bars == 0 and self.compared > 0


def field_diffs(ours: Minute, binance: Minute) -> tuple[FieldDiff, ...]:
    """The AUDIT_FIELDS on which a stored bar and a kline disagree (see the module's tolerances)."""
    out = []
    for name in AUDIT_FIELDS:
        a, b = getattr(ours, name), getattr(binance, name)
        if name in ("volume", "taker_buy_volume"):
            same = math.isclose(a, b, rel_tol=VOLUME_REL, abs_tol=1e-12)
        elif name == "quote_volume":
            same = abs(a - b) <= max(1, binance.trades) * QUOTE_PER_TRADE + VOLUME_REL * abs(b)
        else:
            same = a == b
        if not same:
            out.append(FieldDiff(name, a, b))
    return tuple(out)


def audit_minutes(
    bars: Iterable[Minute], klines: Iterable[Minute], start_ms: int, end_ms: int, kline_days: set[int]
) -> Audit:
    """Audit [start_ms, end_ms). `kline_days`: day starts (UTC ms) whose kline file was read."""
    res = Audit(start_ms, end_ms)
    ours = {b.start_ms: b for b in bars if start_ms <= b.start_ms < end_ms}
    theirs = {k.start_ms: k for k in klines if start_ms <= k.start_ms < end_ms}
    res.bars, res.klines = len(ours), len(theirs)
    unaudited_days: set[int] = set()
    for t in sorted(ours.keys() | theirs.keys()):
        bar, kline = ours.get(t), theirs.get(t)
        day = t - t % DAY_MS
        if kline is None and day not in kline_days:
            res.unaudited_bars += 1
            unaudited_days.add(day)
            continue
        res.compared += 1
        diff: MinuteDiff | None = None
        if bar is not None and kline is not None:
            fields = field_diffs(bar, kline)
            if fields:
                diff = MinuteDiff(t, "differs", fields, bar, kline)
        elif kline is not None:
            if kline.trades:
                diff = MinuteDiff(t, "missing_in_store", binance=kline)
            else:
                res.quiet += 1
        else:
            diff = MinuteDiff(t, "missing_in_klines", ours=bar)
        if diff is None:
            res.equal += 1
            continue
        res.differing += 1
        res.by_outcome[diff.outcome] += 1
        if len(res.diffs) < MAX_LISTED:
            res.diffs.append(diff)
    res.unaudited_days = sorted(unaudited_days)
    return res


def minutes_spanned(first_ms: int, last_ms: int) -> list[int]:
    """Starts of the minutes from the one holding `first_ms` to the one holding `last_ms`."""
    lo, hi = first_ms - first_ms % MINUTE_MS, last_ms - last_ms % MINUTE_MS
    return list(range(lo, hi + 1, MINUTE_MS))


def _minute_dict(m: Minute | None) -> dict[str, float | int] | None:
    return None if m is None else {name: getattr(m, name) for name in AUDIT_FIELDS}


def audit_dict(a: Audit, limit: int = MAX_LISTED) -> dict[str, object]:
    """The audit as plain values (the API's and `history verify --report`'s shape); at most `limit` minutes listed."""
    return {
        "start": iso_ms(a.start_ms),
        "start_ms": a.start_ms,
        "end": iso_ms(a.end_ms),
        "end_ms": a.end_ms,
        "ok": a.ok,
        "compared": a.compared,
        "equal": a.equal,
        "quiet": a.quiet,
        "differing": a.differing,
        "by_outcome": dict(a.by_outcome),
        "bars": a.bars,
        "klines": a.klines,
        "unaudited_bars": a.unaudited_bars,
        "unaudited_days": [iso_ms(d)[:10] for d in a.unaudited_days],
        "diffs": [
            {
                "start": iso_ms(d.start_ms),
                "start_ms": d.start_ms,
                "outcome": d.outcome,
                "fields": [{"field": f.field, "ours": f.ours, "binance": f.binance} for f in d.fields],
                "ours": _minute_dict(d.ours),
                "binance": _minute_dict(d.binance),
            }
            for d in a.diffs[:limit]
        ],
    }
