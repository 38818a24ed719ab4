"""Book data is stored exactly once: a second replay and a restart after SIGKILL give the same store.

The real flow (subprocess) replays Binance's 2024-08-08 USD-M recordings with trades,
bookTicker and depth; every book table is compared row for row (wall-clock columns aside)
with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.book_reference import UM, RefBook, raw_lines
from tests.flow_support import ROOT, query, run_flow, wait_for_rows, write_config

pytestmark = pytest.mark.skipif(not UM.is_dir(), reason="recordings in ../shared/data/binance are missing")

FILES = [UM / "btcusdt_20240808.gz", UM / "ethusdt_20240808.gz"]
TABLES = {
    "quotes": "SELECT symbol, update_id, ts_ms, event_ms, recv_ms, bid, bid_qty, ask, ask_qty, source FROM quotes"
    " ORDER BY 1, 2",
    "depth_updates": "SELECT symbol, final_id, first_id, prev_id, ts_ms, event_ms, recv_ms, n_bids, n_asks, levels"
    " FROM depth_updates ORDER BY symbol, final_id",
    "book_snapshots": "SELECT symbol, update_id, ts_ms, recv_ms, kind, depth_limit, complete_low, complete_high,"
    " n_bids, n_asks, levels FROM book_snapshots ORDER BY symbol, update_id",
    "book_gaps": "SELECT symbol, from_update_id, from_ms, to_update_id, to_ms, reason, status, detail FROM book_gaps"
    " ORDER BY 1, 2, 3",
    "ticks": "SELECT symbol, trade_id, ts_ms, price, qty FROM ticks ORDER BY 1, 2",
}


class _IdBook(RefBook):
    """The reference book, noting the id of every event it applies."""

    def __init__(self, spot: bool) -> None:
        super().__init__(spot)
        self.ids: list[int] = []

    def _event(self, ev: dict) -> dict | None:
        applied = self.applied
        out = super()._event(ev)
        if self.applied > applied:
            self.ids.append(ev["u"])
        return out


def _raw_ids() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(symbol, u) of every applied depth event (the plain-dict reference book) and of every
    distinct bookTicker update, straight from the recordings."""
    depth, quotes = [], set()
    for path in FILES:
        symbol = path.name.split("_")[0]
        ref = _IdBook(spot=False)
        for raw in raw_lines([path]):
            msg = json.loads(raw)
            data = msg.get("data", msg)
            if data.get("e") == "bookTicker":
                quotes.add((symbol, data["u"]))
            else:
                ref.on_message(msg)
        assert ref.chain_breaks == 0
        depth.extend((symbol, u) for u in ref.ids)
    return depth, sorted(quotes)


def _dump(db: Path) -> dict[str, list[tuple]]:
    return {name: query(db, sql) for name, sql in TABLES.items()}


def _cfg(tmp: Path, **extra: object) -> Path:
    return write_config(
        tmp,
        source={"paths": [str(p) for p in FILES], "streams": ["trade", "bookTicker", "depth"], "batch_rows": 3000},
        recovery={"enabled": True, "snapshot_interval_s": 0.2},
        **extra,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[tuple]]]:
    tmp = tmp_path_factory.mktemp("ref")
    cfg = _cfg(tmp)
    res = run_flow(cfg, "--no-recovery", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    dump = _dump(tmp / "ticklens.db")
    depth_ids, quote_ids = _raw_ids()
    assert len(depth_ids) == 13_128  # the count of applicable events in these files
    assert [(r[0], r[1]) for r in dump["depth_updates"]] == depth_ids
    assert [(r[0], r[1]) for r in dump["quotes"] if r[9] == "bookTicker"] == quote_ids
    assert dump["book_snapshots"] and not dump["book_gaps"]
    return cfg, dump


def test_replaying_the_same_recordings_twice_stores_nothing_twice(reference) -> None:
    cfg, want = reference
    res = run_flow(cfg, "--no-recovery", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _dump(cfg.parent / "ticklens.db") == want


def test_sigkill_mid_replay_then_restart_from_recovery_gives_the_uninterrupted_store(reference, tmp_path: Path) -> None:
    _, want = reference
    cfg = _cfg(tmp_path)
    db = tmp_path / "ticklens.db"
    env = dict(os.environ, TICKLENS_CONFIG=str(cfg), TICKLENS_QUIET="1")
    proc = subprocess.Popen([sys.executable, "-m", "flows.runner"], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    kill_at = random.Random(os.getpid()).randint(2_000, 9_000)
    wait_for_rows(proc, db, "depth_updates", kill_at, 600, "the flow")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = query(db, "SELECT COUNT(*) FROM depth_updates")[0][0]
    assert partial < len(want["depth_updates"])
    res = run_flow(cfg, timeout=900)  # the same config: resumes from the recovery snapshots
    assert res.returncode == 0, res.stderr[-3000:]
    assert _dump(db) == want
