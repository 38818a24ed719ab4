"""Bars in the store equal independent references: polars over the same trades, and Binance's klines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from tests.flow_support import BTC_2020, SAMPLE, WINDOW_A, WINDOW_B, query, run_flow, shuffled_recording, write_config
from tests.reference import read_klines, read_recording, reference_bars, trades_frame

BAR_FIELDS = ["open", "high", "low", "close", "volume", "trades", "taker_buy_volume", "first_id", "last_id"]


def stored_bars(db: Path, timeframe: str) -> pl.DataFrame:
    rows = query(
        db,
        "SELECT symbol, start_ms, open, high, low, close, volume, quote_volume, trades, taker_buy_volume,"
        " first_id, last_id, closed FROM bars WHERE timeframe=? ORDER BY symbol, start_ms",
        (timeframe,),
    )
    cols = ["symbol", "start_ms", "open", "high", "low", "close", "volume", "quote_volume", "trades"]
    cols += ["taker_buy_volume", "first_id", "last_id", "closed"]
    return pl.DataFrame(rows, schema=cols, orient="row")


def assert_bars_equal(db: Path, trades: pl.DataFrame) -> None:
    for tf in ("1s", "1m", "5m"):
        ours = stored_bars(db, tf)
        ref = reference_bars(trades, tf)
        assert ours.height == ref.height, tf
        assert ours["closed"].min() == 1, "every bar is final at end of replay"
        for field in ["symbol", "start_ms", *BAR_FIELDS]:
            assert ours[field].to_list() == ref[field].to_list(), (tf, field)
        rel = ((ours["quote_volume"] - ref["quote_volume"]).abs() / ref["quote_volume"]).max()
        assert rel < 1e-7, (tf, rel)  # exact integer sums vs float sums of the reference


@pytest.fixture(scope="module")
def window_a_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("window_a")
    res = run_flow(write_config(tmp), "--no-recovery")
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp / "ticklens.db"


def test_every_bar_of_two_symbols_equals_polars_reference(window_a_store: Path) -> None:
    trades = trades_frame([t for p in WINDOW_A for t in read_recording(p)])
    assert set(trades["symbol"].unique()) == {"btcusdt", "ethusdt"}
    assert query(window_a_store, "SELECT COUNT(*) FROM ticks")[0][0] == trades.height
    assert_bars_equal(window_a_store, trades)


def test_ticks_keep_exchange_event_and_receive_times(window_a_store: Path) -> None:
    rows = query(window_a_store, "SELECT ts_ms, event_ms, recv_ms FROM ticks WHERE symbol='btcusdt' LIMIT 1000")
    assert all(ev >= ts for ts, ev, _ in rows)
    # Receive time comes from the recording (ns → ms), close to the exchange time.
    assert all(abs(recv - ev) < 5_000 for _, ev, recv in rows)


@pytest.mark.parametrize(
    ("paths", "kline_file"),
    [
        ([BTC_2020], "BTCUSDT-1m-2020-12-09T00.csv"),
        (WINDOW_A[:2], "BTCUSDT-1m-2024-07-18T2357_2024-07-19T0005.csv"),
        (WINDOW_B[:1], "BTCUSDT-1m-2024-08-08T2354_2024-08-09T0000.csv"),
    ],
)
def test_one_minute_bars_equal_binance_klines(tmp_path: Path, paths: list[Path], kline_file: str) -> None:
    res = run_flow(
        write_config(tmp_path, symbols=["btcusdt"], source={"paths": [str(p) for p in paths]}), "--no-recovery"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ours = {r[1]: r for r in stored_bars(tmp_path / "ticklens.db", "1m").iter_rows()}
    klines = read_klines(SAMPLE / kline_file)
    first_trade = min(query(tmp_path / "ticklens.db", "SELECT MIN(ts_ms), MAX(ts_ms) FROM ticks")[0])
    last_trade = query(tmp_path / "ticklens.db", "SELECT MAX(ts_ms) FROM ticks")[0][0]
    compared = 0
    for k in klines.iter_rows(named=True):
        start = k["open_time"]
        # The recording starts and stops inside its first and last minute: those cannot match.
        if start < first_trade - first_trade % 60_000 + (60_000 if first_trade % 60_000 > 1_000 else 0):
            continue
        if start + 60_000 > last_trade + 1_000:
            continue
        bar = ours[start]
        _, _, o, h, lo, c, v, qv, n, tbv, *_ = bar
        assert (o, h, lo, c, v, n, tbv) == (
            k["open"],
            k["high"],
            k["low"],
            k["close"],
            k["volume"],
            k["count"],
            k["taker_buy_volume"],
        ), start
        assert abs(qv - k["quote_volume"]) <= 0.01, start
        compared += 1
    assert compared == {"BTCUSDT-1m-2020-12-09T00.csv": 60}.get(kline_file, compared)
    assert compared >= 5


def test_out_of_order_trades_give_the_same_store_as_sorted_input(tmp_path: Path, window_a_store: Path) -> None:
    shuffled = tmp_path / "shuffled_trades.gz"
    shuffled_recording(WINDOW_A, shuffled, max_shift_ms=400, seed=7)
    cfg = write_config(tmp_path, source={"paths": [str(shuffled)], "batch_rows": 97}, bars={"lateness_ms": 100})
    res = run_flow(cfg, "--no-recovery")
    assert res.returncode == 0, res.stderr[-3000:]
    db = tmp_path / "ticklens.db"
    cols = "symbol, timeframe, start_ms, open, high, low, close, volume, quote_volume, trades, taker_buy_volume"
    sql = f"SELECT {cols} FROM bars ORDER BY symbol, timeframe, start_ms"
    assert query(db, sql) == query(window_a_store, sql)
    # With 100 ms allowed lateness some trades arrive after their bar closed: they revise it.
    revised = query(db, "SELECT COUNT(*) FROM bars WHERE revision > 0")[0][0]
    assert revised > 0
    status = json.loads(query(db, "SELECT value FROM status WHERE key='symbol:btcusdt'")[0][0])
    assert status["late_trades"] > 0 and status["revisions"] > 0


def test_duplicated_trades_are_stored_once(tmp_path: Path) -> None:
    dup = tmp_path / "dups_trades.gz"
    with gzip.open(WINDOW_A[0], "rt") as src, gzip.open(dup, "wt") as dst:
        lines = src.readlines()
        for i, line in enumerate(lines):
            dst.write(line)
            if i % 3 == 0:
                dst.write(line)  # the same trade id twice, as reconnect overlaps deliver it
        dst.writelines(lines[:200])  # and a replayed burst at the end
    cfg = write_config(tmp_path, symbols=["btcusdt"], source={"paths": [str(dup)], "batch_rows": 500})
    res = run_flow(cfg, "--no-recovery")
    assert res.returncode == 0, res.stderr[-3000:]
    db = tmp_path / "ticklens.db"
    trades = trades_frame(read_recording(WINDOW_A[0]))
    assert query(db, "SELECT COUNT(*) FROM ticks")[0][0] == trades.height
    assert_bars_equal(db, trades)
    status = json.loads(query(db, "SELECT value FROM status WHERE key='symbol:btcusdt'")[0][0])
    assert status["duplicates"] == len(lines) // 3 + (len(lines) % 3 > 0) + 200


def test_malformed_messages_are_kept_aside_and_the_flow_goes_on(tmp_path: Path) -> None:
    bad = tmp_path / "bad_trades.gz"
    junk = [
        b"not json at all",
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"T":1,"s":"BTCUSDT","p":"1","q":"1","m":true}}',
        b'{"result":null,"id":1}',
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1721347022000,"T":1721347022000,"s":"BTCUSDT","t":1,"p":"-5","q":"1","m":true}}',
        b'{"e":"listenKeyExpired","E":1}',
    ]
    with gzip.open(WINDOW_A[0], "rb") as src, gzip.open(bad, "wb") as dst:
        for i, line in enumerate(src):
            dst.write(line)
            if i % 200 == 0:
                dst.write(b"1721347022000000000 " + junk[(i // 200) % len(junk)] + b"\n")
    cfg = write_config(tmp_path, symbols=["btcusdt"], source={"paths": [str(bad)]})
    res = run_flow(cfg, "--no-recovery")
    assert res.returncode == 0, res.stderr[-3000:]
    db = tmp_path / "ticklens.db"
    trades = trades_frame(read_recording(WINDOW_A[0]))
    assert query(db, "SELECT COUNT(*) FROM ticks")[0][0] == trades.height
    reasons = [r[0] for r in query(db, "SELECT reason FROM rejects")]
    n_junk = len(range(0, trades.height, 200))
    assert len(reasons) == n_junk
    assert any("invalid JSON" in r for r in reasons)
    assert any("missing field 't'" in r for r in reasons)
    assert any("subscription" in r for r in reasons)
    assert any("price" in r for r in reasons)
    assert any("unexpected event type" in r for r in reasons)


def test_two_workers_and_a_second_run_give_identical_stores(tmp_path: Path, window_a_store: Path) -> None:
    cfg = write_config(tmp_path)
    assert run_flow(cfg, "--no-recovery", "-w", "2").returncode == 0
    db = tmp_path / "ticklens.db"
    for sql in (
        "SELECT symbol, trade_id, ts_ms, price, qty, is_buyer_maker FROM ticks ORDER BY 1, 2",
        "SELECT symbol, timeframe, start_ms, open, high, low, close, volume, trades FROM bars ORDER BY 1, 2, 3",
    ):
        assert query(db, sql) == query(window_a_store, sql)
    assert run_flow(cfg, "--no-recovery").returncode == 0  # a replay into the same store duplicates nothing
    assert query(db, "SELECT COUNT(*) FROM ticks") == query(window_a_store, "SELECT COUNT(*) FROM ticks")


def test_bad_pipeline_value_fails_at_start_naming_field_and_value(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, timeframes=["1s", "2m"])
    res = run_flow(cfg)
    assert res.returncode == 2
    assert "timeframes.1" in res.stderr and "'2m'" in res.stderr
    cfg = write_config(tmp_path, symbols=["btc-usdt"])
    res = run_flow(cfg)
    assert res.returncode == 2 and "btc-usdt" in res.stderr and "symbols" in res.stderr
