"""Books end to end over the live path against the real local feed (`python -m ticklens.emulator`).

The feed serves the bundled 2024-08-08 sample (data/sample/um_*_book.gz: trades on `/market`,
bookTicker and depth on `/public`, `GET /fapi/v1/depth`), with its book faults: depth events
dropped on the connection (a `pu` break each) and the first snapshot request failing. The real
flow (subprocess) stores the books; expected values come from the feed's own ground truth
(`/control/book`, `/control/stats`), which tests/test_feed_books.py checks against the recording.
"""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import polars as pl

from tests.api_support import api_server, wait_until
from tests.feed_support import Feed, Flow, query, write_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = [
    ROOT / "data" / "sample" / "um_btcusdt_20240808_book.gz",
    ROOT / "data" / "sample" / "um_ethusdt_20240808_book.gz",
]
DROP_EVERY, DROPS = 500, 4  # a drop after every 500 depth events of a symbol, 4 per connection in all


def _truth(feed: Feed, symbol: str, u: int) -> tuple[dict, dict]:
    body = feed.control(f"book?symbol={symbol}&update_id={u}")
    assert body["known"] and body["lastUpdateId"] == u
    return ({Decimal(p): Decimal(q) for p, q in body["bids"]}, {Decimal(p): Decimal(q) for p, q in body["asks"]})


def _stored(api, symbol: str, u: int) -> tuple[dict, dict, tuple[Decimal, Decimal | None]]:
    """The whole stored book after update u (every level, through the export) and its complete range."""
    head = api.client.get(f"/api/v1/book/{symbol}", params={"update_id": u, "depth": 1})
    assert head.status_code == 200, head.text
    body = head.json()
    csv = api.client.get(f"/api/v1/export/{symbol}", params={"kind": "book", "at": body["at_ms"]})
    df = pl.read_csv(io.BytesIO(csv.content), schema_overrides={"price": pl.String, "qty": pl.String})
    assert set(df["update_id"].to_list()) == {u}
    sides = {
        s: {Decimal(p): Decimal(q) for p, q in df.filter(pl.col("side") == s).select("price", "qty").rows()}
        for s in ("bid", "ask")
    }
    lo, hi = body["complete_range"]
    return sides["bid"], sides["ask"], (Decimal(str(lo or 0)), None if hi is None else Decimal(str(hi)))


def _within(book: dict, rng: tuple) -> dict:
    lo, hi = rng
    return {p: q for p, q in book.items() if p >= lo and (hi is None or p <= hi)}


def test_feed_faults_give_one_gap_each_and_after_every_resync_the_feeds_true_book(tmp_path: Path) -> None:
    feed = Feed(*map(str, SAMPLE), "--speed", "6", "--depth-fail", "1", log=tmp_path / "feed.log")
    flow = None
    try:
        url = f"ws://127.0.0.1:{feed.port}/market/stream?depth_drop_every={DROP_EVERY}&depth_drop_count={DROPS}"
        cfg = write_config(tmp_path, url, streams=["trade", "bookTicker", "depth"], backoff_initial_s=0.2)
        flow = Flow(cfg, tmp_path / "flow.log")
        db = tmp_path / "ticklens.db"
        symbols = ("btcusdt", "ethusdt")

        def caught_up() -> dict[str, int] | None:
            """Everything sent, and the store holds each symbol's last sent depth event, no gap open."""
            assert flow.alive(), flow.stderr()
            if not feed.stats()["at_end"]:
                return None
            last = {s: feed.control(f"book?symbol={s}&limit=1")["lastUpdateId"] for s in symbols}
            stored = dict(query(db, "SELECT symbol, MAX(final_id) FROM depth_updates GROUP BY symbol"))
            open_gaps = query(db, "SELECT COUNT(*) FROM book_gaps WHERE status='open'")
            return last if stored == last and open_gaps == [(0,)] else None

        last_sent = wait_until(caught_up, 300, "the sample sent and stored, every gap closed", interval=0.5)
        stats = feed.stats()
        assert flow.stop() == 0
        flow = None
        dropped = sorted(stats["depth_dropped_ids"])
        assert stats["depth_dropped"] == len(dropped) == DROPS
        assert sorted(sym for sym, _ in dropped) == ["btcusdt", "btcusdt", "ethusdt", "ethusdt"]
        assert stats["snapshots"]["failed"] == 1
        gaps = query(
            db,
            "SELECT symbol, reason, status, from_update_id, to_update_id FROM book_gaps ORDER BY symbol, from_ms",
        )
        assert all(g[2] == "closed" for g in gaps), gaps
        breaks = sorted((g[0], g[3], g[4]) for g in gaps if g[1] == "pu_break")
        failures = [g for g in gaps if g[1] == "snapshot_failure"]
        assert len(failures) == 1, gaps  # the one failed request, during a first sync
        stored = {
            s: {r[0] for r in query(db, "SELECT final_id FROM depth_updates WHERE symbol=?", (s,))} for s in symbols
        }
        # One gap per break: it opens at the last event applied before the dropped one and closes at a
        # resync after it. A drop that comes while the flow is still syncing (a loaded machine) has no
        # chain to break: it lies inside the gap already open (a break's, or the failed snapshot's).
        all_gaps = [(g[0], g[3], g[4]) for g in gaps]
        covering: dict[tuple[str, int, int], list[int]] = {}
        for dsym, du in dropped:
            assert du not in stored[dsym]
            inside = [(sym, frm, to) for sym, frm, to in all_gaps if sym == dsym and frm < du < to]
            assert len(inside) == 1, (dsym, du, gaps)  # known up to before the dropped event, again after it
            covering.setdefault(inside[0], []).append(du)
        assert set(breaks) <= set(covering) and breaks, gaps  # no break without a drop
        for brk in breaks:
            sym, frm, _ = brk
            assert frm == max(u for u in stored[sym] if u < min(covering[brk])), (brk, gaps)
        with api_server(cfg, tmp_path / "api.log") as api:
            checked = 0
            for sym, _, to in breaks + [(s, 0, last_sent[s]) for s in symbols]:
                bids, asks, rng = _stored(api, sym, to)
                want_b, want_a = _truth(feed, sym, to)
                assert _within(bids, rng) == _within(want_b, rng) and len(_within(bids, rng)) > 100
                assert _within(asks, rng) == _within(want_a, rng)
                assert max(bids) == max(want_b) and min(asks) == min(want_a)
                checked += 1
            assert checked == len(breaks) + len(symbols)
            r = api.client.get("/api/v1/book/btcusdt/gaps").json()
            assert [g["reason"] for g in r["gaps"]] == [g[1] for g in gaps if g[0] == "btcusdt"]
        trades = dict(query(db, "SELECT symbol, COUNT(*) FROM ticks GROUP BY symbol"))
        assert trades == stats["trades_by_symbol"]  # /market carried every trade, books on or not
    finally:
        if flow is not None:
            flow.stop()
        feed.stop()
