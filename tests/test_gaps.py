"""Trade-id gaps are detected and recorded; the continuity audit tells quiet buckets from gaps."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.api_support import api_server
from tests.flow_support import BTC_2020, query, run_flow, write_config
from tests.reference import read_trades_csv


@pytest.fixture(scope="module")
def store_2020(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("gaps")
    cfg = write_config(tmp, symbols=["btcusdt"], source={"paths": [str(BTC_2020)], "batch_rows": 5000})
    res = run_flow(cfg, "--no-recovery")
    assert res.returncode == 0, res.stderr[-2000:]
    return cfg, tmp / "ticklens.db"


def _reference_missing_ids() -> list[tuple[int, int]]:
    ids = pl.DataFrame(read_trades_csv(BTC_2020, "btcusdt"))["trade_id"].sort()
    d = ids.diff().drop_nulls()
    at = (d > 1).arg_true()
    return [(int(ids[i] + 1), int(ids[i + 1] - 1)) for i in at]


def test_missing_trade_ids_are_recorded_as_open_gaps(store_2020: tuple[Path, Path]) -> None:
    _, db = store_2020
    expected = _reference_missing_ids()
    assert expected == [(307088663, 307088663)]  # SOURCES.md: exactly one id is missing
    assert query(db, "SELECT from_id, to_id, status FROM gaps WHERE symbol='btcusdt'") == [
        (a, b, "open") for a, b in expected
    ]


def _reference_empty_seconds() -> list[tuple[int, int, str]]:
    """(first empty second, run length, quiet|unknown) straight from the CSV."""
    t = pl.DataFrame(read_trades_csv(BTC_2020, "btcusdt")).sort("trade_id")
    per_sec = (
        t.with_columns((pl.col("ts_ms") // 1000 * 1000).alias("sec"))
        .group_by("sec")
        .agg(pl.col("trade_id").min().alias("first"), pl.col("trade_id").max().alias("last"))
        .sort("sec")
    )
    out = []
    secs, firsts, lasts = per_sec["sec"].to_list(), per_sec["first"].to_list(), per_sec["last"].to_list()
    for i in range(1, len(secs)):
        gap = (secs[i] - secs[i - 1]) // 1000 - 1
        if gap > 0:
            out.append((secs[i - 1] + 1000, gap, "quiet" if firsts[i] == lasts[i - 1] + 1 else "unknown"))
    return out


def test_continuity_audit_tells_quiet_buckets_from_unknown_ones(store_2020: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, _ = store_2020
    expected = _reference_empty_seconds()
    assert sum(n for _, n, _ in expected) == 3600 - 3493  # SOURCES.md: 3493 of 3600 seconds have trades
    with api_server(cfg, tmp_path / "api.log") as api:
        r = api.client.get("/api/v1/continuity/BTCUSDT", params={"timeframe": "1s"})
        assert r.status_code == 200, r.text
        body = r.json()
        got = [(e["start_ms"], e["buckets"], e["status"]) for e in body["empty"]]
        assert got == expected
        assert body["gaps"][0]["from_id"] == 307088663
        assert body["unknown_buckets"] == sum(n for _, n, s in expected if s == "unknown")
        assert api.client.get("/api/v1/continuity/nosuchsym", params={"timeframe": "1s"}).status_code == 404
        bad = api.client.get("/api/v1/continuity/btcusdt", params={"timeframe": "2s"})
        assert bad.status_code == 422 and "timeframe" in bad.text
