"""The replay source reads every archive layout and container the same way."""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from pathlib import Path

import pytest

from tests.flow_support import BTC_2020
from ticklens.ingest.replay import Replay

ROWS = 3_000


def _rows() -> list[dict]:
    with gzip.open(BTC_2020, "rt") as fh:
        return [r for _, r in zip(range(ROWS), csv.DictReader(fh), strict=False)]


def _write(path: Path, lines: list[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    elif path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(path.name[: -len(".zip")], data)
    else:
        path.write_bytes(data)
    return path


def _trades_lines(header: bool, micros: bool) -> list[str]:
    out = ["id,price,qty,quote_qty,time,is_buyer_maker"] if header else []
    for r in _rows():
        t = int(r["time"]) * (1000 if micros else 1)
        out.append(f"{r['id']},{r['price']},{r['qty']},{r['quote_qty']},{t},{r['is_buyer_maker']}")
    return out


def _agg_lines(header: bool) -> list[str]:
    out = ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"] if header else []
    for i, r in enumerate(_rows()):
        # An aggTrade standing for 2 underlying trades: ids 2i, 2i+1.
        out.append(f"{r['id']},{r['price']},{r['qty']},{2 * i},{2 * i + 1},{r['time']},{r['is_buyer_maker']}")
    return out


def _read_all(path: Path) -> list[tuple]:
    r = Replay([path])
    out = []
    while (chunk := r.take(700)) is not None:
        for t in chunk:
            out.extend(
                zip(
                    [t.symbol] * len(t),
                    t.trade_id.tolist(),
                    t.ts_ms.tolist(),
                    t.price.tolist(),
                    t.qty.tolist(),
                    t.is_buyer_maker.tolist(),
                    t.first_id.tolist(),
                    t.last_id.tolist(),
                    strict=True,
                )
            )
    return out


def _expected(agg: bool = False) -> list[tuple]:
    out = []
    for i, r in enumerate(_rows()):
        first, last = (2 * i, 2 * i + 1) if agg else (int(r["id"]), int(r["id"]))
        out.append(
            (
                "btcusdt",
                int(r["id"]),
                int(r["time"]),
                float(r["price"]),
                float(r["qty"]),
                r["is_buyer_maker"] == "true",
                first,
                last,
            )
        )
    return out


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.zip"])
@pytest.mark.parametrize("header", [True, False])
def test_trades_layout_in_every_container_with_or_without_header(tmp_path: Path, suffix: str, header: bool) -> None:
    path = _write(tmp_path / f"BTCUSDT-trades-2020-12-09{suffix}", _trades_lines(header, micros=False))
    assert _read_all(path) == _expected()


def test_microsecond_times_are_detected_and_converted(tmp_path: Path) -> None:
    path = _write(tmp_path / "BTCUSDT-trades-2025-01-02.csv", _trades_lines(True, micros=True))
    assert _read_all(path) == _expected()


@pytest.mark.parametrize("header", [True, False])
def test_aggtrades_layout_keeps_underlying_trade_ids(tmp_path: Path, header: bool) -> None:
    path = _write(tmp_path / "BTCUSDT-aggTrades-2020-12-09.csv.gz", _agg_lines(header))
    assert _read_all(path) == _expected(agg=True)


def test_resume_position_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    path = _write(tmp_path / "BTCUSDT-trades-2020-12-09.csv", _trades_lines(True, micros=False))
    first = Replay([path])
    taken = [t for t in first.take(1234) or []]
    n = sum(len(t) for t in taken)
    rest = Replay([path], positions=first.positions())
    ids = []
    while (chunk := rest.take(1000)) is not None:
        ids.extend(i for t in chunk for i in t.trade_id.tolist())
    assert ids == [e[1] for e in _expected()][n:]


def test_ws_recording_lines_skip_other_streams_and_count_them(tmp_path: Path) -> None:
    lines = [
        '1721347022000000000 {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":1,"s":"BTCUSDT"}}',
        '1721347022000000000 {"stream":"btcusdt@trade","data":{"e":"trade","E":1721347021998,"T":1721347021990,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","X":"MARKET","m":true}}',
        '1721347022000000000 {"lastUpdateId":5,"E":1,"T":1,"bids":[],"asks":[]}',
    ]
    path = tmp_path / "rec.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    r = Replay([path])
    got = [t for c in iter(lambda: r.take(10), None) for t in c]
    assert [(t.symbol, t.trade_id.tolist(), t.recv_ms.tolist(), t.event_ms.tolist()) for t in got] == [
        ("btcusdt", [7], [1721347022000], [1721347021998])
    ]
    assert r.stats().skipped == 2 and r.stats().rejected == 0


def test_a_zip_without_a_csv_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-x.csv.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", io.BytesIO(b"nothing").getvalue())
    with pytest.raises(ValueError, match="holds no .csv"):
        _read_all(path)
