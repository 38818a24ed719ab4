"""Order books on PostgreSQL: the same rows as SQLite, the book at past moments, migration, partitions.

A real server (tests/pg_support.py), the real flow and API as processes, on the bundled real
sample (data/sample/um_*_20240808_book.gz: two minutes of Binance's own trades, bookTicker and
depth with the REST snapshot line). Expected books come from the plain-dict reference
(tests/book_reference.py) over the raw file, never from ticklens.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import numpy as np
import psycopg
import pytest
from api_support import api_server
from flow_support import run_flow, write_config
from store_support import StoreRef, new_store

from storage.port import StoreBatch
from storage.postgres import PostgresStore
from storage.postgres.schema import SCHEMA_VERSION, partition_name
from storage.postgres.writer import PartitionUpkeep
from tests.book_reference import RefBook, raw_lines
from ticklens.config import RetentionConfig, StoreConfig
from ticklens.domain.book import BookGap, BookSnapshot, DepthUpdate, Quotes
from ticklens.domain.records import Trades

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = {s: ROOT / "data" / "sample" / f"um_{s}_20240808_book.gz" for s in ("btcusdt", "ethusdt")}
DAY = 86_400_000
D0 = 19_000 * DAY  # 2022-01-08 00:00 UTC
# Every book table, wall-clock columns (book_gaps.detected_ms) left out.
DUMP = {
    "quotes": "SELECT symbol, update_id, ts_ms, event_ms, recv_ms, bid, bid_qty, ask, ask_qty, source FROM quotes"
    " ORDER BY 1, 2",
    "depth_updates": "SELECT symbol, final_id, first_id, prev_id, ts_ms, event_ms, recv_ms, n_bids, n_asks, levels"
    " FROM depth_updates ORDER BY 1, 2",
    "book_snapshots": "SELECT symbol, update_id, ts_ms, recv_ms, kind, depth_limit, complete_low, complete_high,"
    " n_bids, n_asks, levels FROM book_snapshots ORDER BY 1, 2",
    "book_gaps": "SELECT symbol, from_update_id, from_ms, to_update_id, to_ms, reason, status, detail FROM book_gaps"
    " ORDER BY 1, 2, 3",
    "ticks": "SELECT symbol, trade_id, ts_ms, price, qty FROM ticks ORDER BY 1, 2",
}


def _dump(ref: StoreRef) -> dict[str, list[tuple]]:
    return {
        t: [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in ref.rows(q)]
        for t, q in DUMP.items()
    }


def _replay(ref: StoreRef, tmp: Path) -> Path:
    cfg = write_config(
        tmp,
        source={"paths": [str(p) for p in SAMPLE.values()], "streams": ["trade", "bookTicker", "depth"]},
        store=ref.config(),
        book={"snapshot_interval_s": 5},
        recovery={"enabled": False},
    )
    res = run_flow(cfg, "--no-recovery", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return cfg


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[StoreRef, Path], dict[str, list[tuple]]]:
    """The sample replayed into SQLite (the dump to match) and into PostgreSQL (config kept for the API)."""
    lite_tmp, pg_tmp = tmp_path_factory.mktemp("lite"), tmp_path_factory.mktemp("pg")
    lite = new_store("sqlite", lite_tmp)
    _replay(lite, lite_tmp)
    pg = new_store("postgres", pg_tmp)
    cfg = _replay(pg, pg_tmp)
    return (pg, cfg), _dump(lite)


def test_the_sample_stores_the_same_book_rows_on_postgresql_as_on_sqlite_and_a_replay_adds_none(stores) -> None:
    (pg, cfg), want = stores
    got = _dump(pg)
    assert len(want["depth_updates"]) > 4000 and len(want["quotes"]) > 40_000 and want["book_snapshots"]
    assert got == want
    res = run_flow(cfg, "--no-recovery", timeout=600)  # the same files again
    assert res.returncode == 0, res.stderr[-3000:]
    assert _dump(pg) == want


def _reference_books(path: Path, times: list[int]) -> dict[int, tuple[int, dict, dict]]:
    """The plain-dict book after the last applied event with T <= t, for each t (in order)."""
    book = RefBook(spot=False)
    out: dict[int, tuple[int, dict, dict]] = {}
    todo = sorted(times)
    prev: tuple[int, dict, dict] | None = None

    def applied(ev: dict) -> None:
        nonlocal prev
        while todo and todo[0] < ev["T"]:
            assert prev is not None
            out[todo.pop(0)] = prev
        prev = (ev["u"], dict(book.bids), dict(book.asks))

    for raw in raw_lines([path]):
        msg = json.loads(raw)
        if "lastUpdateId" in msg:
            buffered, book.buffer = book.buffer, []
            book.on_message(msg)
            for ev in buffered:
                if book._event(ev) is not None:
                    applied(ev)
            continue
        data = msg.get("data", msg)
        if data.get("e") == "depthUpdate" and book.on_message(msg) is not None:
            applied(data)
    for t in todo:
        out[t] = prev  # type: ignore[assignment]
    return out


@pytest.mark.parametrize("symbol", ["btcusdt", "ethusdt"])
def test_the_book_at_random_moments_read_from_postgresql_equals_the_plain_dict_book(stores, symbol: str) -> None:
    (pg, cfg), _ = stores
    lo, hi = (r for r in pg.rows("SELECT MIN(ts_ms), MAX(ts_ms) FROM depth_updates WHERE symbol=?", (symbol,))[0])
    rng = random.Random(13)
    times = sorted({rng.randint(lo, hi) for _ in range(40)})
    want = _reference_books(SAMPLE[symbol], times)
    with api_server(cfg, cfg.parent / "api.log") as api:
        for at in times:
            uid, bids, asks = want[at]
            r = api.client.get(f"/api/v1/book/{symbol}", params={"at": at, "depth": 1000})
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["update_id"], body["stale"]) == (uid, False)
            assert [(Decimal(p), Decimal(q)) for p, q in body["bids"]] == sorted(bids.items(), reverse=True)[:1000]
            assert [(Decimal(p), Decimal(q)) for p, q in body["asks"]] == sorted(asks.items())[:1000]
        q = api.client.get(f"/api/v1/quotes/{symbol}", params={"limit": 5}).json()
        assert q["count"] == 5 and all(x["source"] == "bookTicker" for x in q["quotes"])


def _pg_store() -> PostgresStore:
    from pg_support import fresh_url

    store = PostgresStore(StoreConfig(kind="postgres", url=fresh_url()))
    store.ensure()
    return store


def test_a_version_2_postgresql_store_gains_the_book_tables_keeping_its_rows() -> None:
    store = _pg_store()
    url = store.target.url
    with psycopg.connect(url, autocommit=True) as c:  # make it what the previous version wrote
        for t in ("quotes", "depth_updates", "book_snapshots", "book_gaps"):
            c.execute(f"DROP TABLE {t}")
        c.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    w = store.writer()
    w.write(w.prepare(StoreBatch(ticks=[Trades.from_columns("btcusdt", trade_id=np.array([7]), ts_ms=np.array([D0]),
                                                             price=np.array([1.0]), qty=np.array([2.0]),
                                                             is_buyer_maker=np.array([True]))])))  # fmt: skip
    w.close()
    store.close()
    again = PostgresStore(StoreConfig(kind="postgres", url=url))
    again.ensure()
    with psycopg.connect(url) as c:
        version = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]  # type: ignore[index]
        tables = {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        ticks = c.execute("SELECT trade_id, ts_ms FROM ticks").fetchall()
    assert int(version) == SCHEMA_VERSION  # v3 (the book tables) and every step after it
    assert {"quotes", "depth_updates", "book_snapshots", "book_gaps"} <= tables
    assert ticks == [(7, D0)]
    w = again.writer()  # and it takes book rows
    d = DepthUpdate("btcusdt", 1, 2, 0, D0, D0, D0, ["1.0"], ["1"], [], [])
    w.write(w.prepare(StoreBatch(depth_updates=[d])))
    w.close()
    with again.reader() as r:
        assert [u.final_id for u in r.depth_updates("btcusdt", 0, 10)] == [2]
    again.close()


def _book_partitions(url: str, table: str) -> dict[str, int]:
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass ORDER BY 1",
            (table,),
        ).fetchall()
        return {r[0]: c.execute(f"SELECT COUNT(*) FROM {r[0]}").fetchone()[0] for r in rows}  # type: ignore[index]


def test_book_tables_land_in_daily_partitions_and_retention_drops_old_days_per_table() -> None:
    store = _pg_store()
    url = store.target.url
    ts = [D0 + d * DAY + i * 1000 for d in range(4) for i in range(50)]  # four days, 50 rows a day
    ids = list(range(1000, 1000 + 10 * len(ts), 10))
    n = len(ts)
    t = np.array(ts, dtype=np.int64)
    quotes = Quotes(
        "btcusdt", np.array(ids, dtype=np.int64), t, t, t, np.ones(n), np.ones(n), np.full(n, 2.0), np.ones(n)
    )
    depth = [
        DepthUpdate("btcusdt", u - 9, u, u - 10, x, x, x, ["1.0"], ["1"], [], []) for u, x in zip(ids, ts, strict=True)
    ]
    snaps = [
        BookSnapshot("btcusdt", u, None, x, x, [["1.0", "1"]], [], None, (0.0, 5.0))
        for u, x in zip(ids[::50], ts[::50], strict=True)
    ]
    gaps = [
        BookGap("btcusdt", u, x - 5, "pu_break", u + 5, x, "closed") for u, x in zip(ids[::50], ts[::50], strict=True)
    ]
    gaps.append(BookGap("btcusdt", 10**9, D0 - 1, "reconnect"))  # open: never deleted
    w = store.writer()
    w.write(w.prepare(StoreBatch(quotes=[quotes], depth_updates=depth, book_snapshots=snaps, book_gaps=gaps)))
    w.close()
    days = [D0 // DAY + d for d in range(4)]
    for table in ("quotes", "depth_updates", "book_snapshots"):
        parts = _book_partitions(url, table)
        per_day = 50 if table != "book_snapshots" else 1
        assert {partition_name(table, d): per_day for d in days}.items() <= parts.items(), (table, parts)
    # depth_updates keep 1 day, quotes 2, the rest 3: counted from the newest day holding rows.
    retention = RetentionConfig(days=3, tables={"depth_updates": 1, "quotes": 2, "book_gaps": 1}, ahead_days=0)
    upkeep = PartitionUpkeep(store.target, retention)
    dropped = upkeep.run_once()
    assert sorted(dropped) == sorted(
        [partition_name("depth_updates", d) for d in days[:2]] + [partition_name("quotes", days[0])]
    )
    with store.reader() as r:
        assert [u.final_id for u in r.depth_updates("btcusdt", 0, 10**9)] == ids[100:]
        assert len(r.quotes("btcusdt", 10**6)) == 150
        assert r.book_snapshot_before("btcusdt", ids[0]) is not None  # 3 days kept: the first day stays
        left = r.book_gaps("btcusdt")
    # book_gaps (1 day): closed gaps ending more than a day before the newest end are gone; open ones stay
    newest = max(g.to_ms for g in gaps if g.to_ms is not None)
    assert sorted((g.from_update_id, g.status) for g in left) == sorted(
        [(g.from_update_id, "closed") for g in gaps if g.to_ms is not None and g.to_ms >= newest - DAY]
        + [(10**9, "open")]
    )
    assert upkeep.run_once() == []  # nothing more to drop
    store.close()
