"""`ticklens history rest-fill`: recent aggTrades from a local Binance-compatible REST server into
the archive's CSV layout. Expected rows come from the raw files through polars."""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from pathlib import Path

import polars as pl

from tests.archive_support import AGG_HEADER, ROOT, TRADES_2020, agg_csv_by_day, recorded_trades, zip_bytes
from tests.rest_support import rest_history
from ticklens.domain.times import parse_time
from ticklens.ingest.replay import Replay

OUT = "rest/futures/um/aggTrades/BTCUSDT/BTCUSDT-aggTrades-{}.csv"


def hour_as_agg_trades() -> list[dict]:
    with gzip.open(TRADES_2020, "rt") as fh:
        return [
            {
                "a": int(r["id"]),
                "p": r["price"],
                "q": r["qty"],
                "f": int(r["id"]),
                "l": int(r["id"]),
                "T": int(r["time"]),
                "m": r["is_buyer_maker"] == "true",
            }
            for r in csv.DictReader(fh)
        ]


def expected_frame(rows: list[dict], start: str, end: str) -> pl.DataFrame:
    """The archive aggTrades columns, as text, for start <= T <= end."""
    lo, hi = parse_time(start), parse_time(end)
    df = pl.DataFrame(rows).filter(pl.col("T").is_between(lo, hi)).sort("a")
    return df.select(
        pl.col("a").cast(pl.Utf8).alias("agg_trade_id"),
        pl.col("p").alias("price"),
        pl.col("q").alias("quantity"),
        pl.col("f").cast(pl.Utf8).alias("first_trade_id"),
        pl.col("l").cast(pl.Utf8).alias("last_trade_id"),
        pl.col("T").cast(pl.Utf8).alias("transact_time"),
        pl.when(pl.col("m")).then(pl.lit("true")).otherwise(pl.lit("false")).alias("is_buyer_maker"),
    )


def read_text_csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


def rest_fill(url: str, out: Path, symbols: str, start: str, end: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ticklens.cli", "history", "rest-fill", "--symbols", symbols]
        + ["--from", start, "--to", end, "--dir", str(out), "--rest-url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rest_fill_writes_the_window_in_the_archive_layout_and_merges_reruns(tmp_path: Path) -> None:
    rows = hour_as_agg_trades()
    with rest_history({"BTCUSDT": rows}, fail_first=1) as h:  # a 503 first: retried within the budget
        r = rest_fill(h.url, tmp_path, "BTCUSDT", "2020-12-09T00:10:00Z", "2020-12-09T00:40:00Z")
        assert r.returncode == 0, r.stdout + r.stderr
        out = tmp_path / OUT.format("2020-12-09")
        assert out.read_text().splitlines()[0] == AGG_HEADER
        want = expected_frame(rows, "2020-12-09T00:10:00Z", "2020-12-09T00:40:00Z")
        assert want.height > 40_000
        assert read_text_csv(out).equals(want)
        first_run = list(h.requests)
        assert first_run[0].get("startTime") == str(parse_time("2020-12-09T00:10:00Z"))
        assert len(first_run) <= want.height // 1000 + 4  # pages of 1000, not more requests than needed

        # Again over an overlapping window: the day's file holds the union, each id once.
        r = rest_fill(h.url, tmp_path, "BTCUSDT", "2020-12-09T00:30:00Z", "2020-12-09T00:50:00Z")
        assert r.returncode == 0, r.stdout + r.stderr
    merged = read_text_csv(out)
    assert merged.equals(expected_frame(rows, "2020-12-09T00:10:00Z", "2020-12-09T00:50:00Z"))
    assert not list(tmp_path.rglob("*.part"))


def test_rest_fill_steps_over_empty_hours_and_splits_at_midnight(tmp_path: Path) -> None:
    rec = recorded_trades("BTCUSDT")
    rows = [{"a": d["t"], "p": d["p"], "q": d["q"], "f": d["t"], "l": d["t"], "T": d["T"], "m": d["m"]} for d in rec]
    start, end = "2024-07-18T21:30:00Z", "2024-07-19T00:03:00Z"  # 2.5 h of nothing, then the recording
    with rest_history({"BTCUSDT": rows}) as h:
        r = rest_fill(h.url, tmp_path, "BTCUSDT", start, end)
        windows = [q for q in h.requests if "startTime" in q]
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(windows) == 3  # two empty hours, then the one with the first trade
    want = expected_frame(rows, start, end)
    day1, day2 = (read_text_csv(tmp_path / OUT.format(d)) for d in ("2024-07-18", "2024-07-19"))
    midnight = str(parse_time("2024-07-19T00:00:00Z"))
    assert day1.equals(want.filter(pl.col("transact_time").cast(pl.Int64) < int(midnight)))
    assert day2.equals(want.filter(pl.col("transact_time").cast(pl.Int64) >= int(midnight)))
    # Ingest's reader takes the REST files like archive files.
    replay = Replay([tmp_path / OUT.format("2024-07-18"), tmp_path / OUT.format("2024-07-19")])
    ids = []
    while (chunk := replay.take(10_000)) is not None:
        ids += [i for t in chunk for i in t.trade_id.tolist()]
    assert ids == want["agg_trade_id"].cast(pl.Int64).to_list()

    # The archive's file for the 18th arrives: the 18th comes from it, the 19th still from REST,
    # and the continuity check runs across the two without a hole (the recording has none).
    archive_zip = tmp_path / "futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-07-18.zip"
    archive_zip.parent.mkdir(parents=True)
    archive_zip.write_bytes(
        zip_bytes("BTCUSDT-aggTrades-2024-07-18.csv", AGG_HEADER, agg_csv_by_day("BTCUSDT")["2024-07-18"])
    )
    v = subprocess.run(
        [sys.executable, "-m", "ticklens.cli", "history", "verify", "--archive-only", "--symbols", "BTCUSDT"]
        + ["--from", "2024-07-18", "--to", "2024-07-19", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert v.returncode == 0, v.stdout + v.stderr
    n18 = len(agg_csv_by_day("BTCUSDT")["2024-07-18"])
    n19 = day2.height
    assert f"BTCUSDT aggTrades: 2 files, {n18 + n19:,} rows" in v.stdout and ": 0 gaps" in v.stdout


def test_rest_fill_error_is_reported_and_leaves_no_file(tmp_path: Path) -> None:
    with rest_history({"BTCUSDT": hour_as_agg_trades()}) as h:
        r = rest_fill(h.url, tmp_path, "NOSUCHUSDT", "2020-12-09T00:10:00Z", "2020-12-09T00:20:00Z")
    assert r.returncode == 1
    assert "REST 400" in r.stderr and "Invalid symbol" in r.stderr
    assert not list(tmp_path.rglob("*.csv"))
