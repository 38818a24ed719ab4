"""Tiered ticks: `ticklens store tier-out` moves whole old days to Parquet, and nothing is lost or doubled.

The store is filled by the real `history ingest` from archive zips made of the bundled real hour
shifted day by day; the expected ticks are read here from those zips with polars, the Parquet
tier with polars straight from its files. The API (a real uvicorn) must answer the same ticks and
exports before and after.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import yaml

from tests.api_support import api_server
from tests.archive_support import ROOT, shifted_trade_days
from tests.flow_support import query
from tests.store_support import new_store

DAY = 86_400_000
T0 = 1607472000000  # 2020-12-09T00:00:00Z
DAYS = 8


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ticklens.cli", "--config", str(config), *args],
        cwd=ROOT,
        env=dict(os.environ, TICKLENS_QUIET="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def ingest(config: Path, first: str, last: str) -> None:
    r = cli(config, "history", "ingest", "--symbols", "BTCUSDT", "--data", "trades", "--from", first, "--to", last)
    assert r.returncode == 0, r.stdout + r.stderr


def raw_ids(archive: Path) -> list[int]:
    frames = []
    for z in sorted(archive.rglob("BTCUSDT-trades-*.zip")):
        with zipfile.ZipFile(z) as zf:
            frames.append(pl.read_csv(zf.read(zf.namelist()[0]), columns=["id"]))
    return sorted(pl.concat(frames)["id"].to_list())


def cold_frame(cold: Path) -> pl.DataFrame:
    files = sorted((cold / "ticks").rglob("*.parquet"))
    return pl.concat([pl.read_parquet(f).with_columns(file=pl.lit(str(f.relative_to(cold)))) for f in files])


def answers(api) -> dict[str, object]:  # noqa: ANN001
    """What the API says about ticks: pages of /ticks (within a tier, across both) and exports."""
    out: dict[str, object] = {}
    ranges = {
        "newest": {},
        "day0": {"start": T0, "end": T0 + 3_600_000},
        "day2-newest-5": {"start": T0 + 2 * DAY, "end": T0 + 3 * DAY, "limit": 5},
        "across": {"start": T0 + 3 * DAY + 1_800_000, "end": T0 + 4 * DAY + 1_800_000},
        "day6": {"start": T0 + 6 * DAY, "end": T0 + 7 * DAY},
    }
    for name, params in ranges.items():
        r = api.client.get("/api/v1/ticks/btcusdt", params={"limit": 100_000, **params})
        assert r.status_code == 200, r.text
        out[name] = r.json()
    csv = api.client.get(
        "/api/v1/export/btcusdt",
        params={"kind": "ticks", "format": "csv", "start": T0 + 2 * DAY, "end": T0 + 5 * DAY + 600_000},
    )
    out["csv"] = pl.read_csv(io.BytesIO(csv.content))
    parquet = api.client.get("/api/v1/export/btcusdt", params={"kind": "ticks", "format": "parquet"})
    out["parquet"] = pl.read_parquet(io.BytesIO(parquet.content))
    return out


def same(a: dict[str, object], b: dict[str, object]) -> bool:
    return a.keys() == b.keys() and all(
        (x.equals(y) if isinstance(x, pl.DataFrame) else x == y) for x, y in zip(a.values(), b.values(), strict=True)
    )


def test_tier_out_keeps_every_tick_and_the_api_answers_the_same_before_and_after(tmp_path: Path) -> None:
    archive = shifted_trade_days(DAYS).write_to(tmp_path / "archive")
    want = raw_ids(archive)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "symbols": ["btcusdt"],
                "source": {"kind": "replay", "paths": ["unused.csv"]},
                "store": {"path": str(tmp_path / "ticklens.db"), "hot_days": None},
                "history": {"dir": str(archive)},
            }
        )
    )
    db, cold = tmp_path / "ticklens.db", tmp_path / "cold"
    ingest(config, "2020-12-09", "2020-12-16")
    stored = [r[0] for r in query(db, "SELECT trade_id FROM ticks ORDER BY trade_id")]
    assert stored == want and len(want) == DAYS * 100_311
    lo, hi = T0 + 3 * DAY + 1_800_000, T0 + 4 * DAY + 1_800_000
    across = [r[0] for r in query(db, "SELECT trade_id FROM ticks WHERE ts_ms >= ? AND ts_ms < ? ORDER BY 1", (lo, hi))]

    with api_server(config, tmp_path / "api.log") as api:
        before = answers(api)
        r = cli(config, "store", "tier-out", "--hot-days", "3")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "moved 401,244 ticks of 4 symbol-days" in r.stdout  # days 0-3 end 3+ days before day 7's trades
        after = answers(api)

        # Store + Parquet = the original, id for id; each day in its own hive partition, sorted, zstd.
        in_store = [r[0] for r in query(db, "SELECT trade_id FROM ticks ORDER BY trade_id")]
        parquet = cold_frame(cold)
        assert sorted(in_store + parquet["trade_id"].to_list()) == want
        assert not set(in_store) & set(parquet["trade_id"].to_list())
        assert min(in_store) > parquet["trade_id"].max()
        days = (
            parquet.with_columns(day=(pl.col("ts_ms") // DAY - T0 // DAY))
            .group_by("file")
            .agg(pl.col("day").unique(), pl.col("trade_id").diff().min().alias("step"), pl.len())
        )
        for row in days.iter_rows(named=True):
            (d,) = row["day"]
            assert row["file"].startswith(f"ticks/symbol=btcusdt/date=2020-12-{9 + d:02d}/part-"), row
            assert row["step"] > 0 and row["len"] == 100_311
        assert sorted(d for (d,) in days["day"]) == [0, 1, 2, 3]
        meta = pq.ParquetFile(next((cold / "ticks").rglob("*.parquet"))).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert same(after, before)
        assert before["parquet"]["trade_id"].to_list() == want
        assert [t["trade_id"] for t in before["across"]["ticks"]] == across[-100_000:]  # in both tiers after

        # Ticks of moved days stored again (a re-ingest of days 0-1): readers see each once, and
        # the next tier-out deletes them from the store without writing them twice.
        ingest(config, "2020-12-09", "2020-12-10")
        assert same(answers(api), after)
        r = cli(config, "store", "tier-out", "--hot-days", "3")
        assert r.returncode == 0 and "moved 200,622 ticks of 2 symbol-days" in r.stdout, r.stdout + r.stderr
        assert "(0 written)" in r.stdout
        again = cold_frame(cold)
        assert again.height == parquet.height and again["trade_id"].is_unique().all()
        assert [r[0] for r in query(db, "SELECT trade_id FROM ticks ORDER BY trade_id")] == in_store


POLARS_SNIPPET = """ticks = pl.scan_parquet("data/cold/ticks/**/*.parquet", hive_partitioning=True)
day = ticks.filter(pl.col("symbol") == "btcusdt", pl.col("date") == pl.date(2020, 12, 9)).collect()"""
DUCKDB_SNIPPET = """SELECT symbol, date, count(*) AS ticks, min(trade_id) AS first_id, max(trade_id) AS last_id
FROM read_parquet('data/cold/ticks/*/*/*.parquet', hive_partitioning = true)
GROUP BY ALL ORDER BY ALL;"""


def test_the_parquet_tier_reads_directly_as_docs_store_md_shows(tmp_path: Path) -> None:
    """docs/store.md's polars and duckdb queries, verbatim, over a tier made by `ticklens store tier-out`."""
    import duckdb

    doc = (ROOT / "docs" / "store.md").read_text()
    assert POLARS_SNIPPET in doc and DUCKDB_SNIPPET in doc
    archive = shifted_trade_days(3).write_to(tmp_path / "archive")
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "symbols": ["btcusdt"],
                "source": {"kind": "replay", "paths": ["unused.csv"]},
                "store": {"path": str(tmp_path / "data" / "ticklens.db"), "hot_days": 1},
                "history": {"dir": str(archive)},
            }
        )
    )
    ingest(config, "2020-12-09", "2020-12-11")  # moves day 0 at its end (store.hot_days)
    raw = pl.concat(
        [
            pl.read_csv(zipfile.ZipFile(z).read(zipfile.ZipFile(z).namelist()[0]))
            for z in sorted(archive.rglob("*2020-12-09.zip"))
        ]
    )
    old = Path.cwd()
    os.chdir(tmp_path)  # the snippets' relative paths
    try:
        scope: dict[str, object] = {"pl": pl}
        exec(POLARS_SNIPPET, scope)  # noqa: S102 (the documentation's own code, checked verbatim above)
        rows = duckdb.sql(DUCKDB_SNIPPET).fetchall()
    finally:
        os.chdir(old)
    day = scope["day"]
    assert isinstance(day, pl.DataFrame)
    assert day["trade_id"].to_list() == sorted(raw["id"].to_list())
    assert day["price"].to_list() == raw.sort("id")["price"].to_list()
    assert [(s, str(d), n, lo, hi) for s, d, n, lo, hi in rows] == [
        ("btcusdt", "2020-12-09", raw.height, raw["id"].min(), raw["id"].max())
    ]


def test_tier_out_over_postgres_keeps_every_tick_column_for_column_and_the_api_answers_the_same(
    tmp_path: Path,
) -> None:
    """The same tier over the PostgreSQL backend (its own `ticks` table, daily partitions): ingest, tier-out,
    a moved day stored again and tiered again, all through the store interface."""
    ref = new_store("postgres", tmp_path)
    archive = shifted_trade_days(3).write_to(tmp_path / "archive")
    want = raw_ids(archive)
    cold = tmp_path / "cold"
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "symbols": ["btcusdt"],
                "source": {"kind": "replay", "paths": ["unused.csv"]},
                "store": {**ref.config(), "hot_days": None, "cold_dir": str(cold)},
                "history": {"dir": str(archive)},
                "recovery": {"directory": str(tmp_path / "recovery")},
            }
        )
    )
    ingest(config, "2020-12-09", "2020-12-11")
    cols = "trade_id, ts_ms, price, qty, is_buyer_maker, first_id, last_id"
    stored = ref.rows(f"SELECT {cols} FROM ticks ORDER BY trade_id")
    assert [r[0] for r in stored] == want and len(want) == 3 * 100_311
    old = [r for r in stored if r[1] < T0 + DAY]

    with api_server(config, tmp_path / "api.log") as api:
        before = answers(api)
        r = cli(config, "store", "tier-out", "--hot-days", "1")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "moved 100,311 ticks of 1 symbol-days" in r.stdout  # day 0 ends a day or more before day 2's trades
        after = answers(api)

        in_store = [r[0] for r in ref.rows("SELECT trade_id FROM ticks ORDER BY trade_id")]
        parquet = cold_frame(cold)
        assert sorted(in_store + parquet["trade_id"].to_list()) == want
        assert min(in_store) > parquet["trade_id"].max()
        cold_rows = parquet.sort("trade_id").with_columns(pl.col("is_buyer_maker").cast(pl.Int64))
        assert cold_rows.select(cols.split(", ")).rows() == old  # column for column as PostgreSQL had them
        assert sorted({f.split("/")[2] for f in parquet["file"].to_list()}) == ["date=2020-12-09"]
        assert same(after, before)

        ingest(config, "2020-12-09", "2020-12-09")  # a moved day stored again: read once, tiered without a copy
        assert same(answers(api), after)
        r = cli(config, "store", "tier-out", "--hot-days", "1")
        assert r.returncode == 0 and "moved 100,311 ticks of 1 symbol-days" in r.stdout, r.stdout + r.stderr
        assert "(0 written)" in r.stdout
        assert cold_frame(cold).height == parquet.height
        assert [r[0] for r in ref.rows("SELECT trade_id FROM ticks ORDER BY trade_id")] == in_store
