"""Microstructure through the real flow, store and API, on Binance's 2024-08-08 USD-M recordings.

The flow (a subprocess, `flows.runner`) replays both files with trades, bookTicker and depth
into a real SQLite store; a real uvicorn serves `GET /api/v1/microstructure/{symbol}`. Every
column of every 1s and 1m bar is compared with tests/micro_reference.py, an independent
computation over the raw files (no ticklens code), to 1e-9 relative.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from tests.book_reference import UM
from tests.flow_support import query, replayed_and_served
from tests.micro_reference import expected_bars, load
from ticklens.domain.times import iso_ms

pytestmark = pytest.mark.skipif(not UM.is_dir(), reason="recordings in ../shared/data/binance are missing")

FILES = {"btcusdt": UM / "btcusdt_20240808.gz", "ethusdt": UM / "ethusdt_20240808.gz"}
BUCKET = {"btcusdt": 5.0, "ethusdt": 100.0}
WINDOW, HORIZON_S, N_BUCKETS = 30, 5.0, 10


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    with replayed_and_served(
        tmp_path_factory.mktemp("micro"),
        source={"paths": [str(p) for p in FILES.values()], "streams": ["trade", "bookTicker", "depth"]},
        timeframes=["1s", "1m"],
        micro={"window": WINDOW, "horizon_s": HORIZON_S, "vpin_bucket": BUCKET, "vpin_buckets": N_BUCKETS},
        pairs=[{"legs": ["btcusdt", "ethusdt"], "price": "mid", "timeframes": ["1s"], "window": 30}],
    ) as s:
        yield s


def _close(got: object, want: object) -> bool:
    if got is None or want is None:
        return got is want
    return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12)  # type: ignore[arg-type]


@pytest.mark.parametrize("symbol", ["btcusdt", "ethusdt"])
def test_api_micro_bars_equal_the_reference_computed_from_the_raw_file(served, symbol: str) -> None:
    _, api = served
    rec = load(symbol, [FILES[symbol]])
    for tf, tf_ms in (("1s", 1_000), ("1m", 60_000)):
        want = expected_bars(rec, tf_ms, int(HORIZON_S * 1000), WINDOW, Decimal(str(BUCKET[symbol])), N_BUCKETS)
        body = api.client.get(f"/api/v1/microstructure/{symbol}", params={"timeframe": tf, "limit": 100_000}).json()
        got = {b["ts_ms"]: b for b in body["bars"]}
        assert body["status"] == "ok" and sorted(got) == sorted(want)
        for start, row in want.items():
            bar = got[start]
            # the replay hands trades and book records on in slices that reach the step in either
            # order: the watermark waits for both inputs, so nothing arrives late and nothing is revised
            assert bar["time"] == iso_ms(start) and bar["complete"] is True and bar["revision"] == 0
            for col, value in row.items():
                assert _close(bar[col], value), (tf, start, col, bar[col], value)


def test_vpin_endpoint_serves_every_bucket_once(served) -> None:
    db, api = served
    body = api.client.get("/api/v1/microstructure/btcusdt/vpin", params={"limit": 100_000}).json()
    stored = query(db, "SELECT bucket, end_ms FROM vpin WHERE symbol='btcusdt' ORDER BY bucket")
    assert [(b["bucket"], b["ts_ms"]) for b in body["buckets"]] == stored
    assert [b["bucket"] for b in body["buckets"]] == list(range(len(stored))) and len(stored) > 100
    assert all(b["vpin"] is None for b in body["buckets"][: N_BUCKETS - 1])
    assert all(0 <= b["vpin"] <= 1 for b in body["buckets"][N_BUCKETS - 1 :])


def test_microstructure_parameters_are_checked(served) -> None:
    _, api = served
    r = api.client.get("/api/v1/microstructure/btcusdt", params={"timeframe": "2m"})
    assert r.status_code == 422 and "timeframe" in r.text
    assert api.client.get("/api/v1/microstructure/nosuchusdt").status_code == 404
    r = api.client.get("/api/v1/microstructure/btcusdt", params={"timeframe": "1s", "limit": 3}).json()
    assert r["count"] == 3


def test_a_pair_on_mids_aligns_the_micro_bars_closing_mids(served) -> None:
    db, _ = served
    rows = query(db, "SELECT start_ms, close_a, close_b FROM pair_stats WHERE pair='btcusdt-ethusdt' AND timeframe='1s'"
                     " ORDER BY start_ms")  # fmt: skip
    mids = {
        sym: dict(query(db, "SELECT start_ms, mid_close FROM micro_bars WHERE symbol=? AND timeframe='1s'", (sym,)))
        for sym in ("btcusdt", "ethusdt")
    }
    both = [(s, a, b) for s, a, b in rows if s in mids["btcusdt"] and s in mids["ethusdt"]]
    assert len(both) > 300 and len(both) >= len(rows) - 5  # every second has quotes on both legs
    assert all(a == mids["btcusdt"][s] and b == mids["ethusdt"][s] for s, a, b in both)
    trades = dict(query(db, "SELECT start_ms, close FROM bars WHERE symbol='btcusdt' AND timeframe='1s'"))
    assert sum(a != trades.get(s) for s, a, _ in both) > len(both) // 2  # mids, not last trades


def test_a_pair_on_mids_without_book_streams_is_refused() -> None:
    from ticklens.config import Config

    with pytest.raises(ValueError, match="price: mid"):
        Config.model_validate(
            {
                "symbols": ["btcusdt", "ethusdt"],
                "source": {"kind": "replay", "paths": ["x.gz"]},
                "pairs": [{"legs": ["btcusdt", "ethusdt"], "price": "mid"}],
            }
        )


def test_heatmap_bins_the_stored_book_at_each_moment_like_a_plain_dict_book(served) -> None:
    import numpy as np

    from tests.test_book_flow import _applied, _lines

    _, api = served
    lines = _lines("btcusdt")
    events = [(ev["T"], ev["u"]) for ev, _ in _applied(lines)]
    start, end = events[10][0], events[-1][0]
    body = api.client.get(
        "/api/v1/microstructure/btcusdt/heatmap",
        params={"start": iso_ms(start), "end": iso_ms(end), "columns": 12, "rows": 30, "band_bps": 15},
    ).json()
    times = body["times_ms"]
    assert len(times) == 12 and times[0] == start and times[-1] == end
    edges = np.array(body["price_edges"])
    todo, books = list(times), {}
    prev = None
    for ev, book in _applied(lines):  # the book at t: after the last applied event with T <= t
        while todo and todo[0] < ev["T"]:
            books[todo.pop(0)] = prev
        prev = (dict(book.bids), dict(book.asks))
    for t in todo:
        books[t] = prev
    last_bids, last_asks = books[times[-1]]
    mid = (float(max(last_bids)) + float(min(last_asks))) / 2
    assert math.isclose(edges[0], mid * (1 - 15e-4), rel_tol=1e-12) and len(edges) == 31
    for j, t in enumerate(times):
        bids, asks = books[t]
        for side, levels in (("bid", bids), ("ask", asks)):
            prices = np.array([float(p) for p in levels])
            sizes = np.array([float(q) for q in levels.values()])
            want, _ = np.histogram(prices, bins=edges, weights=sizes)
            np.testing.assert_allclose(body[side][j], want, rtol=1e-9, atol=1e-9, err_msg=f"{side} column {j}")
    assert sum(map(sum, body["bid"])) > 0 and not any(body["stale"])
