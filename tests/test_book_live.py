"""Books over the live path: the real flow's WebSocket client against a Binance-like feed on loopback.

The feed (tests/book_feed_support.py) replays the 2024-08-08 BTCUSDT recording on
`/public` (bookTicker, depth) and `/market` (aggTrade) and answers `GET /fapi/v1/depth`
from its own plain-dict true book. Injected `pu` breaks must give exactly one book gap
each and a resync after which the stored book equals the feed's true book; a snapshot
endpoint failing once must be retried with backoff and leave its unknown interval recorded;
planned rollovers (both connections overlapping) must leave the book unbroken.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from tests.api_support import api_server, wait_until
from tests.book_feed_support import BookFeed
from tests.book_reference import UM
from tests.flow_support import ROOT, query, write_config

pytestmark = pytest.mark.skipif(not UM.is_dir(), reason="recordings in ../shared/data/binance are missing")


def _flow_through_the_last_depth(tmp: Path, feed: BookFeed, **source: object) -> tuple[Path, Path]:
    """The flow on `feed` (more `source` settings) until it has stored the feed's last depth event,
    then stopped with SIGTERM (it must exit 0): (its config, its store)."""
    cfg = write_config(
        tmp,
        symbols=["btcusdt"],
        source={
            "kind": "feed",
            "url": f"ws://127.0.0.1:{feed.port}/market/stream",
            "streams": ["aggTrade", "bookTicker", "depth"],
            "paths": [],
            **source,
        },
        recovery={"enabled": False},
        progress_interval_s=0.5,
    )
    env = dict(os.environ, TICKLENS_CONFIG=str(cfg), TICKLENS_QUIET="1")
    log = open(tmp / "flow.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.runner", "--no-recovery"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    db = tmp / "ticklens.db"
    wait_until(
        lambda: proc.poll() is not None or _stored_through(db, feed.last_depth_u), 240, "the last depth event stored"
    )
    assert proc.poll() is None, (tmp / "flow.log").read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    return cfg, db


def _stored_through(db: Path, u: int) -> bool:
    try:
        return bool(query(db, "SELECT 1 FROM depth_updates WHERE symbol='btcusdt' AND final_id=?", (u,)))
    except Exception:  # noqa: BLE001 (not created yet)
        return False


def _book(api, u: int) -> tuple[dict, dict, tuple]:
    """The whole stored book after update u (export, every level) and its complete range."""
    head = api.client.get("/api/v1/book/btcusdt", params={"update_id": u, "depth": 1})
    assert head.status_code == 200, head.text
    body = head.json()
    csv = api.client.get("/api/v1/export/btcusdt", params={"kind": "book", "at": body["at_ms"]})
    df = pl.read_csv(io.BytesIO(csv.content), schema_overrides={"price": pl.String, "qty": pl.String})
    side = {
        s: {Decimal(p): Decimal(q) for p, q in df.filter(pl.col("side") == s).select("price", "qty").rows()}
        for s in ("bid", "ask")
    }
    lo, hi = body["complete_range"]
    return side["bid"], side["ask"], (Decimal(str(lo)) if lo else Decimal(0), Decimal(str(hi)) if hi else None)


def _within(book: dict, rng: tuple) -> dict:
    lo, hi = rng
    return {p: q for p, q in book.items() if p >= lo and (hi is None or p <= hi)}


def _truth(feed: BookFeed, u: int) -> tuple[dict, dict]:
    bids, asks = feed.truth.history[u]
    return ({p: Decimal(q) for p, (_, q) in bids.items()}, {p: Decimal(q) for p, (_, q) in asks.items()})


def test_pu_breaks_and_a_failing_snapshot_endpoint_give_one_gap_each_and_the_true_book_after_resync(
    tmp_path: Path,
) -> None:
    drop = {250, 700}
    feed = BookFeed(speed=4.0, drop=drop, fail_snapshots=1, depth_events=1000).start()
    try:
        cfg, db = _flow_through_the_last_depth(tmp_path, feed, backoff_initial_s=0.2)
        gaps = query(
            db,
            "SELECT reason, status, from_update_id, to_update_id, from_ms, to_ms FROM book_gaps"
            " WHERE symbol='btcusdt' ORDER BY from_ms",
        )
        reasons = [g[0] for g in gaps]
        assert reasons[0] == "snapshot_failure" and set(reasons[1:]) == {"pu_break"}, gaps
        assert all(g[1] == "closed" for g in gaps)
        depth = [e for e in feed.events if e.kind == "depth"]
        # Each dropped event breaks the chain right there: a pu_break gap from the event before it to a
        # resync past it. The feed runs on the wall clock; a flow it outpaces (a loaded machine) may
        # still be syncing when a drop comes: then the drop lies inside the gap already open.
        breaks = gaps[1:]
        for i in sorted(drop):
            own = [g for g in breaks if g[2] == depth[i - 1].data["u"]]
            if own:
                assert own[0][3] > depth[i].data["u"], (i, gaps)  # known again only after a resync past it
            else:
                assert any(g[2] < depth[i].data["u"] < g[3] for g in gaps), (i, gaps)
        assert breaks and len(breaks) == sum(any(g[2] == depth[i - 1].data["u"] for g in breaks) for i in drop)
        assert feed.snapshot_requests == 1 + 1 + len(breaks)  # the failed one retried, one per break
        # The first sync: the unknown interval before it is the snapshot_failure gap, from the
        # first event buffered; the book is known from its to_update_id on.
        assert gaps[0][2] == depth[0].data["U"] - 1
        stored = [r[0] for r in query(db, "SELECT final_id FROM depth_updates ORDER BY final_id")]
        assert not set(stored) & {depth[i].data["u"] for i in drop}
        book = json.loads(query(db, "SELECT value FROM status WHERE key='book:btcusdt'")[0][0])
        assert (book["gaps"], book["snapshots"], book["live"]) == (len(gaps), 1 + len(breaks), True)
        with api_server(cfg, tmp_path / "api.log") as api:
            r = api.client.get("/api/v1/book/btcusdt/gaps").json()
            assert [g["reason"] for g in r["gaps"]] == reasons
            # After each resync, and at the end, the stored book is the feed's true book (every
            # level the snapshot's complete range covers).
            for u in [g[3] for g in gaps] + [feed.last_depth_u]:
                bids, asks, rng = _book(api, u)
                want_b, want_a = _truth(feed, u)
                assert _within(bids, rng) == _within(want_b, rng)
                assert _within(asks, rng) == _within(want_a, rng)
                assert max(bids) == max(want_b) and min(asks) == min(want_a)
            # Inside a gap the answer is the last book known, marked stale.
            frm_ms, to_ms = gaps[1][4], gaps[1][5]
            inside = api.client.get("/api/v1/book/btcusdt", params={"at": (frm_ms + to_ms) // 2}).json()
            assert inside["stale"] and inside["update_id"] == gaps[1][2]
        trades = query(db, "SELECT COUNT(*) FROM ticks")[0][0]
        assert trades == sum(1 for e in feed.events if e.kind == "trade")  # /market carried the trades
    finally:
        feed.stop()


def test_planned_rollovers_keep_the_book_unbroken(tmp_path: Path) -> None:
    feed = BookFeed(speed=4.0, depth_events=900).start()
    try:
        cfg, db = _flow_through_the_last_depth(tmp_path, feed, rollover_s=1.5, overlap_s=0.5)
        assert feed.connections >= 6  # several rollovers on both paths
        assert query(db, "SELECT COUNT(*) FROM book_gaps")[0][0] == 0
        depth = [e.data["u"] for e in feed.events if e.kind == "depth"]
        stored = [r[0] for r in query(db, "SELECT final_id FROM depth_updates ORDER BY final_id")]
        # every event from the first sync on (the ones before it the snapshot covered), none twice
        # (a loaded machine starts the flow late: the feed runs on, so the first sync may come late too)
        assert stored == depth[depth.index(stored[0]) :] and len(stored) >= 100
        feeds = json.loads(query(db, "SELECT value FROM status WHERE key='flow'")[0][0])["feeds"]
        (stats,) = feeds.values()
        assert stats["rollovers"] >= 2
        assert stats["book_duplicates"] > 0  # both connections delivered the overlap; one copy was used
        with api_server(cfg, tmp_path / "api.log") as api:
            bids, asks, rng = _book(api, depth[-1])
            want_b, want_a = _truth(feed, depth[-1])
            assert _within(bids, rng) == _within(want_b, rng) and _within(asks, rng) == _within(want_a, rng)
    finally:
        feed.stop()
