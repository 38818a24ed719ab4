"""How order-book levels are stored, for every backend: four string columns in one blob.

A depth update's levels are the exchange's decimal strings (exact), kept as four
sections -- bid prices, bid quantities, ask prices, ask quantities -- each the
strings joined by ",", the sections joined by "\\n": about 13 bytes a level, no
float rounding, and one `join`/`split` per section to write and read. Snapshots
(thousands of levels, written every few seconds) are the same text, zlib-compressed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from operator import itemgetter

_PRICE, _QTY = itemgetter(0), itemgetter(1)

# The book tables' stored columns, in the order every backend's writer fills them.
QUOTE_COLUMNS = ("symbol", "update_id", "ts_ms", "event_ms", "recv_ms", "bid", "bid_qty", "ask", "ask_qty", "source")
DEPTH_COLUMNS = (
    "symbol", "final_id", "first_id", "prev_id", "ts_ms", "event_ms", "recv_ms", "n_bids", "n_asks", "levels",
)  # fmt: skip
SNAPSHOT_COLUMNS = (
    "symbol", "update_id", "ts_ms", "recv_ms", "kind", "depth_limit", "complete_low", "complete_high",
    "n_bids", "n_asks", "levels",
)  # fmt: skip

SNAPSHOT_LEVEL = 1  # zlib level: fast; the text compresses ~3x at any level


def encode_levels(
    bid_px: Iterable[str], bid_qty: Iterable[str], ask_px: Iterable[str], ask_qty: Iterable[str]
) -> bytes:
    return "\n".join((",".join(bid_px), ",".join(bid_qty), ",".join(ask_px), ",".join(ask_qty))).encode()


def decode_levels(blob: bytes) -> tuple[list[str], list[str], list[str], list[str]]:
    """The four columns back; a section is empty for a side without levels."""
    bp, bq, ap, aq = blob.decode().split("\n")
    return (
        bp.split(",") if bp else [],
        bq.split(",") if bq else [],
        ap.split(",") if ap else [],
        aq.split(",") if aq else [],
    )


def encode_snapshot(bids: list[list[str]], asks: list[list[str]]) -> bytes:
    text = encode_levels(map(_PRICE, bids), map(_QTY, bids), map(_PRICE, asks), map(_QTY, asks))
    return zlib.compress(text, SNAPSHOT_LEVEL)


def decode_snapshot(blob: bytes) -> tuple[list[list[str]], list[list[str]]]:
    bp, bq, ap, aq = decode_levels(zlib.decompress(blob))
    return [[p, q] for p, q in zip(bp, bq, strict=True)], [[p, q] for p, q in zip(ap, aq, strict=True)]
