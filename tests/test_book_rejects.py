"""Malformed book messages go to `rejects` with a reason and lose nothing else, through the real flow.

The bundled BTCUSDT book sample with bad lines added (a depth event with a price that is no
decimal, a bookTicker without its bid, a depth event whose `u` is a string): each is one reject, and every
good line is stored as if they were not there (compared with a run over the clean file).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tests.flow_support import query, run_flow, write_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "um_btcusdt_20240808_book.gz"


def _store(tmp: Path, lines: list[bytes]) -> Path:
    tmp.mkdir()
    path = tmp / "btcusdt_book.gz"
    with gzip.open(path, "wb") as fh:
        fh.writelines(lines)
    cfg = write_config(
        tmp,
        symbols=["btcusdt"],
        source={"paths": [str(path)], "streams": ["trade", "bookTicker", "depth"]},
        recovery={"enabled": False},
    )
    res = run_flow(cfg, "--no-recovery", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp / "ticklens.db"


def _bad(line: bytes, change) -> bytes:
    head, _, body = line.partition(b" ")
    msg = json.loads(body)
    change(msg["data"])
    return head + b" " + json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def test_malformed_book_messages_are_rejected_with_their_reason_and_the_rest_is_stored(tmp_path: Path) -> None:
    with gzip.open(SAMPLE, "rb") as fh:
        clean = fh.readlines()
    depth_at = [i for i, ln in enumerate(clean) if b'"depthUpdate"' in ln]
    ticker_at = [i for i, ln in enumerate(clean) if b'"bookTicker"' in ln]
    d, t = depth_at[300], ticker_at[1000]
    bad_price = _bad(clean[d], lambda e: e["b"].append(["61,800.1", "1.000"]))
    no_bid = _bad(clean[t], lambda e: e.pop("b"))
    bad_id = _bad(clean[d], lambda e: e.update(u=str(e["u"])))
    dirty = clean[: d + 1] + [bad_price, no_bid, bad_id] + clean[d + 1 :]  # extra lines: the good ones all stay
    want = _store(tmp_path / "clean", clean)
    got = _store(tmp_path / "dirty", dirty)
    rejects = query(got, "SELECT reason, raw FROM rejects ORDER BY id")
    assert len(rejects) == 3, rejects
    reasons = [r[0] for r in rejects]
    assert any("61,800.1" in r or "price" in r for r in reasons), reasons
    assert any("'b'" in r or "bid" in r for r in reasons), reasons
    assert any("'u'" in r or " u " in r or "integer" in r for r in reasons), reasons
    assert {bytes(r[1]) for r in rejects} == {ln.partition(b" ")[2].rstrip(b"\n") for ln in (bad_price, no_bid, bad_id)}
    for table, key in (("depth_updates", "final_id"), ("quotes", "update_id"), ("ticks", "trade_id")):
        sql = f"SELECT * FROM {table} ORDER BY symbol, {key}"
        strip = (lambda r: r[1:]) if table == "depth_updates" else (lambda r: r)  # rowid aside
        assert [strip(r) for r in query(got, sql)] == [strip(r) for r in query(want, sql)], table
    assert query(got, "SELECT COUNT(*) FROM book_gaps") == [(0,)]
