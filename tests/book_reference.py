"""An independent local order book for the tests: Binance's procedure over plain dicts.

Reads recordings with gzip/json only and keys levels by Decimal; nothing here imports
ticklens, so a bug there cannot hide in the expectation.
"""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binance"
UM = DATA / "um_ws"
SPOT = DATA / "spot_ws"

STREAMS = {
    "btc_0808": ("btcusdt", "usdm", [UM / "btcusdt_20240808.gz"]),
    "eth_0808": ("ethusdt", "usdm", [UM / "ethusdt_20240808.gz"]),
    "btc_07": ("btcusdt", "usdm", [UM / "btcusdt_20240718.gz", UM / "btcusdt_20240719.gz"]),
    "eth_07": ("ethusdt", "usdm", [UM / "ethusdt_20240718.gz", UM / "ethusdt_20240719.gz"]),
    "btc_spot": ("btcusdt", "spot", [SPOT / "btcusdt_20240808.gz", SPOT / "btcusdt_20240809.gz"]),
    "eth_spot": ("ethusdt", "spot", [SPOT / "ethusdt_20240808.gz", SPOT / "ethusdt_20240809.gz"]),
}


def raw_lines(paths: list[Path]) -> list[bytes]:
    out = []
    for path in paths:
        with gzip.open(path, "rb") as fh:
            out.extend(line.rstrip(b"\n").partition(b" ")[2] for line in fh)
    return out


class RefBook:
    """Binance's procedure written out plainly: buffer, snapshot, drop covered events, chain."""

    def __init__(self, spot: bool) -> None:
        self.spot = spot
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.text: dict[Decimal, tuple[str, str]] = {}  # price -> the exchange's strings of the level
        self.last_u: int | None = None
        self.snapshot_id: int | None = None
        self.buffer: list[dict] = []
        self.applied = 0
        self.chain_breaks = 0

    def on_message(self, msg: dict) -> dict | None:
        """Returns the event if it was applied now (after a snapshot: the last of the buffer)."""
        if "lastUpdateId" in msg:
            self.snapshot_id = msg["lastUpdateId"]
            for side, book in (("bids", self.bids), ("asks", self.asks)):
                book.clear()
                for p, q in msg[side]:
                    book[Decimal(p)] = Decimal(q)
                    self.text[Decimal(p)] = (p, q)
            pending, self.buffer = self.buffer, []
            last = None
            for ev in pending:
                last = self._event(ev) or last
            return last
        data = msg.get("data", msg)
        if data.get("e") != "depthUpdate":
            return None
        if self.snapshot_id is None:
            self.buffer.append(data)
            return None
        return self._event(data)

    def _event(self, ev: dict) -> dict | None:
        sid = self.snapshot_id
        assert sid is not None
        if self.last_u is None:
            if (ev["u"] <= sid) if self.spot else (ev["u"] < sid):
                return None
            target = sid + 1 if self.spot else sid
            assert ev["U"] <= target <= ev["u"], "first event does not straddle the snapshot"
        else:
            prev = ev["U"] - 1 if self.spot else ev["pu"]
            if prev != self.last_u:
                self.chain_breaks += 1
        for side, book in (("b", self.bids), ("a", self.asks)):
            for p, q in ev[side]:
                price, qty = Decimal(p), Decimal(q)
                if qty == 0:
                    book.pop(price, None)
                else:
                    book[price] = qty
                    self.text[price] = (p, q)
        self.last_u = ev["u"]
        self.applied += 1
        return ev

    def best(self) -> tuple[tuple[Decimal, Decimal], tuple[Decimal, Decimal]]:
        b, a = max(self.bids), min(self.asks)
        return (b, self.bids[b]), (a, self.asks[a])

    def snapshot_body(self, event: dict) -> dict:
        """The book now as a REST depth body, best level first (a snapshot at the last event)."""
        bids = [list(self.text[p]) for p in sorted(self.bids, reverse=True)]
        asks = [list(self.text[p]) for p in sorted(self.asks)]
        return {"lastUpdateId": self.last_u, "E": event["E"], "T": event["T"], "bids": bids, "asks": asks}


def recorded(path: Path) -> tuple[dict, list[dict], list[dict], list[bytes]]:
    """(REST snapshot, depth events, bookTicker events, raw event JSON of the depth events) of a recording."""
    snap, depth, quotes, depth_raw = None, [], [], []
    for raw in raw_lines([path]):
        msg = json.loads(raw)
        if "lastUpdateId" in msg:
            snap = msg
            continue
        data = msg["data"]
        if data["e"] == "depthUpdate":
            depth.append(data)
            depth_raw.append(raw[raw.index(b',"data":') + 8 : -1])
        elif data["e"] == "bookTicker":
            quotes.append(data)
    assert snap is not None
    return snap, depth, quotes, depth_raw


def book_after(snapshot: dict, depth: list[dict], last_id: int) -> RefBook:
    """The USD-M book after `snapshot` and every one of `depth` (in recorded order) with u <= last_id."""
    ref = RefBook(spot=False)
    ref.on_message(snapshot)
    for ev in depth:
        if ev["u"] > last_id:
            break
        ref.on_message(ev)
    return ref
