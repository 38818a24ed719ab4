"""What the local feed sends, checked message by message with plain json (no socket, except the last test)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import websockets

from tests.feed_support import Feed
from tests.flow_support import WINDOW_B
from ticklens.emulator.session import Faults, Session, Subscription
from ticklens.emulator.simulator import Simulator
from ticklens.emulator.tape import load_tape
from ticklens.emulator.timeline import Timeline


def take(tl: Timeline, streams: list[str], n: int, combined: bool = True, faults: Faults | None = None) -> list[dict]:
    sub = Subscription(combined)
    for s in streams:
        assert sub.add(s, tl.symbols)
    session = Session(tl, sub, faults or Faults())
    session.begin(time.monotonic())
    out: list[bytes] = []
    for _ in range(10_000):
        if len(out) >= n:
            break
        out += session.step(time.monotonic())
    return [json.loads(m) for m in out[:n]]


@pytest.fixture(scope="module")
def tape():
    return load_tape(WINDOW_B)


def test_looped_replay_shifts_ids_and_times_so_they_stay_unique_and_ordered(tape) -> None:
    n_btc = int((tape.cols["sym"] == tape.symbols.index("btcusdt")).sum())
    msgs = take(Timeline(tape=tape, speed=None, loop=True), ["btcusdt@trade"], 3 * n_btc)
    ids = np.array([m["data"]["t"] for m in msgs])
    ts = np.array([m["data"]["T"] for m in msgs])
    assert len(set(ids.tolist())) == len(ids)
    assert np.all(np.diff(ids) > 0)
    assert np.all(np.diff(ts) >= 0)
    # The second pass continues right after the first: same gaps, ids shifted by the id span.
    first = ids[:n_btc]
    span = int(first.max() - first.min() + 1)
    assert (ids[n_btc : 2 * n_btc] - first == span).all()
    assert all(m["stream"] == "btcusdt@trade" for m in msgs)


def test_a_later_start_continues_the_same_shifted_sequence(tape) -> None:
    n_btc = int((tape.cols["sym"] == tape.symbols.index("btcusdt")).sum())
    looped = take(Timeline(tape=tape, speed=None, loop=True), ["btcusdt@trade"], 4 * n_btc)
    offset = 3 * tape.span_ms + 60_000  # a minute into the 4th pass
    later = take(Timeline(tape=tape, speed=None, loop=True, offset_ms=offset), ["btcusdt@trade"], n_btc // 2)
    start = int(tape.cols["ts_ms"][0]) + offset
    want = [(m["data"]["t"], m["data"]["T"]) for m in looped if m["data"]["T"] >= start][: len(later)]
    assert [(m["data"]["t"], m["data"]["T"]) for m in later] == want and len(want) > 100


def test_aggtrade_asked_of_plain_trades_has_a_equal_f_equal_l(tape) -> None:
    msgs = take(Timeline(tape=tape, speed=None), ["ethusdt@aggTrade"], 500, combined=False)
    for m in msgs:
        assert m["e"] == "aggTrade" and m["s"] == "ETHUSDT"
        assert m["a"] == m["f"] == m["l"]
        assert float(m["p"]) > 0 and float(m["q"]) > 0 and isinstance(m["m"], bool)


def test_first_pass_replays_the_recorded_json_unchanged(tape) -> None:
    import gzip

    with gzip.open(WINDOW_B[0], "rb") as fh:
        recorded = [line.rstrip(b"\n").partition(b" ")[2] for line in fh][:200]
    msgs = take(Timeline(tape=tape, speed=None), ["btcusdt@trade"], 200)
    assert [json.dumps(m, separators=(",", ":")).encode() for m in msgs] == [
        json.dumps(json.loads(r), separators=(",", ":")).encode() for r in recorded
    ]


def test_skipped_id_range_is_never_sent(tape) -> None:
    ids = tape.cols["trade_id"][tape.cols["sym"] == tape.symbols.index("btcusdt")]
    lo, hi = int(ids[100]), int(ids[150])
    tl = Timeline(tape=tape, speed=None, skip_ids=[("btcusdt", lo, hi)])
    sent = [m["data"]["t"] for m in take(tl, ["btcusdt@trade"], 1_000)]
    assert not [t for t in sent if lo <= t <= hi]
    assert sent[99] == int(ids[99]) and sent[100] == int(ids[151])


def test_simulated_market_has_consecutive_ids_and_correlated_prices() -> None:
    sim = Simulator(["btcusdt", "ethusdt"], rate=2_000, seed=3)
    chunk = sim.generate(1_700_000_000_000, 1_700_000_000_000 + 120_000)
    for i in range(2):
        sel = chunk["sym"] == i
        assert np.all(np.diff(chunk["trade_id"][sel]) == 1)
        assert np.all(chunk["price"][sel] > 0) and np.all(chunk["qty"][sel] > 0)
    assert np.all(np.diff(chunk["ts_ms"]) >= 0)
    # 1 s log returns of the two symbols move together (shared market factor).
    rets = []
    for i in range(2):
        sel = chunk["sym"] == i
        sec = chunk["ts_ms"][sel] // 1000
        last = np.unique(sec, return_index=False)
        close = np.array([chunk["price"][sel][sec == s][-1] for s in last])
        rets.append(np.diff(np.log(close)))
    n = min(len(r) for r in rets)
    assert np.corrcoef(rets[0][:n], rets[1][:n])[0, 1] > 0.3


def test_feed_serves_binance_paths_and_refuses_unknown_ones() -> None:
    feed = Feed(str(WINDOW_B[1]), "--speed", "max")

    async def talk() -> tuple[dict, dict, str]:
        # max_queue=None: a websockets client with a full queue stops reading and cannot
        # finish the close handshake while a firehose is still arriving.
        async with websockets.connect(f"ws://127.0.0.1:{feed.port}/market/ws/ethusdt@aggTrade", max_queue=None) as ws:
            raw = json.loads(await ws.recv())
        async with websockets.connect(f"ws://127.0.0.1:{feed.port}/stream?streams=ethusdt@trade", max_queue=None) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 7}))
            ack = {}
            for _ in range(100_000):
                msg = json.loads(await ws.recv())
                if "result" in msg:
                    ack = msg
                    break
        try:
            async with websockets.connect(f"ws://127.0.0.1:{feed.port}/nope"):
                refused = ""
        except websockets.InvalidStatus as e:
            refused = str(e.response.status_code)
        return raw, ack, refused

    try:
        raw, ack, refused = asyncio.run(talk())
    finally:
        feed.stop()
    assert raw["e"] == "aggTrade" and raw["s"] == "ETHUSDT" and "stream" not in raw
    assert ack == {"result": None, "id": 7}
    assert refused == "400"


def test_simulated_reader_that_fell_out_of_the_window_skips_ahead_and_counts_the_loss() -> None:
    tl = Timeline(simulator=Simulator(["btcusdt"], rate=20_000, bursts=False), speed=1.0)
    sub = Subscription(True)
    sub.add("btcusdt@trade", tl.symbols)
    session = Session(tl, sub, Faults())
    session.begin(time.monotonic())
    tl.sim_until -= 5_000  # five seconds of market happened before this reader's position
    tl.due_position(time.monotonic())
    while len(tl.sim_chunks) > 3:  # what the 15 s window does to a slow reader's data
        tl.sim_chunks.pop(0)
        tl.sim_bases.pop(0)
    assert session.pos < tl.sim_bases[0]
    msgs = session.step(time.monotonic())
    assert msgs, "the reader is not stuck"
    assert session.lost == tl.sim_bases[0]
    first = json.loads(msgs[0])["data"]["t"]
    assert first == int(tl.sim_chunks[0]["trade_id"][0])
