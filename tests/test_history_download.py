"""`ticklens history download` against a local archive server built from the bundled real files.

The downloader runs as the real command in its own process; the server is a real HTTP server on
127.0.0.1 with faults per file. Expected bytes are the ones the test built and served.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from tests.archive_support import (
    AGG_HEADER,
    ROOT,
    Archive,
    agg_csv_by_day,
    archive_server,
    daily_path,
    real_archive,
)
from ticklens.ingest.archive import plan
from ticklens.ingest.replay import Replay

BTC18 = "/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-07-18.zip"
BTC19 = "/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-07-19.zip"
ETH18 = "/data/futures/um/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-07-18.zip"
ETH19 = "/data/futures/um/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-07-19.zip"
TRADES20 = "/data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2020-12-09.zip"
KLINES20 = "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-12-09.zip"
BOOK18 = "/data/futures/um/daily/bookTicker/BTCUSDT/BTCUSDT-bookTicker-2024-07-18.zip"
OTHER_KINDS = (
    ("trades", TRADES20, "2020-12-09"),
    ("klines-1m", KLINES20, "2020-12-09"),
    ("bookTicker", BOOK18, "2024-07-18"),
)


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ticklens.cli", "history", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def download_args(url: str, out: Path, symbols: str, data: str, start: str, end: str, *extra: str) -> list[str]:
    report = out / "report.json"
    return [
        "download",
        *("--symbols", symbols, "--data", data, "--from", start, "--to", end),
        *("--dir", str(out / "archive"), "--base-url", url, "--report", str(report), *extra),
    ]


def statuses(out: Path) -> dict[str, str]:
    rows = json.loads((out / "report.json").read_text())["files"]
    return {"/data/" + r["file"]: r["status"] for r in rows}


def local(out: Path, path: str) -> Path:
    return out / "archive" / path.removeprefix("/data/")


def wait_for(cond, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _replayed_ids(path: Path, take: int) -> list[int]:
    """The trade ids the replay (ingest's reader) reads from a downloaded file, `take` rows at a time."""
    ids = []
    replay = Replay([path])
    while (chunk := replay.take(take)) is not None:
        ids += [i for t in chunk for i in t.trade_id.tolist()]
    return ids


def _archived_ids(symbol: str, day: str) -> list[int]:
    """The aggregate trade ids of the bundled recording's `day`, read from the CSV lines the archive serves."""
    return [int(line.split(",")[0]) for line in agg_csv_by_day(symbol)[day]]


def test_every_file_verifies_despite_faults_and_the_corrupted_one_is_named(tmp_path: Path) -> None:
    archive = real_archive()
    good = archive.files[ETH19]
    corrupted = bytearray(good)
    corrupted[len(corrupted) // 2] ^= 0xFF
    archive.add(ETH19, good, served=bytes(corrupted))  # the .CHECKSUM is the good file's
    with archive_server(archive) as srv:
        srv.faults[BTC18] = ["503"]  # answered once with 503, then fine
        srv.faults[BTC19] = ["truncate"]  # half the body, then the connection closes
        srv.faults[BTC18 + ".CHECKSUM"] = ["stall"]  # longer than --timeout once
        srv.stall_s = 8.0
        srv.trickle[ETH18] = (2048, 0.1)  # a slow response (~1 s, pauses under --timeout) that still arrives
        r = run(
            download_args(
                srv.url, tmp_path, "BTCUSDT,ETHUSDT", "aggTrades", "2024-07-18", "2024-07-20", "--timeout", "3"
            )
        )

    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED: futures/um/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-07-19.zip" in r.stdout
    assert "checksum mismatch" in r.stdout
    missing_btc = "/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-07-20.zip"
    missing_eth = "/data/futures/um/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-07-20.zip"
    assert statuses(tmp_path) == {
        BTC18: "downloaded",
        BTC19: "downloaded",
        missing_btc: "missing",
        ETH18: "downloaded",
        ETH19: "failed",
        missing_eth: "missing",
    }
    assert f"missing: {missing_btc.removeprefix('/data/')}" in r.stdout
    for path in (BTC18, BTC19, ETH18):
        assert local(tmp_path, path).read_bytes() == archive.files[path]
    # The checksum files kept beside the zips are Binance's format: sha256sum itself accepts them.
    for path in (BTC18, BTC19, ETH18):
        z = local(tmp_path, path)
        check = subprocess.run(["sha256sum", "-c", z.name + ".CHECKSUM"], cwd=z.parent, capture_output=True, text=True)
        assert check.returncode == 0 and ": OK" in check.stdout
    assert not local(tmp_path, ETH19).exists()
    assert not list((tmp_path / "archive").rglob("*.part"))
    assert srv.gets(ETH19) == [None, None]  # downloaded once more, then reported
    assert srv.gets(BTC18) == [None, None]  # the 503, then the file
    assert len(srv.gets(BTC18 + ".CHECKSUM")) == 2  # the stall timed out and was retried
    half = (len(archive.files[BTC19])) // 2
    assert srv.gets(BTC19) == [None, f"bytes={half}-"]  # the cut transfer resumed where it stopped
    # What the replay (ingest's reader) sees in a downloaded file is the recording, trade for trade.
    assert _replayed_ids(local(tmp_path, BTC19), take=10_000) == _archived_ids("BTCUSDT", "2024-07-19")


def test_second_run_downloads_nothing(tmp_path: Path) -> None:
    archive = real_archive()
    with archive_server(archive) as srv:
        args = download_args(srv.url, tmp_path, "BTCUSDT,ETHUSDT", "aggTrades", "2024-07-18", "2024-07-19")
        first = run(args)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "downloaded 4 " in first.stdout
        for kind, path, day in OTHER_KINDS:
            r = run(download_args(srv.url, tmp_path, "BTCUSDT", kind, day, day))
            assert r.returncode == 0 and local(tmp_path, path).read_bytes() == archive.files[path]
        srv.log.clear()
        second = run(args)
        again = [run(download_args(srv.url, tmp_path, "BTCUSDT", k, day, day)) for k, _, day in OTHER_KINDS]
    assert second.returncode == 0 and all(r.returncode == 0 for r in again)
    assert "downloaded 0 " in second.stdout and "skipped 4 already verified" in second.stdout
    assert set(statuses(tmp_path).values()) == {"skipped"}
    assert srv.log == []  # not even a checksum asked for


def test_plan_takes_whole_finished_months_and_lists_days_not_archived_yet() -> None:
    p = plan(["btcusdt"], "aggTrades", date(2024, 6, 15), date(2024, 9, 3), today=date(2024, 9, 2))
    got = [(f.period, f.label) for f in p.files]
    june = [("daily", f"2024-06-{d}") for d in range(15, 31)]
    assert got == [*june, ("monthly", "2024-07"), ("monthly", "2024-08"), ("daily", "2024-09-01")]
    assert p.not_yet == [("BTCUSDT", date(2024, 9, 2)), ("BTCUSDT", date(2024, 9, 3))]
    # The month that is not over is never asked for as a monthly file.
    p = plan(["BTCUSDT"], "klines-1m", date(2024, 8, 1), date(2024, 8, 31), today=date(2024, 8, 31))
    assert {f.period for f in p.files} == {"daily"} and len(p.files) == 30 and len(p.not_yet) == 1
    assert p.files[0].rel == "futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-08-01.zip"


def test_a_local_file_changed_after_verification_is_fetched_again(tmp_path: Path) -> None:
    archive = real_archive()
    with archive_server(archive) as srv:
        args = download_args(srv.url, tmp_path, "BTCUSDT,ETHUSDT", "aggTrades", "2024-07-18", "2024-07-19")
        assert run(args).returncode == 0
        damaged = local(tmp_path, BTC19)
        data = bytearray(damaged.read_bytes())
        data[100] ^= 0x01
        damaged.write_bytes(bytes(data))
        srv.log.clear()
        r = run(args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert damaged.read_bytes() == archive.files[BTC19]
    assert {p for p, _ in srv.log} == {BTC19, BTC19 + ".CHECKSUM"}


def test_monthly_file_where_published_daily_files_otherwise(tmp_path: Path) -> None:
    archive = Archive()
    days = agg_csv_by_day("BTCUSDT")
    july = archive.add_zip("aggTrades", "BTCUSDT", "2024-07", AGG_HEADER, days["2024-07-18"] + days["2024-07-19"])
    aug8 = archive.add_zip("aggTrades", "BTCUSDT", "2024-08-08", AGG_HEADER, days["2024-08-08"])
    with archive_server(archive) as srv:
        r = run(download_args(srv.url, tmp_path, "BTCUSDT", "aggTrades", "2024-07-01", "2024-08-31"))
    assert r.returncode == 0, r.stdout + r.stderr  # missing days are listed, not fatal
    got = statuses(tmp_path)
    assert got.pop(july) == "downloaded" and got.pop(aug8) == "downloaded"
    assert got == {daily_path("aggTrades", "BTCUSDT", f"2024-08-{d:02d}"): "missing" for d in range(1, 32) if d != 8}
    assert local(tmp_path, july).read_bytes() == archive.files[july]
    requested = {p for p, _ in srv.log}
    assert daily_path("aggTrades", "BTCUSDT", "2024-08", monthly=True) + ".CHECKSUM" in requested  # asked, 404
    assert not any("2024-07-" in p for p in requested)  # July came whole from its monthly file


def test_a_file_that_keeps_failing_is_reported_after_the_retries(tmp_path: Path) -> None:
    archive = real_archive()
    with archive_server(archive) as srv:
        srv.faults[BTC18] = ["503"] * 10
        r = run(download_args(srv.url, tmp_path, "BTCUSDT", "aggTrades", "2024-07-18", "2024-07-19", "--attempts", "3"))
    assert r.returncode == 1
    assert "FAILED: futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-07-18.zip" in r.stdout
    assert "HTTP 503" in r.stdout and len(srv.gets(BTC18)) == 3
    assert statuses(tmp_path)[BTC19] == "downloaded"


def test_killed_download_resumes_without_fetching_verified_files_again(tmp_path: Path) -> None:
    archive = real_archive()
    slow = archive.files[ETH19]
    manifest = tmp_path / "archive" / ".ticklens-verified.jsonl"
    part = local(tmp_path, ETH19).with_name(local(tmp_path, ETH19).name + ".part")
    args = download_args("", tmp_path, "BTCUSDT,ETHUSDT", "aggTrades", "2024-07-18", "2024-07-19")
    with archive_server(archive) as srv:
        args[args.index("--base-url") + 1] = srv.url
        srv.trickle[ETH19] = (1024, 0.02)  # ~50 kB/s: seconds to go, while the others finish
        proc = subprocess.Popen(
            [sys.executable, "-m", "ticklens.cli", "history", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(
                lambda: (
                    manifest.exists()
                    and len(manifest.read_text().splitlines()) == 3
                    and part.exists()
                    and part.stat().st_size > 20_000
                ),
                60,
                "three files verified and the fourth part-way",
            )
        finally:
            os.kill(proc.pid, signal.SIGKILL)  # the hardest stop: no cleanup runs
            proc.wait(timeout=10)
        kept = part.stat().st_size
        assert 0 < kept < len(slow)
        assert not local(tmp_path, ETH19).exists()  # a part never takes the final name
        # Nothing reads a partial file as archive data.
        v = run(
            ["verify", "--archive-only", "--symbols", "ETHUSDT", "--data", "aggTrades", "--from", "2024-07-18"]
            + ["--to", "2024-07-19", "--dir", str(tmp_path / "archive"), "--report", str(tmp_path / "v.json")]
        )
        assert v.returncode == 0, v.stdout + v.stderr
        assert json.loads((tmp_path / "v.json").read_text())[0]["files"] == ["ETHUSDT-aggTrades-2024-07-18.zip"]

        srv.trickle.clear()
        srv.log.clear()
        r = run(args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "downloaded 1 " in r.stdout and "skipped 3 already verified" in r.stdout
    assert {p for p, _ in srv.log} == {ETH19, ETH19 + ".CHECKSUM"}  # the verified ones untouched
    assert srv.gets(ETH19) == [f"bytes={kept}-"]  # resumed where the killed run stopped
    assert local(tmp_path, ETH19).read_bytes() == slow
    assert not part.exists()
    assert _replayed_ids(local(tmp_path, ETH19), take=50_000) == _archived_ids("ETHUSDT", "2024-07-19")


def test_progress_bar_on_a_terminal_and_the_summary_alone_in_a_pipe(tmp_path: Path) -> None:
    with archive_server(real_archive()) as srv:
        args = download_args(srv.url, tmp_path / "tty", "BTCUSDT,ETHUSDT", "aggTrades", "2024-07-18", "2024-07-19")
        (tmp_path / "tty").mkdir()
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ticklens.cli", "history", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=dict(os.environ, COLUMNS="160", TERM="xterm-256color"),
        )
        os.close(slave)
        out = b""
        while True:
            try:
                buf = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not buf:
                break
            out += buf
        os.close(master)
        assert proc.wait(timeout=60) == 0
        piped = run(download_args(srv.url, tmp_path, "BTCUSDT,ETHUSDT", "aggTrades", "2024-07-18", "2024-07-19"))
    text = out.decode("utf-8", "replace")
    assert "download" in text and "4/4" in text and "ETA" in text and "\x1b[" in text  # drawn, in place
    assert "downloaded 4 " in text
    assert piped.returncode == 0 and "\x1b[" not in piped.stdout + piped.stderr
    assert piped.stdout.splitlines()[0].startswith("downloaded 4 ") and len(piped.stdout.splitlines()) == 1
