"""Parse cost of trade messages: the C fast path against the general path, in one run.

    .venv/bin/python bench/bench_parse.py [--repeats 5]

Input: every `@trade` message of the two 2024-08-08 USD-M recordings (../shared/data/binance/um_ws,
35,389 messages, combined-stream envelope), as the WebSocket client hands them over (bytes).
`fast` is `parse_message` (`_depthwire.scan_trade` first); `general` is what it did before:
orjson, then `parse_event`'s checks. Both give the same records (asserted). Medians of the
repeats, µs a message, one core.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ticklens.exchange.binance import DEFAULT_WINDOW_MS, TRADE_KINDS, parse_event, parse_message  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "binance" / "um_ws"


def messages() -> list[bytes]:
    out = []
    for name in ("btcusdt_20240808.gz", "ethusdt_20240808.gz"):
        with gzip.open(DATA / name, "rb") as fh:
            out.extend(line.rstrip(b"\n").partition(b" ")[2] for line in fh if b"@trade" in line[:60])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    raws = messages()
    recv = json.loads(raws[0])["data"]["E"]
    paths = {
        "fast": lambda r: parse_message(r, recv),
        "general": lambda r: parse_event(orjson.loads(r), recv, DEFAULT_WINDOW_MS, TRADE_KINDS),
    }
    assert [paths["fast"](r) for r in raws] == [paths["general"](r) for r in raws]
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.repeats):
        for name, f in paths.items():
            t0 = time.perf_counter()
            for r in raws:
                f(r)
            times[name].append((time.perf_counter() - t0) / len(raws) * 1e6)
    out = {k: round(statistics.median(v), 2) for k, v in times.items()}
    print(
        json.dumps(
            {"messages": len(raws), "us_per_message": out, "general_over_fast": round(out["general"] / out["fast"], 2)}
        )
    )


if __name__ == "__main__":
    main()
