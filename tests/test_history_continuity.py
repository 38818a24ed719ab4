"""`ticklens history verify --archive-only`: trade-id gaps of the archive files, inside and across files.

Expected gaps are worked out here from the raw recordings with plain Python (or polars), from the
rows the test removed; the checker only ever sees the zips.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl

from tests.archive_support import (
    AGG_HEADER,
    ROOT,
    TRADES_2020,
    agg_csv_by_day,
    archive_server,
    daily_path,
    real_archive,
    zip_bytes,
)


def history(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ticklens.cli", "history", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def verify(out: Path, symbols: str, data: str, start: str, end: str) -> tuple[int, list[dict], str]:
    rep = out / "verify.json"
    r = history(
        "verify", "--archive-only", "--symbols", symbols, "--data", data, "--from", start, "--to", end,
        "--dir", str(out / "archive"), "--report", str(rep),
    )  # fmt: skip
    return r.returncode, json.loads(rep.read_text()) if rep.exists() else [], r.stdout + r.stderr


def write_day(out: Path, symbol: str, day: str, lines: list[str], header: bool = True) -> Path:
    """A file where the downloader leaves a verified day."""
    path = out / "archive" / daily_path("aggTrades", symbol, day).removeprefix("/data/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zip_bytes(path.name.removesuffix(".zip") + ".csv", AGG_HEADER if header else None, lines))
    return path


def iso(ms: int) -> str:
    return pl.Series([ms]).cast(pl.Datetime("ms")).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")[0]


def minutes(before: int, after: int) -> list[str]:
    """The minutes a gap touches: from the trade before's minute to the trade after's, both included."""
    return [iso(m) for m in range(before - before % 60_000, after - after % 60_000 + 1, 60_000)]


def test_clean_archive_has_no_gap_but_the_one_hole_of_the_2020_hour(tmp_path: Path) -> None:
    with archive_server(real_archive()) as srv:
        for data, start, end in (("aggTrades", "2024-07-18", "2024-07-19"), ("trades", "2020-12-09", "2020-12-09")):
            r = history(
                "download", "--symbols", "BTCUSDT,ETHUSDT" if data == "aggTrades" else "BTCUSDT", "--data", data,
                "--from", start, "--to", end, "--dir", str(tmp_path / "archive"), "--base-url", srv.url,
            )  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr

    code, rep, text = verify(tmp_path, "BTCUSDT,ETHUSDT", "aggTrades", "2024-07-18", "2024-07-19")
    assert code == 0, text
    for c in rep:
        ids = [
            int(line.split(",")[0]) for day in ("2024-07-18", "2024-07-19") for line in agg_csv_by_day(c["symbol"])[day]
        ]
        assert (c["rows"], c["first_id"], c["last_id"]) == (len(ids), ids[0], ids[-1])
        assert c["gap_count"] == 0 and c["gaps"] == [] and c["repeated_count"] == c["late_count"] == 0
        assert len(c["files"]) == 2

    # The bundled hour misses exactly one id (SOURCES.md): that, and nothing else.
    code, rep, text = verify(tmp_path, "BTCUSDT", "trades", "2020-12-09", "2020-12-09")
    assert code == 1
    raw = pl.read_csv(TRADES_2020).sort("id")
    before = raw.filter(pl.col("id") == 307088662)["time"][0]
    after = raw.filter(pl.col("id") == 307088664)["time"][0]
    name = "BTCUSDT-trades-2020-12-09.zip"
    assert rep[0]["gaps"] == [
        {
            "first_missing": 307088663,
            "last_missing": 307088663,
            "before": iso(before),
            "after": iso(after),
            "before_file": name,
            "after_file": name,
            "minutes": minutes(before, after),
        }
    ]
    assert rep[0]["rows"] == raw.height == 100_311
    assert f"gap ids 307088663…307088663 (1) between {iso(before)} and {iso(after)} in {name}" in text


def test_gaps_injected_into_a_copy_are_listed_with_their_ids_and_times(tmp_path: Path) -> None:
    days = agg_csv_by_day("BTCUSDT")
    d18, d19 = days["2024-07-18"], days["2024-07-19"]
    drop18 = {100, 101, 102, 500, len(d18) - 2, len(d18) - 1}  # the last two end the file
    drop19 = {0, *range(1000, 1010)}  # the first one makes a hole across the two files
    kept18 = [line for i, line in enumerate(d18) if i not in drop18]
    kept19 = [line for i, line in enumerate(d19) if i not in drop19]
    write_day(tmp_path, "BTCUSDT", "2024-07-18", kept18)
    write_day(tmp_path, "BTCUSDT", "2024-07-19", kept19, header=False)  # older archive files have none
    eth = agg_csv_by_day("ETHUSDT")
    for day in ("2024-07-18", "2024-07-19"):
        write_day(tmp_path, "ETHUSDT", day, eth[day])

    # The reference: walk the kept rows (id, time, file) and note every jump.
    rows = [(int(x.split(",")[0]), int(x.split(",")[5]), f) for f, ls in (("18", kept18), ("19", kept19)) for x in ls]
    expected = []
    for (a, ta, fa), (b, tb, fb) in zip(rows, rows[1:], strict=False):
        if b != a + 1:
            expected.append(
                {
                    "first_missing": a + 1,
                    "last_missing": b - 1,
                    "before": iso(ta),
                    "after": iso(tb),
                    "before_file": f"BTCUSDT-aggTrades-2024-07-{fa}.zip",
                    "after_file": f"BTCUSDT-aggTrades-2024-07-{fb}.zip",
                    "minutes": minutes(ta, tb),
                }
            )
    assert len(expected) == 4  # 100-102, 500, end of the 18th + start of the 19th, 1000-1009

    code, rep, text = verify(tmp_path, "BTCUSDT,ETHUSDT", "aggTrades", "2024-07-18", "2024-07-19")
    assert code == 1, text
    btc, eth_rep = rep
    assert btc["gaps"] == expected
    assert btc["missing"] == len(drop18) + len(drop19)
    assert btc["rows"] == len(kept18) + len(kept19) and btc["repeated_count"] == btc["late_count"] == 0
    assert [g["before_file"] != g["after_file"] for g in btc["gaps"]] == [False, False, True, False]
    assert "across BTCUSDT-aggTrades-2024-07-18.zip → BTCUSDT-aggTrades-2024-07-19.zip" in text
    assert eth_rep["gap_count"] == 0 and eth_rep["rows"] == len(eth["2024-07-18"]) + len(eth["2024-07-19"])


def test_repeated_and_backward_ids_are_listed_not_taken_for_gaps(tmp_path: Path) -> None:
    lines = agg_csv_by_day("BTCUSDT")["2024-07-18"]
    repeated = lines[:50] + [lines[49]] + lines[50:]  # id 49 twice
    swapped = repeated[:200] + [repeated[201], repeated[200]] + repeated[202:]  # two ids out of order
    write_day(tmp_path, "BTCUSDT", "2024-07-18", swapped)
    code, rep, text = verify(tmp_path, "BTCUSDT", "aggTrades", "2024-07-18", "2024-07-18")
    assert code == 1
    ids = [int(x.split(",")[0]) for x in lines]
    assert rep[0]["gap_count"] == 0 and rep[0]["missing"] == 0  # the swapped pair filled its own hole
    assert (rep[0]["repeated_count"], rep[0]["late_count"]) == (1, 1)
    assert f"repeated id {ids[49]} after {ids[49]}" in text
    assert f"late id {ids[199]} after {ids[200]}" in text
