"""The tape: every trade of the input files in time order, as columns (recordings keep their JSON)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ticklens.exchange.binance import parse_message
from ticklens.ingest.recording import read_recording
from ticklens.ingest.replay import FileStream, file_kind

TRADE, AGG = 0, 1
KIND_NAMES = {"trade": TRADE, "aggTrade": AGG}


@dataclass
class Rows:
    """A slice of the timeline: columns of consecutive positions [start, end)."""

    start: int
    end: int
    sym: np.ndarray  # int32 index into the symbol list
    kind: np.ndarray  # int8: TRADE | AGG (as recorded)
    trade_id: np.ndarray
    ts_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    is_buyer_maker: np.ndarray
    first_id: np.ndarray
    last_id: np.ndarray
    event_ms: np.ndarray
    raw: list[bytes | None] | None = None  # original event JSON (recordings, first pass only)
    live_event_time: bool = False  # E = send time (simulation)


@dataclass
class Tape:
    """Recorded trades of any symbols, merged in (time, symbol, id) order."""

    symbols: list[str]
    cols: dict[str, np.ndarray]
    raw: list[bytes | None]

    def __len__(self) -> int:
        return len(self.cols["ts_ms"])

    @property
    def span_ms(self) -> int:
        ts = self.cols["ts_ms"]
        return int(ts[-1] - ts[0]) + 1

    def id_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """Per symbol: (message id span, underlying trade id span), so looped ids stay consecutive."""
        msg = np.zeros(len(self.symbols), dtype=np.int64)
        under = np.zeros(len(self.symbols), dtype=np.int64)
        c = self.cols
        for i in range(len(self.symbols)):
            m = c["sym"] == i
            if m.any():
                msg[i] = int(c["trade_id"][m].max() - c["trade_id"][m].min()) + 1
                under[i] = int(c["last_id"][m].max() - c["first_id"][m].min()) + 1
        return msg, under


def _event_data(body: bytes) -> bytes | None:
    """The inner event of a combined-stream message, by slicing (Binance puts `data` last)."""
    if body.startswith(b'{"stream":'):
        i = body.find(b',"data":')
        if i > 0 and body.endswith(b"}"):
            return body[i + 8 : -1]
        return None
    return body if body.startswith(b'{"e":') else None


def load_tape(paths: Iterable[Path]) -> Tape:
    """Every trade of the files, in time order; recordings keep their original JSON."""
    symbols: list[str] = []
    sym_index: dict[str, int] = {}
    parts: list[dict[str, np.ndarray]] = []
    raws: list[bytes | None] = []

    def idx(s: str) -> int:
        if s not in sym_index:
            sym_index[s] = len(symbols)
            symbols.append(s)
        return sym_index[s]

    for path in map(Path, paths):
        kind, _ = file_kind(path)
        if kind == "ws":
            rows, syms, kinds, bodies = [], [], [], []
            for rec in read_recording(path):
                status, what, row = parse_message(rec.body, 0, window_ms=None)  # no receive time here
                if status != "trade" or rec.recv_ns is None:
                    continue
                rows.append(row)
                syms.append(idx(what))
                kinds.append(AGG if b'"e":"aggTrade"' in rec.body else TRADE)
                bodies.append(_event_data(rec.body))
            if not rows:
                continue
            cols = list(zip(*rows, strict=True))
            part = {
                "trade_id": np.asarray(cols[0], dtype=np.int64),
                "ts_ms": np.asarray(cols[1], dtype=np.int64),
                "price": np.asarray(cols[2], dtype=np.float64),
                "qty": np.asarray(cols[3], dtype=np.float64),
                "is_buyer_maker": np.asarray(cols[4], dtype=np.bool_),
                "first_id": np.asarray(cols[5], dtype=np.int64),
                "last_id": np.asarray(cols[6], dtype=np.int64),
                "event_ms": np.asarray(cols[7], dtype=np.int64),
                "sym": np.asarray(syms, dtype=np.int32),
                "kind": np.asarray(kinds, dtype=np.int8),
            }
            parts.append(part)
            raws.extend(bodies)
        else:
            fs = FileStream(path)
            while fs.head_ts() is not None:
                block = fs.take_until(np.iinfo(np.int64).max, 1 << 22)
                n = len(block)
                part = {k: v for k, v in block.cols.items() if k != "recv_ms"}
                part["sym"] = np.asarray([idx(s) for s in block.symbols.tolist()], dtype=np.int32)
                part["kind"] = np.full(n, AGG if kind == "agg" else TRADE, dtype=np.int8)
                parts.append(part)
                raws.extend([None] * n)
    if not parts:
        raise ValueError("no trades in the input files")
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((cols["trade_id"], cols["sym"], cols["ts_ms"]))
    cols = {k: v[order] for k, v in cols.items()}
    return Tape(symbols, cols, [raws[i] for i in order.tolist()])
