"""`ticklens up` with the shipped pipeline.yaml shows order books offline: the bundled feed serves
the book sample (data/sample/um_*_20240808_book.gz), the flow keeps the books, and the API's
book equals a plain-dict book of the recording at the same update id (real processes on free
loopback ports; the reference is tests/book_reference.py, which imports nothing of ticklens).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import httpx
import psutil
import yaml

from tests.api_support import free_port, wait_until
from tests.book_reference import book_after, recorded
from tests.flow_support import ROOT

LEVELS = 20  # compared per side, inside the range the snapshot covered


def _book(api: str, symbol: str, **params: object) -> dict | None:
    try:
        r = httpx.get(f"{api}/api/v1/book/{symbol}", params={"depth": 1000, **params}, timeout=10)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def test_ticklens_up_as_shipped_serves_books_that_equal_the_recordings_book(tmp_path: Path) -> None:
    shipped = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
    assert set(shipped["source"]["streams"]) >= {"bookTicker", "depth"}, "pipeline.yaml collects books"
    feed_port, api_port, dash_port = free_port(), free_port(), free_port()
    cfg = dict(shipped)
    cfg["source"] = {**shipped["source"], "url": f"ws://127.0.0.1:{feed_port}/market/stream"}
    cfg["feed"] = {**shipped["feed"], "paths": [str(ROOT / p) for p in shipped["feed"]["paths"]]}
    cfg["store"] = {"path": str(tmp_path / "ticklens.db")}
    cfg["api"] = {**shipped["api"], "port": api_port}
    cfg["dashboard"] = {**shipped["dashboard"], "port": dash_port}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    api = f"http://127.0.0.1:{api_port}"
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "-m", "ticklens.cli", "--config", str(path), "up"],
        cwd=ROOT,
        env=dict(os.environ, TICKLENS_QUIET="1"),
        stderr=log,
        stdout=log,
    )
    children: list[int] = []
    try:
        books = {
            s: wait_until(lambda s=s: _book(api, s), 180, f"a stored {s} book through the API", interval=0.5)
            for s in ("btcusdt", "ethusdt")
        }
        children = [p.pid for p in psutil.Process(up.pid).children(recursive=True)]
        with urllib.request.urlopen(f"http://127.0.0.1:{feed_port}/control/stats", timeout=10) as r:
            feed_books = json.loads(r.read())["books"]
        for symbol, first in books.items():
            assert first["bids"] and first["asks"]
            (bid, _), (ask, _) = first["bids"][0], first["asks"][0]
            assert Decimal(bid) < Decimal(ask), "not crossed"
            # The book right after the first stored diff, against the recording's own book there: the
            # feed shifts ids by id_span per loop pass, so the pass is the one that puts the id in range.
            snap, depth, _, _ = recorded(ROOT / next(p for p in shipped["feed"]["paths"] if symbol in p))
            span = feed_books[symbol]["id_span"]
            quotes = httpx.get(f"{api}/api/v1/quotes/{symbol}", params={"limit": 1}, timeout=10).json()["quotes"]
            assert quotes, "L1 rows stored"

            def later(
                s: str = symbol, after: int = first["update_id"], at: int = first["ts_ms"] + 1_000
            ) -> dict | None:
                b = _book(api, s, at=at)
                return b if b is not None and b["update_id"] > after else None

            got = wait_until(later, 60, f"{symbol}'s book a second on", interval=0.5)
            uid = got["update_id"]
            raw_id = next(
                uid - j * span
                for j in range((uid - depth[-1]["u"]) // span, (uid - snap["lastUpdateId"]) // span + 1)
                if snap["lastUpdateId"] <= uid - j * span <= depth[-1]["u"]
            )
            ref = book_after(snap, depth, raw_id)
            assert ref.last_u == raw_id, "the id is an applied event of the recording"
            lo, hi = (Decimal(str(x)) if x is not None else None for x in got["complete_range"])
            want_b = [[ref.text[p][0], ref.text[p][1]] for p in sorted(ref.bids, reverse=True) if lo is None or p >= lo]
            want_a = [[ref.text[p][0], ref.text[p][1]] for p in sorted(ref.asks) if hi is None or p <= hi]
            as_dec = lambda rows: [(Decimal(p), Decimal(q)) for p, q in rows[:LEVELS]]  # noqa: E731
            assert not got["stale"]
            assert as_dec(got["bids"]) == as_dec(want_b), symbol
            assert as_dec(got["asks"]) == as_dec(want_a), symbol
        # The dashboard's Market page draws best bid/ask from the sampled quotes over the candles.
        start = books["btcusdt"]["ts_ms"] - 5_000
        r = httpx.get(
            f"{api}/api/v1/quotes/btcusdt/sampled",
            params={"start": start, "end": start + 20_000, "every_ms": 1_000},
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["count"] >= 10, r.text
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        for pid in children:  # whatever outlived ticklens up
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    os.kill(pid, signal.SIGKILL)
        log.close()
