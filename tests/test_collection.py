"""Collection control across runs: what /api/v1/status and /api/v1/symbols say after stops, resumes and ends.

A real API (uvicorn) starts real flow processes over the bundled recordings;
expected values are counted here from the store with SQL.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from api_support import api_server, rows, wait_until
from flow_support import WINDOW_A, write_config

from ticklens.domain.times import iso_ms


def _finished(c) -> bool:
    return not c.get("/api/v1/status").json()["running"]


def test_a_resumed_replay_reports_the_totals_the_store_holds(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        source={"kind": "replay", "paths": [str(p) for p in WINDOW_A], "speed": 80},
        recovery={"snapshot_interval_s": 0.5},
        progress_interval_s=0.3,
    )
    store = tmp_path / "ticklens.db"
    with api_server(config, tmp_path / "uvicorn.log") as server:
        c = server.client
        assert c.post("/api/v1/start", json={}).json()["changed"] is True
        wait_until(lambda: c.get("/api/v1/status").json()["trades_total"] > 500, 120, "the first trades")
        assert c.post("/api/v1/stop").json()["changed"] is True
        assert c.post("/api/v1/start", json={}).json()["changed"] is True  # resumes from the recovery snapshot
        wait_until(lambda: _finished(c), 90, "the resumed replay to finish")
        # Started once more, the replay resumes at its end and consumes nothing new.
        assert c.post("/api/v1/start", json={}).json()["changed"] is True
        wait_until(lambda: _finished(c), 120, "the third run to finish")
        status = c.get("/api/v1/status").json()
    total = rows(store, "SELECT COUNT(*) FROM ticks")[0][0]
    assert total > 10_000
    assert status["trades_total"] == total
    per = {s["symbol"]: s for s in status["per_symbol"]}
    for sym, n, last in rows(store, "SELECT symbol, COUNT(*), MAX(ts_ms) FROM ticks GROUP BY symbol"):
        assert per[sym]["trades"] == n, sym
        assert per[sym]["last_trade_ms"] == last and per[sym]["last_trade_time"] == iso_ms(last), sym
    # The flow's own progress report (its status row) says the same.
    flow = orjson.loads(rows(store, "SELECT value FROM status WHERE key='flow'")[0][0])
    assert flow["trades_total"] == total


def test_a_symbol_added_by_start_stays_listed_after_its_flow_finished(tmp_path: Path) -> None:
    config = write_config(tmp_path, symbols=["btcusdt"], progress_interval_s=0.3)  # replays at full speed
    with api_server(config, tmp_path / "uvicorn.log") as server:
        c = server.client
        started = c.post("/api/v1/start", json={"symbols": ["ethusdt", "solusdt"]}).json()
        assert started["symbols"] == ["btcusdt", "ethusdt", "solusdt"]
        wait_until(lambda: _finished(c), 90, "the replay to finish")
        assert c.post("/api/v1/stop").json()["changed"] is False  # nothing runs: a no-op
        in_status = {s["symbol"] for s in c.get("/api/v1/status").json()["per_symbol"]}
        listed = {s["symbol"]: s for s in c.get("/api/v1/symbols").json()["symbols"]}
        sol = c.get("/api/v1/ticks/solusdt")
    assert in_status == {"btcusdt", "ethusdt", "solusdt"}
    assert set(listed) == in_status
    assert listed["solusdt"]["configured"] and not listed["solusdt"]["has_data"]  # in no recording
    assert listed["ethusdt"]["configured"] and listed["ethusdt"]["has_data"]
    assert sol.status_code == 200 and sol.json()["status"] == "no_data"
