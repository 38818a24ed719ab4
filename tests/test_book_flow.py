"""Books through the real flow, store and API, on Binance's own 2024-08-08 USD-M recordings.

The flow (a subprocess, `flows.runner`) replays both files with trades, bookTicker and depth
into a real SQLite store; a real uvicorn serves it. Expected values come from the raw
files (gzip/json) and the independent plain-dict book of tests/book_reference.py.
"""

from __future__ import annotations

import bisect
import functools
import gzip
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import polars as pl
import pytest

from tests.book_reference import UM, RefBook
from tests.flow_support import query, replayed_and_served

pytestmark = pytest.mark.skipif(not UM.is_dir(), reason="recordings in ../shared/data/binance are missing")

FILES = {"btcusdt": UM / "btcusdt_20240808.gz", "ethusdt": UM / "ethusdt_20240808.gz"}
MEETS = {"btcusdt": 629, "ethusdt": 551}  # issue 13: bookTicker u == an applied depth u
TIMES_PER_SYMBOL = 150
FULL_BOOK_EVERY = 5  # every 5th of those times also exports the whole book


@dataclass
class Reference:
    """What the raw file says: applied depth events, bookTicker lines, books at chosen times."""

    applied: list[tuple[int, int]] = field(default_factory=list)  # (u, T) in order
    tickers: list[dict] = field(default_factory=list)
    books: dict[int, tuple[int, dict[Decimal, Decimal], dict[Decimal, Decimal]]] = field(default_factory=dict)
    complete: tuple[Decimal, Decimal] | None = None


def _lines(symbol: str) -> list[dict]:
    with gzip.open(FILES[symbol], "rb") as fh:
        return [json.loads(line.partition(b" ")[2]) for line in fh]


def _applied(lines: list[dict]) -> Iterator[tuple[dict, RefBook]]:
    """(event, book after it) for every depth event RefBook applies, one at a time (the buffered
    ones too, when the snapshot line arrives)."""
    book = RefBook(spot=False)
    for msg in lines:
        if "lastUpdateId" in msg:
            buffered, book.buffer = book.buffer, []
            book.on_message(msg)  # loads the snapshot; the buffer is replayed here, one by one
            for ev in buffered:
                if book._event(ev) is not None:
                    yield ev, book
            continue
        data = msg.get("data", msg)
        if data.get("e") == "depthUpdate" and book.on_message(msg) is not None:
            yield data, book
    assert book.chain_breaks == 0


@functools.cache
def reference(symbol: str, seed: int = 2024) -> tuple[Reference, list[int]]:
    """RefBook over the file; the whole book at random times t (after the last applied event
    with T <= t), some of them exactly at an event's T."""
    ref = Reference()
    lines = _lines(symbol)
    for msg in lines:
        if "lastUpdateId" in msg:
            ref.complete = (min(Decimal(p) for p, _ in msg["bids"]), max(Decimal(p) for p, _ in msg["asks"]))
        data = msg.get("data", msg)
        if data.get("e") == "bookTicker":
            ref.tickers.append(data)
    ref.applied = [(ev["u"], ev["T"]) for ev, _ in _applied(lines)]
    ts = [t for _, t in ref.applied]
    assert ts == sorted(ts), "transaction time T is not monotonic in u: the at= semantics would need more"
    rng = random.Random(seed)
    picks = sorted({rng.randint(ts[0], ts[-1]) for _ in range(TIMES_PER_SYMBOL - 20)} | set(rng.sample(ts, 20)))
    todo = list(picks)
    prev: tuple[int, dict, dict] | None = None
    for ev, book in _applied(lines):
        while todo and todo[0] < ev["T"]:  # the book for t is the one before the first event past t
            assert prev is not None
            ref.books[todo.pop(0)] = prev
        prev = (ev["u"], dict(book.bids), dict(book.asks))
    for t in todo:
        ref.books[t] = prev  # type: ignore[assignment]
    return ref, picks


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    with replayed_and_served(
        tmp_path_factory.mktemp("books"),
        source={"paths": [str(p) for p in FILES.values()], "streams": ["trade", "bookTicker", "depth"]},
    ) as s:
        yield s


def _dec(levels: list[list[str]]) -> dict[Decimal, Decimal]:
    return {Decimal(p): Decimal(q) for p, q in levels}


@pytest.mark.parametrize("symbol", ["btcusdt", "ethusdt"])
def test_stored_best_bid_ask_equals_book_ticker_wherever_update_ids_meet(served, symbol: str) -> None:
    _, api = served
    ref, _ = reference(symbol)
    applied = {u for u, _ in ref.applied}
    meets = [t for t in ref.tickers if t["u"] in applied]
    assert len(meets) == MEETS[symbol]
    for t in meets:
        r = api.client.get(f"/api/v1/book/{symbol}", params={"update_id": t["u"], "depth": 1})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["update_id"] == t["u"] and not body["stale"]
        (bid, bq), (ask, aq) = body["bids"][0], body["asks"][0]
        assert (Decimal(bid), Decimal(bq), Decimal(ask), Decimal(aq)) == tuple(
            map(Decimal, (t["b"], t["B"], t["a"], t["A"]))
        )


@pytest.mark.parametrize("symbol", ["btcusdt", "ethusdt"])
def test_book_at_random_times_equals_the_plain_dict_reconstruction_every_level(served, symbol: str) -> None:
    _, api = served
    ref, picks = reference(symbol)
    assert len(ref.books) >= TIMES_PER_SYMBOL - 5
    checked_full = 0
    for i, at in enumerate(sorted(ref.books)):
        uid, bids, asks = ref.books[at]
        r = api.client.get(f"/api/v1/book/{symbol}", params={"at": at, "depth": 1000})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["at_ms"], body["update_id"], body["stale"]) == (at, uid, False)
        assert body["ts_ms"] <= at
        best_bids = sorted(bids, reverse=True)[:1000]
        best_asks = sorted(asks)[:1000]
        assert [Decimal(p) for p, _ in body["bids"]] == best_bids
        assert [Decimal(p) for p, _ in body["asks"]] == best_asks
        assert all(Decimal(q) == bids[Decimal(p)] for p, q in body["bids"])
        assert all(Decimal(q) == asks[Decimal(p)] for p, q in body["asks"])
        lo, hi = ref.complete  # type: ignore[misc]
        assert body["complete_range"] == [float(lo), float(hi)]
        if i % FULL_BOOK_EVERY == 0:  # the whole book, every level, through the export
            csv = api.client.get(f"/api/v1/export/{symbol}", params={"kind": "book", "at": at})
            assert csv.status_code == 200
            df = pl.read_csv(io.BytesIO(csv.content), schema_overrides={"price": pl.String, "qty": pl.String})
            assert set(df["update_id"].to_list()) == {uid}
            got_b = df.filter(pl.col("side") == "bid")
            got_a = df.filter(pl.col("side") == "ask")
            assert _dec(got_b.select("price", "qty").rows()) == bids
            assert _dec(got_a.select("price", "qty").rows()) == asks
            assert got_b["level"].to_list() == list(range(len(bids)))
            checked_full += 1
    assert checked_full >= TIMES_PER_SYMBOL // FULL_BOOK_EVERY - 1


@pytest.mark.parametrize("symbol", ["btcusdt", "ethusdt"])
def test_every_book_ticker_line_is_stored_once_as_a_quote(served, symbol: str) -> None:
    _, api = served
    ref, _ = reference(symbol)
    want = (
        pl.DataFrame(
            {
                "update_id": [t["u"] for t in ref.tickers],
                "ts_ms": [t["T"] for t in ref.tickers],
                "bid": [float(t["b"]) for t in ref.tickers],
                "bid_qty": [float(t["B"]) for t in ref.tickers],
                "ask": [float(t["a"]) for t in ref.tickers],
                "ask_qty": [float(t["A"]) for t in ref.tickers],
            }
        )
        .unique("update_id", keep="first")
        .sort("ts_ms", "update_id")
    )
    csv = api.client.get(f"/api/v1/export/{symbol}", params={"kind": "quotes"})
    got = pl.read_csv(io.BytesIO(csv.content)).select(want.columns)
    assert got.height == want.height == len({t["u"] for t in ref.tickers})
    assert got.equals(want)
    r = api.client.get(f"/api/v1/quotes/{symbol}", params={"limit": 5})
    assert [q["update_id"] for q in r.json()["quotes"]] == want["update_id"].to_list()[-5:]


def test_the_store_holds_every_applied_diff_no_gap_and_snapshots_every_interval(served) -> None:
    db, api = served
    for symbol in FILES:
        ref, _ = reference(symbol)
        ids = [
            r[0] for r in query(db, "SELECT final_id FROM depth_updates WHERE symbol=? ORDER BY final_id", (symbol,))
        ]
        assert ids == [u for u, _ in ref.applied]
        assert query(db, "SELECT COUNT(*) FROM book_gaps WHERE symbol=?", (symbol,))[0][0] == 0
        snaps = query(db, "SELECT kind, ts_ms FROM book_snapshots WHERE symbol=? ORDER BY update_id", (symbol,))
        assert snaps[0][0] == "rest" and {k for k, _ in snaps[1:]} == {"interval"}
        # A snapshot at the first moment the book is seen at or past each 10 s boundary of
        # exchange time: after each message that applied events (the snapshot line applies the
        # buffered ones at once), the book stands at its last event's T.
        book, due, want = RefBook(spot=False), 0, []
        for msg in _lines(symbol):
            last = book.on_message(msg)
            if last is not None and last["T"] >= due:
                want.append(last["T"])
                due = (last["T"] // 10_000 + 1) * 10_000
        assert [t for _, t in snaps[1:]] == want
    assert api.client.get("/api/v1/book/btcusdt/gaps").json()["count"] == 0


def test_book_parameters_are_checked_and_named(served) -> None:
    _, api = served
    c = api.client
    r = c.get("/api/v1/book/btcusdt", params={"at": "yesterday"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "at"]
    r = c.get("/api/v1/book/btcusdt", params={"depth": 0})
    assert r.status_code == 422 and "depth" in r.json()["detail"][0]["loc"]
    r = c.get("/api/v1/book/btcusdt", params={"depth": 1001})
    assert r.status_code == 422
    r = c.get("/api/v1/book/btcusdt", params={"at": "2024-08-08T23:57:00Z", "update_id": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "update_id"]
    r = c.get("/api/v1/book/btcusdt", params={"at": "2020-01-01T00:00:00Z"})
    assert r.status_code == 404 and "no book stored at or before 2020-01-01T00:00:00.000Z" in r.json()["detail"]
    r = c.get("/api/v1/book/btcusdt", params={"update_id": 12345})
    assert r.status_code == 404 and "12345" in r.json()["detail"]
    assert c.get("/api/v1/book/solusdt").status_code == 404
    r = c.get("/api/v1/export/btcusdt", params={"kind": "book"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "at"]
    r = c.get("/api/v1/quotes/btcusdt", params={"start": "2024-08-09T00:00:00Z", "end": "2024-08-08T00:00:00Z"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "end"]


def test_depth_export_is_every_applied_diff_one_row_per_level(served) -> None:
    _, api = served
    start, end = "2024-08-08T23:57:00Z", "2024-08-08T23:57:02Z"
    r = api.client.get(
        "/api/v1/export/ethusdt", params={"kind": "depth", "start": start, "end": end, "format": "parquet"}
    )
    assert r.status_code == 200
    got = pl.read_parquet(io.BytesIO(r.content))
    s_ms, e_ms = 1723161420000, 1723161422000
    rows = []
    with gzip.open(FILES["ethusdt"], "rb") as fh:
        for line in fh:
            d = json.loads(line.partition(b" ")[2]).get("data", {})
            if d.get("e") == "depthUpdate" and s_ms <= d["T"] < e_ms:
                rows += [(d["u"], "bid", p, q) for p, q in d["b"]] + [(d["u"], "ask", p, q) for p, q in d["a"]]
    assert got.select("update_id", "side", "price", "qty").rows() == rows


@pytest.mark.parametrize("symbol", ["btcusdt", "ethusdt"])
def test_sampled_quotes_are_the_book_ticker_in_force_at_each_interval_end(served, symbol: str) -> None:
    _, api = served
    ref, _ = reference(symbol)
    seen: set[int] = set()
    tickers = []
    for t in ref.tickers:  # stored once per update id, the first line kept
        if t["u"] not in seen:
            seen.add(t["u"])
            tickers.append(t)
    tickers.sort(key=lambda t: (t["T"], t["u"]))
    times = [t["T"] for t in tickers]
    first, last = times[0], times[-1]
    for every in (1_000, 7_919, 60_000):
        start, end = first - 2 * every - 123, last + every
        r = api.client.get(f"/api/v1/quotes/{symbol}/sampled", params={"start": start, "end": end, "every_ms": every})
        assert r.status_code == 200, r.text
        body = r.json()
        want = []
        for at in range(start, end, every):
            cut = min(at + every, end)
            i = bisect.bisect_left(times, cut)  # lines before i have T < cut: the last of them is in force
            if i:
                t = tickers[i - 1]
                want.append((at, t["u"], t["T"], float(t["b"]), float(t["B"]), float(t["a"]), float(t["A"])))
        got = [
            (s["at_ms"], s["update_id"], s["ts_ms"], s["bid"], s["bid_qty"], s["ask"], s["ask_qty"])
            for s in body["samples"]
        ]
        assert body["every_ms"] == every and body["count"] == len(got)
        assert got == want and got[0][0] == start + 2 * every  # the two intervals before the first line left out


def test_sampled_quotes_need_a_range_and_stay_bounded(served) -> None:
    _, api = served
    c = api.client
    r = c.get("/api/v1/quotes/btcusdt/sampled", params={"end": 10_000, "every_ms": 1_000})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "start"]
    r = c.get("/api/v1/quotes/btcusdt/sampled", params={"start": 0, "end": 10_000_000, "every_ms": 1_000})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "every_ms"]
    r = c.get("/api/v1/quotes/btcusdt/sampled", params={"start": 0, "end": 10_000, "every_ms": 0})
    assert r.status_code == 422
    r = c.get("/api/v1/quotes/btcusdt/sampled", params={"start": 0, "end": 10_000, "every_ms": 1_000})
    assert r.status_code == 200 and r.json()["samples"] == []  # before the first quote
