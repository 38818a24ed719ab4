"""`ticklens history ingest` and `verify`: the downloaded archive into the store through the flow, audited.

Everything runs as the real commands in their own processes against real files (served by a real
HTTP server on 127.0.0.1 where a download is part of the story). Expected values come from the raw
files read here with polars (trades, Binance's klines), never from the code under test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.api_support import api_server
from tests.archive_support import (
    KLINES,
    ROOT,
    TRADES_2020,
    agg_csv_by_day,
    archive_server,
    real_archive,
    trades_2020_lines,
)
from tests.flow_support import query, run_flow, store_dump, wait_for_rows, write_config
from tests.store_support import BACKENDS, StoreRef, new_store

MINUTE = 60_000


def history(config: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, TICKLENS_QUIET="1")
    return subprocess.run(
        [sys.executable, "-m", "ticklens.cli", "--config", str(config), "history", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pipeline(tmp: Path, store: StoreRef | None = None, **extra: object) -> Path:
    """The user's pipeline file: where the store and the archive are; no tiering (the store holds every tick)."""
    cfg = {
        "symbols": ["btcusdt"],
        "source": {"kind": "replay", "paths": ["unused.csv"]},
        "store": {**(store.config() if store else {"path": str(tmp / "ticklens.db")}), "hot_days": None},
        "history": {"dir": str(tmp / "archive")},
        "recovery": {"directory": str(tmp / "recovery")},  # ingest jobs in recovery-ingest/ beside it
        "timeframes": ["1s", "1m", "5m"],
        **extra,
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def raw_trades() -> pl.DataFrame:
    return pl.read_csv(TRADES_2020).with_columns(minute=pl.col("time") - pl.col("time") % MINUTE)


def klines_2020() -> pl.DataFrame:
    return pl.read_csv(next(p for p in KLINES if "2020-12-09" in p.name))


def verify_2020(config: Path, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    rep = out / "verify.json"
    r = history(
        config, "verify", "--symbols", "BTCUSDT", "--data", "trades", "--from", "2020-12-09", "--to", "2020-12-09",
        "--report", str(rep),
    )  # fmt: skip
    return r, json.loads(rep.read_text())


@pytest.mark.parametrize("backend", BACKENDS)
def test_download_ingest_then_verify_finds_all_60_minutes_of_the_2020_hour_equal(tmp_path: Path, backend: str) -> None:
    ref = new_store(backend, tmp_path)
    config = pipeline(tmp_path, ref)
    with archive_server(real_archive()) as srv:
        for data in ("trades", "klines-1m"):
            r = history(
                config, "download", "--symbols", "BTCUSDT", "--data", data, "--from", "2020-12-09",
                "--to", "2020-12-09", "--base-url", srv.url, *(["--ingest"] if data == "trades" else []),
            )  # fmt: skip
            assert r.returncode == 0, r.stdout + r.stderr
    raw = raw_trades()
    assert [r[0] for r in ref.rows("SELECT trade_id FROM ticks ORDER BY trade_id")] == sorted(raw["id"].to_list())
    assert not list((tmp_path / "recovery-ingest").glob("*")), "a finished ingest leaves no recovery directory"

    r, report = verify_2020(config, tmp_path)
    assert "60/60 minutes equal" in r.stdout, r.stdout + r.stderr
    (audit,) = report["audit"]
    assert (audit["compared"], audit["equal"], audit["differing"], audit["diffs"]) == (60, 60, 0, [])
    assert audit["klines"] == klines_2020().height == 60 and audit["bars"] == 60
    # The archive's own defect is listed (one id missing in Binance's file), hence exit code 1.
    (cont,) = report["continuity"]
    assert [(g["first_missing"], g["last_missing"]) for g in cont["gaps"]] == [(307088663, 307088663)]
    assert r.returncode == 1 and "archive trade ids with gaps" in r.stdout

    # The API answers the same audit, from the same store and the klines under history.dir.
    with api_server(config, tmp_path / "api.log") as api:
        body = api.client.get("/api/v1/audit/BTCUSDT").json()
        part = api.client.get("/api/v1/audit/btcusdt", params={"start": "2020-12-09T00:10:30Z", "end": 1607473200000})
    assert (body["compared"], body["equal"], body["ok"], body["diffs"]) == (60, 60, True, [])
    assert body["files"] == ["BTCUSDT-1m-2020-12-09.zip"]
    assert part.json()["start"] == "2020-12-09T00:10:00.000Z" and part.json()["compared"] == 10


def test_verify_lists_gaps_injected_into_the_archive_and_the_minutes_they_break(tmp_path: Path) -> None:
    raw = raw_trades().sort("id")
    t0 = 1607472000000
    # Removed: 60 trades from 00:10:30 on, every trade of 00:20, and one trade at 00:42.
    block = raw.filter(pl.col("time") >= t0 + 10 * MINUTE + 30_000).head(60)["id"].to_list()
    minute20 = raw.filter(pl.col("minute") == t0 + 20 * MINUTE)["id"].to_list()
    single = raw.filter(pl.col("minute") == t0 + 42 * MINUTE)["id"].to_list()[100:101]
    removed = set(block) | set(minute20) | set(single)
    archive = real_archive()
    header, lines = trades_2020_lines()
    kept = [line for line in lines if int(line.split(",", 1)[0]) not in removed]
    archive.add_zip("trades", "BTCUSDT", "2020-12-09", header, kept)
    archive.write_to(tmp_path / "archive")
    config = pipeline(tmp_path)
    r = history(
        config, "ingest", "--symbols", "BTCUSDT", "--data", "trades", "--from", "2020-12-09", "--to", "2020-12-09"
    )
    assert r.returncode == 0, r.stdout + r.stderr

    r, report = verify_2020(config, tmp_path)
    assert r.returncode == 1
    gaps = [(g["first_missing"], g["last_missing"]) for g in report["continuity"][0]["gaps"]]
    assert gaps == sorted(
        [(307088663, 307088663), (block[0], block[-1]), (minute20[0], minute20[-1]), (single[0], single[0])]
    )
    by_gap = {(g["first_missing"], g["last_missing"]): g["minutes"] for g in report["continuity"][0]["gaps"]}
    assert by_gap[(block[0], block[-1])] == ["2020-12-09T00:10:00.000Z"]
    assert by_gap[(minute20[0], minute20[-1])] == [f"2020-12-09T00:{m}:00.000Z" for m in (19, 20, 21)]

    # Expected per minute, from the raw file and Binance's klines: what the removed trades took away.
    gone = raw.filter(pl.col("id").is_in(list(removed))).group_by("minute").agg(n=pl.len(), qty=pl.col("qty").sum())
    k = {row["open_time"]: row for row in klines_2020().iter_rows(named=True)}
    (audit,) = report["audit"]
    assert (audit["compared"], audit["equal"], audit["differing"]) == (60, 57, 3)
    diffs = {d["start_ms"]: d for d in audit["diffs"]}
    assert set(diffs) == set(gone["minute"].to_list())
    assert diffs[t0 + 20 * MINUTE]["outcome"] == "missing_in_store"
    assert diffs[t0 + 20 * MINUTE]["binance"]["trades"] == k[t0 + 20 * MINUTE]["count"]
    for row in gone.filter(pl.col("minute") != t0 + 20 * MINUTE).iter_rows(named=True):
        d = diffs[row["minute"]]
        fields = {f["field"]: f for f in d["fields"]}
        assert d["outcome"] == "differs"
        assert fields["trades"]["binance"] == k[row["minute"]]["count"]
        assert fields["trades"]["ours"] == k[row["minute"]]["count"] - row["n"]
        assert fields["volume"]["ours"] == pytest.approx(k[row["minute"]]["volume"] - row["qty"], abs=1e-9)
    assert "missing_in_store: no bar in the store" in r.stdout and "(inside an archive trade-id gap)" in r.stdout


def _ingest_cmd(config: Path) -> list[str]:
    return [
        sys.executable, "-m", "ticklens.cli", "--config", str(config), "history", "ingest",
        "--symbols", "BTCUSDT", "--data", "trades", "--from", "2020-12-09", "--to", "2020-12-09",
        "--snapshot-every", "0.2",
    ]  # fmt: skip


def test_an_ingest_killed_with_sigkill_resumes_and_the_store_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    archive = real_archive()
    slow = {"source": {"kind": "replay", "paths": ["unused.csv"], "batch_rows": 1500}}
    ref, crash = tmp_path / "ref", tmp_path / "crash"
    for d in (ref, crash):
        d.mkdir()
        archive.write_to(d / "archive")
    r = history(pipeline(ref, **slow), "ingest", *_ingest_cmd(ref)[7:])
    assert r.returncode == 0, r.stdout + r.stderr
    reference = store_dump(ref / "ticklens.db")
    assert len(reference["ticks"]) == 100_311

    config = pipeline(crash, **slow)
    db = crash / "ticklens.db"
    kill_at = random.Random(os.getpid()).randint(10_000, 80_000)
    proc = subprocess.Popen(_ingest_cmd(config), cwd=ROOT, env=dict(os.environ, TICKLENS_QUIET="1"))
    wait_for_rows(proc, db, "ticks", kill_at, 120, "the ingest")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert query(db, "SELECT COUNT(*) FROM ticks")[0][0] < 100_311
    jobs = list((crash / "recovery-ingest").glob("*/part-0.sqlite3"))
    assert len(jobs) == 1, "the interrupted ingest keeps its snapshots"

    r = history(config, *_ingest_cmd(config)[6:])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming the interrupted ingest" in r.stderr
    assert store_dump(db) == reference
    assert not jobs[0].exists()


def test_two_symbols_ingest_into_what_the_flow_stores_from_the_same_files(tmp_path: Path) -> None:
    """Ingest is the normal flow: the same zips replayed by `flows.runner` give the same store,
    pair analytics included (both symbols merged in event time)."""
    archive = real_archive()
    archive.write_to(tmp_path / "archive")
    pair = {"pairs": [{"legs": ["btcusdt", "ethusdt"], "window": 30, "timeframes": ["1s"]}]}
    config = pipeline(tmp_path, symbols=["btcusdt", "ethusdt"], **pair)
    r = history(config, "ingest", "--symbols", "BTCUSDT,ETHUSDT", "--from", "2024-07-18", "--to", "2024-07-19")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BTCUSDT aggTrades: 2 files" in r.stdout and "ETHUSDT aggTrades: 2 files" in r.stdout

    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    zips = sorted((tmp_path / "archive").rglob("*USDT-aggTrades-2024-07-1*.zip"))
    assert len(zips) == 4
    cfg = write_config(flow_dir, source={"paths": [str(p) for p in zips]}, store={"hot_days": None}, **pair)
    assert run_flow(cfg, "--no-recovery").returncode == 0
    ours, flows = store_dump(tmp_path / "ticklens.db"), store_dump(flow_dir / "ticklens.db")
    assert ours == flows
    want = sum(len(v) for s in ("BTCUSDT", "ETHUSDT") for d, v in agg_csv_by_day(s).items() if d < "2024-07-20")
    assert len(ours["ticks"]) == want and len(ours["pair_stats"]) > 100
