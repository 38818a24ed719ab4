"""The pure store-vs-klines comparison (ticklens/domain/audit.py) on hand-made minutes.

Expected outcomes are written out here minute by minute; tolerances are checked at their edges.
"""

from __future__ import annotations

from dataclasses import replace

from ticklens.domain.audit import DAY_MS, Minute, audit_dict, audit_minutes, field_diffs, minutes_spanned

T0 = 1_607_472_000_000  # 2020-12-09T00:00:00Z, a day start
M = 60_000


def minute(i: int, trades: int = 10, **kw: float) -> Minute:
    base = Minute(T0 + i * M, 100.0, 101.5, 99.25, 100.75, 12.345, 1234.5678, trades, 6.5)
    return replace(base, **kw)


def test_each_kind_of_minute_is_told_apart() -> None:
    klines = [minute(0), minute(1), minute(2), minute(3, trades=0, volume=0.0), minute(4)]
    bars = [minute(0), minute(1, high=101.6, trades=9), minute(5)]  # 2 and 4 missing, 3 quiet
    a = audit_minutes(bars, klines, T0, T0 + 10 * M, {T0})
    assert (a.compared, a.equal, a.quiet, a.differing) == (6, 2, 1, 4)
    assert a.by_outcome == {"differs": 1, "missing_in_store": 2, "missing_in_klines": 1}
    assert [(d.start_ms - T0) // M for d in a.diffs] == [1, 2, 4, 5]
    assert [(f.field, f.ours, f.binance) for f in a.diffs[0].fields] == [("high", 101.6, 101.5), ("trades", 9, 10)]
    assert [d.outcome for d in a.diffs] == ["differs", "missing_in_store", "missing_in_store", "missing_in_klines"]
    assert not a.ok and (a.bars, a.klines) == (3, 5)


def test_bars_in_days_without_klines_are_not_audited_and_the_range_is_half_open() -> None:
    bars = [minute(0), minute(1440), minute(1441)]  # day 1 has no kline file
    a = audit_minutes(bars, [minute(0), minute(60)], T0, T0 + 1441 * M, {T0})
    assert (a.compared, a.equal, a.unaudited_bars, a.unaudited_days) == (2, 1, 1, [T0 + DAY_MS])
    assert a.by_outcome["missing_in_store"] == 1  # minute 60 traded, no bar; 1441 is outside [start, end)
    assert not a.ok
    clean = audit_minutes([minute(0)], [minute(0)], T0, T0 + M, {T0})
    assert clean.ok and audit_dict(clean)["ok"] is True and audit_dict(clean)["diffs"] == []
    assert not audit_minutes([], [], T0, T0 + M, {T0}).ok  # nothing compared is not a pass


def test_tolerances_are_a_last_bit_for_volumes_and_the_stores_unit_per_trade_for_quote_volume() -> None:
    k = minute(0, trades=1000)
    per_trade = 2.0**-24
    assert field_diffs(replace(k, volume=k.volume * (1 + 2e-16)), k) == ()  # one ulp
    assert [f.field for f in field_diffs(replace(k, volume=k.volume + 1e-8), k)] == ["volume"]  # one qty unit
    assert field_diffs(replace(k, quote_volume=k.quote_volume + 999 * per_trade), k) == ()
    assert [f.field for f in field_diffs(replace(k, quote_volume=k.quote_volume + 1001 * per_trade), k)] == [
        "quote_volume"
    ]
    assert [f.field for f in field_diffs(replace(k, close=100.76), k)] == ["close"]  # prices: identical or not


def test_a_gap_spans_the_minutes_from_the_trade_before_to_the_trade_after() -> None:
    assert minutes_spanned(T0 + 59_999, T0 + 60_000) == [T0, T0 + M]
    assert minutes_spanned(T0 + 10, T0 + 20) == [T0]
    assert minutes_spanned(T0 + 30_000, T0 + 3 * M + 1) == [T0, T0 + M, T0 + 2 * M, T0 + 3 * M]
