"""Analytics follow their bars' revisions: shuffled arrival gives the same pair_stats, symbol_stats
and correlation as in-order arrival.

The bundled BTC/ETH recordings run through the real flow twice: in order, and with trades shuffled
by up to 400 ms across bar boundaries while only 100 ms of lateness is allowed, so many trades come
after their bar closed and revise it (tests/test_bars.py shows the bars end identical). Every
analytics row computed from a bar before its revision must be computed again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.flow_support import WINDOW_A, query, run_flow, shuffled_recording, write_config

ANALYTICS = {
    "timeframes": ["1s", "1m"],
    "pairs": [{"legs": ["btcusdt", "ethusdt"], "window": 30, "timeframes": ["1s", "1m"], "adf_every": 3}],
    "correlation": {"symbols": ["btcusdt", "ethusdt"], "window": 20, "timeframe": "1s"},
    "stats": {"window": 10, "timeframes": ["1s", "1m"]},
}
TABLES = {
    "pair_stats": "pair, timeframe, start_ms",
    "symbol_stats": "symbol, timeframe, start_ms",
    "correlation": "timeframe, sym_a, sym_b, start_ms",
}


def _rows(db: Path, table: str) -> list[tuple]:
    cols = [r[1] for r in query(db, f"PRAGMA table_info({table})") if r[1] != "updated_ms"]
    return query(db, f"SELECT {','.join(cols)} FROM {table} ORDER BY {TABLES[table]}")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("revised_analytics")
    in_order, shuffled = tmp / "in_order", tmp / "shuffled"
    in_order.mkdir()
    shuffled.mkdir()
    shuffled_recording(WINDOW_A, shuffled / "trades.gz", max_shift_ms=400, seed=7)
    for work, source, bars in (
        (in_order, {}, {}),
        (shuffled, {"paths": [str(shuffled / "trades.gz")], "batch_rows": 97}, {"lateness_ms": 100}),
    ):
        res = run_flow(write_config(work, source=source, bars=bars, **ANALYTICS), "--no-recovery")
        assert res.returncode == 0, res.stderr[-3000:]
    return in_order / "ticklens.db", shuffled / "ticklens.db"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_shuffled_arrival_gives_the_same_analytics_as_in_order_arrival(stores: tuple[Path, Path], table: str) -> None:
    in_order, shuffled = stores
    a, b = _rows(in_order, table), _rows(shuffled, table)
    assert len(a) > 400
    if table == "pair_stats":
        assert {r[1] for r in a} == {"1s", "1m"}
        assert sum(1 for r in a if r[12] is not None) > 100  # z-scores, past two windows
    assert a == b


def test_the_shuffled_run_really_revised_bars_after_analytics_had_used_them(stores: tuple[Path, Path]) -> None:
    _, shuffled = stores
    # Revised 1s bars whose aligned row exists: the first computation used the bar before its revision.
    revised = query(
        shuffled,
        "SELECT COUNT(*) FROM bars b JOIN pair_stats p ON p.timeframe = b.timeframe AND p.start_ms = b.start_ms"
        " WHERE b.revision > 0 AND b.timeframe = '1s'",
    )[0][0]
    assert revised > 10
