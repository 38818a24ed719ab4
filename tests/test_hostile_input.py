"""Hostile values at the exchange edge: every one is a reject with a reason, never an exception
past the parser, and the valid trades around it are kept (parser, recordings, archive CSVs)."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import orjson
import pytest

from ticklens.exchange.binance import REJECT_RAW_MAX, parse_message, rejected
from ticklens.ingest.replay import Replay

NOW = 1_721_347_022_000  # 2024-07-18T23:57:02Z, a receive time
DAY = 86_400_000


def trade(**over: object) -> bytes:
    ev = {"e": "trade", "E": NOW, "T": NOW - 5, "s": "BTCUSDT", "t": 7, "p": "64000.5", "q": "0.01", "m": True}
    ev.update(over)
    return orjson.dumps({"stream": "btcusdt@trade", "data": ev})


def agg(**over: object) -> bytes:
    ev = {
        "e": "aggTrade",
        "E": NOW,
        "a": 5,
        "s": "BTCUSDT",
        "p": "1.5",
        "q": "2",
        "f": 10,
        "l": 12,
        "T": NOW,
        "m": False,
    }
    ev.update(over)
    return orjson.dumps(ev)


HOSTILE = {
    "id 2**63": (trade(t=2**63), "trade id t"),
    "id 2**64-1": (trade(t=2**64 - 1), "trade id t"),
    "float id": (trade(t=1.9), "trade id t"),
    "bool id": (trade(t=True), "trade id t"),
    "string id": (trade(t="7"), "trade id t"),
    "negative id": (trade(t=-1), "trade id t"),
    "time true": (trade(T=True), "trade time T"),
    "time 9e18": (trade(T=9 * 10**18), "trade time T"),
    "time float": (trade(T=float(NOW)), "trade time T"),
    "time two days ahead": (trade(T=NOW + 2 * DAY), "trade time T"),
    "time two days behind": (trade(T=NOW - 2 * DAY), "trade time T"),
    "event time 9e18": (trade(E=9 * 10**18), "event time E"),
    "event time bool": (trade(E=False), "event time E"),
    "price true": (trade(p=True), "price p"),
    "price nan string": (trade(p="nan"), "price p"),
    "price inf string": (trade(p="inf"), "price p"),
    "price with underscores": (trade(p="1_000"), "price p"),
    "price with spaces": (trade(p=" 1.5 "), "price p"),
    "price 1e300": (trade(p="1e300"), "price p"),
    "price zero": (trade(p="0"), "price p"),
    "qty negative": (trade(q="-0.5"), "qty q"),
    "qty huge": (trade(q=1e30), "qty q"),
    "agg first id 2**63": (agg(f=2**63, l=2**63), "first id f"),
    "agg last before first": (agg(f=12, l=10), "last id"),
    "agg last id float": (agg(l=12.0), "last id l"),
    "maker as 1": (trade(m=1), "maker m"),
    "symbol too long": (trade(s="X" * 100), "symbol"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_values_are_rejects_with_a_reason(name: str) -> None:
    raw, field = HOSTILE[name]
    status, reason, row = parse_message(raw, NOW)
    assert status == "reject", (name, row)
    assert row is None and field in reason, reason
    assert len(reason) < 300


def test_valid_trades_still_parse_exactly() -> None:
    assert parse_message(trade(), NOW) == ("trade", "btcusdt", (7, NOW - 5, 64000.5, 0.01, True, 7, 7, NOW, NOW))
    assert parse_message(agg(p=1.5, q=2), NOW) == ("trade", "btcusdt", (5, NOW, 1.5, 2.0, False, 10, 12, NOW, NOW))
    # The largest id int64 holds is still an id.
    assert parse_message(trade(t=2**63 - 1), NOW)[0] == "trade"


def test_the_time_window_is_relative_to_the_receive_time_and_can_be_switched_off() -> None:
    late = trade(T=NOW - 2 * DAY, E=NOW - 2 * DAY)
    assert parse_message(late, NOW)[0] == "reject"
    assert parse_message(late, NOW, window_ms=3 * DAY)[0] == "trade"
    assert parse_message(late, NOW, window_ms=None)[0] == "trade"
    # An absolute window applies even without a receive time (archives, the REST backfill).
    assert parse_message(trade(T=9 * 10**18), 0, window_ms=None)[0] == "reject"
    assert parse_message(trade(T=1, E=1), 0, window_ms=None)[0] == "reject"


def test_a_huge_message_is_rejected_unparsed_and_its_kept_bytes_are_capped() -> None:
    raw = b"[" + b"1," * 600_000 + b"1]"
    status, reason, _ = parse_message(raw, NOW)
    assert status == "reject" and "bytes" in reason
    r = rejected(raw, reason, NOW, "test")
    assert len(r.raw) == REJECT_RAW_MAX == 4096
    assert r.raw == raw[:4096]


def _recording(path: Path, bodies: list[bytes]) -> Path:
    recv_ns = NOW * 1_000_000
    path.write_bytes(gzip.compress(b"".join(b"%d %s\n" % (recv_ns + i, b) for i, b in enumerate(bodies))))
    return path


def _replay_all(r: Replay) -> list[tuple[int, int]]:
    out = []
    while (chunk := r.take(1000)) is not None:
        out.extend((int(i), int(t)) for c in chunk for i, t in zip(c.trade_id, c.ts_ms, strict=True))
    return out


def test_a_recording_with_a_huge_id_and_a_huge_time_keeps_every_valid_trade(tmp_path: Path) -> None:
    bodies = [trade(t=i, T=NOW - 100 + i) for i in range(1, 50)]
    bodies[10] = trade(t=2**63, T=NOW)
    bodies[20] = trade(t=20, T=9 * 10**18)
    bodies[30] = trade(t=30.0)
    bodies.append(b"99999999999999999999999999999 " + trade(t=77))  # a receive time beyond int64
    r = Replay([_recording(tmp_path / "rec.gz", bodies)])
    got = _replay_all(r)
    want = [(i, NOW - 100 + i) for i in range(1, 50) if i not in (11, 21, 31)]
    assert got == want
    reasons = [x.reason for x in r.drain_rejects()]
    assert len(reasons) == 4 and r.stats().rejected == 4, reasons


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("id,price,qty,quote_qty,time,is_buyer_maker\n" + "\n".join(rows) + "\n")
    return path


def test_an_archive_csv_with_hostile_rows_keeps_the_valid_ones(tmp_path: Path) -> None:
    good = [f"{i},100.5,0.1,10.05,{NOW + i},true" for i in range(1, 40)]
    rows = list(good)
    rows[5] = f"{2**63},100.5,0.1,10.05,{NOW},true"  # id beyond int64
    rows[6] = f"7,100.5,0.1,10.05,{9 * 10**18},true"  # time 9e18 (not µs: far beyond)
    rows[7] = "8,nan,0.1,10.05,1721347022008,true"
    rows[8] = "9,100.5,-1,10.05,1721347022009,false"
    rows[9] = "10,100.5,0.1,10.05,1721347022010,maybe"
    rows[10] = "11.5,100.5,0.1,10.05,1721347022011,true"
    path = _csv(tmp_path / "BTCUSDT-trades-2024-07-19.csv", rows)
    r = Replay([path])
    got = _replay_all(r)
    bad_ids = {6, 7, 8, 9, 10, 11}
    assert got == [(i, NOW + i) for i in range(1, 40) if i not in bad_ids]
    rejects = r.drain_rejects()
    assert len(rejects) == 6 and r.stats().rejected == 6
    assert all(x.source == str(path) and x.raw for x in rejects)


def test_microsecond_archive_times_are_still_converted_row_by_row(tmp_path: Path) -> None:
    rows = [f"{i},100.5,0.1,10.05,{(NOW + i) * 1000},true" for i in range(1, 5)]
    got = _replay_all(Replay([_csv(tmp_path / "BTCUSDT-trades-2025-01-01.csv", rows)]))
    assert got == [(i, NOW + i) for i in range(1, 5)]
    assert all(math.isfinite(t) for _, t in got)


def test_progress_survives_a_time_no_calendar_holds(capsys: pytest.CaptureFixture[str]) -> None:
    """The sink's progress line must never raise (it stopped the flow with SIGABRT at 9e18)."""
    from flows.items import SymbolOut
    from flows.progress import Progress
    from ticklens.domain.records import Trades

    big = 9 * 10**18
    ticks = Trades.from_columns("btcusdt", trade_id=[1], ts_ms=[big], price=[1.0], qty=[1.0], is_buyer_maker=[True])
    progress = Progress(0.0)
    progress.quiet = False
    progress.on_symbol(SymbolOut("btcusdt", ticks=ticks, watermark=big), 0, NOW)
    docs = progress.status_docs()
    progress.print_line()
    assert docs["symbol:btcusdt"]["last_trade_ms"] == big
    assert "btcusdt@285200616-07-24T16:00:00.000Z" in capsys.readouterr().err


def test_rejects_alone_fill_the_readers_queue_by_bytes_and_pause_it() -> None:
    from ticklens.ingest.hub import Hub

    hub = Hub(["btcusdt"], "test", 1_000, None, queue_max_bytes=1 << 20)
    garbage = b"\x00" * 60_000
    n = 0
    while not hub.paused and n < 10_000:
        hub.on_message(garbage)
        hub.publish()
        n += 1
    # ~4.3 KB counted per reject (4 KiB kept + reason + overhead): paused after ~240, not never.
    assert hub.paused and 200 <= n <= 260, n
    assert hub.depth == 0 and hub.depth_bytes >= 1 << 20
    trades, rest = hub.drain()
    assert not trades and len(rest) == n and all(len(r.raw) == 4096 for r in rest)
    assert hub.depth_bytes == 0


def test_a_recorded_reject_cannot_smuggle_a_trade_into_the_replay(tmp_path: Path) -> None:
    from ticklens.ingest.hub import Hub

    rec = tmp_path / "session.jsonl.gz"
    hub = Hub(["btcusdt"], "test", 1_000, rec, window_ms=None)
    smuggled = b'{"x":1}\n1721347022000000000 ' + trade(t=99)  # a newline, then a well-formed recording line
    also = trade(t=98)[:-2] + b',"x":"a\nb"}}'  # invalid (raw newline in a string) until the newline goes
    for raw in (trade(t=1), smuggled, also, trade(t=2)):
        hub.on_message(raw)
    hub.close_record()
    r = Replay([rec])
    assert [i for i, _ in _replay_all(r)] == [1, 2]
    assert r.stats().rejected == 2


def test_a_conflicting_duplicate_is_counted_and_kept_with_both_versions(tmp_path: Path) -> None:
    import json

    from tests.flow_support import query, run_flow, write_config

    bodies = [trade(t=i, T=NOW + i, p="100.5") for i in range(1, 60)]
    # Later in the file: id 10 with another price, 11 repeated exactly, 12 with another time,
    # 13 with another qty and side; batch_rows 7 puts some in the same batch, some in later ones.
    bodies += [trade(t=10, T=NOW + 10, p="99.5"), trade(t=11, T=NOW + 11, p="100.5")]
    bodies += [trade(t=12, T=NOW + 500, p="100.5"), trade(t=13, T=NOW + 13, p="100.5", q="5", m=False)]
    bodies += [trade(t=i, T=NOW + i, p="100.5") for i in range(60, 70)]
    rec = _recording(tmp_path / "rec.gz", bodies)
    cfg = write_config(tmp_path, symbols=["btcusdt"], source={"paths": [str(rec)], "batch_rows": 7})
    res = run_flow(cfg, "--no-recovery")
    assert res.returncode == 0, res.stderr[-3000:]
    db = tmp_path / "ticklens.db"
    assert query(db, "SELECT COUNT(*), MIN(price), MAX(price), MAX(qty) FROM ticks")[0] == (69, 100.5, 100.5, 0.01)
    rows = query(db, "SELECT reason, raw, source FROM rejects ORDER BY rowid")
    assert [r[2] for r in rows] == ["dedup"] * 3
    docs = {json.loads(r[1])["trade_id"]: (r[0], json.loads(r[1])) for r in rows}
    assert sorted(docs) == [10, 12, 13]
    reason, doc = docs[10]
    assert "conflicting duplicate" in reason and "price" in reason
    assert (doc["kept"]["price"], doc["conflicting"]["price"]) == (100.5, 99.5)
    assert doc["kept"]["ts_ms"] == doc["conflicting"]["ts_ms"] == NOW + 10
    assert "ts_ms" in docs[12][0] and docs[12][1]["conflicting"]["ts_ms"] == NOW + 500
    assert "qty" in docs[13][0] and "is_buyer_maker" in docs[13][0]
    status = json.loads(query(db, "SELECT value FROM status WHERE key='symbol:btcusdt'")[0][0])
    assert status["duplicates"] == 4  # every repeat is a duplicate; the 3 conflicts are also rejects
    assert status["conflicts"] == 3  # counted per symbol (issue 18 part B)


def test_dedup_compares_repeats_within_one_batch_and_with_recent_batches() -> None:
    from ticklens.domain.dedup import RECENT_MIN_ROWS, Dedup
    from ticklens.domain.records import Trades

    def batch(ids: list[int], price: float) -> Trades:
        return Trades.from_columns(
            "btcusdt",
            trade_id=ids,
            ts_ms=[NOW + i for i in ids],
            price=[price] * len(ids),
            qty=[1.0] * len(ids),
            is_buyer_maker=[True] * len(ids),
        )

    d = Dedup(lateness_ms=2_000)
    new, dups, conflicts = d.fresh(batch([1, 2, 3, 2], 10.0))
    assert (len(new), dups, conflicts) == (3, 1, [])
    new, dups, conflicts = d.fresh(batch([3, 4, 4], 11.0))  # 3 seen at 10.0; 4 twice, same values
    assert (len(new), dups) == (1, 2)
    assert [(c.trade_id, c.kept[1], c.other[1]) for c in conflicts] == [(3, 10.0, 11.0)]
    # Far older than the lateness and beyond the minimum kept: dropped as a plain duplicate.
    d.fresh(batch(list(range(10, 10 + RECENT_MIN_ROWS + 10)), 10.0))
    d.fresh(batch([10**6], 10.0))
    d.max_ts += 10_000
    d.fresh(batch([10**6 + 1], 10.0))
    assert 1 not in d.recent.columns()["trade_id"] and d.recent.rows == RECENT_MIN_ROWS + 12  # whole batches
    _, dups, conflicts = d.fresh(batch([1], 99.0))
    assert dups == 1 and conflicts == []
