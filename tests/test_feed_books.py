"""The local feed's order books, against the real server process over real sockets.

The feed (`python -m ticklens.emulator`) replays the bundled book recording
(data/sample/um_*_20240808_book.gz, cut from Binance's own streams). The tests read
it with a `websockets` client and plain HTTP, and check what they receive against
independent references written here and in tests/book_reference.py (gzip, json,
Decimal; nothing of ticklens): the depth chain, the REST snapshot, bookTicker, the
faults, and the feed's ground-truth endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import websockets

from tests.book_reference import RefBook, book_after, raw_lines, recorded
from tests.feed_support import Feed

ROOT = Path(__file__).resolve().parents[1]
BOOK_FILES = [
    ROOT / "data" / "sample" / "um_btcusdt_20240808_book.gz",
    ROOT / "data" / "sample" / "um_ethusdt_20240808_book.gz",
]
BTC = BOOK_FILES[0]
FILES = [str(p) for p in BOOK_FILES]


# --- independent references -------------------------------------------------------------------


def all_times(paths: list[Path]) -> list[int]:
    """Every exchange time (trade T, book T) of the files: the tape's time span for loop shifts."""
    out = []
    for raw in raw_lines(paths):
        data = json.loads(raw).get("data")
        if data is not None:
            out.append(data["T"])
    return out


def reference_through(path: Path, last_id: int) -> RefBook:
    """The book of the recording after its REST snapshot and every depth event with u <= last_id."""
    snap, depth, _, _ = recorded(path)
    return book_after(snap, depth, last_id)


def sides(ref: RefBook, limit: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
    bids = [[ref.text[p][0], _qty(ref.bids[p], ref.text[p])] for p in sorted(ref.bids, reverse=True)[:limit]]
    asks = [[ref.text[p][0], _qty(ref.asks[p], ref.text[p])] for p in sorted(ref.asks)[:limit]]
    return bids, asks


def _qty(q: Decimal, text: tuple[str, str]) -> str:
    assert Decimal(text[1]) == q, "the reference keeps the exchange's strings of every level"
    return text[1]


class ClientBook:
    """A client of the feed doing Binance's procedure with plain dicts, resyncing on every chain break."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, str] = {}
        self.asks: dict[Decimal, str] = {}
        self.price_text: dict[Decimal, str] = {}
        self.synced = False
        self.last_u: int | None = None
        self.buffer: list[dict] = []
        self.pending: dict | None = None  # a snapshot newer than every buffered event
        self.breaks: list[tuple[int, dict]] = []  # (last applied u, the event that did not continue)
        self.syncs: list[int] = []  # lastUpdateId of each snapshot synced from
        self.stale = 0
        self.range: tuple[Decimal, Decimal] | None = None
        self.seen = 0  # depth events received

    def on_depth(self, ev: dict) -> bool:
        """True if the event was applied now."""
        self.seen += 1
        return self._on_depth(ev)

    def _on_depth(self, ev: dict) -> bool:
        if self.synced:
            if ev["pu"] != self.last_u:
                self.breaks.append((self.last_u, ev))  # type: ignore[arg-type]
                self.synced = False
                self.buffer = [ev]
                return False
            self._apply(ev)
            return True
        self.buffer.append(ev)
        if self.pending is not None:
            return self._try(self.pending) == "synced"
        return False

    @property
    def needs_snapshot(self) -> bool:
        return not self.synced and self.pending is None

    def on_snapshot(self, body: dict) -> str:
        return self._try(body)

    def _try(self, body: dict) -> str:
        last = body["lastUpdateId"]
        self.buffer = [e for e in self.buffer if e["u"] >= last]
        if not self.buffer:
            self.pending = body
            return "waiting"
        self.pending = None
        if self.buffer[0]["U"] > last:
            self.stale += 1
            return "stale"
        self.bids = {Decimal(p): q for p, q in body["bids"]}
        self.asks = {Decimal(p): q for p, q in body["asks"]}
        for p, _ in body["bids"] + body["asks"]:
            self.price_text[Decimal(p)] = p
        self.range = (Decimal(body["bids"][-1][0]), Decimal(body["asks"][-1][0]))
        pending, self.buffer = self.buffer, []
        self.synced = True
        self.syncs.append(last)
        self._apply(pending[0])
        for ev in pending[1:]:
            self._on_depth(ev)
        return "synced"

    def _apply(self, ev: dict) -> None:
        for levels, book in ((ev["b"], self.bids), (ev["a"], self.asks)):
            for p, q in levels:
                d = Decimal(p)
                if Decimal(q) == 0:
                    book.pop(d, None)
                else:
                    book[d] = q
                    self.price_text[d] = p
        self.last_u = ev["u"]

    def best(self) -> tuple[str, str, str, str]:
        b, a = max(self.bids), min(self.asks)
        return self.price_text[b], self.bids[b], self.price_text[a], self.asks[a]

    def within(self, lo: Decimal, hi: Decimal) -> tuple[list[list[str]], list[list[str]]]:
        bids = [[self.price_text[p], self.bids[p]] for p in sorted(self.bids, reverse=True) if lo <= p <= hi]
        asks = [[self.price_text[p], self.asks[p]] for p in sorted(self.asks) if lo <= p <= hi]
        return bids, asks


# --- talking to the feed ----------------------------------------------------------------------


def http(port: int, path: str) -> tuple[int, dict, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


async def collect(
    url: str,
    done: Callable[[list[dict]], bool],
    timeout: float,
    on_message: Callable[[dict], object] | None = None,
    max_queue: int | None = 64,
) -> list[dict]:
    """Messages from a real WebSocket client until `done(messages)` or the deadline (then the test fails).

    A bounded queue: a client slower than the feed pushes back on it over TCP (as the real one
    does), so what it has read stays close to what the feed has sent.
    """
    out: list[dict] = []
    try:
        async with asyncio.timeout(timeout), websockets.connect(url, max_queue=max_queue, max_size=1 << 22) as ws:
            async for raw in ws:
                msg = orjson.loads(raw)
                out.append(msg)
                if on_message is not None:
                    r = on_message(msg)
                    if asyncio.iscoroutine(r):
                        await r
                if done(out):
                    break
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g}s with {len(out)} messages from {url}") from None
    return out


async def follow_book(port: int, stream: str, client: ClientBook, done: Callable[[ClientBook], bool], timeout: float):
    """A real client keeping `client` from the feed's depth stream and REST snapshots; returns every message."""
    fetching = False

    async def fetch() -> None:
        nonlocal fetching
        try:
            for _ in range(50):
                status, body, _ = await asyncio.to_thread(http, port, "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
                if status == 200 and client.on_snapshot(body) != "stale":
                    return
                await asyncio.sleep(0.05)
        finally:
            fetching = False

    tasks: list[asyncio.Task] = []

    def on_message(msg: dict) -> None:
        nonlocal fetching
        data = msg["data"]
        if data.get("e") == "depthUpdate":
            client.on_depth(data)
            if client.needs_snapshot and not fetching:
                fetching = True
                tasks.append(asyncio.get_running_loop().create_task(fetch()))

    msgs = await collect(
        f"ws://127.0.0.1:{port}/public/stream?streams={stream}", lambda _: done(client), timeout, on_message
    )
    for t in tasks:
        t.cancel()
    return msgs


# --- tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def btc_recorded():
    return recorded(BTC)


def test_the_bundled_book_sample_starts_with_a_usable_chain() -> None:
    for path in BOOK_FILES:
        ref = RefBook(spot=False)
        for raw in raw_lines([path]):
            ref.on_message(json.loads(raw))  # asserts the first applied event straddles the snapshot
        assert ref.applied > 2_000 and ref.chain_breaks == 0
        assert path.stat().st_size < 1_500_000


def test_book_streams_are_served_on_public_and_accepted_but_never_sent_on_market() -> None:
    feed = Feed(*FILES, "--speed", "20", "--loop")  # looped: a late third connection still gets an event
    try:
        port = feed.port
        market = asyncio.run(
            collect(
                f"ws://127.0.0.1:{port}/market/stream?streams=btcusdt@trade/btcusdt@depth@0ms/btcusdt@bookTicker",
                lambda m: len(m) >= 60,
                60,
            )
        )
        public = asyncio.run(
            collect(
                f"ws://127.0.0.1:{port}/public/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker/ethusdt@aggTrade",
                lambda m: len(m) > 300 and {x["stream"] for x in m} >= {"btcusdt@depth@0ms", "btcusdt@bookTicker"},
                60,
            )
        )

        async def raw_public() -> dict:
            async with websockets.connect(f"ws://127.0.0.1:{port}/public/ws/btcusdt@depth@0ms", max_size=1 << 22) as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), 60))

        raw = asyncio.run(raw_public())
        stats = feed.stats()
    finally:
        feed.stop()
    assert {m["stream"] for m in market} == {"btcusdt@trade"}
    assert all(m["data"]["e"] == "trade" for m in market)
    assert {m["stream"] for m in public} == {"btcusdt@depth@0ms", "btcusdt@bookTicker"}
    assert raw["e"] == "depthUpdate" and raw["s"] == "BTCUSDT" and "stream" not in raw
    assert stats["misrouted"] == {"btcusdt@depth@0ms": 1, "btcusdt@bookTicker": 1, "ethusdt@aggTrade": 1}


def test_book_streams_the_feed_cannot_serve_are_refused_with_400() -> None:
    feed = Feed(*FILES, "--speed", "20")

    async def status(path: str) -> int:
        try:
            async with websockets.connect(f"ws://127.0.0.1:{feed.port}{path}"):
                return 101
        except websockets.InvalidStatus as e:
            return e.response.status_code

    try:
        codes = {
            p: asyncio.run(status(p))
            for p in (
                "/public/ws/btcusdt@depth@1000ms",  # a spot speed, not USD-M's
                "/public/ws/btcusdt@depth5",  # partial book depth: not served
                "/public/stream?streams=btcusdt@depth@250ms",
                "/public/stream?streams=btcusdt@depth",
            )
        }
    finally:
        feed.stop()
    assert codes == {
        "/public/ws/btcusdt@depth@1000ms": 400,
        "/public/ws/btcusdt@depth5": 400,
        "/public/stream?streams=btcusdt@depth@250ms": 101,
        "/public/stream?streams=btcusdt@depth": 101,
    }


def _merge_reference(events: list[dict], speed: int) -> list[dict]:
    """Binance's coarser depth stream written out: one event per `speed` ms window of T."""
    out: list[dict] = []
    for ev in events:
        if out and out[-1]["T"] // speed == ev["T"] // speed:
            cur = out[-1]
            cur["u"], cur["E"], cur["T"] = ev["u"], ev["E"], ev["T"]
            for side in ("b", "a"):
                for p, q in ev[side]:
                    cur[side][p] = q
        else:
            out.append({**ev, "b": dict(ev["b"]), "a": dict(ev["a"])})
    return [{**e, "b": [[p, q] for p, q in e["b"].items()], "a": [[p, q] for p, q in e["a"].items()]} for e in out]


def test_served_depth_chains_are_valid_across_pacing_and_loop_passes(btc_recorded) -> None:
    snap, depth, _, depth_raw = btc_recorded
    span_ms = (lambda t: max(t) - min(t) + 1)(all_times(BOOK_FILES))
    feed = Feed(*FILES, "--speed", "60", "--loop")
    streams = ["btcusdt@depth@0ms", "btcusdt@depth@100ms", "btcusdt@depth@500ms", "ethusdt@depth"]
    try:
        id_span = feed.stats()["books"]["btcusdt"]["id_span"]
        zeros = {"n": 0}

        def count(msg: dict) -> None:
            zeros["n"] += msg["stream"] == "btcusdt@depth@0ms"

        msgs = asyncio.run(
            collect(
                f"ws://127.0.0.1:{feed.port}/public/stream?streams={'/'.join(streams)}",
                lambda _: zeros["n"] >= 2 * len(depth) + 100,
                180,
                count,
            )
        )
    finally:
        feed.stop()
    by: dict[str, list[dict]] = {s: [] for s in streams}
    for m in msgs:
        by[m["stream"]].append(m["data"])
    for name, evs in by.items():
        assert len(evs) > 50, name
        breaks = 0
        for prev, ev in zip(evs, evs[1:], strict=False):
            assert ev["u"] > prev["u"] and ev["U"] <= ev["u"] and ev["T"] >= prev["T"], name
            if ev["pu"] != prev["u"]:
                # Only where a loop pass begins: a new chain, above the last one.
                assert ev["pu"] > prev["u"], name
                breaks += 1
        assert breaks == 2 if name != "ethusdt@depth" else breaks >= 2, (name, breaks)
    # The 0 ms stream is the recording, pass after pass, ids moved on by the id span and times by the time span.
    zero = by["btcusdt@depth@0ms"]
    n = len(depth)
    assert zero[0]["u"] == depth[0]["u"], "the first client starts at the beginning of the recording"
    for k in range(2):
        for ev, rec in zip(zero[k * n : (k + 1) * n], depth, strict=True):
            assert ev["U"] - rec["U"] == ev["u"] - rec["u"] == ev["pu"] - rec["pu"] == k * id_span
            assert ev["E"] - rec["E"] == ev["T"] - rec["T"] == k * span_ms
            assert ev["b"] == rec["b"] and ev["a"] == rec["a"]
    # The merged streams equal Binance's coarser streams written out here, pass after pass.
    for name, speed in (("btcusdt@depth@100ms", 100), ("btcusdt@depth@500ms", 500)):
        want = _merge_reference(depth, speed)
        got = by[name]
        m = len(want)
        assert len(got) >= 2 * m
        for k in range(2):
            for ev, ref in zip(got[k * m : (k + 1) * m], want, strict=True):
                assert (ev["U"], ev["u"], ev["pu"]) == (
                    ref["U"] + k * id_span,
                    ref["u"] + k * id_span,
                    ref["pu"] + k * id_span,
                )
                assert ev["T"] == ref["T"] + k * span_ms
                assert ev["b"] == ref["b"] and ev["a"] == ref["a"]


def test_rest_depth_equals_the_reference_book_at_the_served_position(btc_recorded) -> None:
    _, depth, _, _ = btc_recorded
    feed = Feed(*FILES, "--speed", "15")
    answers: list[tuple[int, dict, int]] = []
    try:
        port = feed.port

        async def run() -> list[dict]:
            async def ask(msg: dict) -> None:
                if msg["data"]["e"] == "depthUpdate" and len(answers) < 12 and msg["data"]["u"] % 7 == 0:
                    limit = (5, 10, 20, 50, 100, 500, 1000)[len(answers) % 7]
                    status, body, _ = await asyncio.to_thread(
                        http, port, f"/fapi/v1/depth?symbol=BTCUSDT&limit={limit}"
                    )
                    assert status == 200
                    answers.append((limit, body, msg["data"]["u"]))

            return await collect(
                f"ws://127.0.0.1:{port}/public/stream?streams=btcusdt@depth@0ms",
                lambda m: len(answers) >= 12,
                120,
                ask,
            )

        msgs = asyncio.run(run())
    finally:
        feed.stop()
    served = [m["data"] for m in msgs]
    for limit, body, seen_u in answers:
        last = body["lastUpdateId"]
        assert last >= seen_u, "a snapshot is never older than what the client has received"
        bids, asks = sides(reference_through(BTC, last), limit)
        assert body["bids"] == bids and body["asks"] == asks, f"limit {limit} at {last}"
        assert len(body["bids"]) == limit and len(body["asks"]) == limit
        # The event that straddles it (U <= lastUpdateId <= u) is one the client receives after asking.
        nxt = next(e for e in depth if e["u"] >= last)
        assert nxt["U"] <= last <= nxt["u"]
        assert any(e["u"] == nxt["u"] for e in served) or nxt["u"] > served[-1]["u"]


def test_book_ticker_equals_the_client_book_wherever_ids_meet_across_loop_passes(btc_recorded) -> None:
    """The served depth stream, synced from the served REST snapshots, meets every served bookTicker.

    The messages are kept as received, with REST snapshots fetched while they arrive (and how
    many messages had arrived by then); a client then replays them in order, taking after each
    chain break the first snapshot fetched after it, as a live client would.
    """
    snap, depth, recorded_quotes, _ = btc_recorded
    lowest = min([snap["lastUpdateId"]] + [e["pu"] for e in depth] + [q["u"] for q in recorded_quotes])
    feed = Feed(*FILES, "--speed", "20", "--loop")
    snaps: list[tuple[int, dict]] = []
    try:
        info = feed.stats()["books"]["btcusdt"]
        id_span = info["id_span"]
        msgs: list[dict] = []
        chains: list[int] = []  # index in msgs of the first depth event of each chain

        async def run() -> None:
            port = feed.port

            wake = asyncio.Event()

            async def poll() -> None:
                while True:
                    at = len(msgs)
                    status, body, _ = await asyncio.to_thread(http, port, "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
                    assert status == 200
                    snaps.append((at, body))
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), 0.5)

            last = {"u": None}
            third = {"sync": -1, "past": 0}  # pass 3: the snapshot synced from (-1: not yet), events read past it

            tasks: list[asyncio.Task] = []

            def count(msg: dict) -> None:
                msgs.append(msg)
                if not tasks:  # snapshots from the first message on (a request before it would start the market)
                    tasks.append(asyncio.get_running_loop().create_task(poll()))
                data = msg["data"]
                if data["e"] == "depthUpdate":
                    if data["pu"] != last["u"]:
                        chains.append(len(msgs) - 1)
                        wake.set()  # a new chain: ask for a snapshot now, as a live client would
                    last["u"] = data["u"]
                    if third["sync"] >= 0 and data["u"] > third["sync"]:
                        third["past"] += 1

            def third_pass_syncable(_: object) -> bool:
                """400 depth events read past the snapshot the client syncs from in the third pass
                (~35 meeting points), however far that snapshot ran ahead of what this client had
                read (on a loaded machine the feed's sent position runs ahead of the client)."""
                if len(chains) < 3:
                    return False
                if third["sync"] < 0:
                    third["sync"] = next((b["lastUpdateId"] for at, b in snaps if at >= chains[2]), -1)
                return third["past"] >= 400

            try:
                await collect(
                    f"ws://127.0.0.1:{port}/public/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker",
                    third_pass_syncable,
                    240,
                    count,
                )
            finally:
                for task in tasks:
                    task.cancel()

        asyncio.run(run())
    finally:
        feed.stop()
    client = ClientBook()
    points: list[tuple[tuple[str, str, str, str], tuple[str, str, str, str], int]] = []
    quotes: dict[int, tuple[str, str, str, str]] = {}  # bookTickers not yet met by a depth event
    synced_at: list[int] = []  # the update id the client's book stood at when it (re)synced
    last_applied = [0, 0, 0]  # per pass, the newest update id applied
    next_snap = 0
    for m, msg in enumerate(msgs):
        data = msg["data"]
        if data["e"] != "depthUpdate":
            if client.synced and data["u"] == client.last_u:
                points.append((client.best(), (data["b"], data["B"], data["a"], data["A"]), data["u"]))
            else:  # a bookTicker often arrives just before the depth event with its update id
                quotes[data["u"]] = (data["b"], data["B"], data["a"], data["A"])
            continue
        applied = client.on_depth(data)
        while client.needs_snapshot and next_snap < len(snaps):
            at, body = snaps[next_snap]
            next_snap += 1
            if at >= m:  # fetched after this message had arrived
                applied = client.on_snapshot(body) == "synced" or applied
        if len(client.syncs) > len(synced_at):
            synced_at.append(client.last_u)  # type: ignore[arg-type]
        if client.synced:
            last_applied[(client.last_u - lowest) // id_span] = client.last_u  # type: ignore[operator]
        if applied and client.last_u in quotes:
            points.append((client.best(), quotes.pop(client.last_u), client.last_u))
        for u in [u for u in quotes if u < data["u"]]:
            del quotes[u]
    assert len(client.breaks) == 2 and len(client.syncs) == 3 == len(synced_at)
    assert all(ours == theirs for ours, theirs, _ in points)
    # The oracle, from the recording: the bookTickers whose update id is a depth event's (199 of them),
    # shifted by id_span per pass. How far into a pass the client syncs depends on how far the feed's
    # snapshot ran ahead of what this client had read (socket buffers, more on a loaded machine); from
    # there to the last event it applied in the pass, every such meeting point must be met.
    depth_ids = {e["u"] for e in depth}
    meets = sorted(q["u"] for q in recorded_quotes if q["u"] in depth_ids)
    for k in range(3):
        lo, hi = synced_at[k], last_applied[k]
        expected = [r + k * id_span for r in meets if lo < r + k * id_span < hi]
        ours = sorted(u for *_, u in points if lo < u < hi)
        assert ours == expected, (k, len(ours), len(expected))
        # Pass 1 from its start, pass 3 for 400 events past its sync; pass 2 may be synced late.
        assert len(expected) >= {0: 100, 1: 0, 2: 10}[k], (k, lo, hi, len(expected))


def test_dropped_depth_events_break_the_chain_where_counted_and_a_resync_gives_the_ground_truth() -> None:
    feed = Feed(*FILES, "--speed", "20")
    client = ClientBook()
    try:
        port = feed.port
        stream = "btcusdt@depth@0ms&depth_drop_every=400&depth_drop_count=2"
        # The feed drops its 401st and 802nd depth events: once 801 have arrived, both are behind.
        asyncio.run(follow_book(port, stream, client, lambda c: c.seen >= 801 and c.synced, 120))
        truth_status, truth, _ = http(port, f"/control/book?symbol=btcusdt&update_id={client.last_u}")
        stats = feed.stats()
    finally:
        feed.stop()
    assert stats["depth_dropped"] == 2, (stats, client.seen)
    dropped = [u for sym, u in stats["depth_dropped_ids"] if sym == "btcusdt"]
    # A drop the client is synced across breaks the chain right there: the next event continues from
    # the dropped u, which never arrived. A client that lags the feed (TCP pushes back on it) may still
    # be resyncing when the next drop comes; then its snapshot, newer than the drop, covers it.
    breaks = [ev["pu"] for _, ev in client.breaks]
    unsynced = [(b_u, sync) for (b_u, _), sync in zip(client.breaks, client.syncs[1:], strict=True)]
    assert client.breaks and set(breaks) <= set(dropped) and len(client.syncs) == len(breaks) + 1
    for u in dropped:
        assert u in breaks or any(after < u <= sync for after, sync in unsynced), (u, breaks, unsynced)
    assert truth_status == 200 and truth["known"] and truth["lastUpdateId"] == client.last_u
    lo, hi = client.range  # type: ignore[misc]
    t_bids = [lv for lv in truth["bids"] if lo <= Decimal(lv[0]) <= hi]
    t_asks = [lv for lv in truth["asks"] if lo <= Decimal(lv[0]) <= hi]
    assert (t_bids, t_asks) == client.within(lo, hi) and len(t_bids) > 500
    # And the ground truth is the recording's book at that update id.
    bids, asks = sides(reference_through(BTC, client.last_u))
    assert truth["bids"] == bids and truth["asks"] == asks


def test_a_drop_armed_on_the_control_path_breaks_the_chain_once() -> None:
    feed = Feed(*FILES, "--speed", "5")  # a 69 s tape: the armed drop comes well before its end, even late
    client = ClientBook()
    armed: dict = {}
    try:
        port = feed.port

        def done(c: ClientBook) -> bool:
            if c.synced and not armed:
                armed.update(http(port, "/control/faults?depth_drop=1&symbol=btcusdt")[1])
            return bool(armed) and len(c.syncs) >= 2 and c.synced

        asyncio.run(follow_book(port, "btcusdt@depth@0ms", client, done, 120))
        stats = feed.stats()
    finally:
        feed.stop()
    assert armed["armed_streams"] == 1
    assert stats["depth_dropped"] == 1 and len(client.breaks) == 1
    assert client.breaks[0][1]["pu"] == stats["depth_dropped_ids"][0][1]


def test_snapshot_failures_and_stale_snapshots_do_what_they_say() -> None:
    feed = Feed(*FILES, "--speed", "15", "--depth-fail", "2", "--depth-stale", "1", "--stale-by", "100")
    try:
        port = feed.port
        # The market starts with the first connection; wait until a good part of it is due.
        asyncio.run(collect(f"ws://127.0.0.1:{port}/public/ws/btcusdt@depth@0ms", lambda m: len(m) > 400, 120))
        first, second = (
            http(port, "/fapi/v1/depth?symbol=BTCUSDT&limit=1000"),
            http(port, "/fapi/v1/depth?symbol=BTCUSDT"),
        )
        stale = http(port, "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
        fresh = http(port, "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
        http(port, "/control/faults?depth_fail=1&symbol=ethusdt")
        btc_ok, eth_fails, eth_ok = (
            http(port, "/fapi/v1/depth?symbol=BTCUSDT&limit=5"),
            http(port, "/fapi/v1/depth?symbol=ETHUSDT&limit=5"),
            http(port, "/fapi/v1/depth?symbol=ETHUSDT&limit=5"),
        )
        stats = feed.stats()["snapshots"]
    finally:
        feed.stop()
    for status, body, _ in (first, second, eth_fails):
        assert status == 503 and body["code"] == -1001
    assert stale[0] == fresh[0] == btc_ok[0] == eth_ok[0] == 200
    # A stale snapshot is a true book, 100 depth events older than the current one.
    _, depth, _, _ = recorded(BTC)
    ids = [e["u"] for e in depth]
    s_last, f_last = stale[1]["lastUpdateId"], fresh[1]["lastUpdateId"]
    behind = sum(1 for u in ids if s_last < u <= f_last)
    assert behind >= 100  # and the feed moved on a little between the two requests
    bids, asks = sides(reference_through(BTC, s_last), 1000)
    assert stale[1]["bids"] == bids and stale[1]["asks"] == asks
    assert stats["failed"] == 3 and stats["stale"] == 1 and stats["served"] == 4


def test_bad_depth_requests_are_answered_as_binance_does() -> None:
    feed = Feed(*FILES, "--speed", "20")
    try:
        port = feed.port
        answers = {
            q: http(port, f"/fapi/v1/depth{q}")
            for q in ("", "?symbol=", "?symbol=XRPUSDT", "?symbol=BTCUSDT&limit=7", "?symbol=BTCUSDT&limit=x1")
        }
        default = http(port, "/fapi/v1/depth?symbol=btcusdt")
        spot = http(port, "/api/v3/depth?symbol=BTCUSDT")
        weights = [
            int(http(port, "/fapi/v1/depth?symbol=ETHUSDT&limit=1000")[2]["X-MBX-USED-WEIGHT-1M"]) for _ in range(2)
        ]
    finally:
        feed.stop()
    codes = {q: (s, b["code"]) for q, (s, b, _) in answers.items()}
    assert codes == {
        "": (400, -1102),
        "?symbol=": (400, -1102),
        "?symbol=XRPUSDT": (400, -1121),
        "?symbol=BTCUSDT&limit=7": (400, -1100),
        "?symbol=BTCUSDT&limit=x1": (400, -1100),
    }
    assert default[0] == 200 and len(default[1]["bids"]) == len(default[1]["asks"]) == 500
    assert set(default[1]) == {"lastUpdateId", "E", "T", "bids", "asks"}
    assert spot[0] == 503  # the recording is USD-M: no spot book to serve
    assert weights[1] - weights[0] == 20


def test_market_trades_are_the_recorded_json_unchanged_with_books_in_the_input() -> None:
    """/market/stream?streams=btcusdt@trade sends exactly the recorded trade messages, in order."""
    recorded_trades = [raw for raw in raw_lines([BTC]) if raw.startswith(b'{"stream":"btcusdt@trade"')]
    feed = Feed(*FILES, "--speed", "max")
    try:
        got: list[bytes] = []

        async def run() -> None:
            url = f"ws://127.0.0.1:{feed.port}/market/stream?streams=btcusdt@trade"
            async with websockets.connect(url, max_queue=None) as ws:
                while len(got) < len(recorded_trades):
                    got.append((await asyncio.wait_for(ws.recv(), 60)).encode())

        asyncio.run(run())
    finally:
        feed.stop()
    assert got == recorded_trades


def test_start_now_as_ticklens_up_runs_it_serves_current_times_and_consistent_snapshots(btc_recorded) -> None:
    """`ticklens up` runs the feed on the bundled files with --loop --start-now: a pass far from the first."""
    snap, depth, _, _ = btc_recorded
    feed = Feed(*FILES, "--loop", "--start-now", "--speed", "1")
    got: dict = {}
    try:
        port = feed.port
        id_span = feed.stats()["books"]["btcusdt"]["id_span"]

        async def run() -> list[dict]:
            async def ask(msg: dict) -> None:
                if not got and msg["data"]["e"] == "depthUpdate":
                    got.update(http(port, "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")[1])

            def done(m: list[dict]) -> bool:
                return bool(got) and m[-1]["data"]["u"] >= got["lastUpdateId"]

            return await collect(f"ws://127.0.0.1:{port}/public/stream?streams=btcusdt@depth@0ms", done, 120, ask)

        msgs = [m["data"] for m in asyncio.run(run())]
        trades = asyncio.run(collect(f"ws://127.0.0.1:{port}/market/ws/btcusdt@trade", lambda m: len(m) >= 3, 60))
    finally:
        feed.stop()
    now = time.time() * 1000
    assert abs(msgs[0]["E"] - now) < 60_000 and abs(trades[-1]["T"] - now) < 60_000
    k = (msgs[0]["u"] - depth[0]["u"]) // id_span + 1
    assert k > 1_000, "joined a pass far from the first, ids moved on"
    for prev, ev in zip(msgs, msgs[1:], strict=False):
        assert ev["pu"] == prev["u"] or ev["pu"] > prev["u"]
    # The snapshot is straddled by an event the client receives, and is the recording's book there.
    last = got["lastUpdateId"]
    straddle = next(e for e in msgs if e["u"] >= last)
    assert straddle["U"] <= last <= straddle["u"]
    pass_k = next(j for j in (k - 1, k) if snap["lastUpdateId"] <= last - j * id_span <= depth[-1]["u"])
    bids, asks = sides(reference_through(BTC, last - pass_k * id_span), 1000)
    assert got["bids"] == bids and got["asks"] == asks


def test_simulated_trades_on_market_beside_recorded_books_on_public(btc_recorded) -> None:
    """`--simulate` with recordings (bench/bench_live.py --books): the simulator's trades on /market,
    the recordings' book streams and depth snapshots on /public, each path from its own timeline."""
    snap, depth, quotes, _ = btc_recorded
    feed = Feed("--simulate", "--symbols", "solusdt,bnbusdt", "--rate", "400", "--no-bursts", *FILES, "--speed", "20")
    try:
        port = feed.port
        market = asyncio.run(
            collect(
                f"ws://127.0.0.1:{port}/market/stream?streams=solusdt@trade/bnbusdt@trade/btcusdt@trade",
                lambda m: len(m) >= 200,
                60,
            )
        )
        public = asyncio.run(
            collect(
                f"ws://127.0.0.1:{port}/public/stream?streams=btcusdt@depth@0ms/btcusdt@bookTicker/solusdt@bookTicker",
                lambda m: sum(x["data"]["e"] == "depthUpdate" for x in m) >= 30,
                60,
            )
        )
        status, body, _ = http(port, "/fapi/v1/depth?symbol=BTCUSDT&limit=5")
        stats = feed.stats()
    finally:
        feed.stop()
    # Trades: the simulated symbols only (the recordings' BTC trades are not on this feed's /market).
    assert {m["stream"] for m in market} == {"solusdt@trade", "bnbusdt@trade"}
    assert all(m["data"]["e"] == "trade" for m in market)
    # Books: the recording's own events, in its order, and nothing for a simulated symbol.
    assert {m["stream"] for m in public} == {"btcusdt@depth@0ms", "btcusdt@bookTicker"}
    served_u = [m["data"]["u"] for m in public if m["data"]["e"] == "depthUpdate"]
    recorded_u = [e["u"] for e in depth]
    first = recorded_u.index(served_u[0])
    assert served_u == recorded_u[first : first + len(served_u)]
    quote_ids = {q["u"] for q in quotes}
    assert all(m["data"]["u"] in quote_ids for m in public if m["data"]["e"] == "bookTicker")
    # The depth endpoint answers from the recording: a book at or after the served events.
    assert status == 200 and body["lastUpdateId"] >= snap["lastUpdateId"]
    bids, asks = sides(reference_through(BTC, body["lastUpdateId"]), 5)
    assert body["bids"] == bids and body["asks"] == asks
    assert set(stats["trades_by_symbol"]) == {"solusdt", "bnbusdt"} and stats["depth_events"] >= 30
